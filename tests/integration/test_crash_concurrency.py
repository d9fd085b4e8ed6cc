"""Crash safety and concurrency of the cache (lazyroot(1): mount --prefetch, gc, fsck, prewarm,
images; docs/architecture.md "Cache lifecycle").

  (1) the mount daemon SIGKILLed at random moments (when a random share of its chunks is done)
      while `--prefetch=all` fetches the estargz fixture through a slow proxy: after each kill
      `lazyroot umount` cleans up and `lazyroot fsck` is clean; a final mount matches the oracle
  (2) `lazyroot gc --max-size 1` SIGKILLed after random short delays: `fsck` is clean (or only
      reports what `fsck --repair` fixes, and is clean afterwards); evicted and remaining
      images mount again and match their oracles
  (3) on ONE cache, at once: three mounts read every file in threads, a prewarm of two other
      images, and `gc` + `images --json` in a loop: nothing fails, nothing says busy/locked/
      SQLITE, every tree matches its oracle, fsck is clean, everything unmounts

After every fsck the cache is also judged without lazyroot (helpers.assert_cache_consistent):
every blob hashes to its name, the index names only blobs that exist (lazy chunks may be
missing) and every blob is named, and the mounted trees equal their fixtures' expected-tree.tsv.

Seeds: CRASH_SEED=N makes the random delays reproducible.
"""

import json
import os
import random
import signal
import threading
import time

import conftest
import helpers
import lifecycle_helpers as lh
from conftest import FIXTURES
from proxy import Fault, Proxy

SEED = int(os.environ.get("CRASH_SEED", time.time_ns() % (1 << 31)))
BAD_WORDS = ("busy", "locked", "sqlite")


def delay_ranges(seconds):
    return lambda req: Fault.delay(seconds) if req["range"] else None


def assert_diffs_empty(diffs, what):
    assert not diffs, "%s differs from its oracle:\n%s" % (what, "\n".join(diffs))


def fsck(lazyroot, what):
    """lazyroot's fsck is clean, and so is the cache judged without it."""
    r = lazyroot.run("fsck", timeout=120)
    assert r.ok and r.stdout.strip().endswith("clean"), "fsck %s:\n%s" % (what, r)
    helpers.assert_cache_consistent(lazyroot.cache_dir, what=what)
    return r


def fsck_or_repair(lazyroot, what):
    """fsck is clean, or reports problems that --repair fixes (then clean). Returns the first
    fsck's output when it was not clean (for the report), else None."""
    r = lazyroot.run("fsck", timeout=120)
    if r.ok:
        assert r.stdout.strip().endswith("clean"), "fsck %s:\n%s" % (what, r)
        helpers.assert_cache_consistent(lazyroot.cache_dir, what=what)
        return None
    assert r.returncode == 1, "fsck %s:\n%s" % (what, r)
    rep = lazyroot.run("fsck", "--repair", timeout=120)
    assert rep.ok, "fsck --repair %s (first fsck:\n%s):\n%s" % (what, r, rep)
    fsck(lazyroot, what + " after --repair")
    return r.stdout


def stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    return json.loads(r.stdout) if r.ok else None


# ---------------------------------------------------------------------------------------------
# (1) the daemon SIGKILLed during --prefetch=all


def stats_at_progress(lazyroot, mnt, share, timeout=60.0):
    """The mount's stats once its prefetch has done `share` of its chunks (or has stopped).
    The kill moment follows the prefetch's progress, not the clock: how long a prefetch takes
    depends on the machine and on how fast the fetcher has become, a share of it does not."""
    end = time.monotonic() + timeout
    while True:
        st = stats(lazyroot, mnt)
        pf = st and st.get("prefetch")
        if pf and (not pf["running"] or pf["done"] >= share * pf["total"]):
            return st
        if time.monotonic() > end:
            return st
        time.sleep(0.01)


