"""Many lazyroot processes on one cache at once, its creation included (docs/security.md
"Concurrency"; lazyroot(1)).

  (1) two `prewarm --wait` started together on a cache directory that does not exist yet, a
      fresh one each try: both succeed
  (2) N processes at once -- mount (then umount), prewarm --wait, gc, fsck, rm, images, inspect
      -- on a fresh cache directory, M tries: every process ends with its defined answer (exit
      0, or rm's "not in the cache" / "is mounted", fsck's "no such directory"), none says busy/locked/temporarily
      unavailable/sqlite, and the cache is consistent afterwards
  (3) a read-only bind mount of a cache: images, inspect and mount of a fully cached image
      work; gc, fsck, rm, prewarm and a mount of an image it lacks fail with one line

The processes are started, then released together (each waits for end-of-file on one pipe), so
that they race on the cache's creation.
"""

import os
import subprocess

import conftest
import helpers

BAD_WORDS = ("busy", "locked", "temporarily unavailable", "sqlite", "resource")
TRIES = int(os.environ.get("CONCURRENCY_TRIES", "5"))


class Gang:
    """Processes started behind a gate: each one waits for end-of-file on a pipe before
    exec'ing lazyroot; closing the pipe's write end releases them all at once."""

    def __init__(self, lazyroot):
        self.lazyroot, self.procs = lazyroot, []
        self.rfd, self.wfd = os.pipe()

    def start(self, name, *args):
        i = len(self.procs)
        out = self.lazyroot.test_dir / ("gang-%d.out" % i)
        err = self.lazyroot.test_dir / ("gang-%d.err" % i)
        argv = ["/bin/sh", "-c", 'cat >/dev/null; exec "$@" </dev/null', "gate",
                str(self.lazyroot.binary), *map(str, args)]
        with open(out, "wb") as o, open(err, "wb") as e:
            p = subprocess.Popen(argv, stdout=o, stderr=e, stdin=self.rfd, env=self.lazyroot._env(None),
                                 start_new_session=True)
        self.lazyroot._spawned.append(p)
        self.procs.append((name, p, out, err))

    def release_and_wait(self, timeout=180):
        os.close(self.rfd)
        os.close(self.wfd)
        results = []
        for name, p, out, err in self.procs:
            rc = p.wait(timeout=timeout)
            results.append((name, rc, out.read_text(errors="replace"),
                            err.read_text(errors="replace")))
        return results


def describe(results):
    return "\n".join("[%s] rc=%s\n  out: %s\n  err: %s" % (n, rc, o.strip()[-600:], e.strip()[-600:])
                     for n, rc, o, e in results)


def assert_no_bad_words(results):
    for name, rc, out, err in results:
        low = err.lower()
        assert not any(w in low for w in BAD_WORDS), \
            "%s reported contention:\n%s" % (name, describe(results))


def test_two_prewarms_create_one_cache(lazyroot, registry, test_dir):
    ref = registry.ref("oci-gzip")
    for t in range(6):
        cache = test_dir / ("fresh-%d" % t) / "cache"
        g = Gang(lazyroot)
        for _ in range(2):
            g.start("prewarm", "prewarm", "--wait", "--cache-dir", cache, ref)
        res = g.release_and_wait()
        assert_no_bad_words(res)
        assert all(rc == 0 for _, rc, _, _ in res), "try %d:\n%s" % (t, describe(res))
        helpers.assert_cache_consistent(cache, what="try %d" % t)


def expect(results, ok):
    """Each result's (rc, stderr) is one its verb defines; @ok maps a name to a predicate."""
    bad = [r for r in results if not ok[r[0].split("#")[0]](r[1], r[3])]
    assert not bad, "unexpected answers:\n%s\n\nall:\n%s" % (describe(bad), describe(results))


def test_everything_at_once_on_a_new_cache(lazyroot, registry, test_dir):
    """N processes x M tries; each try on a cache directory that does not exist yet."""
    mounted, warmed = registry.ref("oci-zstd"), registry.ref("oci-gzip")
    rm_ok = {0: None, 3: "not in the cache", 1: "mounted"}
    ok = {
        "mount": lambda rc, err: rc == 0,
        "prewarm": lambda rc, err: rc == 0,
        "gc": lambda rc, err: rc == 0,
        # fsck never creates a cache: before anyone did, it says there is none
        "fsck": lambda rc, err: rc == 0 or (rc == 4 and "no such directory" in err),
        "images": lambda rc, err: rc == 0,
        # the image may not be there yet (3), or the mount has it (1: "is mounted")
        "rm": lambda rc, err: rc in rm_ok and (rm_ok[rc] is None or rm_ok[rc] in err),
        "inspect": lambda rc, err: rc == 0 or (rc == 3 and "not in the cache" in err),
    }
    n_procs = 0
    for t in range(TRIES):
        cache = test_dir / ("new-%d" % t) / "cache"
        mnts = [test_dir / ("m-%d-%d" % (t, i)) for i in range(2)]
        for m in mnts:
            m.mkdir()
        g = Gang(lazyroot)
        for i, m in enumerate(mnts):
            g.start("mount#%d" % i, "mount", "--cache-dir", cache, mounted, m)
        for i in range(2):
            g.start("prewarm#%d" % i, "prewarm", "--wait", "--cache-dir", cache, warmed)
        g.start("gc", "gc", "--cache-dir", cache)
        g.start("fsck", "fsck", "--cache-dir", cache)
        g.start("rm", "rm", "--cache-dir", cache, mounted)
        g.start("images#0", "images", "--cache-dir", cache)
        g.start("images#1", "images", "--json", "--cache-dir", cache)
        g.start("inspect", "inspect", "--cache-dir", cache, warmed)
        res = g.release_and_wait()
        n_procs = len(res)
        assert_no_bad_words(res)
        expect(res, ok)
        for m in mnts:
            assert not helpers.compare_with_oracle(m, registry.layouts["oci-zstd"])
            r = lazyroot.umount(m)
            assert r.ok, str(r)
        f = lazyroot.run("fsck", "--cache-dir", str(cache), timeout=120)
        assert f.ok and f.stdout.strip().endswith("clean"), str(f)
        helpers.assert_cache_consistent(cache, what="try %d" % t)
    print("concurrency: %d processes x %d tries, 0 failures" % (n_procs, TRIES))
    assert n_procs >= 8


