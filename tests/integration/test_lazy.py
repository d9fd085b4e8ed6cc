"""Lazy pulling of eStargz and zstd:chunked layers (issue "lazy pulling").

  tool checks (no lazyroot needed): mkestargz.py writes what ctr-remote writes (cross-checked
  on the estargz fixture with an independent reader), proxy.py forwards and counts.
  (a) the lazy fixtures mount and match their oracle; the formats' own entries never show
  (b) a ~40 MB eStargz image behind a counting proxy, --prefetch=none: the mount fetches only
      footers + TOCs, one small file costs < 5% of the layer; `lazyroot stats --json` agrees
  (c) a chunk whose bytes do not match its digest: EIO, twice, never stored, others fine
  (d) a mixed image (plain gzip + eStargz layers, whiteouts across them) reads correctly
  (e) two processes reading one uncached file: each chunk is requested once
  (f) --prefetch=all then offline: everything reads; default landmark prefetch fetches the
      files before .prefetch.landmark without them being read, and nothing else
  (g) zstd:chunked fixtures mount lazily; reading busybox fetches only its chunks (and, in the
      same requests, what follows it in the layer up to 128 KiB: read-around)
  (h) systemd-nspawn runs /bin/busybox true on a lazily mounted eStargz image

Images are generated with tests/tools/mkestargz.py into a registry of this module (the
corruption test edits that registry's storage); the fixtures come from the session registry.
"""

import errno
import hashlib
import json
import os
import re
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import conftest
import helpers
import lifecycle_helpers as lh
import mkdemo
import mkestargz as M
import push
import registry as registry_mod
from proxy import Fault, Proxy, parse_range

LAZY_FIXTURES = ["estargz", "zstdchunked", "zstdchunked-skopeo"]
ZSTD_FIXTURES = ["zstdchunked", "zstdchunked-skopeo"]
BOOKKEEPING = ["stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"]
STATS_KEYS = {"mountpoint", "image", "digest", "bytes_fetched", "requests", "requests_running",
              "chunks_fetched", "chunks_cached", "chunks_failed", "chunks_refetched",
              "chunks_no_space", "prefetch", "pull_bytes", "pull_requests", "layers", "profile",
              "exec_ahead"}
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# helpers


def stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, "lazyroot stats failed:\n%s" % r
    s = json.loads(r.stdout)
    assert set(s) == STATS_KEYS, "stats keys %s:\n%s" % (sorted(s), r.stdout)
    assert set(s["prefetch"]) == {"total", "done", "running"}, r.stdout
    return s


def wait_prefetch(lazyroot, mnt, timeout=180):
    """Poll stats until prefetch is done (done == total, not running); returns the stats."""
    last = [None]

    def done():
        s = last[0] = stats(lazyroot, mnt)
        pf = s["prefetch"]
        return pf["total"] > 0 and pf["done"] == pf["total"] and not pf["running"]
    assert conftest.wait_until(done, timeout, 0.2), \
        "prefetch not done after %ds: %s" % (timeout, last[0])
    return last[0]


def mount_ok(lazyroot, ref, *extra, mnt=None):
    r = lazyroot.mount(ref, mnt, *extra, timeout=300)
    assert r.ok, "mount failed:\n%s" % r
    return r


def not_profile_lookup(requests):
    """The requests of a mount but its start profile's lookup (the referrers API, the referrers
    tag), which lazyroot stats does not count as the pull's."""
    return [r for r in requests
            if "/referrers/" not in r["path"] and "/manifests/sha256-" not in r["path"]]


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def blob_digests_in_store(cache):
    return {Path(n).name for n in helpers.blob_files(cache)}


def range_covers(rec, offset):
    rg = parse_range(rec["range"])
    if rg is None:
        return False
    first, last = rg
    return first <= offset and (last is None or offset <= last)


def blob_reqs(proxy, digest):
    return proxy.blob_requests(digest)


def check_files(root, files, names=None):
    """Differences between the regular files under root and files ({"/p": bytes})."""
    bad = []
    for p in (names or sorted(files)):
        try:
            got = read_file(str(root) + p)
        except OSError as e:
            bad.append("%s: %s" % (p, e))
            continue
        if got != files[p]:
            bad.append("%s: content differs (%d bytes, expected %d)" % (p, len(got), len(files[p])))
    return bad


# zstd:chunked TOC (48-byte footer: skippable frame header + 4 LE u64 + "GnUlInUx")
def zstd_chunked_toc(blob):
    assert blob[-8:] == b"GnUlInUx", blob[-48:].hex()
    off, clen, ulen, typ = struct.unpack("<QQQQ", blob[-40:-8])
    r = subprocess.run(["zstd", "-d", "-c"], input=blob[off:off + clen], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=True)
    return json.loads(r.stdout), off


def file_extent(toc, toc_offset, name):
    """[start, end) of the compressed bytes of file `name` in a lazy layer: its first offset to
    its endOffset, or to the next entry's offset (or the TOC)."""
    own = [e for e in toc["entries"] if e["name"] == name and "offset" in e]
    start = min(e["offset"] for e in own)
    last = max(e["offset"] for e in own)
    ends = [e["endOffset"] for e in own if "endOffset" in e]
    if ends:
        return start, max(ends)
    later = [e["offset"] for e in toc["entries"] if e.get("offset", 0) > last]
    return start, min(later) if later else toc_offset