def test_sigkill_daemon_during_prefetch(lazyroot, registry, test_dir, mountpoint, cache_dir):
    rng = random.Random(SEED)
    name = "estargz"
    kills = []
    with Proxy(registry.addr, fault=delay_ranges(0.03)) as p:
        ref = "%s/fixtures/%s:edge" % (p.addr, name)
        for i in range(7):
            r = lazyroot.mount(ref, mountpoint, "--prefetch=all", timeout=120)
            assert r.ok, "mount %d (seed %d):\n%s" % (i, SEED, r)
            pid = lh.daemon_pid(test_dir)
            share = rng.uniform(0.0, 0.9)
            st = stats_at_progress(lazyroot, mountpoint, share)
            os.kill(pid, signal.SIGKILL)
            assert lh.wait_pid_gone(pid), "daemon %d survived SIGKILL" % pid
            kills.append((round(share, 3), st and st.get("prefetch")))
            u = lazyroot.umount(mountpoint)
            assert u.ok, "umount after kill %d %s (seed %d):\n%s" % (i, kills, SEED, u)
            lh.assert_all_clean(test_dir, pid)
            fsck(lazyroot, "after kill %d %s (seed %d)" % (i, kills, SEED))
            if st and not st["prefetch"]["running"]:
                # everything was fetched already: start the next round from an empty cache
                rm = lazyroot.run("rm", ref)
                assert rm.ok, str(rm)
                fsck(lazyroot, "after rm %d (seed %d)" % (i, SEED))

        print("seed %d, kills (share aimed at, prefetch state): %s" % (SEED, kills))
        mid = [k for k in kills if k[1] and k[1]["running"]]
        assert len(mid) >= 3, "too few kills landed mid-prefetch: %s" % kills
        # at the end: a mount reads every file correctly (through the proxy, no delay)
        # (reading lazily chunk by chunk through the Python proxy is slow: let --prefetch=all
        # fetch the rest in bulk first, then read every file)
        p.set_fault(None)
        r = lazyroot.mount(ref, mountpoint, "--prefetch=all")
        assert r.ok, str(r)
        try:
            last = [None]

            def prefetch_stopped():
                last[0] = stats(lazyroot, mountpoint)
                return last[0] and not last[0]["prefetch"]["running"]
            conftest.wait_until(prefetch_stopped, 60, 0.1)
            st = last[0]
            assert st and st["prefetch"]["done"] == st["prefetch"]["total"] \
                and st["chunks_failed"] == 0, "final prefetch: %s" % st
            helpers.assert_cache_consistent(cache_dir, {mountpoint: FIXTURES / name},
                                            "after kills %s (seed %d)" % (kills, SEED))
        finally:
            assert lazyroot.umount(mountpoint).ok
    fsck(lazyroot, "at the end")


# ---------------------------------------------------------------------------------------------
# (2) gc SIGKILLed


GC_IMAGES = ["oci-gzip", "oci-zstd", "oci-uncompressed", "estargz"]


def _cached_refs(lazyroot):
    r = lazyroot.run("images", "--json")
    assert r.ok, str(r)
    return {row["reference"] for row in json.loads(r.stdout)}


def _fill(lazyroot, registry, mnt, names):
    for n in names:
        r = lazyroot.mount(registry.ref(n), mnt, "--prefetch=none")
        assert r.ok, "filling the cache with %s:\n%s" % (n, r)
        u = lazyroot.umount(mnt)
        assert u.ok, str(u)


def test_sigkill_gc(lazyroot, registry, test_dir, mountpoint, cache_dir):
    rng = random.Random(SEED + 1)
    _fill(lazyroot, registry, mountpoint, GC_IMAGES)
    kills, repaired, refilled = [], [], []
    killed = 0
    for i in range(12):
        if killed >= 6:
            break
        missing = [n for n in GC_IMAGES if registry.ref(n) not in _cached_refs(lazyroot)]
        refilled.append(len(missing))
        _fill(lazyroot, registry, mountpoint, missing)
        proc = lazyroot.spawn("gc", "--max-size", "1")
        # an uninterrupted gc of the four images takes ~0.7 s: most kills land mid-eviction
        delay = rng.uniform(0.02, 0.6)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        kills.append((round(delay, 4), "finished" if finished else "killed"))
        what = "after gc kill %d %s (seed %d)" % (i, kills, SEED)
        out = fsck_or_repair(lazyroot, what)
        if out:
            lines = out.splitlines()
            kinds = sorted({ln.split(" sha256:")[0].split(" /")[0] for ln in lines})
            repaired.append((i, len(lines), kinds))
    print("seed %d, gc kills: %s, refilled: %s, repaired: %s" % (SEED, kills, refilled, repaired))
    assert killed >= 5, "gc finished before most kills: %s" % kills

    # both a remaining and an evicted image mount and match their oracles
    left = _cached_refs(lazyroot)
    for n in GC_IMAGES:
        if n in ("oci-gzip", "estargz") or registry.ref(n) in left:
            r = lazyroot.mount(registry.ref(n), mountpoint)
            assert r.ok, "remount of %s after %s:\n%s" % (n, kills, r)
            try:
                helpers.assert_cache_consistent(cache_dir, {mountpoint: FIXTURES / n},
                                                "with %s mounted after gc kills %s" % (n, kills))
            finally:
                assert lazyroot.umount(mountpoint).ok
    fsck(lazyroot, "at the end")


