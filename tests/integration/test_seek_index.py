"""Seek indexes of tar+gzip layers (docs/formats.md, "Seek indexes"): `lazyroot index` builds
them, a later mount reads the gzip layers lazily from them, and the tree is the reference
unpacker's; reading a file fetches only around it, and every byte is checked."""

import json
import os
import sqlite3

import pytest

from helpers import compare_with_oracle, index_then_forget_layers, settled, sqlite

# Every fixture with tar+gzip layers (estargz's are gzip too, but read lazily from their TOC),
# with its platforms: (name, --platform, oracle suffix).
GZIP_FIXTURES = [("oci-gzip", None, ""), ("docker-v2s2-gzip", None, ""),
                 ("multiarch", "linux/amd64", ""), ("multiarch", "linux/arm64/v8", ".linux-arm64")]


def _stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, str(r)
    return json.loads(r.stdout)


@pytest.mark.parametrize("name,platform,suffix", GZIP_FIXTURES,
                         ids=["%s-%s" % (c[0], c[1] or "host") for c in GZIP_FIXTURES])
def test_indexed_mount_matches_oracle(lazyroot, registry, mountpoint, name, platform, suffix):
    ref = registry.ref(name)
    extra = ("--platform", platform) if platform else ()
    index_then_forget_layers(lazyroot, ref, *extra)
    r = lazyroot.mount(ref, mountpoint, *extra)
    assert r.ok, str(r)
    try:
        db = str(lazyroot.cache_dir / "index.db")
        formats = {f for (f,) in sqlite(db, "SELECT format FROM layers")}
        assert formats == {"gzip-index"}, formats
        s = _stats(lazyroot, mountpoint)
        assert s["bytes_fetched"] == 0, s
        assert [l["served"] for l in s["layers"]] == ["gzip-index"] * len(s["layers"]), s
        assert len(s["layers"]) > 0
        diffs = compare_with_oracle(mountpoint, registry.layout(name), suffix)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_indexed_reads_fetch_only_what_is_read(lazyroot, registry, mountpoint):
    ref = registry.ref("oci-gzip")
    layout = registry.layout("oci-gzip")
    blobs = sum(os.path.getsize(os.path.join(layout, "blobs", "sha256", d[7:]))
                for d in _layer_digests(layout))
    index_then_forget_layers(lazyroot, ref)
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        files = sorted(p for p in _regular_files(mountpoint) if os.path.getsize(p) > 0)
        one = files[len(files) // 2]
        with open(one, "rb") as f:
            f.read()
        # the read returns with its own chunks; the rest of their span may still stream
        s = settled(lambda: _stats(lazyroot, mountpoint))
        assert 0 < s["bytes_fetched"] < blobs, (s, blobs)
        # Everything reads, with the bytes the eager import of the same layout gives.
        for p in files:
            with open(p, "rb") as f:
                f.read()
        s = _stats(lazyroot, mountpoint)
        assert s["chunks_failed"] == 0, s
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok


def _layer_digests(layout):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    digest = index["manifests"][0]["digest"]
    with open(os.path.join(layout, "blobs", "sha256", digest[7:])) as f:
        manifest = json.load(f)
    return [l["digest"] for l in manifest["layers"]]


def _regular_files(root):
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                yield p


def test_full_pull_builds_the_index_on_the_way(lazyroot, registry, mountpoint, test_dir):
    """With seek-index-on-pull (the default), an eager mount of an unindexed gzip image keeps
    the seek indexes (no extra download), and says how its layers are served; with `= no`,
    none."""
    ref = registry.ref("docker-v2s2-gzip")
    db = str(lazyroot.cache_dir / "index.db")
    conf = test_dir / "lazyroot.conf"
    conf.write_text("seek-index-on-pull = no\n")
    r = lazyroot.mount(ref, mountpoint, env={"LAZYROOT_CONFIG": str(conf)})
    assert r.ok, str(r)
    assert lazyroot.umount(mountpoint).ok
    assert sqlite(db, "SELECT count(*) FROM seek_indexes")[0][0] == 0
    assert lazyroot.run("rm", "--cache-dir", str(lazyroot.cache_dir), ref).ok
    conf.write_text("seek-index-on-pull = yes\n")
    r = lazyroot.mount(ref, mountpoint, env={"LAZYROOT_CONFIG": str(conf)})
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert [l["served"] for l in s["layers"]] == ["eager"] * len(s["layers"]), s
        assert s["pull_bytes"] > 0
    finally:
        assert lazyroot.umount(mountpoint).ok
    layers = _layer_digests(registry.layout("docker-v2s2-gzip"))
    kept = {l for (l,) in sqlite(db, "SELECT layer FROM seek_indexes WHERE trusted = 1")}
    assert kept == set(layers), (kept, layers)


# ---------------------------------------------------------------------------------------------
# indexes that lie


def _blob_path(cache, digest):
    return os.path.join(str(cache), "blobs", "sha256", digest[7:9], digest[7:])


def _replace_index(lazyroot, layer, make):
    """Writes make(body) as the index of @layer, under its own digest, untrusted (as an index
    from a registry would be kept); returns the new digest."""
    import hashlib
    import struct
    import zlib
    db = str(lazyroot.cache_dir / "index.db")
    (old,) = sqlite(db, "SELECT digest FROM seek_indexes WHERE layer = ?", (layer,))[0]
    with open(_blob_path(lazyroot.cache_dir, old), "rb") as f:
        data = f.read()
    body = bytearray(zlib.decompress(data[24:]))
    data = make(data, body)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.dirname(_blob_path(lazyroot.cache_dir, digest)), exist_ok=True)
    with open(_blob_path(lazyroot.cache_dir, digest), "wb") as f:
        f.write(data)
    con = sqlite3.connect(db, timeout=10)
    with con:
        con.execute("UPDATE seek_indexes SET digest = ?, trusted = 0 WHERE layer = ?",
                    (digest, layer))
    con.close()
    return digest