# ---------------------------------------------------------------------------------------------
# Read-only caches (docs/security.md "Read-only caches")


def ro_bind(src, dst):
    dst.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)


def test_read_only_cache(lazyroot, registry, test_dir, cache_dir, mountpoint):
    """A fully cached image is listed, inspected and mounted from a read-only bind mount of the
    cache; what would write it fails with one line, and an image it lacks is refused."""
    ref, other = registry.ref("oci-gzip"), registry.ref("oci-zstd")
    r = lazyroot.run("prewarm", "--cache-dir", str(cache_dir), ref, timeout=120)
    assert r.ok, str(r)
    assert not (cache_dir / "index.db-wal").exists() or \
        (cache_dir / "index.db-wal").stat().st_size == 0
    ro = test_dir / "ro"
    ro_bind(cache_dir, ro)
    try:
        r = lazyroot.run("images", "--cache-dir", str(ro))
        assert r.ok and ref in r.stdout, str(r)
        r = lazyroot.run("inspect", "--cache-dir", str(ro), ref)
        assert r.ok and registry.digest("oci-gzip") in r.stdout, str(r)
        r = lazyroot.run("mount", "--cache-dir", str(ro), ref, str(mountpoint), timeout=120)
        assert r.ok, str(r)
        try:
            assert not helpers.compare_with_oracle(mountpoint, registry.layouts["oci-gzip"])
            r = lazyroot.run("images", "--cache-dir", str(ro))
            assert r.ok and ref in r.stdout, str(r)
        finally:
            assert lazyroot.umount().ok
        for verb in (["gc"], ["fsck"], ["rm", ref], ["prewarm", other]):
            r = lazyroot.run(verb[0], "--cache-dir", str(ro), *verb[1:], timeout=60)
            assert r.returncode == 4 and "read-only" in r.stderr, str(r)
            helpers.assert_one_line(r)
        before = helpers.lazyroot_mounts()
        r = lazyroot.run("mount", "--cache-dir", str(ro), other, str(mountpoint), timeout=120)
        assert r.returncode != 0 and "read-only" in r.stderr.lower(), str(r)
        helpers.assert_one_line(r)
        assert not helpers.new_lazyroot_mounts(before, related=(test_dir,))
        assert not conftest.mounts_under(test_dir / "run") and not os.listdir(mountpoint)
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    # nothing was written through the read-only view, and the writable cache is still whole
    f = lazyroot.run("fsck", "--cache-dir", str(cache_dir))
    assert f.ok and f.stdout.strip().endswith("clean"), str(f)


def test_read_only_cache_with_a_wal_is_refused(lazyroot, registry, test_dir, cache_dir):
    """A cache copied while a writer had it open (its -wal holds changes) cannot be read
    read-only without them: refused with one line, not read as an older index."""
    import shutil
    import sqlite3
    r = lazyroot.run("prewarm", "--cache-dir", str(cache_dir), registry.ref("oci-gzip"),
                     timeout=120)
    assert r.ok, str(r)
    copy = test_dir / "copy"
    db = sqlite3.connect(str(cache_dir / "index.db"))
    try:
        db.execute("UPDATE images SET last_used = last_used + 1")
        db.commit()
        assert (cache_dir / "index.db-wal").stat().st_size > 0
        shutil.copytree(cache_dir, copy, ignore=shutil.ignore_patterns("*-shm"))
    finally:
        db.close()
    ro = test_dir / "ro"
    ro_bind(copy, ro)
    try:
        r = lazyroot.run("images", "--cache-dir", str(ro))
        assert r.returncode == 4 and "not checkpointed" in r.stderr, str(r)
        helpers.assert_one_line(r)
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_read_only_cache_lazy_layer_partly_cached(lazyroot, registry, test_dir, cache_dir,
                                                  mountpoint):
    """An eStargz image whose TOC is cached but whose chunks are not mounts from a read-only
    cache; reading an uncached file fails with EIO (its chunks cannot be stored)."""
    ref = registry.ref("estargz")
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    assert lazyroot.umount().ok
    ro = test_dir / "ro"
    ro_bind(cache_dir, ro)
    try:
        r = lazyroot.run("mount", "--cache-dir", str(ro), "--prefetch=none", ref,
                         str(mountpoint), timeout=120)
        assert r.ok, str(r)
        try:
            errors = 0
            for p in sorted(mountpoint.rglob("*")):
                if p.is_file() and not p.is_symlink() and p.stat().st_size > 0:
                    try:
                        p.read_bytes()
                    except OSError as e:
                        assert e.errno == 5, "%s: %s" % (p, e)
                        errors += 1
            assert errors > 0
        finally:
            assert lazyroot.umount().ok
    finally:
        subprocess.run(["umount", str(ro)], check=True)
