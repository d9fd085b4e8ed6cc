"""`lazyroot prewarm` (issue "cache lifecycle", the prewarm part).

  (1) prewarm the estargz, zstdchunked-skopeo and oci-gzip fixtures from a registry of the
      test's own, stop the registry, mount each with --pull=never: every file matches the
      oracle (contents included), so every byte came from the cache
  (2) prewarm SIGKILLed at >= 10 random points (a proxy delays each Range request and
      --limit-rate slows the transfer, so most kills land mid-fetch): the cache stays
      consistent (`lazyroot fsck`, or every blob hashes to its name and CACHE/tmp is empty),
      and a new prewarm fetches only what is missing and completes
  (3) two prewarms at once: with --wait the second waits and each chunk range is fetched
      once; without --wait it exits 0 at once with one "another prewarm is running" line
  (4) not on a terminal: success prints nothing; unknown tag -> one line, 3; bad option -> 2;
      a cache that cannot be written -> 4
  (5) prewarm while the image is mounted (--prefetch=none): afterwards reading every file of
      the mount sends nothing to the registry and chunks_cached grows
  (6) --limit-rate 1M: the prewarm takes at least 0.8 s per MiB it transferred
"""

import fcntl
import hashlib
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

import conftest
import helpers
import push
import registry as registry_mod
import treewalk
from proxy import Fault, Proxy, parse_range

PREWARM_FIXTURES = ["estargz", "zstdchunked-skopeo", "oci-gzip"]
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# helpers


def ref_at(addr, name):
    return "%s/fixtures/%s:edge" % (addr, name)


def prewarm(lazyroot, *args, timeout=300):
    return lazyroot.run("prewarm", "--cache-dir", str(lazyroot.cache_dir), *args, timeout=timeout)


def layers_size(layout):
    return sum(l["size"] for l in helpers.layout_layers(layout))


def check_blobs(cache):
    """Every file under cache/blobs/sha256/xx/HEX hashes to HEX; returns the problems."""
    bad = []
    root = Path(cache) / "blobs" / "sha256"
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        if p.name != h or p.parent.name != h[:2]:
            bad.append("%s hashes to %s" % (p.relative_to(cache), h))
    return bad


def fsck_available(lazyroot):
    return lazyroot.run("fsck", "--help", timeout=30).ok


