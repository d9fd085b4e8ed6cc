"""Verification: a layer blob the registry serves with the wrong content (same size, bytes
flipped in the registry's own storage) must fail `lazyroot mount` with exit status 3 and one
line naming the problem, leave nothing mounted, and keep nothing of that layer: no `layers`
row in index.db, no blob file created by the attempt (other than blobs of layers that were
fully verified). With the blob restored, the same cache mounts the image and it matches the
oracle."""

import os
from pathlib import Path

import pytest

import push
from conftest import mounts_under
from helpers import (assert_clean_failure, assert_no_daemon, blob_files, compare_with_oracle,
                     layout_blob, layout_layers, lazyroot_mounts, sqlite, tmp_files)
from registry import Registry

from conftest import FIXTURES  # noqa: E402
IMAGE = "oci-gzip"           # the image whose layer gets corrupted
OTHER = "multiarch"          # imported first: shares no layer with oci-gzip


@pytest.fixture
def own_registry():
    reg = Registry()
    reg.start()
    try:
        push.push_layout(reg.addr, str(FIXTURES / IMAGE), "fixtures/" + IMAGE, "edge")
        push.push_layout(reg.addr, str(FIXTURES / OTHER), "fixtures/" + OTHER, "edge")
        yield reg
    finally:
        reg.stop()


def storage_blob(reg, digest):
    algo, hexd = digest.split(":", 1)
    p = Path(reg.dir) / "storage" / "docker" / "registry" / "v2" / "blobs" / algo / hexd[:2] / hexd / "data"
    assert p.is_file(), "blob %s not in the registry storage at %s" % (digest, p)
    return p


def flip(path, offsets):
    """Invert the bytes at offsets, in place (same size). Returns the original bytes."""
    with open(path, "r+b") as f:
        orig = f.read()
        for off in offsets:
            f.seek(off)
            f.write(bytes([orig[off] ^ 0xFF]))
    assert os.path.getsize(path) == len(orig)
    return orig


def indexed_layers(cache):
    db = Path(cache) / "index.db"
    if not db.exists():
        return set()
    return {row[0] for row in sqlite(db, "SELECT digest FROM layers")}


def blobs_of_layers(cache, digests):
    """Blob file names (as blob_files() spells them) of the regular files of these layers, and
    of their seek indexes (a gzip layer read whole keeps one: seek-index-on-pull)."""
    if not digests:
        return set()
    db = Path(cache) / "index.db"
    marks = ",".join("?" * len(digests))
    q = ("SELECT DISTINCT e.digest FROM entries e JOIN layers l ON e.layer_id = l.id "
         "WHERE e.digest IS NOT NULL AND l.digest IN (%s)" % marks)
    out = set()
    rows = sqlite(db, q, tuple(digests))
    rows += sqlite(db, "SELECT digest FROM seek_indexes WHERE layer IN (%s)" % marks,
                   tuple(digests))
    for (d,) in rows:
        algo, hexd = d.split(":", 1)
        out.add("%s/%s/%s" % (algo, hexd[:2], hexd))
    return out


