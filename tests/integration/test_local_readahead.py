"""Read-ahead of stored blobs in tree order (fs/local_readahead.c, issue 7's cold reads).

  (a) reading one file makes the daemon open the blobs of the files after it in the same
      directory (tree order): their fds show up in /proc/PID/fd before anything reads them
  (b) read-ahead never fetches: with a blob of the next file removed from a full cache, reading
      the file before it opens the blobs after the gap, and the removed one stays missing, with
      no chunk fetched and no request sent
"""

import hashlib
import json
import os

import pytest

import conftest
import lifecycle_helpers as h


def oracle_rows(layout):
    with open(os.path.join(str(layout), "expected-tree.tsv")) as f:
        head = f.readline().rstrip("\n").split("\t")
        return [dict(zip(head, ln.rstrip("\n").split("\t"))) for ln in f if ln.strip()]


def stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, "lazyroot stats failed:\n%s" % r
    return json.loads(r.stdout)


def blob_path(cache_dir, hexdigest):
    return os.path.join(str(cache_dir), "blobs", "sha256", hexdigest[:2], hexdigest)


def open_blobs(pid):
    """Blob digests (hex) the process has open."""
    fds = "/proc/%d/fd" % pid
    found = set()
    for fd in os.listdir(fds):
        try:
            target = os.readlink(os.path.join(fds, fd))
        except OSError:
            continue
        if "/blobs/sha256/" in target:
            found.add(os.path.basename(target).split(" ")[0])
    return found


def wait_open(pid, digests, timeout=20.0):
    """Polls until the daemon has every blob of `digests` open; the set it has at the end."""
    conftest.wait_until(lambda: set(digests) <= open_blobs(pid), timeout)
    return open_blobs(pid)


def small_files_in_order(mnt, rows, directory, max_size):
    """(name, sha256) of the directory's regular files in readdir (= tree) order, non-empty, at
    most max_size bytes (one chunk in the lazy formats), each content once."""
    info = {r["path"]: r for r in rows}
    out, seen = [], set()
    for name in os.listdir(os.path.join(str(mnt), directory.lstrip("/"))):
        r = info.get(os.path.join(directory, name))
        if not r or r["type"] != "f" or not 0 < int(r["size"]) <= max_size:
            continue
        if r["sha256"] in seen:
            continue
        seen.add(r["sha256"])
        out.append((name, r["sha256"]))
    return out


def pick_directory(rows, n):
    """A directory with at least n small distinct regular files."""
    per_dir = {}
    for r in rows:
        if r["type"] == "f" and 0 < int(r["size"]) <= 4096:
            per_dir.setdefault(os.path.dirname(r["path"]), set()).add(r["sha256"])
    best = max(per_dir, key=lambda d: len(per_dir[d]))
    if len(per_dir[best]) < n:
        pytest.skip("no directory with %d small files in the fixture" % n)
    return best


def prewarmed_mount(lazyroot, registry, test_dir, name):
    """Prewarms fixture `name` into the cache and mounts it: (daemon pid, a directory with at
    least 4 small files, those files in tree order as small_files_in_order() lists them)."""
    rows = oracle_rows(registry.layout(name))
    directory = pick_directory(rows, 4)
    r = lazyroot.run("prewarm", "--cache-dir", str(lazyroot.cache_dir), registry.ref(name),
                     timeout=300)
    assert r.ok, "prewarm failed:\n%s" % r
    r = lazyroot.mount(registry.ref(name), None, "--prefetch=none", timeout=300)
    assert r.ok, "mount failed:\n%s" % r
    return (h.daemon_pid(test_dir), directory,
            small_files_in_order(lazyroot.mountpoint, rows, directory, 4096))


@pytest.mark.parametrize("name", ["oci-gzip", "estargz"])
def test_reading_a_file_opens_the_next_files(lazyroot, registry, test_dir, name):
    pid, directory, files = prewarmed_mount(lazyroot, registry, test_dir, name)
    first, ahead = files[0], [d for _, d in files[1:4]]
    assert not set(ahead) & open_blobs(pid), "blobs open before any read"

    with open(os.path.join(str(lazyroot.mountpoint), directory.lstrip("/"), first[0]), "rb") as f:
        f.read()
    have = wait_open(pid, ahead)
    assert set(ahead) <= have, "read-ahead did not open the next files' blobs %s (open: %s)" % (
        ahead, sorted(have))
    assert lazyroot.umount().ok


def test_read_ahead_never_fetches(lazyroot, registry, test_dir):
    pid, directory, files = prewarmed_mount(lazyroot, registry, test_dir, "estargz")
    first, gap, after = files[0], files[1][1], [d for _, d in files[2:4]]
    # the mount read nothing yet: the gap's blob may go (a chunk of only this file)
    os.unlink(blob_path(lazyroot.cache_dir, gap))
    s0 = stats(lazyroot, lazyroot.mountpoint)

    with open(os.path.join(str(lazyroot.mountpoint), directory.lstrip("/"), first[0]), "rb") as f:
        f.read()
    have = wait_open(pid, after)
    assert set(after) <= have, "read-ahead stopped at the missing blob (open: %s)" % sorted(have)
    s1 = stats(lazyroot, lazyroot.mountpoint)
    assert not os.path.exists(blob_path(lazyroot.cache_dir, gap)), "read-ahead fetched a chunk"
    assert (s1["chunks_fetched"], s1["requests"]) == (s0["chunks_fetched"], s0["requests"]), \
        "read-ahead reached the registry:\nbefore %s\nafter  %s" % (s0, s1)
    # the file whose blob is missing is still read right: fetched by its own read
    p = os.path.join(str(lazyroot.mountpoint), directory.lstrip("/"), files[1][0])
    with open(p, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == gap
    assert os.path.exists(blob_path(lazyroot.cache_dir, gap))
    assert lazyroot.umount().ok
