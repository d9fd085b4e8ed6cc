"""The read path with a full cache (issue 7: warm reads as fast as local disk).

  (a) a file read, closed and read again is served by the kernel's page cache the second time:
      the daemon serves no chunk for it (keep_cache, and opens the kernel does itself)
  (b) the mount's read-ahead is raised to 1 MiB (root only: the bdi's sysfs knob)
  (c) 8 threads reading every file of a fixture at once, in different orders, each get the
      oracle's bytes: the daemon's cache of open blob fds hands every read its own blob
"""

import json
import os
import random
import threading

import pytest

import helpers

FIXTURES = ["estargz", "zstdchunked", "oci-gzip"]


def mount_ok(lazyroot, ref, *extra):
    r = lazyroot.mount(ref, None, *extra, timeout=300)
    assert r.ok, "mount failed:\n%s" % r


def stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, "lazyroot stats failed:\n%s" % r
    return json.loads(r.stdout)


def oracle_files(layout):
    """{path: sha256} of the regular files in the layout's expected-tree.tsv."""
    with open(os.path.join(str(layout), "expected-tree.tsv")) as f:
        head = f.readline().rstrip("\n").split("\t")
        rows = [dict(zip(head, ln.rstrip("\n").split("\t"))) for ln in f if ln.strip()]
    return {r["path"]: r["sha256"] for r in rows if r["type"] == "f"}


sha256_of = helpers.sha256_file


@pytest.mark.parametrize("name", ["estargz", "zstdchunked"])
def test_warm_reread_comes_from_page_cache(lazyroot, registry, mountpoint, name):
    files = oracle_files(registry.layout(name))
    mount_ok(lazyroot, registry.ref(name), "--prefetch=none")
    path = mountpoint / "bin" / "busybox"
    assert sha256_of(path) == files["/bin/busybox"]
    s1 = helpers.settled(lambda: stats(lazyroot, mountpoint))
    assert s1["bytes_fetched"] > 0 and s1["chunks_cached"] + s1["chunks_fetched"] > 1, s1
    passes = 5
    for _ in range(passes):
        assert sha256_of(path) == files["/bin/busybox"]
    s2 = stats(lazyroot, mountpoint)
    assert (s2["chunks_fetched"], s2["requests"]) == (s1["chunks_fetched"], s1["requests"]), \
        "re-reads fetched:\nbefore %s\nafter  %s" % (s1, s2)
    # Now and then (about 1 run in 30 under the sanitizers, on a loaded machine; estargz and
    # zstd:chunked alike) the kernel reads a folio it had cached once more, and the store
    # serves it: one or two chunks in all the passes.  Passes that missed the page cache
    # would each serve the file's chunks again (2 each for this busybox: 10 in all).
    assert s2["chunks_cached"] - s1["chunks_cached"] <= 2, \
        "re-reads reached the daemon:\nbefore %s\nafter  %s" % (s1, s2)
    assert lazyroot.umount().ok


def test_read_ahead_is_one_mib(lazyroot, registry, mountpoint):
    if os.geteuid() != 0:
        pytest.skip("only root may raise a bdi's read_ahead_kb")
    mount_ok(lazyroot, registry.ref("oci-gzip"))
    dev = os.stat(mountpoint).st_dev
    knob = "/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(dev), os.minor(dev))
    with open(knob) as f:
        assert f.read().strip() == "1024", knob
    assert lazyroot.umount().ok


@pytest.mark.parametrize("name", FIXTURES)
def test_parallel_readers_get_every_file_right(lazyroot, registry, mountpoint, name):
    files = oracle_files(registry.layout(name))
    mount_ok(lazyroot, registry.ref(name), "--prefetch=all")
    wrong, errors = [], []

    def reader(seed):
        order = sorted(files)
        random.Random(seed).shuffle(order)
        for p in order:
            try:
                got = sha256_of(str(mountpoint) + p)
            except OSError as e:
                errors.append("%s: %s" % (p, e))
                continue
            if got != files[p]:
                wrong.append(p)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "readers stuck"
    assert errors == [] and wrong == [], (errors[:10], wrong[:10])
    assert lazyroot.umount().ok