@pytest.fixture(autouse=True)
def _umount_at_end(request):
    """Unmount the test's mountpoint with lazyroot itself after a test that mounted one (the
    conftest teardown would otherwise do it and warn)."""
    lr = request.getfixturevalue("lazyroot") if "lazyroot" in request.fixturenames else None
    yield
    if lr is not None and conftest.is_mounted(lr.mountpoint):
        lr.umount()


# ---------------------------------------------------------------------------------------------
# the module's images


class Images:
    pass


@pytest.fixture(scope="module")
def lazy_images(tmp_path_factory):
    """A registry of this module with generated images:
      big      ~40 MB eStargz: layer 1 busybox + /etc (eStargz), layer 2 400 random files
      mixed    gzip / eStargz / gzip / eStargz layers with whiteouts across formats
      landmark gzip base + an eStargz layer whose first 8 files are marked for prefetch
      corrupt  gzip base + a stored-deflate eStargz layer; one chunk corrupted in storage"""
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    work = tmp_path_factory.mktemp("lazy-images")
    reg = registry_mod.Registry()
    reg.start()
    try:
        im = Images()
        im.reg = reg
        im.addr = reg.addr
        # big
        im.big = M.build_large_image(str(work / "big"), "estargz", total_bytes=40 * 10**6,
                                     n_files=400, seed=11)
        push.push_layout(reg.addr, str(work / "big"), "lazy/big", "latest")
        # mixed
        base = M.base_entries()
        T = mkdemo.T2
        l2 = [("srv", "d", 0o755, None, T), ("srv/a", "d", 0o755, None, T),
              ("srv/a/one.txt", "f", 0o644, b"one\n" * 100, T),
              ("srv/a/gone.txt", "f", 0o644, b"to be deleted by layer 3\n", T),
              ("srv/a/empty", "f", 0o644, b"", T),
              ("srv/a/link", "l", 0o777, "one.txt", T),
              ("srv/a/hard", "h", 0o644, "srv/a/one.txt", T),
              ("srv/multi.bin", "f", 0o644, os.urandom(300 * 1024), T),
              ("srv/old-dir", "d", 0o755, None, T),
              ("srv/old-dir/x", "f", 0o644, b"x\n", T)]
        l3 = [("srv", "d", 0o755, None, T), ("srv/a", "d", 0o755, None, T),
              ("srv/a/.wh.gone.txt", "f", 0o644, b"", T),
              ("srv/b.txt", "f", 0o644, b"from gzip layer 3\n", T),
              ("srv/replaced.txt", "f", 0o644, b"old\n", T)]
        l4 = [("srv", "d", 0o755, None, T), ("srv/replaced.txt", "f", 0o600, b"new content\n", T),
              ("srv/old-dir", "d", 0o755, None, T), ("srv/old-dir/.wh..wh..opq", "f", 0o644, b"", T),
              ("srv/old-dir/y", "f", 0o644, b"y\n", T),
              ("etc", "d", 0o755, None, T), ("etc/.wh.hostname", "f", 0o644, b"", T),
              ("srv/big4.bin", "f", 0o644, os.urandom(5 * MiB + 123), T)]
        im.mixed = M.build_layout(str(work / "mixed"),
                                  [("gzip", base), ("estargz", l2, {"chunk_size": 64 * 1024}),
                                   ("gzip", l3), ("estargz", l4, {"chunk_size": MiB})])
        im.mixed["files"] = M.expected_files([base, l2, l3, l4])
        push.push_layout(reg.addr, str(work / "mixed"), "lazy/mixed", "latest")
        # landmark
        lm = M.large_entries(8 * 10**6, 40, seed=12, top="lm")
        im.prefetch_names = [e[0] for e in lm if e[1] == "f"][:8]
        im.landmark = M.build_layout(str(work / "landmark"),
                                     [("gzip", base), ("estargz", lm, {"prefetch": im.prefetch_names,
                                                                       "level": 1})])
        im.landmark["files"] = M.expected_files([base, lm])
        push.push_layout(reg.addr, str(work / "landmark"), "lazy/landmark", "latest")
        # corrupt
        cr = M.large_entries(2 * 10**6, 30, seed=13, top="cr")
        im.corrupt = M.build_layout(str(work / "corrupt"),
                                    [("gzip", base), ("estargz", cr, {"level": 0})])
        im.corrupt["files"] = M.expected_files([base, cr])
        push.push_layout(reg.addr, str(work / "corrupt"), "lazy/corrupt", "latest")
        yield im
    finally:
        reg.stop()


def blob_storage_path(reg, digest):
    hexd = digest.split(":", 1)[1]
    return Path(reg.storage) / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"


# ---------------------------------------------------------------------------------------------
# the tools themselves (no lazyroot needed)


def _fixture_layers(name):
    lay = conftest.FIXTURES / name
    return lay, helpers.layout_layers(lay)


