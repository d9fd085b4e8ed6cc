"""Reading gzip layers through their seek index costs about one download of each layer: a chunk
is inflated from its span's checkpoint, so a request for it carries every compressed byte of
the span before it, and the fetcher takes the span's other chunks out of that same request
(span_expand() in cache/fetch.c) instead of leaving them to requests that fetch the span's
start again.

The image: one gzip layer of many small files of part-random text (spans of 512 KiB, each
with more chunks than a read's read-around takes), in an archive order that is not the order
of the tree, so that a walk of the tree jumps between spans. The bytes the registry sent are
counted by tests/tools/proxy.py."""

import concurrent.futures
import hashlib
import json
import os
import random

import pytest

import helpers
import hostile
import mkdemo
import push
from helpers import index_then_forget_layers, sqlite
from proxy import Fault, Proxy

FILES = 3000
DIRS = 40
SEEK_SPAN = 512 << 10   # cache/format/seek_index.h's SEEK_SPAN_DEFAULT
REPO = "seekread/img"
# A full read may fetch a little more than the layer: requests merge gaps, and each span is
# read from its checkpoint, where the bits of a deflate block start one byte early.
MAX_FETCHED = 1.1
# Racing readers: a request fetches its span only up to what its readers need (and a round
# trip's worth more), and a later request goes on from its inflate cursor; but a reader whose
# chunks another request passed over while it waited for that request (their flights were its
# own) starts again from the checkpoint.  Before cursors were kept, every request took its
# whole span (1.0x here, 24% more bytes than needed for a python start).
MAX_FETCHED_RACING = 1.25


def _content(rnd, i):
    """Text that compresses about 2:1, 1-6 KiB, different per file."""
    n = rnd.randint(1024, 6 * 1024)
    return (b"file %d\n" % i + rnd.randbytes(n // 2).hex().encode())[:n]


@pytest.fixture(scope="module")
def image(registry, tmp_path_factory):
    rnd = random.Random(16)
    files = {"d%02d/f%04d" % (i % DIRS, i): _content(rnd, i) for i in range(FILES)}
    names = list(files)
    rnd.shuffle(names)   # the archive's order is not the tree's
    tar = b"".join(hostile.member("d%02d/" % d, typ=b"5", mode=0o755) for d in range(DIRS))
    tar += b"".join(hostile.member(n, files[n]) for n in names) + hostile.end()
    layout = tmp_path_factory.mktemp("seek-read") / "layout"
    (desc,) = hostile.write_layout(layout, [(mkdemo.MT_LAYER_GZIP, mkdemo.gzip_bytes(tar))])
    pushed = push.push_layout(registry.addr, str(layout), REPO, "latest")
    return {"repo": pushed["repo"], "layer": desc, "tar_size": len(tar), "order": names,
            "tar": tar,
            "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}


def _index_only(lazyroot, ref):
    """The image's seek index in the cache, and none of its layers' contents."""
    index_then_forget_layers(lazyroot, ref)
    db = str(lazyroot.cache_dir / "index.db")
    assert sqlite(db, "SELECT count(*) FROM seek_indexes")[0][0] == 1


def _read(mnt, name):
    with open(os.path.join(str(mnt), name), "rb") as f:
        return name, hashlib.sha256(f.read()).hexdigest()


def _layer_bytes(p, image):
    return p.bytes_for("/v2/%s/blobs/%s" % (REPO, image["layer"]["digest"]), method="GET")


def _mount_and_read(lazyroot, registry, image, read_all):
    ref = "%s/%s:latest" % (registry.addr, REPO)
    _index_only(lazyroot, ref)
    with Proxy(registry.addr) as p:
        r = lazyroot.mount("%s/%s:latest" % (p.addr, REPO), None, "--prefetch=none")
        assert r.ok, str(r)
        try:
            p.reset()
            got = read_all(lazyroot.mountpoint, sorted(image["files"]))
            fetched = _layer_bytes(p, image)
            ranged = p.count("/v2/%s/blobs/" % REPO, method="GET", ranged=True)
        finally:
            assert lazyroot.umount().ok
    assert got == image["files"]
    return fetched, ranged


def test_walk_fetches_each_span_once(lazyroot, registry, image):
    """A walk of the tree in its own order (as tar or cp do) fetches about the layer once."""
    def walk(mnt, names):
        return dict(_read(mnt, n) for n in names)

    fetched, ranged = _mount_and_read(lazyroot, registry, image, walk)
    size = image["layer"]["size"]
    assert fetched <= MAX_FETCHED * size, (fetched, size, ranged)


def test_racing_readers_fetch_each_span_once(lazyroot, registry, image):
    """Eight readers at once, each on its own files of every span: a span being fetched for
    one of them is not fetched again for the others."""
    def race(mnt, names):
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            return dict(ex.map(lambda n: _read(mnt, n), names))

    fetched, ranged = _mount_and_read(lazyroot, registry, image, race)
    size = image["layer"]["size"]
    assert fetched <= MAX_FETCHED_RACING * size, (fetched, size, ranged)


@pytest.mark.parametrize("jobs", [1, 4])
def test_prewarm_fetches_each_span_once(lazyroot, registry, image, jobs):
    """prewarm's workers cut their batches where they like, spans included: the worker that
    takes a span's first chunks fetches the span, the others wait for it."""
    ref = "%s/%s:latest" % (registry.addr, REPO)
    _index_only(lazyroot, ref)
    with Proxy(registry.addr) as p:
        r = lazyroot.run("prewarm", "--cache-dir", str(lazyroot.cache_dir), "--jobs", str(jobs),
                         "%s/%s:latest" % (p.addr, REPO), timeout=300)
        assert r.ok, str(r)
        fetched = _layer_bytes(p, image)
    size = image["layer"]["size"]
    assert fetched <= MAX_FETCHED * size, (fetched, size)
    # and it is all there: a mount reads every file without a request
    with Proxy(registry.addr) as p:
        r = lazyroot.mount("%s/%s:latest" % (p.addr, REPO), None, "--prefetch=none")
        assert r.ok, str(r)
        try:
            p.reset()
            got = dict(_read(lazyroot.mountpoint, n) for n in sorted(image["files"]))
            assert _layer_bytes(p, image) == 0
        finally:
            assert lazyroot.umount().ok
    assert got == image["files"]


def test_prewarm_progress_counts_each_span_once(lazyroot, registry, image):
    """prewarm's progress bar (on a terminal) counts a span's compressed bytes once, not once
    per chunk inflated from it: its total is the layer's size, not ~500 times it."""
    import pty
    import re
    import subprocess
    ref = "%s/%s:latest" % (registry.addr, REPO)
    _index_only(lazyroot, ref)
    master, slave = pty.openpty()
    env = lazyroot._env(None)
    p = subprocess.Popen([str(lazyroot.binary), "prewarm", "--cache-dir", str(lazyroot.cache_dir),
                          ref], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:   # EIO: the other end closed
            break
        if not data:
            break
        out += data
    os.close(master)
    assert p.wait(timeout=300) == 0, out[-2000:]
    totals = [float(t) for t in re.findall(rb"[\d.]+/([\d.]+) MiB", out)]
    assert totals, out[-2000:]
    size_mib = image["layer"]["size"] / (1 << 20)
    assert max(totals) <= MAX_FETCHED * size_mib + 0.1, (max(totals), size_mib)


BLACK_HOLE_TIMEOUT = 6


def test_black_hole_readers_of_one_span_fail_within_one_timeout(lazyroot, registry, image):
    """Two readers of files far apart in one span while the registry answers nothing: the
    second one's request waits for the first one's (to go on from its inflate cursor), but
    neither read takes more than one --timeout to fail; once the registry is back both read
    right, on the same mount."""
    import threading
    import time
    ref = "%s/%s:latest" % (registry.addr, REPO)
    _index_only(lazyroot, ref)
    # both in the first span, far more than a round trip's bytes apart
    first_span = _first_span_files(image)
    near, far = first_span[len(first_span) // 5], first_span[len(first_span) * 4 // 5]
    with Proxy(registry.addr) as p:
        r = lazyroot.mount("%s/%s:latest" % (p.addr, REPO), None, "--prefetch=none",
                           "--timeout=%d" % BLACK_HOLE_TIMEOUT)
        assert r.ok, str(r)
        try:
            p.black_hole = True
            out = {}

            def read(name):
                t0 = time.monotonic()
                try:
                    _read(lazyroot.mountpoint, name)
                    out[name] = (None, time.monotonic() - t0)
                except OSError as e:
                    out[name] = (e.errno, time.monotonic() - t0)
            threads = [threading.Thread(target=read, args=(n,)) for n in (near, far)]
            for t in threads:
                t.start()
                time.sleep(0.3)
            for t in threads:
                t.join(4 * BLACK_HOLE_TIMEOUT)
            # The second reader waited for the first one's request (to go on from its cursor):
            # still one timeout.  The first one's file fits in one page: the kernel asks for
            # that page again inside the same read(2) after the EIO, which fails at once too.
            for name in (near, far):
                err, took = out[name]
                assert err == 5 and took < BLACK_HOLE_TIMEOUT + 4, (name, out)
            p.black_hole = False
            p.release()
            assert dict(_read(lazyroot.mountpoint, n) for n in (near, far)) == \
                {n: image["files"][n] for n in (near, far)}
        finally:
            assert lazyroot.umount().ok


# ---------------------------------------------------------------------------------------------
# A sequential read (tar, cp -a) of a layer read through an untrusted index, as one fetched
# from a registry is: files in archive order, a few big ones crossing checkpoints.

SEQ_REPO = "seekread/seq"
SEQ_SMALL = 800
SEQ_BIG = (9, 250, 520, 777)   # after these small files, one of 2.5-3.5 MiB
# A sequential read takes whole spans ahead (seq_window_advance() in cache/fetch.c) and keeps a
# file's chunks inflated before its first one was (seek_trust.c): about one request per span.
# Before, every miss fetched what a round trip moves past it (nothing, on this link) and the
# chunks of a big file in the span after its first were fetched again from that span's
# checkpoint: 1.2x the layer, ~1 request per file.
SEQ_MAX_FETCHED = 1.05
SEQ_REQUESTS_PER_SPAN = 3


@pytest.fixture(scope="module")
def seq_image(registry, tmp_path_factory):
    rnd = random.Random(17)
    files = {}
    for i in range(SEQ_SMALL):
        files["s/f%04d" % i] = _content(rnd, i)
        if i in SEQ_BIG:
            n = rnd.randint(5 << 19, 7 << 19)
            files["s/f%04db" % i] = rnd.randbytes(n // 2).hex().encode()[:n]
    names = sorted(files)   # the archive's order is the tree's: a walk reads it in order
    tar = hostile.member("s/", typ=b"5", mode=0o755)
    tar += b"".join(hostile.member(n, files[n]) for n in names) + hostile.end()
    layout = tmp_path_factory.mktemp("seek-seq") / "layout"
    (desc,) = hostile.write_layout(layout, [(mkdemo.MT_LAYER_GZIP, mkdemo.gzip_bytes(tar))])
    pushed = push.push_layout(registry.addr, str(layout), SEQ_REPO, "latest")
    return {"repo": pushed["repo"], "layer": desc, "order": names,
            "spans": len(tar) // SEEK_SPAN + 1,
            "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}


def test_sequential_read_of_untrusted_index_fetches_each_span_once(lazyroot, registry,
                                                                    seq_image):
    """Every file read one after another in archive order, through an index kept untrusted:
    about the layer's bytes, in about one request per span, and every byte right."""
    ref = "%s/%s:latest" % (registry.addr, SEQ_REPO)
    _index_only(lazyroot, ref)
    helpers.untrust_seek_indexes(lazyroot.cache_dir)
    with Proxy(registry.addr) as p:
        r = lazyroot.mount("%s/%s:latest" % (p.addr, SEQ_REPO), None, "--prefetch=none")
        assert r.ok, str(r)
        try:
            p.reset()
            got = dict(_read(lazyroot.mountpoint, n) for n in seq_image["order"])
            blob = "/v2/%s/blobs/%s" % (SEQ_REPO, seq_image["layer"]["digest"])
            fetched = p.bytes_for(blob, method="GET")
            ranged = p.count(blob, method="GET", ranged=True)
            st = json.loads(lazyroot.run("stats", "--json", str(lazyroot.mountpoint)).stdout)
        finally:
            assert lazyroot.umount().ok
    assert got == seq_image["files"]
    assert [l.get("served") for l in st["layers"]] == ["gzip-index"], st["layers"]
    spans = seq_image["spans"]
    size = seq_image["layer"]["size"]
    assert fetched <= SEQ_MAX_FETCHED * size, (fetched, size, ranged, spans)
    assert ranged <= SEQ_REQUESTS_PER_SPAN * spans, (ranged, spans, fetched, size)


# What a miss in a seek span takes along past the chunks it needs (FETCH_SEEK_AHEAD_MAX in
# cache/fetch.h): the inflate cursor is kept, so more saves a round trip only to a read that
# falls inside it.  It was fs/read_path.c's read-around window (128 KiB) and then that window
# again past the read-around chunks (cache/fetch.c's span_expand()): up to 256 KiB a miss.
SEEK_AHEAD = 32 * 1024


def _index_chunks(lazyroot):
    """(uncompressed offset, compressed end) of every chunk of the cached seek index, parsed
    as docs/formats.md ("Seek indexes", version 2) says."""
    import struct
    import zlib
    db = str(lazyroot.cache_dir / "index.db")
    ((digest,),) = sqlite(db, "SELECT digest FROM seek_indexes")
    hexd = digest.split(":")[1]
    with open(lazyroot.cache_dir / "blobs" / "sha256" / hexd[:2] / hexd, "rb") as f:
        data = f.read()
    assert data[:8] == b"LZRSEEKI" and struct.unpack("<I", data[8:12])[0] == 2
    (body_len,) = struct.unpack("<Q", data[16:24])
    body = zlib.decompress(data[24:24 + body_len])
    n_cps, n_entries, n_xattrs, n_chunks = struct.unpack("<4I", body[52:68])
    at = 80 + 32 * n_cps + 116 * n_entries + 16 * n_xattrs
    return {struct.unpack("<Q", body[at + 56 * i:at + 56 * i + 8])[0]:
            struct.unpack("<Q", body[at + 56 * i + 16:at + 56 * i + 24])[0]
            for i in range(n_chunks)}


def _first_span_files(image):
    """The files whose data lies in the layer's first span, short of its last 64 KiB, in
    archive order."""
    offsets = _data_offsets(image["tar"])
    return [n for n in image["order"] if offsets[n] < SEEK_SPAN - (64 << 10)]


def _data_offsets(tar):
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name: m.offset_data for m in t.getmembers() if m.isfile()}


def test_a_miss_takes_one_round_trip_of_bytes_along(lazyroot, registry, image, tmp_path):
    """One small file read from a fresh mount: the request runs from its span's checkpoint
    to its chunk's compressed end and at most SEEK_AHEAD more, on a link whose round trip
    carries far more than that (the proxy paces blobs to 20 MB/s after 20 ms: 400 KB). Each
    of the files read (in the first span, short of its end) needs a request of its own (what
    came along with the one before did not reach it)."""
    ref = "%s/%s:latest" % (registry.addr, REPO)
    _index_only(lazyroot, ref)
    cend = _index_chunks(lazyroot)
    offsets = _data_offsets(image["tar"])
    # far enough apart that the second is no sequential read (seq_window_advance() in
    # cache/fetch.c: within two of its 64 KiB windows past the first, it would take more)
    first_span = _first_span_files(image)
    names = [first_span[len(first_span) // 20], first_span[len(first_span) * 19 // 20]]
    with Proxy(registry.addr) as p:
        p.set_fault(lambda req: Fault.pace(20 << 20, latency=0.02)
                    if "/blobs/" in req["path"] else None)
        r = lazyroot.mount("%s/%s:latest" % (p.addr, REPO), None, "--prefetch=none")
        assert r.ok, str(r)
        try:
            p.reset()
            before = 0
            for name in names:
                assert _read(lazyroot.mountpoint, name) == (name, image["files"][name])
                end = cend[offsets[name]]
                fetched = _layer_bytes(p, image)
                # the request resumes from where the last one stopped (its cursor), so the
                # layer's bytes fetched so far run from the checkpoint (0) to this one's end
                assert end <= fetched <= end + SEEK_AHEAD + 1024, (name, end, fetched, before)
                before = fetched
            ranged = p.count("/v2/%s/blobs/" % REPO, method="GET", ranged=True)
        finally:
            assert lazyroot.umount().ok
    assert ranged == len(names), ranged
