"""Seek indexes in the cache's life cycle (docs/formats.md, "Seek indexes"; lazyroot(1) gc, rm,
fsck, images): an index belongs to its layer and goes with the last image that uses the layer
(rm, gc's eviction), gc drops indexes of layers no image uses, fsck reads every index the
database names and repairs rows whose index is missing or unreadable, `images` counts them, a
full pull keeps them by default (seek-index-on-pull), and --pull=never mounts a layer from its
cached index but refuses a layer that has neither rows nor index."""

import json
import os
import sqlite3

from helpers import blob_files, compare_with_oracle, sqlite

OCI, DOCKER = "oci-gzip", "docker-v2s2-gzip"   # two images with the same three gzip layers


def _db(lazyroot):
    return str(lazyroot.cache_dir / "index.db")


def _run(lazyroot, *args, ok=True):
    r = lazyroot.run(*args[:1], "--cache-dir", str(lazyroot.cache_dir), *args[1:], timeout=120)
    assert r.ok == ok, str(r)
    return r


def _seek_rows(lazyroot):
    return dict(sqlite(_db(lazyroot), "SELECT layer, digest FROM seek_indexes"))


def _blob_rel(digest):
    return "sha256/%s/%s" % (digest[7:9], digest[7:])


def _layers(layout):
    with open(os.path.join(str(layout), "index.json")) as f:
        digest = json.load(f)["manifests"][0]["digest"]
    with open(os.path.join(str(layout), "blobs", "sha256", digest[7:])) as f:
        return [l["digest"] for l in json.load(f)["layers"]]


def _images(lazyroot):
    return json.loads(_run(lazyroot, "images", "--json").stdout)


def _forget_layer_rows(lazyroot):
    """The cache a mount sees when it has the seek indexes of an image but never imported its
    layers (an index found elsewhere): the layer rows go, gc removes their file blobs."""
    con = sqlite3.connect(_db(lazyroot), timeout=10)
    with con:
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("DELETE FROM layers")
    con.close()
    _run(lazyroot, "gc")


def _stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, str(r)
    return json.loads(r.stdout)


def test_rm_removes_an_index_with_the_last_image_that_uses_its_layer(lazyroot, registry):
    """rm of one of two images sharing the layers keeps the indexes; rm of the other removes
    rows and blobs.  `images` counts the indexes in the image's cached bytes."""
    _run(lazyroot, "index", registry.ref(OCI))
    rows = _seek_rows(lazyroot)
    assert set(rows) == set(_layers(registry.layout(OCI))), rows
    assert all(_blob_rel(d) in blob_files(lazyroot.cache_dir) for d in rows.values())
    (img,) = _images(lazyroot)
    sizes = [os.path.getsize(lazyroot.cache_dir / "blobs" / _blob_rel(d)) for d in rows.values()]
    assert img["seek_index_bytes"] >= sum(sizes) > 0, (img, sizes)
    assert img["cached_bytes"] > img["seek_index_bytes"], img

    assert lazyroot.mount(registry.ref(DOCKER)).ok
    assert lazyroot.umount().ok
    _run(lazyroot, "rm", registry.ref(OCI))
    assert _seek_rows(lazyroot) == rows, "an index went while an image still uses its layer"
    _run(lazyroot, "rm", registry.ref(DOCKER))
    assert _seek_rows(lazyroot) == {}
    left = blob_files(lazyroot.cache_dir)
    assert not [d for d in rows.values() if _blob_rel(d) in left], left