def test_mkestargz_writes_what_ctr_remote_writes():
    """Each estargz fixture layer, re-written by mkestargz from its own tar stream: both pass the
    independent reader's checks, the TOCs are equal except offsets (and the S_IF bits buildah
    left in layer 2's modes), and every gzip member of ours starts where one of ctr-remote's
    does (ctr-remote has a few more: it compresses GOMAXPROCS parts in parallel, each ending a
    member at a tar header)."""
    import gzip
    lay, layers = _fixture_layers("estargz")
    for i, l in enumerate(layers):
        blob = helpers.layout_blob(lay, l["digest"]).read_bytes()
        ann = l["annotations"]
        assert M.verify_estargz(blob, ann[M.ANN_TOC_DIGEST], ann[M.ANN_UNCOMPRESSED]) == []
        toc, _, _ = M.parse_estargz(blob)
        ents = [e for e in M.entries_from_tar(gzip.decompress(blob)) if e[0] not in M.BOOKKEEPING]
        es = M.make_estargz(ents, level=6)  # level 9 takes ~40 s on the low-entropy 12 MiB file
        assert M.verify_estargz(es.blob, es.toc_digest, es.uncompressed_size) == []
        assert es.blob[-51:][:16] == blob[-51:][:16] and es.blob[-51:][32:] == blob[-51:][32:]

        def norm(e):
            e = {k: v for k, v in e.items() if k != "offset"}
            if "mode" in e:
                e["mode"] &= 0o7777
            return {k: v for k, v in e.items() if v}
        assert [norm(e) for e in es.toc["entries"]] == [norm(e) for e in toc["entries"]], i
        if i != 1:
            assert [list(e) for e in es.toc["entries"]] == [list(e) for e in toc["entries"]]
        theirs = [x[1:] for x in M.member_map(blob)]
        ours = [x[1:] for x in M.member_map(es.blob)]
        assert [x for x in ours if x not in theirs] == []
        assert {x[0] for x in theirs if x not in ours} <= {"header"}


def test_mkestargz_landmark_chunks_and_tar(tmp_path):
    ents = [(".", "d", 0o755, None, 1), ("a", "d", 0o755, None, 1),
            ("a/big", "f", 0o644, os.urandom(300000), 1), ("z", "f", 0o644, b"zz", 1),
            ("a/small", "f", 0o600, b"s", 1, {"uid": 7, "xattrs": {"user.k": b"v"}})]
    es = M.make_estargz(ents, chunk_size=100000, prefetch=["a/small"])
    names = [e["name"] for e in es.toc["entries"] if e["type"] != "chunk"]
    assert names[:4] == [".", "a/", "a/small", ".prefetch.landmark"], names
    assert [c["chunkOffset"] for c in es.chunks_of("a/big")] == [0, 100000, 200000]
    assert M.verify_estargz(es.blob, es.toc_digest, es.uncompressed_size) == []
    (tmp_path / "l.gz").write_bytes(es.blob)
    r = subprocess.run("gunzip -c %s | tar -tf -" % (tmp_path / "l.gz"), shell=True,
                       stdout=subprocess.PIPE, check=True, text=True)
    assert "a/big" in r.stdout.split() and "stargz.index.json" in r.stdout.split()
    stored = M.make_estargz(ents, chunk_size=100000, level=0)
    victim = stored.chunks_of("a/big")[1]
    bad = M.corrupt_chunk(stored.blob, victim["offset"])
    assert len(bad) == len(stored.blob)
    assert M.verify_estargz(bad, stored.toc_digest, check_tar=False) == [
        "a/big: chunk 100000 digest mismatch", "a/big: file digest mismatch"]


def test_proxy_counts_and_forwards():
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    import http.client
    with registry_mod.Registry() as reg, Proxy(reg.addr) as p:
        d = Path(conftest.FIXTURES / "estargz")
        pushed = push.push_layout(p.addr, str(d), "px/estargz", "edge")  # uploads through it
        layer = helpers.layout_layers(d)[1]
        p.reset()
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        for rg in ("bytes=0-99", "bytes=100-199"):
            c.request("GET", "/v2/px/estargz/blobs/" + layer["digest"], headers={"Range": rg})
            r = c.getresponse()
            assert r.status == 206 and len(r.read()) == 100
        assert p.bytes_for("/v2/px/estargz/blobs/", ranged=True) == 200
        assert len({r["conn"] for r in p.requests}) == 1  # keep-alive
        r = subprocess.run(["curl", "-sk", "https://%s/v2/" % p.addr], stderr=subprocess.PIPE)
        assert r.returncode != 0 and p.tls_hellos == 1
        assert pushed["digest"]


# ---------------------------------------------------------------------------------------------
# (a) fixtures


@pytest.mark.parametrize("name", LAZY_FIXTURES)
def test_lazy_fixture_matches_oracle(lazyroot, registry, mountpoint, name):
    mount_ok(lazyroot, registry.ref(name))
    for b in BOOKKEEPING:
        assert not os.path.lexists(mountpoint / b), "%s shows %s" % (name, b)
    assert sorted(n for n in os.listdir(mountpoint) if n in BOOKKEEPING) == []
    diffs = helpers.compare_with_oracle(mountpoint, registry.layout(name))
    assert diffs == [], "\n".join(diffs)
    s = stats(lazyroot, mountpoint)
    assert s["chunks_failed"] == 0 and s["digest"] == registry.digest(name), s
    assert lazyroot.umount().ok


# ---------------------------------------------------------------------------------------------
# (b) laziness, counted


