"""Seek indexes of tar+gzip layers (docs/formats.md, "Seek indexes"): `lazyroot index` builds
them, a later mount reads the gzip layers lazily from them, and the tree is the reference
unpacker's; reading a file fetches only around it, and every byte is checked."""

import json
import os

import pytest

from helpers import compare_with_oracle, sqlite

GZIP_FIXTURES = ["oci-gzip", "docker-v2s2-gzip"]


def _stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, str(r)
    return json.loads(r.stdout)


def _index_then_forget_layers(lazyroot, ref):
    """Index the image, then remove it from the cache: only the seek indexes stay."""
    r = lazyroot.run("index", "--cache-dir", str(lazyroot.cache_dir), ref, timeout=120)
    assert r.ok, str(r)
    assert "gzip-index" in r.stdout, r.stdout
    r = lazyroot.run("rm", "--cache-dir", str(lazyroot.cache_dir), ref)
    assert r.ok, str(r)
    db = str(lazyroot.cache_dir / "index.db")
    assert sqlite(db, "SELECT count(*) FROM layers")[0][0] == 0
    assert sqlite(db, "SELECT count(*) FROM seek_indexes WHERE trusted = 1")[0][0] > 0


@pytest.mark.parametrize("name", GZIP_FIXTURES)
def test_indexed_mount_matches_oracle(lazyroot, registry, mountpoint, name):
    ref = registry.ref(name)
    _index_then_forget_layers(lazyroot, ref)
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        db = str(lazyroot.cache_dir / "index.db")
        formats = {f for (f,) in sqlite(db, "SELECT format FROM layers")}
        assert formats == {"gzip-index"}, formats
        s = _stats(lazyroot, mountpoint)
        assert s["bytes_fetched"] == 0, s
        diffs = compare_with_oracle(mountpoint, registry.layout(name))
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_indexed_reads_fetch_only_what_is_read(lazyroot, registry, mountpoint):
    ref = registry.ref("oci-gzip")
    layout = registry.layout("oci-gzip")
    blobs = sum(os.path.getsize(os.path.join(layout, "blobs", "sha256", d[7:]))
                for d in _layer_digests(layout))
    _index_then_forget_layers(lazyroot, ref)
    r = lazyroot.mount(ref, mountpoint, "--prefetch=none")
    assert r.ok, str(r)
    try:
        files = sorted(p for p in _regular_files(mountpoint) if os.path.getsize(p) > 0)
        one = files[len(files) // 2]
        with open(one, "rb") as f:
            f.read()
        s = _stats(lazyroot, mountpoint)
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
