"""Seek indexes from elsewhere (untrusted) prove themselves as they are read (docs/security.md,
"Seek indexes"): an honest one serves the tree; one that lies (wrong offsets, an invented or
renamed file, a changed mode, a window replaced or a sparse one that leaves out bytes the
stream uses, each with chunk digests to match, another layer's)
never makes a read return bytes that are not the file's, is dropped, and the layer is then
read whole and served right."""

import hashlib
import os
import sqlite3

import pytest

import helpers
from helpers import compare_with_oracle, index_then_forget_layers, sqlite
from seek_lies import Index, raw_inflate_from, sha, tar_stream, used
from test_seek_index import _biggest_layer, _blob_path, _layer_digests, _stats

NAME = "oci-gzip"


def _oracle(layout):
    """{path: sha256} of the regular files the layer stack really has."""
    with open(os.path.join(layout, "expected-tree.tsv")) as f:
        rows = [l.rstrip("\n").split("\t") for l in f][1:]
    return {r[0]: r[6] for r in rows if r[1] == "f"}


def _read(mnt, path):
    """The file's bytes, or None when the read fails with EIO."""
    try:
        with open(os.path.join(str(mnt), path.lstrip("/")), "rb") as f:
            return f.read()
    except OSError as e:
        assert e.errno == 5, (path, e)
        return None


def _check_read(mnt, path, oracle):
    """Reads @path: it fails, or it gives exactly the bytes the image has at that path."""
    data = _read(mnt, path)
    if data is not None:
        assert path in oracle, "%s: a file the image does not have was served" % path
        assert hashlib.sha256(data).hexdigest() == oracle[path], "%s: wrong bytes served" % path
    return data is not None


def _walk_files(mnt):
    for d, _, names in os.walk(str(mnt)):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                yield "/" + os.path.relpath(p, str(mnt))