def test_mount_fetches_only_tocs_and_one_file_little(lazyroot, lazy_images, mountpoint):
    im = lazy_images
    layers = im.big["layers"]
    total = sum(l["size"] for l in layers)
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=none")
        at_mount = not_profile_lookup(p.requests)
        for l in layers:
            reqs = p.blob_requests(l["digest"])
            assert reqs, "layer %s never touched" % l["digest"]
            whole = [r for r in reqs if not r["range"]]
            assert not whole, "whole-blob GETs of a lazy layer: %s" % whole
            toc_off = l["estargz"].toc_offset
            for r in reqs:
                first = parse_range(r["range"])[0]
                assert first >= toc_off - MiB, "mount read %s of %s (TOC at %d)" % (
                    r["range"], l["digest"], toc_off)
        mount_bytes = sum(r["bytes"] for r in p.blob_requests())
        assert mount_bytes < 0.02 * total, "mount fetched %d of %d layer bytes" % (mount_bytes, total)
        # what the mount command fetched, as stats reports it: everything the proxy answered
        # (pings, manifest, config, footers, TOCs)
        all_at_mount = sum(r["bytes"] for r in at_mount)
        # (the HTTPS probe of this loopback registry counts too: it was sent, and refused)
        all_requests = len([r for r in at_mount if r["status"]]) + p.tls_hellos

        s0 = stats(lazyroot, mountpoint)
        p.reset()
        files = im.big["files"]
        small = sorted((p_ for p_ in files if p_.startswith("/data/") and 2000 < len(files[p_]) < 20000))[0]
        assert read_file(str(mountpoint) + small) == files[small]
        s = helpers.settled(lambda: stats(lazyroot, mountpoint))
        after = p.blob_requests()
        assert after and all(r["range"] for r in after), after
        read_bytes = sum(r["bytes"] for r in after)
        assert read_bytes < 0.05 * layers[1]["size"], "reading %s (%d bytes) fetched %d" % (
            small, len(files[small]), read_bytes)
        ch = layers[1]["estargz"].chunks_of(small[1:])
        assert any(range_covers(r, ch[0]["offset"]) for r in after), (ch, after)
    # lazyroot's own count: the daemon's fetches (mount-time TOC reads may or may not be in it)
    tol = 1024 + read_bytes // 100
    lo, hi = read_bytes - tol, read_bytes + mount_bytes + tol
    fetched = s["bytes_fetched"] - s0["bytes_fetched"]
    assert lo <= fetched <= hi and lo <= s["bytes_fetched"] <= hi, (
        "stats bytes_fetched %d (delta %d), proxy saw %d for the read + %d at mount\n%s"
        % (s["bytes_fetched"], fetched, read_bytes, mount_bytes, s))
    assert s["requests"] - s0["requests"] == len(after), (s0, s, after)
    assert abs(s["pull_bytes"] - all_at_mount) <= 1024, (s, all_at_mount)
    assert s["pull_requests"] == all_requests, (s, [(r["path"], r["status"]) for r in at_mount])
    assert s["chunks_fetched"] >= 1 and s["chunks_failed"] == 0, s
    assert s["prefetch"]["total"] == 0, s


# ---------------------------------------------------------------------------------------------
# (c) a chunk that does not match its digest


def test_corrupt_chunk_is_eio_and_never_cached(lazyroot, lazy_images, mountpoint, cache_dir):
    im = lazy_images
    layer = im.corrupt["layers"][1]
    es = layer["estargz"]
    victim = sorted(n for n in es.files if 10000 < len(es.files[n]) < 200000)[0]
    ch = es.chunks_of(victim)[0]
    path = blob_storage_path(im.reg, layer["digest"])
    orig = path.read_bytes()
    bad = M.corrupt_chunk(orig, ch["offset"])
    assert len(bad) == len(orig) and bad != orig
    probs = M.verify_estargz(bad, es.toc_digest, check_tar=False)
    # the TOC is intact, only this chunk (and so its file) is bad
    assert probs and probs[0] == "%s: chunk 0 digest mismatch" % victim, probs
    assert all(x.startswith(victim + ":") for x in probs), probs
    path.write_bytes(bad)
    try:
        mount_ok(lazyroot, "%s/lazy/corrupt:latest" % im.addr, "--prefetch=none")
        for attempt in (1, 2):
            with pytest.raises(OSError) as ei:
                read_file(mountpoint / victim)
            assert ei.value.errno == errno.EIO, "attempt %d: %r" % (attempt, ei.value)
        assert ch["chunkDigest"].split(":")[1] not in blob_digests_in_store(cache_dir)
        s = stats(lazyroot, mountpoint)
        assert s["chunks_failed"] >= 1, s
        others = [p for p in im.corrupt["files"] if p != "/" + victim]
        assert check_files(mountpoint, im.corrupt["files"], others) == []
        with pytest.raises(OSError) as ei:
            read_file(mountpoint / victim)
        assert ei.value.errno == errno.EIO
        assert ch["chunkDigest"].split(":")[1] not in blob_digests_in_store(cache_dir)
    finally:
        path.write_bytes(orig)


# ---------------------------------------------------------------------------------------------
# (d) mixed formats


def test_mixed_gzip_and_estargz_layers(lazyroot, lazy_images, mountpoint):
    im = lazy_images
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/mixed:latest")
        for l in im.mixed["layers"]:
            reqs = p.blob_requests(l["digest"])
            if l["kind"] == "gzip":
                assert any(not r["range"] for r in reqs), "gzip layer not fetched whole: %s" % reqs
            else:
                assert reqs and all(r["range"] for r in reqs), reqs
        files = im.mixed["files"]
        assert check_files(mountpoint, files) == []
        entries = helpers.treewalk.walk(str(mountpoint), with_content=False)
        regs = {e.path.decode() for e in entries if e.type == "f"}
        assert regs == set(files), (sorted(regs ^ set(files)))
    for gone in ("srv/a/gone.txt", "srv/old-dir/x", "etc/hostname", "srv/a/.wh.gone.txt"):
        assert not os.path.lexists(mountpoint / gone), gone
    assert os.readlink(mountpoint / "srv/a/link") == "one.txt"
    st1, st2 = os.stat(mountpoint / "srv/a/one.txt"), os.stat(mountpoint / "srv/a/hard")
    assert st1.st_ino == st2.st_ino and st1.st_nlink == 2
    assert os.stat(mountpoint / "srv/replaced.txt").st_mode & 0o7777 == 0o600
    for b in BOOKKEEPING:
        assert not os.path.lexists(mountpoint / b)