# where to corrupt layer 1 (3379402 bytes of gzip):
#   gzip-mtime: bytes 4-7 of the gzip header (MTIME). The stream still decompresses to exactly
#               the same tar, so only the digest check can notice: the indexer sees every entry
#               and every file content; the layer must still be rejected as a whole.
#   middle:     bytes in the middle of the deflate data: the content itself is wrong (the
#               decompressor may or may not notice before the end).
CORRUPTIONS = {
    "gzip-mtime": lambda size: [4, 5, 6, 7],
    "middle": lambda size: [size // 2 + i for i in range(0, 64, 7)],
}


# (layer index, corruption). Layer 1 (the big one) is fetched first, so no layer of IMAGE can
# verify before it fails; with layer 3 corrupted, layers 1 and 2 may verify and be kept, and the
# test then checks that exactly their blobs (and nothing of layer 3's own) were added.
CASES = [(0, "gzip-mtime"), (0, "middle"), (2, "gzip-mtime")]


@pytest.mark.parametrize("layer,where", CASES, ids=["layer%d-%s" % (i + 1, w) for i, w in CASES])
def test_corrupt_layer_is_rejected(lazyroot, own_registry, test_dir, mountpoint, cache_dir, layer,
                                   where):
    reg = own_registry
    layers = layout_layers(FIXTURES / IMAGE)
    bad = layers[layer]
    ref = "%s/fixtures/%s:edge" % (reg.addr, IMAGE)
    other_ref = "%s/fixtures/%s:edge" % (reg.addr, OTHER)

    # a clean import of an unrelated image first, so the cache is not empty
    r = lazyroot.mount(other_ref, mountpoint)
    assert r.ok, str(r)
    assert not compare_with_oracle(mountpoint, FIXTURES / OTHER)
    assert lazyroot.umount(mountpoint).ok
    assert not set(l["digest"] for l in layers) & indexed_layers(cache_dir), "fixtures share a layer"
    blobs_before = blob_files(cache_dir)
    layers_before = indexed_layers(cache_dir)
    tmp_before = tmp_files(cache_dir)
    assert blobs_before

    # corrupt layer 1 in the registry's storage; the registry serves it as it is on disk
    data = storage_blob(reg, bad["digest"])
    assert data.read_bytes() == layout_blob(FIXTURES / IMAGE, bad["digest"]).read_bytes()
    assert os.path.getsize(data) == bad["size"]
    orig = flip(data, CORRUPTIONS[where](bad["size"]))
    try:
        before = lazyroot_mounts()
        r = lazyroot.mount(ref, mountpoint)
        line = assert_clean_failure(r, 3, [], test_dir, before, related=(reg.addr, ref),
                                    mnt=mountpoint)
        assert bad["digest"].split(":", 1)[1][:12] in line, \
            "the error line does not name the layer %s: %r" % (bad["digest"], line)
        # Whether or not the damage also breaks the archive, the registry served bytes that
        # are not the digest's, and the line must say so (rather than blame the archive or
        # the network): a damaged layer is read to its end so it can be told apart.
        assert "failed verification" in line.lower(), line
        print("error line (%s): %s" % (where, line))
        assert os.listdir(mountpoint) == []

        # nothing of the bad layer kept
        now_layers = indexed_layers(cache_dir)
        assert bad["digest"] not in now_layers, "the corrupt layer was indexed"
        assert layers_before <= now_layers
        verified = now_layers - layers_before       # layers of IMAGE that did verify (if any)
        assert verified <= set(l["digest"] for l in layers), verified
        assert verified <= set(l["digest"] for l in layers[:layer]), \
            "a layer above the corrupt one was indexed: %s" % verified
        new_blobs = blob_files(cache_dir) - blobs_before
        kept = blobs_of_layers(cache_dir, verified)
        stray = new_blobs - kept
        assert not stray, "blob files left by the failed import: %s" % sorted(stray)[:10]
        missing = kept - blob_files(cache_dir)
        assert not missing, "blobs of verified layers were removed: %s" % sorted(missing)[:10]
        assert blobs_before <= blob_files(cache_dir), "blobs of the other image were removed"
        assert tmp_files(cache_dir) == tmp_before, "temporary files left in the cache"
        entries_of_bad = sqlite(cache_dir / "index.db",
                                "SELECT count(*) FROM entries e JOIN layers l ON e.layer_id = l.id "
                                "WHERE l.digest = ?", (bad["digest"],))[0][0]
        assert entries_of_bad == 0
    finally:
        data.write_bytes(orig)

    # the same cache now imports the image and serves the right tree
    assert os.path.getsize(data) == bad["size"]
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    diffs = compare_with_oracle(mountpoint, FIXTURES / IMAGE)
    assert not diffs, "\n".join(diffs)
    assert set(l["digest"] for l in layers) <= indexed_layers(cache_dir)
    u = lazyroot.umount(mountpoint)
    assert u.ok, str(u)
    assert not mounts_under(test_dir)
    assert_no_daemon(mountpoint)


def _layout_with_layer(outdir, layer_bytes, diff_id):
    """An OCI layout whose one gzip layer is @layer_bytes, digested correctly: the registry
    serves exactly what the manifest promises, so only the content can be wrong."""
    import mkdemo  # tests/tools, on sys.path through conftest
    blobdir = Path(outdir) / "blobs" / "sha256"
    blobdir.mkdir(parents=True)

    def put(data):
        d = mkdemo.sha256(data)
        (blobdir / d.split(":", 1)[1]).write_bytes(data)
        return d

    cfg = mkdemo.canon({"architecture": mkdemo.goarch(), "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    manifest = mkdemo.canon({"schemaVersion": 2, "mediaType": mkdemo.MT_MANIFEST,
                             "config": {"mediaType": mkdemo.MT_CONFIG, "digest": put(cfg),
                                        "size": len(cfg)},
                             "layers": [{"mediaType": mkdemo.MT_LAYER_GZIP,
                                         "digest": put(layer_bytes), "size": len(layer_bytes)}]})
    digest = put(manifest)
    index = {"schemaVersion": 2, "mediaType": mkdemo.MT_INDEX,
             "manifests": [{"mediaType": mkdemo.MT_MANIFEST, "digest": digest,
                            "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    (Path(outdir) / "index.json").write_bytes(mkdemo.canon(index))
    (Path(outdir) / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')


def _hostile_tar():
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in (("etc/ok", b"fine\n"), ("../../escape", b"outside the root\n")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["not-tar", "path-escape"])
def test_bad_layer_with_right_digest(lazyroot, registry, test_dir, cache_dir, mountpoint, kind):
    """A layer that matches its digest but is not a usable tar (random bytes in gzip, or an
    entry climbing out of the root with '..') is refused as such, nothing is kept of it, and
    nothing is written outside the cache."""
    import mkdemo
    payload = os.urandom(200000) if kind == "not-tar" else _hostile_tar()
    _layout_with_layer(test_dir / "layout", mkdemo.gzip_bytes(payload), mkdemo.sha256(payload))
    ref = push.push_layout(registry.addr, str(test_dir / "layout"), "lrtest/bad-" + kind,
                           "latest")["ref"]
    before = lazyroot_mounts()
    r = lazyroot.mount(ref, mountpoint)
    line = assert_clean_failure(r, 3, ["not a valid tar archive"], test_dir, before,
                                related=(registry.addr, ref), mnt=mountpoint)
    assert "verification" not in line, line
    assert sqlite(cache_dir / "index.db", "SELECT COUNT(*) FROM layers")[0][0] == 0
    assert not blob_files(cache_dir), "blobs kept from a refused layer"
    assert not (test_dir / "escape").exists() and not (test_dir.parent / "escape").exists()