def _set_index(lazyroot, layer, data):
    """Keeps @data as the untrusted index of @layer (as one fetched from a registry is)."""
    db = str(lazyroot.cache_dir / "index.db")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob_path(lazyroot.cache_dir, digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    con = sqlite3.connect(db, timeout=10)
    with con:
        con.execute("UPDATE seek_indexes SET digest = ?, trusted = 0 WHERE layer = ?",
                    (digest, layer))
    con.close()


def _kept_index(lazyroot, layer):
    db = str(lazyroot.cache_dir / "index.db")
    (digest,) = sqlite(db, "SELECT digest FROM seek_indexes WHERE layer = ?", (layer,))[0]
    with open(_blob_path(lazyroot.cache_dir, digest), "rb") as f:
        return f.read()


def _layer_blob(layout, layer):
    with open(os.path.join(layout, "blobs", "sha256", layer[7:]), "rb") as f:
        return f.read()


def test_honest_untrusted_index_serves_the_tree(lazyroot, registry, mountpoint):
    ref, layout = registry.ref(NAME), registry.layout(NAME)
    index_then_forget_layers(lazyroot, ref)
    helpers.untrust_seek_indexes(lazyroot.cache_dir)
    oracle = _oracle(layout)
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        # The end of the biggest file first: its first chunk (and tar header) is read first.
        big = max(oracle, key=lambda p: os.path.getsize(str(mountpoint) + p))
        with open(str(mountpoint) + big, "rb") as f:
            f.seek(os.path.getsize(str(mountpoint) + big) - 4096)
            assert len(f.read()) == 4096
        for p in sorted(oracle):
            assert _check_read(mountpoint, p, oracle), "%s: an honest index failed a read" % p
        s = _stats(lazyroot, mountpoint)
        assert s["chunks_failed"] == 0, s
        assert set(l["served"] for l in s["layers"]) == {"gzip-index"}, s
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok
    db = str(lazyroot.cache_dir / "index.db")
    assert sqlite(db, "SELECT count(*) FROM seek_indexes WHERE trusted = 0")[0][0] == \
        len(_layer_digests(layout))


# ---------------------------------------------------------------------------------------------
# lies: each returns (the index, the paths to read first)


def _pick_file(ix, tar, one_chunk=True):
    """A regular file of a few KiB, one chunk, data not at a checkpoint's span start."""
    for i, size, off, first, n in ix.files():
        if (n == 1) == one_chunk and 1024 <= size <= 65536 and not ix.path(i).startswith(".wh"):
            return i, size, off, first, n
    raise AssertionError("no file fits")


def _lie_renamed(ix, blob, tar):
    i, *_ = _pick_file(ix, tar)
    old = ix.path(i)
    new = old[:-1] + ("x" if old[-1] != "x" else "y")
    ix.set_path(i, new)
    return ["/" + new]


def _lie_mode(ix, blob, tar):
    i, *_ = _pick_file(ix, tar)
    ix.set_u32(i, 4, ix.u32(i, 4) ^ 0o4111)   # setuid and executable
    return ["/" + ix.path(i)]


def _lie_offsets(ix, blob, tar):
    """A file's data 512 bytes off (further on where the gap to the next file allows, else
    earlier, over its own header), its chunk digest that of the real bytes there: the chunk
    verifies, only its tar header can tell."""
    files = ix.files()
    for k, (i, size, off, first, n) in enumerate(files[:-1]):
        c = ix.chunks[first]
        span = ix.span_of(c[0])
        span_start = ix.cps[span][1]
        span_end = ix.cps[span + 1][1] if span + 1 < len(ix.cps) else ix.tar_size
        prev_end = -(-(files[k - 1][2] + files[k - 1][1]) // 512) * 512 if k > 0 else 0
        if n != 1 or size < 1024:
            continue
        for new in (off + 512, off - 512):
            if new > off and new + size > min(files[k + 1][2] - 512, span_end):
                continue
            if new < off and new < max(prev_end, span_start):
                continue
            ix.set_u64(i, 44, new)
            c[0] = new
            c[2] = ix.chunks[first + 1][2] if first + 1 < len(ix.chunks) else ix.blob_size
            c[3] = sha(tar[new:new + size])
            return ["/" + ix.path(i)]
    raise AssertionError("no file fits")


def _lie_invented(ix, blob, tar):
    """A file of several chunks cut in two: its tail shown as a new file, real layer bytes
    under a name the layer does not have."""
    for i, size, off, first, n in ix.files():
        if n >= 2:
            break
    else:
        raise AssertionError("no file of several chunks")
    head = ix.chunks[first][1]
    rec = bytearray(ix.entries[i])
    ix.entries.insert(i + 1, rec)
    ix.set_u64(i, 28, head)
    ix.set_u32(i, 80, 1)
    j = i + 1
    ix.set_path(j, "invented")
    ix.set_u64(j, 28, size - head)
    ix.set_u64(j, 44, ix.chunks[first + 1][0])
    ix.set_u32(j, 76, first + 1)
    ix.set_u32(j, 80, n - 1)
    return ["/invented", "/" + ix.path(i)]


def _recompute_span(ix, blob, k):
    """Every chunk of checkpoint @k's span given the digest of what it inflates to with the
    window the index now has: each chunk verifies against the index."""
    uoff, end = ix.cps[k][1], ix.cps[k + 1][1]
    out = raw_inflate_from(blob, ix.cps[k], ix.window_bytes(k), end - uoff)
    changed = []
    for c in ix.chunks:
        if uoff <= c[0] < end:
            d = sha(out[c[0] - uoff:c[0] - uoff + c[1]])
            if d != c[3]:
                changed.append(c)
            c[3] = d
    assert changed, "the changed window changes no chunk: the lie would be no lie"


def _big_window(ix, sparse_only=False):
    """A checkpoint with a window of some size at a byte boundary: raw_inflate_from() shifts
    the stream for bits, which moves the byte alignment stored blocks rely on."""
    for k in range(1, len(ix.cps) - 1):
        mask, off, n = ix.window(k)
        if (not ix.cps[k][3] & 1 and ix.cps[k][2] == 0 and n >= 512 and
                (mask is not None or not sparse_only)):
            return k
    raise AssertionError("no checkpoint with a window")


def _lie_window(ix, blob, tar):
    """A checkpoint's window replaced (the bytes a sparse one keeps), with the span's chunk
    digests recomputed to match it."""
    k = _big_window(ix)
    mask, off, n = ix.window(k)
    for j in range(n):
        if used(mask, j):
            ix.windows[off + j] ^= 0x5a
    _recompute_span(ix, blob, k)
    # Read in stream order, as a tar of the tree would: every file is read.
    return [None]


def _lie_left_out(ix, blob, tar):
    """A sparse window that leaves out bytes its stream uses (marked unused, stored 0), with
    the span's chunk digests recomputed to match: the used bytes it keeps are all true, so
    only the shadow decoder that checks the unused ones (seek_trust.c) can catch it."""
    k = _big_window(ix, sparse_only=True)
    mask, off, n = ix.window(k)
    mask_off = off - len(mask)
    dropped = 0
    for j in range(1, n):
        if used(mask, j) and ix.windows[off + j] != 0 and dropped < 64:
            ix.windows[mask_off + j // 8] &= ~(1 << (j % 8)) & 0xff
            ix.windows[off + j] = 0
            dropped += 1
    _recompute_span(ix, blob, k)
    return [None]


def _lie_renamed_across(ix, blob, tar):
    """A file across a checkpoint renamed: its later chunks, in the next span, inflate and may
    be stored before its first one (fetched ahead), and must still not be served under the
    new name (seek_trust.c)."""
    i = next(f[0] for f in ix.files() if f[4] > 1 and not ix.path(f[0]).startswith(".wh"))
    old = ix.path(i)
    new = old[:-1] + ("x" if old[-1] != "x" else "y")
    ix.set_path(i, new)
    return ["/" + new]


LIES = {"renamed": _lie_renamed, "mode": _lie_mode, "offsets": _lie_offsets,
        "invented": _lie_invented, "window": _lie_window, "renamed-across": _lie_renamed_across,
        "left-out": _lie_left_out}


def _stream_order(ix):
    return ["/" + ix.path(i) for i, *_ in sorted(ix.files(), key=lambda f: f[2])]


@pytest.mark.parametrize("lie", sorted(LIES))
def test_lying_index_serves_no_wrong_byte_and_is_dropped(lazyroot, registry, mountpoint, lie):
    ref, layout = registry.ref(NAME), registry.layout(NAME)
    layer = _biggest_layer(layout)
    index_then_forget_layers(lazyroot, ref)
    blob = _layer_blob(layout, layer)
    tar = tar_stream(blob)
    ix = Index(_kept_index(lazyroot, layer))
    first = LIES[lie](ix, blob, tar)
    _set_index(lazyroot, layer, ix.serialize())
    oracle = _oracle(layout)
    db = str(lazyroot.cache_dir / "index.db")

    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert {l["digest"]: l["served"] for l in s["layers"]}[layer] == "gzip-index", s
        failed = []
        for p in [p for p in first if p] or _stream_order(ix):
            q = str(mountpoint) + p
            if os.path.islink(q) or not os.path.isfile(q):
                continue   # hidden or replaced by an upper layer
            if not _check_read(mountpoint, p, oracle):
                failed.append(p)
        assert failed, "the lie was read without a failure"
        for p in _walk_files(mountpoint):
            _check_read(mountpoint, p, oracle)
    finally:
        assert lazyroot.umount(mountpoint).ok
    assert sqlite(db, "SELECT count(*) FROM seek_indexes WHERE layer = ?", (layer,))[0][0] == 0

    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert {l["digest"]: l["served"] for l in s["layers"]}[layer] == "eager", s
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok


def _stored_elsewhere(lazyroot, layout, layer, oracle):
    """A one-chunk file of another layer of the image, visible at its path: (path, size,
    chunk digest); reading it through the mount stores its chunk."""
    for other in _layer_digests(layout):
        if other == layer:
            continue
        ox = Index(_kept_index(lazyroot, other))
        for i, size, off, first, n in ox.files():
            path, digest = "/" + ox.path(i), ox.chunks[first][3]
            if n == 1 and size >= 8 and oracle.get(path) == digest.hex():
                return path, size, digest
    raise AssertionError("no file of another layer fits")


def test_stored_chunk_of_another_layer_is_not_served_unproven(lazyroot, registry, mountpoint):
    """The blob store is keyed by digest: an untrusted index that names, under a new path, a
    chunk the cache already holds from another layer must not get those bytes served without
    the file's tar records proven from this layer (docs/security.md, "Seek indexes")."""
    ref, layout = registry.ref(NAME), registry.layout(NAME)
    layer = _biggest_layer(layout)
    index_then_forget_layers(lazyroot, ref)
    oracle = _oracle(layout)
    theirs, size, digest = _stored_elsewhere(lazyroot, layout, layer, oracle)
    ix = Index(_kept_index(lazyroot, layer))
    for i, xsize, off, first, n in ix.files():
        if n == 1 and xsize >= size and not ix.path(i).startswith(".wh"):
            break
    else:
        raise AssertionError("no file of the layer fits")
    # This layer's file, renamed, shown with the other layer's chunk (its size and digest).
    ix.set_path(i, "stolen")
    ix.set_u64(i, 28, size)
    ix.chunks[first][1] = size
    ix.chunks[first][3] = digest
    _set_index(lazyroot, layer, ix.serialize())
    db = str(lazyroot.cache_dir / "index.db")

    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        assert _check_read(mountpoint, theirs, oracle), theirs   # its chunk is stored now
        assert os.path.getsize(str(mountpoint) + "/stolen") == size
        assert _read(mountpoint, "/stolen") is None, "another layer's bytes were served"
        assert _check_read(mountpoint, theirs, oracle), theirs   # the honest layer still is
    finally:
        assert lazyroot.umount(mountpoint).ok
    assert sqlite(db, "SELECT count(*) FROM seek_indexes WHERE layer = ?", (layer,))[0][0] == 0

    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        assert not os.path.exists(str(mountpoint) + "/stolen")
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_honest_stored_files_are_proven_again_in_each_mount(lazyroot, registry, mountpoint):
    """With every chunk stored by an earlier mount, an honest untrusted index still serves the
    whole tree: each file's first read proves its records again from the layer (requests)."""
    ref, layout = registry.ref(NAME), registry.layout(NAME)
    index_then_forget_layers(lazyroot, ref)
    helpers.untrust_seek_indexes(lazyroot.cache_dir)
    oracle = _oracle(layout)
    for mount in range(2):
        r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
        assert r.ok, str(r)
        try:
            for p in sorted(oracle):
                assert _check_read(mountpoint, p, oracle), "%s: an honest index failed" % p
            s = _stats(lazyroot, mountpoint)
            assert s["requests"] > 0, s
            assert set(l["served"] for l in s["layers"]) == {"gzip-index"}, s
        finally:
            assert lazyroot.umount(mountpoint).ok


def test_index_of_another_layer_is_refused(lazyroot, registry, mountpoint):
    ref, layout = registry.ref(NAME), registry.layout(NAME)
    layers = _layer_digests(layout)
    big = _biggest_layer(layout)
    other = next(l for l in layers if l != big)
    index_then_forget_layers(lazyroot, ref)
    planted = _kept_index(lazyroot, other)
    _set_index(lazyroot, big, planted)
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert {l["digest"]: l["served"] for l in s["layers"]}[big] == "eager", s
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok
    # dropped: what the layer has now is the index its eager pull built (seek-index-on-pull)
    db = str(lazyroot.cache_dir / "index.db")
    rows = sqlite(db, "SELECT digest, trusted FROM seek_indexes WHERE layer = ?", (big,))
    planted_digest = "sha256:" + hashlib.sha256(planted).hexdigest()
    assert all(d != planted_digest and t == 1 for d, t in rows), rows


# ---------------------------------------------------------------------------------------------
# prewarm reads a layer whole once its chunks are in, and settles its index


@pytest.mark.parametrize("kind", ["same", "other-builder"])
def test_prewarm_settles_an_untrusted_index(lazyroot, registry, mountpoint, kind):
    """prewarm completes a layer read through an index from elsewhere, then streams it whole
    (digest and diff_id verified) and builds its index: the same index becomes trusted; a
    different one (here: written with another span) is replaced by the one built here."""
    ref, layout = registry.ref(NAME), registry.layout(NAME)
    layer = _biggest_layer(layout)
    index_then_forget_layers(lazyroot, ref)
    honest = _kept_index(lazyroot, layer)
    helpers.untrust_seek_indexes(lazyroot.cache_dir)
    if kind == "other-builder":
        ix = Index(honest)
        ix.span *= 2
        _set_index(lazyroot, layer, ix.serialize())
    db = str(lazyroot.cache_dir / "index.db")
    r = lazyroot.run("prewarm", "--cache-dir", str(lazyroot.cache_dir), ref, timeout=300)
    assert r.ok, str(r)
    out = r.stdout + r.stderr
    rows = sqlite(db, "SELECT digest, trusted FROM seek_indexes WHERE layer = ?", (layer,))
    assert rows and rows[0][1] == 1, rows
    assert rows[0][0] == "sha256:" + hashlib.sha256(honest).hexdigest(), rows
    if kind == "same":
        assert "seek index of layer '%s' verified" % layer in out, out
    else:
        assert "seek index of layer '%s' is not the one the layer gives" % layer in out, out
    # every layer is trusted now, and a mount serves the whole tree from the store
    assert sqlite(db, "SELECT count(*) FROM seek_indexes WHERE trusted = 0")[0][0] == 0
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert set(l["served"] for l in s["layers"]) == {"gzip-index"}, s
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
        oracle = _oracle(layout)
        for p in sorted(oracle):
            assert _check_read(mountpoint, p, oracle), p
        s = _stats(lazyroot, mountpoint)
        assert s["requests"] == 0, s
    finally:
        assert lazyroot.umount(mountpoint).ok