def test_small_chunks_are_fetched_ahead(lazyroot, lazy_images, mountpoint):
    """A miss fetches the chunks that follow in the same file too (up to 2 MiB), so reading
    a file of many small chunks front to back costs one Range request, not one per read."""
    im = lazy_images
    layer = [l for l in im.mixed["layers"] if l["kind"] == "estargz"][0]  # 64 KiB chunks
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/mixed:latest", "--prefetch=none")
        p.reset()
        with open(mountpoint / "srv/multi.bin", "rb") as f:
            data = b""
            while True:
                buf = f.read(16 * 1024)   # small reads: many FUSE reads, one per chunk or less
                if not buf:
                    break
                data += buf
        assert data == im.mixed["files"]["/srv/multi.bin"]
        reqs = [r for r in p.blob_requests(layer["digest"]) if r["range"]]
        assert len(reqs) == 1, [r["range"] for r in reqs]
        # a different file is not fetched ahead into
        assert (mountpoint / "srv/a/one.txt").read_bytes() == b"one\n" * 100


READ_AROUND = 128 * 1024   # fs/ops.c READ_AROUND_BYTES


def test_read_around_brings_the_next_files_of_the_layer(lazyroot, lazy_images, mountpoint):
    """A miss that fetches a whole file also fetches the chunks that follow it in the layer
    blob, up to 128 KiB past its end, in the same request: reading the next file then costs
    no request; a file farther on still does, and no range reaches past the window."""
    im = lazy_images
    layer = im.big["layers"][1]
    es = layer["estargz"]
    files = im.big["files"]
    single = {}
    for c in es.chunks:
        single.setdefault(c["name"], []).append(c)
    order = sorted((cs[0] for cs in single.values() if len(cs) == 1 and
                    "/" + cs[0]["name"] in files), key=lambda c: c["offset"])
    pick = None
    for k in range(len(order) - 1):
        f, g = order[k], order[k + 1]
        if len(files["/" + f["name"]]) < 20000 and g["offset"] >= f["end"] and \
                g["end"] - f["end"] <= READ_AROUND // 2 and len(files["/" + g["name"]]) > 0:
            far = [h for h in order[k + 2:] if h["offset"] > f["end"] + 2 * READ_AROUND]
            if far:
                pick = (f, g, far[0])
                break
    assert pick, "no small file followed closely by another in the generated layer"
    f, g, h = pick
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=none")
        p.reset()
        assert read_file(mountpoint / f["name"]) == files["/" + f["name"]]
        first = [r for r in p.blob_requests(layer["digest"]) if r["range"]]
        assert first and any(range_covers(r, f["offset"]) for r in first), first
        assert any(range_covers(r, g["offset"]) for r in first), (
            "the next file [%d, %d) did not come along: %s" % (g["offset"], g["end"], first))
        for r in first:
            lo, hi = parse_range(r["range"])
            assert hi is not None and hi < f["end"] + READ_AROUND, (
                "range %s reaches past %s's end %d + %d" % (r["range"], f["name"], f["end"],
                                                            READ_AROUND))
        assert read_file(mountpoint / g["name"]) == files["/" + g["name"]]
        assert len([r for r in p.blob_requests(layer["digest"]) if r["range"]]) == len(first), (
            "reading the next file cost a request: %s" % p.blob_requests(layer["digest"]))
        assert read_file(mountpoint / h["name"]) == files["/" + h["name"]]
        later = [r for r in p.blob_requests(layer["digest"]) if r["range"]][len(first):]
        assert any(range_covers(r, h["offset"]) for r in later), later
    s = stats(lazyroot, mountpoint)
    assert s["chunks_failed"] == 0, s


def blob_order_singles(es, files):
    """The single-chunk regular files of eStargz layer @es, in blob order."""
    by_name = {}
    for c in es.chunks:
        by_name.setdefault(c["name"], []).append(c)
    return sorted((cs[0] for cs in by_name.values() if len(cs) == 1 and
                   "/" + cs[0]["name"] in files), key=lambda c: c["offset"])