def test_gc_drops_indexes_of_layers_no_image_uses(lazyroot, registry):
    """An index whose layer no image uses (left by an older lazyroot's rm, or fetched for a
    pull that failed) goes at the next gc, with its blob; eviction takes an image's indexes."""
    _run(lazyroot, "index", registry.ref(OCI))
    rows = _seek_rows(lazyroot)
    # what an older rm left: the image forgotten, its layers' indexes kept
    con = sqlite3.connect(_db(lazyroot), timeout=10)
    with con:
        con.execute("DELETE FROM refs")
        con.execute("DELETE FROM images")
    con.close()
    r = _run(lazyroot, "gc")
    assert "3 unused layers, 3 unused seek indexes" in r.stdout, r.stdout
    assert _seek_rows(lazyroot) == {}
    assert not [d for d in rows.values() if _blob_rel(d) in blob_files(lazyroot.cache_dir)]

    # eviction down to a size: the evicted image's indexes go too
    _run(lazyroot, "index", registry.ref(OCI))
    assert _seek_rows(lazyroot) == rows
    r = _run(lazyroot, "gc", "--max-size=1")
    assert "evicted %s" % registry.digest(OCI) in r.stdout, r.stdout
    assert _seek_rows(lazyroot) == {}
    assert not [d for d in rows.values() if _blob_rel(d) in blob_files(lazyroot.cache_dir)]


def _damage(lazyroot, layer, how):
    digest = _seek_rows(lazyroot)[layer]
    path = lazyroot.cache_dir / "blobs" / _blob_rel(digest)
    if how == "missing":
        path.unlink()
    else:
        # a well-named blob that is not an index of this layer: what a bad disk or a bug
        # leaves; stored under its own digest so that only the parse can tell
        import hashlib
        data = path.read_bytes()[:100]
        new = "sha256:" + hashlib.sha256(data).hexdigest()
        dst = lazyroot.cache_dir / "blobs" / _blob_rel(new)
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(data)
        con = sqlite3.connect(_db(lazyroot), timeout=10)
        with con:
            con.execute("UPDATE seek_indexes SET digest = ? WHERE layer = ?", (new, layer))
        con.close()
        digest = new
    return digest