# ---------------------------------------------------------------------------------------------
# (3) mounts, prewarm, gc and images at once on one cache


MOUNTED = ["oci-gzip", "estargz", "zstdchunked-skopeo"]
PREWARMED = ["oci-zstd", "multiarch"]


def _bad_stderr(result):
    low = result.stderr.lower()
    return [w for w in BAD_WORDS if w in low]


def test_concurrent_mounts_prewarm_gc(lazyroot, registry, test_dir, cache_dir):
    failures = []
    lock = threading.Lock()
    results = []

    def record(r, what):
        with lock:
            results.append((what, r))
            if not r.ok or _bad_stderr(r):
                failures.append("%s:\n%s" % (what, r))

    mnts = {n: test_dir / ("mnt-" + n) for n in MOUNTED}
    for m in mnts.values():
        m.mkdir()
    diffs = {}

    def mount_and_read(n):
        r = lazyroot.mount(registry.ref(n), mnts[n], timeout=180)
        record(r, "mount " + n)
        if r.ok:
            diffs[n] = helpers.compare_with_oracle(mnts[n], FIXTURES / n)

    def do_prewarm():
        r = lazyroot.run("prewarm", "--cache-dir", str(cache_dir),
                         *[registry.ref(n) for n in PREWARMED], timeout=180)
        record(r, "prewarm")

    stop = threading.Event()
    loops = [0]

    def admin_loop():
        while not stop.is_set():
            record(lazyroot.run("gc", timeout=120), "gc")
            r = lazyroot.run("images", "--json", timeout=60)
            record(r, "images --json")
            if r.ok:
                try:
                    json.loads(r.stdout)
                except ValueError as e:
                    with lock:
                        failures.append("images --json is not JSON (%s):\n%s" % (e, r))
            loops[0] += 1

    workers = [threading.Thread(target=mount_and_read, args=(n,)) for n in MOUNTED]
    workers.append(threading.Thread(target=do_prewarm))
    admin = threading.Thread(target=admin_loop)
    admin.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join(240)
    stop.set()
    admin.join(180)
    assert not any(t.is_alive() for t in workers + [admin]), "a worker hung"
    print("admin loops: %d, commands: %d" % (loops[0], len(results)))

    try:
        assert not failures, "\n\n".join(failures)
        assert loops[0] >= 1
        for n in MOUNTED:
            assert n in diffs, "%s was not mounted" % n
            assert_diffs_empty(diffs[n], n)
        # the prewarmed images are in the cache, and everything reads the same once more
        refs = _cached_refs(lazyroot)
        for n in PREWARMED + MOUNTED:
            assert registry.ref(n) in refs, "%s not in `images`: %s" % (n, sorted(refs))
        # every tree once more, and the cache under them, judged without lazyroot
        helpers.assert_cache_consistent(cache_dir, {mnts[n]: FIXTURES / n for n in MOUNTED},
                                        "after the concurrent run")
    finally:
        for n in MOUNTED:
            if os.path.ismount(mnts[n]):
                u = lazyroot.umount(mnts[n])
                assert u.ok, str(u)
    assert not [m for m in conftest.mounts_under(test_dir)], conftest.mounts_under(test_dir)
    assert lh.wait_no_daemons(test_dir) == []
    fsck(lazyroot, "after the concurrent run")