def _wrap(data, body):
    import zlib
    return data[:24] + zlib.compress(bytes(body))


def _wrong_bits(data, body):
    """Every checkpoint but the first starts at a wrong bit offset: the index still parses."""
    n_cps = int.from_bytes(body[52:56], "little")
    for i in range(1, n_cps):
        off = 80 + 32 * i + 16
        body[off] = (body[off] + 3) % 8 or 1
    return _wrap(data, body)


def _biggest_layer(layout):
    digests = _layer_digests(layout)
    return max(digests, key=lambda d: os.path.getsize(os.path.join(layout, "blobs", "sha256", d[7:])))


def _read_all(mnt, layout):
    """{path: ok} for every regular file of the oracle: a read either fails or gives the
    oracle's bytes."""
    import hashlib
    out = {}
    with open(os.path.join(layout, "expected-tree.tsv")) as f:
        rows = [l.rstrip("\n").split("\t") for l in f][1:]
    for path, kind, _, _, _, size, sha, *_ in rows:
        if kind != "f":
            continue
        try:
            with open(os.path.join(str(mnt), path.lstrip("/")), "rb") as f:
                data = f.read()
        except OSError as e:
            assert e.errno == 5, (path, e)   # EIO
            out[path] = False
            continue
        assert hashlib.sha256(data).hexdigest() == sha, "%s: wrong bytes served" % path
        out[path] = True
    return out


def test_lying_index_never_serves_wrong_bytes_and_is_dropped(lazyroot, registry, mountpoint):
    name = "oci-gzip"
    ref, layout = registry.ref(name), registry.layout(name)
    layer = _biggest_layer(layout)
    index_then_forget_layers(lazyroot, ref)
    _replace_index(lazyroot, layer, _wrong_bits)
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    db = str(lazyroot.cache_dir / "index.db")
    try:
        read = _read_all(mountpoint, layout)
        assert not all(read.values()), "no read hit a lying checkpoint"
        s = _stats(lazyroot, mountpoint)
        assert s["chunks_failed"] > 0, s
    finally:
        assert lazyroot.umount(mountpoint).ok
    # Dropped: the next mount reads that layer whole, and the tree is the reference's.
    assert sqlite(db, "SELECT count(*) FROM seek_indexes WHERE layer = ?", (layer,))[0][0] == 0
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        served = {l["digest"]: l["served"] for l in s["layers"]}
        assert served[layer] == "eager", served
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok


@pytest.mark.parametrize("damage", ["truncated", "invented-file", "escaping-path"])
def test_malformed_index_is_refused_at_pull(lazyroot, registry, mountpoint, damage):
    name = "oci-gzip"
    ref, layout = registry.ref(name), registry.layout(name)
    layer = _biggest_layer(layout)
    index_then_forget_layers(lazyroot, ref)

    def make(data, body):
        if damage == "truncated":
            return data[:len(data) // 2]
        n_cps = int.from_bytes(body[52:56], "little")
        entries = 80 + 32 * n_cps
        if damage == "invented-file":
            # one entry more than the tables hold: a file the layer does not have
            body[56:60] = (int.from_bytes(body[56:60], "little") + 1).to_bytes(4, "little")
        else:
            n_entries = int.from_bytes(body[56:60], "little")
            n_x = int.from_bytes(body[60:64], "little")
            n_ch = int.from_bytes(body[64:68], "little")
            strings = entries + 116 * n_entries + 16 * n_x + 56 * n_ch
            first = entries + 116   # the second entry's path
            off = int.from_bytes(body[first + 52:first + 56], "little")
            body[strings + off:strings + off + 3] = b"../"
        return _wrap(data, body)

    _replace_index(lazyroot, layer, make)
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        served = {l["digest"]: l["served"] for l in s["layers"]}
        assert served[layer] == "eager", served
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok
    db = str(lazyroot.cache_dir / "index.db")
    # the refused index is gone: the layer read whole left its own (seek-index-on-pull)
    rows = sqlite(db, "SELECT digest, trusted FROM seek_indexes WHERE layer = ?", (layer,))
    assert len(rows) == 1 and rows[0][1] == 1, rows


def test_prewarm_completes_an_indexed_layer(lazyroot, registry, mountpoint):
    """prewarm fetches every chunk of a layer read through its seek index: a mount after it
    reads the whole tree without a request."""
    name = "oci-gzip"
    ref, layout = registry.ref(name), registry.layout(name)
    index_then_forget_layers(lazyroot, ref)
    r = lazyroot.run("prewarm", "--cache-dir", str(lazyroot.cache_dir), ref, timeout=120)
    assert r.ok, str(r)
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert set(l["served"] for l in s["layers"]) == {"gzip-index"}, s
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
        assert all(_read_all(mountpoint, layout).values())
        s = _stats(lazyroot, mountpoint)
        assert s["requests"] == 0 and s["bytes_fetched"] == 0, s
        assert s["chunks_cached"] > 0, s
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_index_replaces_an_untrusted_index(lazyroot, registry):
    """`lazyroot index` reads a layer whose index came from elsewhere and keeps its own."""
    name = "oci-gzip"
    ref, layout = registry.ref(name), registry.layout(name)
    layer = _biggest_layer(layout)
    index_then_forget_layers(lazyroot, ref)
    untrusted = _replace_index(lazyroot, layer, _wrong_bits)
    r = lazyroot.run("index", "--cache-dir", str(lazyroot.cache_dir), ref, timeout=120)
    assert r.ok, str(r)
    db = str(lazyroot.cache_dir / "index.db")
    rows = sqlite(db, "SELECT digest, trusted FROM seek_indexes WHERE layer = ?", (layer,))
    assert len(rows) == 1 and rows[0][1] == 1 and rows[0][0] != untrusted, rows
    # the layer's entries come from the new index: every file reads right
    mnt = lazyroot.mountpoint
    r = lazyroot.mount(ref, mnt, "--prefetch=none")
    assert r.ok, str(r)
    try:
        assert all(_read_all(mnt, layout).values())
        diffs = compare_with_oracle(mnt, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mnt).ok


def _docker_archive_gzip(layout, out):
    """A `docker save` archive in the legacy layout (<id>/layer.tar) whose layers are the
    layout's gzip blobs as they are: lazyroot tells their compression by their first bytes
    (docs/registries.md), so they are gzip layers that can have seek indexes."""
    import tarfile
    blobs = os.path.join(str(layout), "blobs", "sha256")
    with open(os.path.join(str(layout), "index.json")) as f:
        digest = json.load(f)["manifests"][0]["digest"]
    with open(os.path.join(blobs, digest[7:])) as f:
        manifest = json.load(f)
    config = manifest["config"]["digest"][7:]
    names = ["%s/layer.tar" % l["digest"][7:] for l in manifest["layers"]]
    with tarfile.open(str(out), "w") as t:
        t.add(os.path.join(blobs, config), arcname=config + ".json")
        for l, name in zip(manifest["layers"], names):
            t.add(os.path.join(blobs, l["digest"][7:]), arcname=name)
        doc = json.dumps([{"Config": config + ".json", "RepoTags": ["fixtures/x:edge"],
                           "Layers": names}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(doc)
        import io
        t.addfile(info, io.BytesIO(doc))
    return out


@pytest.mark.parametrize("transport", ["oci", "oci-archive", "docker-archive"])
def test_local_images_mount_from_their_index(lazyroot, test_dir, mountpoint, transport):
    """A local layout or archive keeps its seek indexes in the cache and mounts from them, read
    in place by offset."""
    import subprocess
    import conftest
    layout = conftest.FIXTURES / "oci-gzip"
    if transport == "oci":
        ref = "oci:%s:edge" % layout
    elif transport == "oci-archive":
        archive = test_dir / "x.tar"
        subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
        ref = "oci-archive:%s:edge" % archive
    else:
        ref = "docker-archive:%s" % _docker_archive_gzip(layout, test_dir / "d.tar")
    index_then_forget_layers(lazyroot, ref)
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert set(l["served"] for l in s["layers"]) == {"gzip-index"}, s
        assert all(_read_all(mountpoint, str(layout)).values())
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok
