"""A cache on a file system that fills up (docs/security.md, "Full disks"). The cache directory
is a small tmpfs of the test's own; images of random (incompressible) files come from a
registry of this module, built with tests/tools/mkestargz.py.

  - reads of a lazy image go on when the store is full: the fetched, verified chunks are
    served from memory, counted as chunks_no_space (not chunks_failed), the daemon logs the
    full cache once, and nothing is fetched ahead or prefetched that cannot be stored;
  - with max-size configured, an unmounted image is evicted to make room, a mounted one never;
  - `lazyroot mount` that cannot import its layers says "No space left on device" and the cache,
    in one line, mounts nothing and leaves no partial image."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import conftest
import helpers
import mkestargz as M
import push
import registry as registry_mod

MiB = 1 << 20


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """big:   eStargz, ~24 MB in 24 random files, 256 KiB chunks
       small: gzip, ~6 MB in 6 random files (imported whole at mount)
       other: eStargz, ~3 MB, a second lazy image"""
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    work = tmp_path_factory.mktemp("full-disk-images")
    reg = registry_mod.Registry()
    reg.start()
    try:
        im = {"reg": reg}
        for name, fmt, total, n, seed in (("big", "estargz", 24 * 10**6, 24, 41),
                                          ("small", "gzip", 6 * 10**6, 6, 42),
                                          ("other", "estargz", 3 * 10**6, 6, 43)):
            info = M.build_large_image(str(work / name), fmt, total_bytes=total, n_files=n,
                                       seed=seed, chunk_size=256 * 1024)
            pushed = push.push_layout(reg.addr, str(work / name), "full/" + name, "latest")
            im[name] = {"ref": pushed["ref"],
                        "files": {k: v for k, v in info["files"].items()
                                  if k.startswith("/data/")}}
        yield im
    finally:
        reg.stop()


@pytest.fixture
def small_cache(cache_dir):
    """cache_dir on a tmpfs; the size is set by the test (remount)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", str(cache_dir)],
                   check=True)
    yield cache_dir
    subprocess.run(["umount", "-l", str(cache_dir)], check=False)


def _resize(cache, size):
    subprocess.run(["mount", "-o", "remount,size=%s" % size, str(cache)], check=True)


def _stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, str(r)
    return json.loads(r.stdout)


def _spawn_mount(lazyroot, ref, mnt, *extra, env=None):
    """`lazyroot mount --foreground` (its log on a file); returns (process, log path)."""
    n = len(lazyroot._spawned)
    p = lazyroot.spawn("mount", "--foreground", "--cache-dir", str(lazyroot.cache_dir), *extra,
                       ref, str(mnt), env=env)
    log = lazyroot.test_dir / ("spawn-%d.err" % n)
    assert conftest.wait_until(lambda: conftest.is_mounted(mnt) or p.poll() is not None, 120), \
        "not mounted: " + log.read_text()
    assert p.poll() is None, log.read_text()
    return p, log


def _read_all(mnt, files):
    """Reads each file (in 128 KiB reads, as programs do); returns {path: errno or None}."""
    out = {}
    for path, want in sorted(files.items()):
        try:
            with open(str(mnt) + path, "rb", buffering=0) as f:
                got = b"".join(iter(lambda: f.read(128 * 1024), b""))
            out[path] = None if got == want else "content differs"
        except OSError as e:
            out[path] = os.strerror(e.errno)
    return out


def _full_lines(log):
    return [ln for ln in log.read_text().splitlines() if "is full" in ln]


def test_full_cache_serves_reads_from_memory(lazyroot, images, small_cache, mountpoint):
    big = images["big"]
    p, log = _spawn_mount(lazyroot, big["ref"], mountpoint, "--prefetch=all")
    res = _read_all(mountpoint, big["files"])
    assert all(v is None for v in res.values()), res

    s1 = _stats(lazyroot, mountpoint)
    assert s1["chunks_no_space"] > 0 and s1["chunks_failed"] == 0, s1
    lines = _full_lines(log)
    assert lines and all("No space left on device" in ln and str(small_cache) in ln
                         for ln in lines), log.read_text()
    # once, not per read: at most once a minute (the test may take longer than one)
    assert len(lines) <= 2, log.read_text()

    # Read again: served from memory, nothing downloaded again; and prefetch (--prefetch=all)
    # does not keep downloading what cannot be stored (it looks again every 5 s).
    res = _read_all(mountpoint, big["files"])
    assert all(v is None for v in res.values()), res
    time.sleep(12)
    s2 = _stats(lazyroot, mountpoint)
    assert s2["bytes_fetched"] == s1["bytes_fetched"] and s2["requests"] == s1["requests"], \
        (s1, s2)
    # about one download of each chunk: the layer's size, with read-around slack
    assert s2["bytes_fetched"] < 1.5 * sum(len(v) for v in big["files"].values()), s2
    human = lazyroot.run("stats", str(mountpoint))
    assert "No space left on device" in human.stdout, str(human)

    # Room again (the tmpfs grows): prefetch resumes and stores what is left.
    _resize(small_cache, "64m")
    assert conftest.wait_until(lambda: _stats(lazyroot, mountpoint)["chunks_fetched"] >
                               s2["chunks_fetched"], 60), _stats(lazyroot, mountpoint)
    assert "has room again" in log.read_text(), log.read_text()
    assert lazyroot.umount().ok
    p.wait(timeout=30)


def test_full_cache_evicts_unmounted_images(lazyroot, images, small_cache, mountpoint, test_dir):
    conf = test_dir / "lazyroot.conf"
    conf.write_text("max-size = 1G\n")   # configured, larger than the file system
    env = {"LAZYROOT_CONFIG": str(conf)}
    # small (6 MB) + other (3 MB) + big (24 MB) do not fit, big and other do
    _resize(small_cache, "32m")
    # An unmounted image (6 MB, imported whole) and a mounted lazy one, whose files are read.
    for name in ("small", "other"):
        r = lazyroot.mount(images[name]["ref"], mountpoint, env=env)
        assert r.ok, str(r)
        res = _read_all(mountpoint, images[name]["files"])
        assert all(v is None for v in res.values()), res
        assert lazyroot.umount().ok
    other_mnt = test_dir / "other"
    other_mnt.mkdir()
    r = lazyroot.mount(images["other"]["ref"], other_mnt, env=env)
    assert r.ok, str(r)

    big = images["big"]
    p, log = _spawn_mount(lazyroot, big["ref"], mountpoint, "--prefetch=none", env=env)
    res = _read_all(mountpoint, big["files"])
    assert all(v is None for v in res.values()), res
    text = log.read_text()
    assert "evicted 1 unmounted image(s)" in text, text
    r = lazyroot.run("images", "--json")
    assert r.ok, str(r) + text
    refs = {row["reference"] for row in json.loads(r.stdout)}
    assert images["small"]["ref"] not in refs, refs       # unmounted: evicted
    assert images["other"]["ref"] in refs, refs           # mounted: kept
    assert big["ref"] in refs, refs
    s = _stats(lazyroot, mountpoint)
    assert s["chunks_fetched"] > 0 and s["chunks_failed"] == 0, s
    # the mounted image still reads
    res = _read_all(other_mnt, images["other"]["files"])
    assert all(v is None for v in res.values()), res
    assert lazyroot.umount().ok
    assert lazyroot.umount(other_mnt).ok
    p.wait(timeout=30)


def test_mount_on_full_disk_fails_cleanly(lazyroot, images, small_cache, mountpoint, test_dir):
    _resize(small_cache, "3m")
    before = helpers.lazyroot_mounts()
    r = lazyroot.mount(images["small"]["ref"], mountpoint)
    assert r.returncode == 4, str(r)    # EXIT_CACHE
    line = helpers.assert_one_line(r)
    assert "No space left on device" in line and str(small_cache) in line, line
    # nothing mounted, no daemon, no partial image, blob or temporary left
    assert not helpers.new_lazyroot_mounts(before, related=(str(test_dir),)), str(r)
    assert not os.listdir(mountpoint)
    helpers.assert_no_daemon(mountpoint)
    assert not helpers.tmp_files(small_cache), helpers.tmp_files(small_cache)
    # What is left, as after any pull refused midway: no image or tag (`images` lists
    # nothing), the layers imported whole before the one that did not fit (verified, kept for
    # the next try), consistent; none of the layer that failed.  gc takes them.
    helpers.assert_nothing_recorded(lazyroot, small_cache, layers=1)
    r = lazyroot.run("fsck")
    assert r.ok and r.stdout.strip().endswith(", clean"), str(r)
    assert lazyroot.run("gc").ok
    assert not helpers.blob_files(small_cache), helpers.blob_files(small_cache)