def lock_held(cache):
    """True if some process holds CACHE/locks/prewarm.lock."""
    path = Path(cache) / "locks" / "prewarm.lock"
    if not path.exists():
        return False
    fd = os.open(str(path), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def delay_ranges(seconds):
    return lambda req: Fault.delay(seconds) if req["range"] else None


def fixture_layout(name):
    return Path(__file__).resolve().parents[1] / "fixtures" / name


def mount_and_compare(lazyroot, ref, name, mnt, *extra):
    r = lazyroot.mount(ref, mnt, *extra, timeout=300)
    assert r.ok, "mount of %s failed:\n%s" % (name, r)
    try:
        return helpers.compare_with_oracle(mnt, fixture_layout(name))
    finally:
        lazyroot.umount(mnt).check()


def stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, "lazyroot stats failed:\n%s" % r
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------------------------
# (1) everything from the cache


def test_prewarm_then_registry_gone(lazyroot, test_dir):
    reg = registry_mod.Registry()
    reg.start()
    try:
        for name in PREWARM_FIXTURES:
            push.push_layout(reg.addr, str(fixture_layout(name)), "fixtures/" + name, "edge")
        refs = [ref_at(reg.addr, n) for n in PREWARM_FIXTURES]
        r = prewarm(lazyroot, *refs)
        assert r.ok and r.stdout == "" and r.stderr == "", str(r)
    finally:
        reg.stop()

    assert helpers.tmp_files(lazyroot.cache_dir) == set()
    for name, ref in zip(PREWARM_FIXTURES, refs):
        mnt = test_dir / ("mnt-" + name)
        mnt.mkdir()
        diffs = mount_and_compare(lazyroot, ref, name, mnt, "--pull=never", "--prefetch=none")
        assert diffs == [], "%s differs from its oracle:\n%s" % (name, "\n".join(diffs))


# ---------------------------------------------------------------------------------------------
# (2) killed at random points


def test_prewarm_killed_resumes(lazyroot, registry, test_dir):
    names = ["estargz", "zstdchunked-skopeo"]
    full = sum(layers_size(fixture_layout(n)) for n in names)
    rng = random.Random(int(os.environ.get("PREWARM_KILL_SEED", time.time_ns())))
    with Proxy(registry.addr, fault=delay_ranges(0.05)) as p:
        refs = [ref_at(p.addr, n) for n in names]
        args = ["prewarm", "--cache-dir", str(lazyroot.cache_dir), "--limit-rate", "2M", *refs]

        # How long an uninterrupted run takes, on a scratch cache.  Each kill lands in the
        # first quarter of that: killed runs keep what they stored, so later runs are shorter.
        scratch = test_dir / "scratch-cache"
        t0 = time.monotonic()
        r = lazyroot.run("prewarm", "--cache-dir", str(scratch), "--limit-rate", "2M", *refs,
                         timeout=300)
        duration = time.monotonic() - t0
        assert r.ok, str(r)

        # Until 10 runs were killed mid-fetch (at most 40 tries): a run that finished before
        # its kill (killed runs keep what they stored, so later runs are shorter) is undone
        # with `lazyroot rm`, so the next one has the whole work to do again.  The loop ends
        # on a kill, which leaves a partly filled cache for the rerun below.
        kills = []
        for i in range(40):
            if sum(1 for _, k in kills if k == "killed") >= 10:
                break
            proc = lazyroot.spawn(*args)
            delay = rng.uniform(0.05, duration / 4)
            time.sleep(delay)
            finished = proc.poll() is not None
            if not finished:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append((round(delay, 3), "finished" if finished else "killed"))
            assert not lock_held(lazyroot.cache_dir), "the lock outlived its process"
            assert helpers.tmp_files(lazyroot.cache_dir) == set(), \
                "temporaries left after kill %d: %s" % (i, helpers.tmp_files(lazyroot.cache_dir))
            if finished:
                r = lazyroot.run("rm", *refs, timeout=120)
                assert r.ok, str(r)
        assert sum(1 for _, k in kills if k == "killed") >= 10, kills

        assert check_blobs(lazyroot.cache_dir) == []
        if fsck_available(lazyroot):
            f = lazyroot.run("fsck", "--cache-dir", str(lazyroot.cache_dir), timeout=300)
            assert f.ok, "fsck after the kills (%s):\n%s" % (kills, f)

        p.reset()
        r = lazyroot.run(*args, timeout=300)
        assert r.ok and r.stderr == "", str(r)
        fetched = p.bytes_for("/v2/", ranged=True) + p.bytes_for("/v2/", ranged=False)
        assert fetched < full, "the rerun fetched %d bytes of %d (kills %s)" % (fetched, full, kills)

    # Everything is now in the cache: the proxy is gone.
    for name, ref in zip(names, refs):
        mnt = test_dir / ("mnt-" + name)
        mnt.mkdir()
        diffs = mount_and_compare(lazyroot, ref, name, mnt, "--pull=never", "--prefetch=none")
        assert diffs == [], "%s differs after the kills %s:\n%s" % (name, kills, "\n".join(diffs))


# ---------------------------------------------------------------------------------------------
# (3) two at once


def is_toc_tail(r, ranges):
    """Whether range @r is the one request an eStargz mount reads its footer and TOC with: the
    blob's last bytes, a tail of size/64 (at least 64 KiB; cache/format/layer_lazy.c)."""
    end = max(x[1] for x in ranges if x[1] is not None)
    return r[1] == end and r[1] - r[0] + 1 <= max(64 << 10, (end + 1) // 64)


def test_two_prewarms_fetch_once(lazyroot, registry, test_dir):
    names = ["estargz", "zstdchunked-skopeo"]
    with Proxy(registry.addr, fault=delay_ranges(0.05)) as p:
        refs = [ref_at(p.addr, n) for n in names]
        first = lazyroot.spawn("prewarm", "--cache-dir", str(lazyroot.cache_dir), *refs)
        conftest.wait_until(lambda: lock_held(lazyroot.cache_dir), 30, 0.005)
        # The second one starts while the first holds the lock (so the order is known).
        second = lazyroot.spawn("prewarm", "--wait", "--cache-dir", str(lazyroot.cache_dir), *refs)
        if first.poll() is None:
            third = prewarm(lazyroot, *refs, timeout=60)
            assert third.ok and third.stdout == "", str(third)
            lines = helpers.stderr_lines(third)
            assert len(lines) == 1 and "another prewarm is running on" in lines[0], str(third)
            assert third.duration < 10, str(third)

        assert first.wait(300) == 0, (test_dir / "spawn-0.err").read_text()
        assert second.wait(300) == 0, (test_dir / "spawn-1.err").read_text()
        for n in range(2):
            assert (test_dir / ("spawn-%d.err" % n)).read_text() == ""

        ranges = {}
        for rec in p.blob_requests():
            if not rec["range"]:
                continue
            first_b, last_b = parse_range(rec["range"])
            ranges.setdefault(rec["path"], []).append((first_b, last_b))
        assert ranges, p.requests
        for path, rs in ranges.items():
            rs.sort()
            for a, b in zip(rs, rs[1:]):
                if is_toc_tail(a, rs) or is_toc_tail(b, rs):
                    continue  # the footer and TOC's generous tail holds the last chunks too
                assert a[1] is not None and a[1] < b[0], "%s: ranges %s and %s overlap" % (path, a, b)

    for name, ref in zip(names, refs):
        mnt = test_dir / ("mnt-" + name)
        mnt.mkdir()
        diffs = mount_and_compare(lazyroot, ref, name, mnt, "--pull=never", "--prefetch=none")
        assert diffs == [], "%s:\n%s" % (name, "\n".join(diffs))


# ---------------------------------------------------------------------------------------------
# (4) output and exit statuses, not on a terminal


def test_prewarm_output_and_statuses(lazyroot, registry, test_dir):
    ok = prewarm(lazyroot, registry.ref("estargz"), registry.ref("oci-gzip"))
    assert ok.ok and ok.stdout == "" and ok.stderr == "", str(ok)

    unknown = prewarm(lazyroot, "%s/fixtures/estargz:no-such-tag" % registry.addr)
    assert unknown.returncode == 3 and unknown.stdout == "", str(unknown)
    helpers.assert_one_line(unknown)
    assert "no-such-tag" in unknown.stderr, str(unknown)

    # One line per failing REF; the good one is still done.
    mixed = prewarm(lazyroot, "%s/fixtures/estargz:nope" % registry.addr, registry.ref("zstdchunked-skopeo"))
    assert mixed.returncode == 3 and len(helpers.stderr_lines(mixed)) == 1, str(mixed)

    for bad in (["--no-such-option", registry.ref("estargz")], ["--jobs", "0", registry.ref("estargz")],
                ["--limit-rate", "fast", registry.ref("estargz")], ["--pull=always", registry.ref("estargz")],
                [], ["not a reference!"]):
        r = prewarm(lazyroot, *bad)
        assert r.returncode == 2 and r.stdout == "", str(r)

    a_file = test_dir / "a-file"
    a_file.write_text("not a directory\n")
    r = lazyroot.run("prewarm", "--cache-dir", str(a_file), registry.ref("estargz"))
    assert r.returncode == 4 and r.stdout == "", str(r)
    helpers.assert_one_line(r)

    h = lazyroot.run("prewarm", "--help")
    assert h.ok and "--limit-rate" in h.stdout and "--wait" in h.stdout, str(h)


# ---------------------------------------------------------------------------------------------
# (5) while mounted


def test_prewarm_while_mounted(lazyroot, registry, mountpoint):
    with Proxy(registry.addr) as p:
        ref = ref_at(p.addr, "estargz")
        r = lazyroot.mount(ref, mountpoint, "--prefetch=none", timeout=300)
        assert r.ok, str(r)
        try:
            before = stats(lazyroot, mountpoint)
            w = prewarm(lazyroot, ref)
            assert w.ok and w.stderr == "", str(w)

            p.reset()
            errors = []
            treewalk.walk(str(mountpoint), with_content=True, errors=errors)
            assert errors == []
            assert p.requests == [], "reads after the prewarm went to the registry: %s" % p.requests
            after = stats(lazyroot, mountpoint)
            assert after["chunks_cached"] > before["chunks_cached"], (before, after)
            assert after["chunks_fetched"] == before["chunks_fetched"], (before, after)
            diffs = helpers.compare_with_oracle(mountpoint, fixture_layout("estargz"))
            assert diffs == [], "\n".join(diffs)
        finally:
            lazyroot.umount(mountpoint).check()


# ---------------------------------------------------------------------------------------------
# (6) --limit-rate


def test_prewarm_limit_rate(lazyroot, registry):
    with Proxy(registry.addr) as p:
        r = prewarm(lazyroot, "--limit-rate", "1M", ref_at(p.addr, "estargz"))
        assert r.ok and r.stderr == "", str(r)
        transferred = p.bytes_for("/v2/")
    size = layers_size(fixture_layout("estargz"))
    assert transferred > size // 2, (transferred, size)
    assert r.duration >= transferred / MiB * 0.8, \
        "%d bytes in %.2f s with --limit-rate 1M" % (transferred, r.duration)


# ---------------------------------------------------------------------------------------------
# (7) prewarm stores chunks without one fsync each and syncs once at the end; after a power
#     loss before that sync a chunk blob may be short (ext4 commits the size with the data).
#     Short blobs count as missing: a read fetches them again, and so does the next prewarm.


def shorten_chunk_blobs(cache, count):
    """Truncates the @count largest blobs (to half their size, and one to 0); returns their
    names and original sizes."""
    blobs = sorted((p for p in (Path(cache) / "blobs" / "sha256").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size, reverse=True)[:count]
    cut = {}
    for i, p in enumerate(blobs):
        size = p.stat().st_size
        cut[p.name] = size
        os.truncate(p, 0 if i == 0 else size // 2)
    return cut


def test_short_chunk_blobs_fetched_again(lazyroot, registry, mountpoint):
    with Proxy(registry.addr) as p:
        ref = ref_at(p.addr, "estargz")
        r = prewarm(lazyroot, ref)
        assert r.ok, str(r)
        cut = shorten_chunk_blobs(lazyroot.cache_dir, 3)

        # A mount's reads: the short chunks are fetched again, and the tree is right.
        p.reset()
        diffs = mount_and_compare(lazyroot, ref, "estargz", mountpoint, "--prefetch=none")
        assert diffs == [], "\n".join(diffs)
        assert any(req["range"] for req in p.requests), "short blobs were served, not fetched"
        for name, size in cut.items():
            blob = Path(lazyroot.cache_dir) / "blobs" / "sha256" / name[:2] / name
            assert blob.stat().st_size == size, "%s still short" % name
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == name

        # The next prewarm: only what is short is fetched.
        cut = shorten_chunk_blobs(lazyroot.cache_dir, 2)
        p.reset()
        r = prewarm(lazyroot, ref)
        assert r.ok, str(r)
        ranges = [parse_range(req["range"]) for req in p.requests if req["range"]]
        fetched = sum(last - first + 1 for first, last in ranges)
        assert 0 < fetched <= sum(cut.values()) * 2, (fetched, cut)
        assert check_blobs(lazyroot.cache_dir) == []


# ---------------------------------------------------------------------------------------------
# (8) chunks are stored as their bytes arrive: a stream cut in the middle of a run keeps the
#     chunks that arrived whole before the cut (verified), asks again only for the bytes after
#     the cut, fails the rest without storing them, and the next prewarm fetches only those.


def test_prewarm_stream_cut_mid_run(lazyroot, registry, mountpoint):
    name = "estargz"
    layer = max(helpers.layout_layers(fixture_layout(name)), key=lambda l: l["size"])
    cut = {}

    def fault(req):
        if req["method"] != "GET" or layer["digest"] not in req["path"] or not req["range"]:
            return None
        first_b, last_b = parse_range(req["range"])
        if not cut and last_b is not None and last_b - first_b + 1 > layer["size"] // 2:
            # The run with the layer's chunks (the TOC reads are small): half of it arrives.
            cut.update(start=first_b, length=last_b - first_b + 1, sent=(last_b - first_b) // 2)
            return Fault.truncate(cut["sent"])
        if cut:
            return Fault.status(404)  # the rest of the layer cannot be had
        return None

    with Proxy(registry.addr, fault=fault) as p:
        ref = ref_at(p.addr, name)
        r = prewarm(lazyroot, "--jobs", "1", ref)
        assert r.returncode == 3 and r.stdout == "", str(r)
        assert "could not be fetched or verified" in helpers.assert_one_line(r), str(r)
        assert cut, "no run of layer %s was requested: %s" % (layer["digest"], p.requests)

        # The retry after the cut asks for the bytes after it only: none arrives twice.
        ranged = [q for q in p.requests if layer["digest"] in q["path"] and q["range"]]
        i = [k for k, q in enumerate(ranged) if (q["fault"] or "").startswith("Fault.truncate")]
        assert len(i) == 1 and i[0] + 1 < len(ranged), (cut, ranged)
        assert parse_range(ranged[i[0] + 1]["range"]) == \
            (cut["start"] + cut["sent"], cut["start"] + cut["length"] - 1), (cut, ranged)

        # What arrived whole before the cut is stored and right; nothing half-written stays.
        assert check_blobs(lazyroot.cache_dir) == []
        assert helpers.tmp_files(lazyroot.cache_dir) == set()
        partial = helpers.blob_files(lazyroot.cache_dir)

        p.set_fault(None)
        p.reset()
        r = prewarm(lazyroot, ref)
        assert r.ok and r.stderr == "", str(r)
        ranges = [parse_range(q["range"]) for q in p.requests
                  if layer["digest"] in q["path"] and q["range"]]
        refetched = sum(b - a + 1 for a, b in ranges)
        assert 0 < refetched <= cut["length"] - cut["sent"] // 2, (refetched, cut, ranges)
        assert len(helpers.blob_files(lazyroot.cache_dir)) > len(partial)
    assert check_blobs(lazyroot.cache_dir) == []

    diffs = mount_and_compare(lazyroot, ref, name, mountpoint, "--pull=never", "--prefetch=none")
    assert diffs == [], "\n".join(diffs)


# ---------------------------------------------------------------------------------------------
# (9) connections are kept: each request of a new connection pays a handshake and a cold
#     congestion window, so --jobs N must reuse N connections for all its runs.


def test_prewarm_reuses_connections(lazyroot, registry):
    name = "estargz"
    layers = helpers.layout_layers(fixture_layout(name))
    with Proxy(registry.addr) as p:
        r = prewarm(lazyroot, "--jobs", "1", ref_at(p.addr, name))
        assert r.ok and r.stderr == "", str(r)
        reqs = p.requests
    # The image's import (manifest, config, each layer's TOC) uses connections of its own;
    # every run of chunks goes over the one connection of --jobs 1 (the last request's).
    conns = {q["conn"] for q in reqs}
    assert len(conns) <= 1 + len(layers) + 1, reqs
    last = [q for q in reqs if q["conn"] == reqs[-1]["conn"]]
    runs = [q for q in last if q["range"] and "/blobs/" in q["path"]]
    assert len({q["path"] for q in runs}) == len(layers), last