def test_read_around_stays_off_on_a_slow_link(lazyroot, lazy_images, mountpoint):
    """Read-around carries what the link moves in one round trip: on a link of 100 kB/s with
    a 20 ms round trip that is 2 kB, too little to bother, so once the daemon has measured the
    link a miss fetches only its own file and a file 64-124 KiB on (which the full 128 KiB
    window of a fast link would bring) costs its own request. The round trip the daemon
    measures includes the proxy's and the registry's time, which a loaded machine stretches:
    the check holds for any measured round trip under 0.65 s (64 KiB at 100 kB/s)."""
    im = lazy_images
    layer = im.big["layers"][1]
    files = im.big["files"]
    order = blob_order_singles(layer["estargz"], files)
    # w: 40-80 kB, alone in its window (the next chunk ends past w + 128 KiB): teaches the
    # daemon the link's rate and round trip without fetching anything along
    w = next(c for k, c in enumerate(order[:-1]) if 40000 <= c["end"] - c["offset"] <= 80000
             and order[k + 1]["end"] > c["end"] + READ_AROUND)
    # f: small, followed by g ending 64-124 KiB past f: a 128 KiB window would bring g along
    f, g = next((a, b) for k, a in enumerate(order) for b in order[k + 1:]
                if a is not w and b is not w and a["end"] - a["offset"] < 20000 and
                b["offset"] >= a["end"] and
                READ_AROUND // 2 < b["end"] - a["end"] <= READ_AROUND - 4096)
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=none")
        p.set_fault(lambda req: Fault.pace(100000, latency=0.02) if req["range"] else None)
        p.reset()
        assert read_file(mountpoint / w["name"]) == files["/" + w["name"]]
        assert read_file(mountpoint / f["name"]) == files["/" + f["name"]]
        reqs = [r for r in p.blob_requests(layer["digest"]) if r["range"]]
        assert not any(range_covers(r, g["offset"]) for r in reqs), (
            "on a slow link the next file [%d, %d) came along: %s" % (g["offset"], g["end"],
                                                                     reqs))
        assert read_file(mountpoint / g["name"]) == files["/" + g["name"]]
        later = [r for r in p.blob_requests(layer["digest"]) if r["range"]][len(reqs):]
        assert any(range_covers(r, g["offset"]) for r in later), later


def test_daemon_reuses_the_scheme_the_mount_found(lazyroot, lazy_images, mountpoint):
    """The mount found that the (loopback) registry speaks plain HTTP; the daemon's clients
    start from that instead of probing HTTPS again, which would cost the first read a round
    trip."""
    im = lazy_images
    layer = im.big["layers"][1]
    name = sorted(layer["estargz"].files)[0]
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=none")
        probes = p.tls_hellos
        assert probes >= 1, "the mount did not probe HTTPS first"
        assert (mountpoint / name).read_bytes() == layer["estargz"].files[name]
        assert p.tls_hellos == probes, "the daemon probed HTTPS again"


# ---------------------------------------------------------------------------------------------
# (e) single flight


def test_concurrent_readers_fetch_each_chunk_once(lazyroot, lazy_images, mountpoint):
    im = lazy_images
    layer = im.big["layers"][1]
    es = layer["estargz"]
    name = max(es.files, key=lambda n: len(es.files[n]))
    chunks = es.chunks_of(name)
    assert len(chunks) >= 2
    slow = lambda req: Fault.delay(0.5) if req["range"] and layer["digest"] in req["path"] else None  # noqa
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=none")
        p.reset()
        p.set_fault(slow)
        path = str(mountpoint / name)
        procs = [subprocess.Popen(["sha256sum", path], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [pr.communicate(timeout=120) for pr in procs]
        want = hashlib.sha256(es.files[name]).hexdigest()
        for pr, (out, err) in zip(procs, outs):
            assert pr.returncode == 0 and out.split()[0] == want, (out, err)
        reqs = p.blob_requests(layer["digest"])
    for c in chunks:
        n = len([r for r in reqs if range_covers(r, c["offset"])])
        assert n == 1, "chunk at %d of %s requested %d times: %s" % (
            c["offset"], name, n, [r["range"] for r in reqs])


# ---------------------------------------------------------------------------------------------
# (f) prefetch


def test_prefetch_all_then_offline(lazyroot, lazy_images, mountpoint):
    im = lazy_images
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=all")
        s = wait_prefetch(lazyroot, mountpoint)
        n_chunks = sum(len(l["estargz"].chunks) for l in im.big["layers"])
        assert s["prefetch"]["total"] >= n_chunks - 2, (s, n_chunks)  # landmark may not count
    # the proxy is gone (listener and connections closed): only the cache can answer now
    assert check_files(mountpoint, im.big["files"]) == []
    s2 = stats(lazyroot, mountpoint)
    assert s2["chunks_failed"] == 0 and s2["bytes_fetched"] == s["bytes_fetched"], (s, s2)


def test_prefetch_progress_moves_while_a_batch_streams(lazyroot, registry, mountpoint):
    """`done` counts each chunk as it is stored, not each batch (up to 1024 chunks) once all of
    it is in: a progress bar or a script watching stats sees the prefetch move on a slow link.
    The estargz fixture's 2049 small chunks fill two batches: it used to jump 0 -> 1072 ->
    2049."""
    with Proxy(registry.addr) as p:
        # 1 MB/s: the fixture's 3.4 MB of layers take about 3 s
        p.set_fault(lambda req: Fault.pace(1e6) if req["range"] else None)
        mount_ok(lazyroot, p.addr + "/fixtures/estargz:edge", "--prefetch=all")
        seen = set()
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pf = stats(lazyroot, mountpoint)["prefetch"]
            if pf["total"] and pf["done"] == pf["total"] and not pf["running"]:
                break
            seen.add(pf["done"])
            time.sleep(0.05)
    assert pf["done"] == pf["total"] and not pf["running"], pf
    moving = sorted(d for d in seen if 0 < d < pf["total"])
    assert len(moving) >= 8, "progress seen while the prefetch ran (of %d): %s" % (
        pf["total"], sorted(seen))


def test_prefetch_landmark_by_default(lazyroot, lazy_images, mountpoint, cache_dir):
    im = lazy_images
    es = im.landmark["layers"][1]["estargz"]
    pre = set(im.prefetch_names)
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/landmark:latest")
        s = wait_prefetch(lazyroot, mountpoint)
        n_pre = sum(len(es.chunks_of(n)) for n in pre)
        assert s["prefetch"]["total"] >= n_pre, (s, n_pre)
        reqs = p.blob_requests(im.landmark["layers"][1]["digest"])
    stored = blob_digests_in_store(cache_dir)
    pre_digests = {c["chunkDigest"] for n in pre for c in es.chunks_of(n)}
    for n in sorted(es.files):
        for c in es.chunks_of(n):
            hexd = c["chunkDigest"].split(":")[1]
            if n in pre:
                assert hexd in stored, "prefetch file %s chunk %d not fetched" % (n, c["chunkOffset"])
                assert any(range_covers(r, c["offset"]) for r in reqs), n
            elif c["chunkDigest"] not in pre_digests:
                assert hexd not in stored, "%s (after the landmark) was fetched" % n
    assert s["chunks_failed"] == 0, s
    # offline now: the prefetched files read from the cache
    assert check_files(mountpoint, im.landmark["files"], sorted("/" + n for n in pre)) == []


# ---------------------------------------------------------------------------------------------
# (g) zstd:chunked


@pytest.mark.parametrize("name", ZSTD_FIXTURES)
def test_zstd_chunked_lazy_and_busybox_only(lazyroot, registry, mountpoint, name):
    lay = registry.layout(name)
    layers = helpers.layout_layers(lay)
    total = sum(l["size"] for l in layers)
    repo = registry.pushed[name]["repo"]
    with Proxy(registry.addr) as p:
        mount_ok(lazyroot, "%s/%s:edge" % (p.addr, repo), "--prefetch=none")
        for l in layers:
            assert all(r["range"] for r in p.blob_requests(l["digest"])), p.blob_requests(l["digest"])
        at_mount = sum(r["bytes"] for r in p.blob_requests())
        assert at_mount < 0.05 * total, "mount fetched %d of %d" % (at_mount, total)
        p.reset()
        data = read_file(mountpoint / "bin/busybox")
        reqs = p.blob_requests()
    tree = {ln.split("\t")[0]: ln.split("\t") for ln in helpers.oracle_lines(lay, "tree")}
    assert hashlib.sha256(data).hexdigest() == tree["/bin/busybox"][6]
    l1 = layers[0]
    blob = helpers.layout_blob(lay, l1["digest"]).read_bytes()
    toc, toc_off = zstd_chunked_toc(blob)
    start, end = file_extent(toc, toc_off, "bin/busybox")
    assert reqs and all(r["path"].endswith(l1["digest"]) for r in reqs), reqs
    # busybox's chunks, and its neighbours up to READ_AROUND past its end (read-around)
    for r in reqs:
        first, last = parse_range(r["range"])
        assert start <= first and (last or 0) < end + READ_AROUND, (
            "range %s outside busybox [%d, %d) + %d" % (r["range"], start, end, READ_AROUND))
    got = sum(r["bytes"] for r in reqs)
    assert got <= end - start + READ_AROUND, (got, start, end)


# ---------------------------------------------------------------------------------------------
# (h) nspawn


def test_nspawn_on_lazy_estargz(lazyroot, lazy_images, mountpoint):
    im = lazy_images
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=none", "--volatile")
        r = lh.nspawn(mountpoint, "/bin/busybox true && cat /etc/os-release >/dev/null && echo ok-lazy")
        assert r.ok and "ok-lazy" in r.stdout, str(r)
        fetched = p.bytes_for("/v2/lazy/big/blobs/", ranged=True)
    assert fetched < 0.2 * sum(l["size"] for l in im.big["layers"]), fetched
    assert lazyroot.umount().ok


def test_slow_fetch_does_not_block_cached_reads(lazyroot, lazy_images, mountpoint):
    """While one reader waits on a slow fetch, reads of files already in the cache go on: each
    of them is done while the slow reader still waits (the fetch blocks only the readers that
    need its bytes)."""
    im = lazy_images
    layer = im.big["layers"][1]
    es = layer["estargz"]
    names = sorted(es.files, key=lambda n: len(es.files[n]))
    cached, slow_one = names[len(names) // 2], names[-1]
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=none")
        assert (mountpoint / cached).read_bytes() == es.files[cached]
        p.set_fault(lambda req: Fault.delay(6) if req["range"] and layer["digest"] in req["path"]
                    else None)
        t0 = time.monotonic()
        slow = subprocess.Popen(["cat", str(mountpoint / slow_one)], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            assert slow.poll() is None, "the slow fetch was not slow"
            for _ in range(5):
                fd = os.open(str(mountpoint / cached), os.O_RDONLY)
                try:
                    # drop the page cache of this file only, so the read reaches lazyroot
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    t1 = time.monotonic()
                    data = b""
                    while True:
                        buf = os.read(fd, 1 << 20)
                        if not buf:
                            break
                        data += buf
                    took = time.monotonic() - t1
                finally:
                    os.close(fd)
                assert data == es.files[cached]
                # ordering, not a time bound: the read is done while the slow one still waits
                assert slow.poll() is None, "the cached read (%.2fs) waited for the slow fetch" % took
        finally:
            assert slow.wait(timeout=120) == 0
        assert time.monotonic() - t0 >= 5.5
        st = stats(lazyroot, mountpoint)
        assert st["chunks_cached"] >= 5, st


def test_stats_counts_the_request_on_the_wire(lazyroot, lazy_images, mountpoint):
    """`stats` shows a Range request while it is answered (requests_running) and counts it in
    requests once it is: what tests and scripts wait on to tell a quiet mount from one whose
    fetch-ahead still streams."""
    im = lazy_images
    layer = im.big["layers"][1]
    es = layer["estargz"]
    name = sorted(es.files, key=lambda n: len(es.files[n]))[-1]
    with Proxy(im.addr) as p:
        mount_ok(lazyroot, p.addr + "/lazy/big:latest", "--prefetch=none")
        before = stats(lazyroot, mountpoint)
        assert before["requests_running"] == 0, before
        p.set_fault(lambda req: Fault.delay(3) if req["range"] and layer["digest"] in req["path"]
                    else None)
        reader = subprocess.Popen(["cat", str(mountpoint / name)], stdout=subprocess.DEVNULL)
        try:
            seen = []
            assert conftest.wait_until(
                lambda: seen.append(stats(lazyroot, mountpoint)) or
                seen[-1]["requests_running"] >= 1, 20, 0.05), seen[-1:]
            assert seen[-1]["requests"] == before["requests"], seen[-1]
        finally:
            assert reader.wait(timeout=120) == 0
        after = helpers.settled(lambda: stats(lazyroot, mountpoint))
        assert after["requests_running"] == 0 and after["requests"] > before["requests"], after
        assert "running" not in lazyroot.run("stats", str(mountpoint)).stdout
    assert lazyroot.umount().ok


def test_toc_that_fails_verification_is_refused(lazyroot, registry, test_dir, mountpoint,
                                                 cache_dir):
    """An eStargz layer whose TOC does not hash to the manifest's toc.digest annotation: the
    mount fails with exit 3 and one line, nothing is mounted and the layer is not indexed."""
    import shutil
    src = test_dir / "good"
    info = M.build_layout(str(src), [("gzip", M.base_entries()),
                                     ("estargz", M.large_entries(10**5, 5, seed=5, top="v"))])
    bad = test_dir / "bad"
    shutil.copytree(src, bad)
    blobs = bad / "blobs" / "sha256"
    index = json.loads((bad / "index.json").read_text())
    mdesc = index["manifests"][0]
    manifest = json.loads((blobs / mdesc["digest"].split(":")[1]).read_bytes())
    lazy = [l for l in manifest["layers"] if "annotations" in l][0]
    toc_digest = lazy["annotations"]["containerd.io/snapshot/stargz/toc.digest"]
    lazy["annotations"]["containerd.io/snapshot/stargz/toc.digest"] = "sha256:" + "ab" * 32
    data = json.dumps(manifest).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.split(":")[1]).write_bytes(data)
    mdesc.update(digest=digest, size=len(data))
    (bad / "index.json").write_text(json.dumps(index))
    ref = push.push_layout(registry.addr, str(bad), "lazy/bad-toc", "latest")["ref"]

    before = helpers.lazyroot_mounts()
    r = lazyroot.mount(ref, mountpoint)
    line = helpers.assert_clean_failure(r, 3, ["toc", lazy["digest"][:19]], test_dir, before,
                                        related=(registry.addr, ref), mnt=mountpoint)
    assert line == ("lazyroot: cannot pull '%s': Bad message: layer %s (estargz): TOC failed "
                    "verification: it hashes to %s, the annotation says sha256:%s"
                    % (ref, lazy["digest"], toc_digest, "ab" * 32)), line
    assert not helpers.sqlite(cache_dir / "index.db", "SELECT 1 FROM layers WHERE digest = ?",
                              (lazy["digest"],))
    assert info["layers"][1]["kind"] == "estargz"


def test_stats_human_output(lazyroot, registry, mountpoint):
    """`lazyroot stats DIR` without --json: one line per figure, with what the registry side
    counted (at the proxy) for the mount and for an on-demand read."""
    with Proxy(registry.addr) as p:
        ref = "%s/%s:edge" % (p.addr, registry.pushed["estargz"]["repo"])
        mount_ok(lazyroot, ref, "--prefetch=none")
        at_mount = not_profile_lookup(p.requests)
        print("DBG", lazyroot.run("umount", str(mountpoint)).ok, lazyroot.run("mount", "-v", "--cache-dir", str(lazyroot.cache_dir) + "2", "--prefetch=none", ref, str(mountpoint)).stderr)
        p.reset()
        read_file(mountpoint / "bin/busybox")
        js = helpers.settled(lambda: stats(lazyroot, mountpoint))
        ranged = [r for r in p.requests if r["range"]]
        r = lazyroot.run("stats", str(mountpoint))
    assert r.ok, str(r)
    lines = dict(ln.split(":", 1) for ln in r.stdout.splitlines())
    lines = {k: v.strip() for k, v in lines.items()}
    assert lines["mountpoint"] == str(mountpoint) and lines["image"] == ref, r.stdout
    assert lines["digest"] == registry.digest("estargz"), r.stdout
    # bytes exactly; requests at least those the proxy answered: lazyroot also counts its
    # HTTPS attempt on the loopback registry, which fails in the TLS handshake and never
    # becomes an HTTP request (then it speaks plain HTTP)
    m = re.match(r"(\d+) bytes in (\d+) requests \(manifest, config, TOCs, whole layers\)$",
                 lines["fetched at mount"])
    assert m and int(m.group(1)) == sum(q["bytes"] for q in at_mount) and \
        int(m.group(2)) >= len(at_mount), (r.stdout, at_mount)
    assert lines["fetched on demand"] == "%d bytes in %d requests" % (
        sum(q["bytes"] for q in ranged), len(ranged)), (r.stdout, ranged)
    assert lines["chunks"] == ("%d fetched, %d served from the cache, 0 failed, 0 fetched "
                               "again after wrong bytes") % (
        js["chunks_fetched"], js["chunks_cached"]) and js["chunks_fetched"] > 0, r.stdout
    assert lines["prefetch"] == "0/0 chunks", r.stdout
    assert lazyroot.umount().ok