def test_full_cache_keeps_room_for_the_index(lazyroot, images, small_cache, mountpoint):
    """Lazy chunks never take the last MiB: the index stays usable on a full cache, so that
    `images`, `gc` and `rm` can still run there."""
    big = images["big"]
    p, log = _spawn_mount(lazyroot, big["ref"], mountpoint, "--prefetch=all")
    res = _read_all(mountpoint, big["files"])
    assert all(v is None for v in res.values()), res
    st = os.statvfs(small_cache)
    assert st.f_bavail * st.f_frsize >= 1 * MiB - 64 * 1024, st
    r = lazyroot.run("images", "--json")
    assert r.ok and [row["reference"] for row in json.loads(r.stdout)] == [big["ref"]], str(r)
    assert lazyroot.umount().ok
    p.wait(timeout=30)


def test_prewarm_on_full_disk_says_the_cache_is_full(lazyroot, images, small_cache):
    """prewarm of a 24 MB lazy image into a 12 MB cache: the chunks that arrive are verified but
    cannot be stored.  That is the cache's failure (exit status 4) and the line says the cache
    is full, not that chunks could not be fetched or verified."""
    r = lazyroot.run("prewarm", images["big"]["ref"], timeout=180)
    assert r.returncode == 4, str(r)
    line = helpers.assert_one_line(r)
    print(line)
    assert "cache '%s' is full: " % small_cache in line and \
        line.endswith("chunks not stored: No space left on device"), line
    assert "verified" not in line, line
    assert not helpers.tmp_files(small_cache), helpers.tmp_files(small_cache)
    assert lazyroot.run("fsck").ok


def test_max_size_is_kept_while_the_disk_has_room(lazyroot, images, small_cache, mountpoint,
                                                  test_dir):
    """max-size 12M on a 64 MB file system: the mount of a 24 MB lazy image evicts the least
    recently used unmounted image once the chunks it stored pass max-size (checked every
    16 MiB stored), though the disk never fills; the mounted image stays."""
    conf = test_dir / "lazyroot.conf"
    conf.write_text("max-size = 12M\n")
    env = {"LAZYROOT_CONFIG": str(conf)}
    _resize(small_cache, "64m")
    r = lazyroot.mount(images["small"]["ref"], mountpoint, env=env)
    assert r.ok, str(r)
    assert lazyroot.umount().ok
    big = images["big"]
    p, log = _spawn_mount(lazyroot, big["ref"], mountpoint, "--prefetch=none", env=env)
    res = _read_all(mountpoint, big["files"])
    assert all(v is None for v in res.values()), res
    text = log.read_text()
    print([ln for ln in text.splitlines() if "evicted" in ln])
    assert "is over max-size: evicted 1 unmounted image(s)" in text, text
    assert not _full_lines(log), text
    refs = {row["reference"] for row in json.loads(lazyroot.run("images", "--json").stdout)}
    assert refs == {big["ref"]}, refs
    s = _stats(lazyroot, mountpoint)
    assert s["chunks_no_space"] == 0 and s["chunks_failed"] == 0, s
    assert lazyroot.umount().ok
    p.wait(timeout=30)


def test_chunks_served_from_memory_are_stored_when_room_returns(lazyroot, images, small_cache,
                                                                 mountpoint):
    """Half the files read on a full cache (served from memory), room again, the other half
    read: the chunks kept in memory are stored then, so that a new mount reads the first half
    without a single request."""
    big = images["big"]
    names = sorted(big["files"])
    first = {n: big["files"][n] for n in names[:len(names) // 2]}
    rest = {n: big["files"][n] for n in names[len(names) // 2:]}
    p, log = _spawn_mount(lazyroot, big["ref"], mountpoint, "--prefetch=none")
    res = _read_all(mountpoint, first)
    assert all(v is None for v in res.values()), res
    assert _stats(lazyroot, mountpoint)["chunks_no_space"] > 0
    _resize(small_cache, "64m")
    res = _read_all(mountpoint, rest)
    assert all(v is None for v in res.values()), res
    text = log.read_text()
    print([ln for ln in text.splitlines() if "served from memory" in ln])
    assert "stored" in text and "chunks served from memory while it was full (0 dropped)" \
        in text, text
    assert lazyroot.umount().ok
    p.wait(timeout=30)

    r = lazyroot.mount(big["ref"], mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    res = _read_all(mountpoint, first)
    assert all(v is None for v in res.values()), res
    s = _stats(lazyroot, mountpoint)
    assert s["requests"] == 0 and s["bytes_fetched"] == 0, s
    assert lazyroot.umount().ok