def test_fsck_repairs_seek_indexes_it_cannot_read(lazyroot, registry, mountpoint):
    """fsck reads every index the database names: a missing one and one that does not parse
    are reported (exit status non-zero), --repair forgets them and the layers indexed from
    them, and the image mounts again (read whole where the index went), tree intact."""
    ref, layout = registry.ref(OCI), registry.layout(OCI)
    _run(lazyroot, "index", ref)
    _forget_layer_rows(lazyroot)
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")      # indexed from the indexes
    assert r.ok, str(r)
    assert lazyroot.umount(mountpoint).ok
    assert {f for (f,) in sqlite(_db(lazyroot), "SELECT format FROM layers")} == {"gzip-index"}
    assert "clean" in _run(lazyroot, "fsck").stdout

    missing, bad = _layers(layout)[0], _layers(layout)[2]
    d_missing = _damage(lazyroot, missing, "missing")
    d_bad = _damage(lazyroot, bad, "unparsable")
    r = _run(lazyroot, "fsck", ok=False)
    assert r.returncode != 0
    assert "seek index %s of layer %s is missing" % (d_missing, missing) in r.stdout, r.stdout
    assert "seek index %s of layer %s does not parse" % (d_bad, bad) in r.stdout, r.stdout

    r = _run(lazyroot, "fsck", "--repair")
    assert "is missing: dropped" in r.stdout and "does not parse: dropped" in r.stdout, r.stdout
    assert set(_seek_rows(lazyroot)) == set(_layers(layout)) - {missing, bad}
    assert "clean" in _run(lazyroot, "fsck").stdout, "one --repair run is not enough"
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        served = {l["digest"]: l["served"] for l in _stats(lazyroot, mountpoint)["layers"]}
        assert served[missing] == served[bad] == "eager", served
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_fsck_repairs_a_layer_whose_index_row_went(lazyroot, registry, mountpoint):
    """A layer indexed from a seek index that has no row any more cannot be mounted: fsck says
    so and --repair drops it, so that the next pull imports it."""
    ref, layout = registry.ref(OCI), registry.layout(OCI)
    _run(lazyroot, "index", ref)
    _forget_layer_rows(lazyroot)
    assert lazyroot.mount(ref, mountpoint, "--prefetch=none").ok
    assert lazyroot.umount(mountpoint).ok
    layer = _layers(layout)[1]
    con = sqlite3.connect(_db(lazyroot), timeout=10)
    with con:
        con.execute("DELETE FROM seek_indexes WHERE layer = ?", (layer,))
    con.close()
    r = _run(lazyroot, "fsck", ok=False)
    assert "layer %s is indexed from a seek index the cache does not have" % layer in r.stdout
    _run(lazyroot, "fsck", "--repair")
    assert "clean" in _run(lazyroot, "fsck").stdout
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_pull_never_mounts_from_cached_indexes_and_refuses_a_layer_without(
        lazyroot, registry, mountpoint):
    """--pull=never means no pull: a gzip layer whose index is cached is indexed from it (as an
    eStargz layer from its TOC: its reads fetch chunks); a layer with neither rows nor an index
    is refused with one line naming it, nothing mounted."""
    ref, layout = registry.ref(OCI), registry.layout(OCI)
    _run(lazyroot, "index", ref)
    _forget_layer_rows(lazyroot)
    r = lazyroot.mount(ref, mountpoint, "--pull=never", "--prefetch=none")
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert {l["served"] for l in s["layers"]} == {"gzip-index"}, s
        assert s["pull_bytes"] == 0, s
        diffs = compare_with_oracle(mountpoint, layout)
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok

    _forget_layer_rows(lazyroot)
    layer = _layers(layout)[2]
    con = sqlite3.connect(_db(lazyroot), timeout=10)
    with con:
        con.execute("DELETE FROM seek_indexes WHERE layer = ?", (layer,))
    con.close()
    r = lazyroot.mount(ref, mountpoint, "--pull=never")
    assert r.returncode == 3, str(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "layer '%s' is not in the cache and pulling is disabled" % layer \
        in lines[0], r.stderr
    assert not os.path.ismount(str(mountpoint))


def test_full_pull_keeps_the_index_by_default(lazyroot, registry, mountpoint, test_dir):
    """seek-index-on-pull is yes unless the configuration file says no: an eager mount of an
    unindexed gzip image keeps trusted indexes of its layers, with no extra download."""
    ref, layout = registry.ref(DOCKER), registry.layout(DOCKER)
    conf = test_dir / "lazyroot.conf"
    conf.write_text("seek-index-on-pull = no\n")
    r = lazyroot.mount(ref, mountpoint, env={"LAZYROOT_CONFIG": str(conf)})
    assert r.ok, str(r)
    plain = _stats(lazyroot, mountpoint)["pull_bytes"]
    assert lazyroot.umount(mountpoint).ok
    assert _seek_rows(lazyroot) == {}
    _run(lazyroot, "rm", ref)

    conf.write_text("# nothing about seek indexes\n")
    r = lazyroot.mount(ref, mountpoint, env={"LAZYROOT_CONFIG": str(conf)})
    assert r.ok, str(r)
    try:
        s = _stats(lazyroot, mountpoint)
        assert [l["served"] for l in s["layers"]] == ["eager"] * len(s["layers"]), s
        assert s["pull_bytes"] == plain, (s, plain)
    finally:
        assert lazyroot.umount(mountpoint).ok
    trusted = {l for (l,) in sqlite(_db(lazyroot),
                                    "SELECT layer FROM seek_indexes WHERE trusted = 1")}
    assert trusted == set(_layers(layout)), trusted


def test_one_layer_gives_one_index_however_its_bytes_arrive(lazyroot, registry, test_dir):
    """An index is content-addressed so that images and hosts with the same layer share it: the
    same layer read from the registry, through a proxy that paces it in small pieces, and from
    the local layout gives the same index, byte for byte."""
    from proxy import Fault, Proxy
    import conftest
    name = OCI
    kept = []

    def index(ref, cache):
        r = lazyroot.run("index", "--cache-dir", str(cache), ref, timeout=300)
        assert r.ok, str(r)
        db = str(cache / "index.db")
        kept.append(dict(sqlite(db, "SELECT layer, digest FROM seek_indexes")))

    index(registry.ref(name), test_dir / "c-registry")
    with Proxy(registry.addr) as p:
        p.set_fault(lambda req: Fault.pace(4 << 20) if "/blobs/" in req["path"] else None)
        index(registry.ref(name).replace(registry.addr, p.addr), test_dir / "c-paced")
    index("oci:%s:edge" % (conftest.FIXTURES / name), test_dir / "c-local")
    assert len(kept[0]) == 3 and kept[0] == kept[1] == kept[2], kept
