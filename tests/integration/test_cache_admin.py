"""Cache lifecycle: `images`, `inspect`, `rm`, `gc` and `fsck` (lazyroot(1)). Everything runs
against the session registry with a cache of the test's own."""

import json
import os
import time
from pathlib import Path

from conftest import FIXTURES
from helpers import (blob_files, compare_with_oracle, layer_contents, layout_blob,
                     layout_layers, sqlite, tmp_files)

KEYS = {"reference", "digest", "platform", "layers", "size", "cached_bytes", "seek_index_bytes",
        "last_used", "mounted"}


def _images(lazyroot):
    r = lazyroot.run("images", "--json")
    assert r.ok, str(r)
    return json.loads(r.stdout)


def _pull(lazyroot, ref, mnt):
    r = lazyroot.mount(ref, mnt)
    assert r.ok, str(r)
    u = lazyroot.umount(mnt)
    assert u.ok, str(u)


def _blob_sizes(cache):
    root = Path(cache) / "blobs" / "sha256"
    return {p.name: p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _seek_index_blobs(cache):
    """Names of the seek index blobs the cache holds: a full pull keeps one per tar+gzip layer
    (seek-index-on-pull, default yes), which goes with the last image that uses the layer."""
    return {d[7:] for (d,) in sqlite(_db(cache), "SELECT digest FROM seek_indexes")}


def _content_blob_sizes(cache):
    """_blob_sizes() without the seek indexes: the layers' file contents."""
    indexes = _seek_index_blobs(cache)
    return {k: v for k, v in _blob_sizes(cache).items() if k not in indexes}


def _layout_platform(layout):
    """OS/ARCH of the single-manifest layout's config, read from the layout itself."""
    idx = json.loads((Path(layout) / "index.json").read_bytes())
    manifest = json.loads(layout_blob(layout, idx["manifests"][0]["digest"]).read_bytes())
    config = json.loads(layout_blob(layout, manifest["config"]["digest"]).read_bytes())
    return "%s/%s" % (config["os"], config["architecture"])


def _db(cache):
    return Path(cache) / "index.db"


def test_images_sizes_and_mounted(lazyroot, registry, mountpoint, cache_dir):
    ref = registry.ref("oci-gzip")
    r = lazyroot.mount(ref)
    assert r.ok, str(r)
    rows = _images(lazyroot)
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == KEYS
    assert row["reference"] == ref and row["digest"] == registry.digest("oci-gzip")
    # the layout's manifest gives the layers and their sizes
    layers = layout_layers(FIXTURES / "oci-gzip")
    assert row["layers"] == len(layers) and row["size"] == sum(l["size"] for l in layers)
    assert row["platform"] == _layout_platform(FIXTURES / "oci-gzip")
    # a tar image is wholly cached: one blob per distinct file content of its layers
    contents = layer_contents(FIXTURES / "oci-gzip")
    assert _content_blob_sizes(cache_dir) == contents
    indexes = _seek_index_blobs(cache_dir)
    assert len(indexes) == len(layers) and set(_blob_sizes(cache_dir)) == set(contents) | indexes
    # cached_bytes is the disk they take (holes not counted), not their lengths, seek indexes
    # included
    root = Path(cache_dir) / "blobs"
    assert row["cached_bytes"] == sum(p.stat().st_blocks * 512 for p in root.rglob("*")
                                      if p.is_file())
    assert row["seek_index_bytes"] == sum(p.stat().st_blocks * 512 for p in root.rglob("*")
                                          if p.is_file() and p.name in indexes) > 0
    assert row["mounted"] is True
    assert row["last_used"].endswith("Z")
    assert lazyroot.umount().ok
    assert _images(lazyroot)[0]["mounted"] is False
    human = lazyroot.run("images")
    assert human.ok and ref in human.stdout and "REFERENCE" in human.stdout


def test_inspect_formats(lazyroot, registry, mountpoint):
    for name, fmt in (("oci-gzip", "tar"), ("estargz", "estargz")):
        _pull(lazyroot, registry.ref(name), mountpoint)
        r = lazyroot.run("inspect", "--json", registry.ref(name))
        assert r.ok, str(r)
        doc = json.loads(r.stdout)
        assert doc["digest"] == registry.digest(name)
        assert doc["layers"] and all(l["format"] == fmt and l["indexed"] for l in doc["layers"])
        h = lazyroot.run("inspect", registry.ref(name))
        assert h.ok and fmt in h.stdout
    r = lazyroot.run("inspect", registry.ref("oci-zstd"))
    assert r.returncode == 3 and "is not in the cache" in r.stderr


def test_rm_keeps_shared_blobs(lazyroot, registry, mountpoint, cache_dir):
    a, b = layer_contents(FIXTURES / "oci-gzip"), layer_contents(FIXTURES / "docker-v2s2-gzip")
    _pull(lazyroot, registry.ref("oci-gzip"), mountpoint)
    assert set(_content_blob_sizes(cache_dir)) == set(a)
    indexes = _seek_index_blobs(cache_dir)
    _pull(lazyroot, registry.ref("docker-v2s2-gzip"), mountpoint)
    assert set(_content_blob_sizes(cache_dir)) == set(a) | set(b)
    r = lazyroot.run("rm", registry.ref("docker-v2s2-gzip"))
    assert r.ok, str(r)
    # exactly the blobs the other image does not use are gone: the two share their layers,
    # so the layers' seek indexes stay too
    assert set(_content_blob_sizes(cache_dir)) == set(a)
    assert _seek_index_blobs(cache_dir) == indexes and set(_blob_sizes(cache_dir)) >= indexes
    assert [row["reference"] for row in _images(lazyroot)] == [registry.ref("oci-gzip")]
    assert sqlite(_db(cache_dir), "SELECT count(*) FROM images")[0][0] == 1
    # the survivor still mounts from the cache alone
    r = lazyroot.mount(registry.ref("oci-gzip"), mountpoint, "--pull=never")
    assert r.ok, str(r)
    assert not compare_with_oracle(mountpoint, FIXTURES / "oci-gzip")
    # a mounted image is refused
    r = lazyroot.run("rm", registry.ref("oci-gzip"))
    assert r.returncode == 1 and "mounted" in r.stderr
    assert lazyroot.umount().ok
    r = lazyroot.run("rm", registry.ref("oci-gzip"))
    assert r.ok, str(r)
    assert blob_files(cache_dir) == set()
    assert sqlite(_db(cache_dir), "SELECT count(*) FROM layers")[0][0] == 0
    assert lazyroot.run("rm", registry.ref("oci-gzip")).returncode == 3


def test_gc_evicts_lru_never_mounted(lazyroot, registry, test_dir, cache_dir):
    a, b, c = registry.ref("oci-zstd"), registry.ref("oci-uncompressed"), registry.ref("estargz")
    mnt_a = test_dir / "a"
    mnt_a.mkdir()
    other = test_dir / "o"
    other.mkdir()
    assert lazyroot.mount(a, mnt_a).ok
    _pull(lazyroot, c, other)
    time.sleep(1.1)
    _pull(lazyroot, b, other)   # C is now the least recently used
    r = lazyroot.run("gc", "--max-size", "1")
    # everything not mounted goes, C first; A stays: the cache cannot fit
    assert r.returncode == 1, str(r)
    lines = [l for l in r.stdout.splitlines() if l.startswith("evicted")]
    assert lines == ["evicted " + registry.digest("estargz"),
                     "evicted " + registry.digest("oci-uncompressed")]
    assert [row["reference"] for row in _images(lazyroot)] == [a]
    diffs = compare_with_oracle(mnt_a, FIXTURES / "oci-zstd")
    assert not diffs, "\n".join(diffs)
    assert lazyroot.umount(mnt_a).ok


def test_gc_removes_orphans_and_config_max_size(lazyroot, registry, test_dir, mountpoint, cache_dir):
    _pull(lazyroot, registry.ref("oci-gzip"), mountpoint)
    orphan = cache_dir / "blobs" / "sha256" / "00" / ("00" * 32)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"x")   # a name no layer uses (its content does not matter to gc)
    r = lazyroot.run("gc")
    assert r.ok and not orphan.exists(), str(r)

    conf = test_dir / "lazyroot.conf"
    conf.write_text("# test\nmax-size = 1K\n")
    time.sleep(1.1)
    r = lazyroot.mount(registry.ref("oci-uncompressed"), env={"LAZYROOT_CONFIG": str(conf)})
    assert r.ok, str(r)
    refs = [row["reference"] for row in _images(lazyroot)]
    assert refs == [registry.ref("oci-uncompressed")]   # the older image was evicted
    assert not compare_with_oracle(mountpoint, FIXTURES / "oci-uncompressed")
    assert lazyroot.umount().ok


def test_fsck(lazyroot, registry, mountpoint, cache_dir):
    ref = registry.ref("oci-gzip")
    _pull(lazyroot, ref, mountpoint)
    r = lazyroot.run("fsck")
    contents = layer_contents(FIXTURES / "oci-gzip")
    indexes = {k: v for k, v in _blob_sizes(cache_dir).items() if k in _seek_index_blobs(cache_dir)}
    assert r.ok and r.stdout.strip() == "cache %s: %d blobs, %d bytes, clean" % (
        cache_dir, len(contents) + len(indexes), sum(contents.values()) + sum(indexes.values())), \
        str(r)

    # a flipped byte
    sizes = _content_blob_sizes(cache_dir)
    name = max(sizes, key=sizes.get)
    path = cache_dir / "blobs" / "sha256" / name[:2] / name
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))
    r = lazyroot.run("fsck")
    assert r.returncode == 1 and "does not hash" in r.stdout, str(r)
    r = lazyroot.run("fsck", "--repair")
    assert r.ok and not path.exists(), str(r)
    assert lazyroot.run("fsck").ok
    r = lazyroot.mount(ref)
    assert r.ok, str(r)
    assert not compare_with_oracle(mountpoint, FIXTURES / "oci-gzip")
    assert lazyroot.umount().ok

    # a missing tar content
    sizes = _content_blob_sizes(cache_dir)
    name = sorted(sizes)[0]
    (cache_dir / "blobs" / "sha256" / name[:2] / name).unlink()
    r = lazyroot.run("fsck")
    assert r.returncode == 1 and "missing" in r.stdout, str(r)
    assert lazyroot.run("fsck", "--repair").ok
    assert lazyroot.run("fsck").ok
    r = lazyroot.mount(ref)
    assert r.ok, str(r)
    assert not compare_with_oracle(mountpoint, FIXTURES / "oci-gzip")
    assert lazyroot.umount().ok

    # orphans and old temporaries
    orphan = cache_dir / "blobs" / "sha256" / "ab" / ("ab" * 32)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"")
    old = cache_dir / "tmp" / "blob-leftover"
    old.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    young = cache_dir / "tmp" / "blob-young"
    young.write_bytes(b"z")
    r = lazyroot.run("fsck")
    assert r.returncode == 1 and "orphan" in r.stdout and "blob-leftover" in r.stdout, str(r)
    assert "blob-young" not in r.stdout
    r = lazyroot.run("fsck", "--repair")
    assert r.ok, str(r)
    assert not orphan.exists() and tmp_files(cache_dir) == {"blob-young"}
    assert lazyroot.run("fsck").ok


def test_config_max_size_applies_after_prewarm(lazyroot, registry, test_dir, cache_dir):
    """The config file's max-size is applied after every prewarm too: prewarming a second
    image into a cache over its budget evicts the least recently used one."""
    conf = test_dir / "lazyroot.conf"
    conf.write_text("max-size = 1K\n")
    env = {"LAZYROOT_CONFIG": str(conf)}
    r = lazyroot.run("prewarm", "--cache-dir", str(cache_dir), registry.ref("oci-gzip"), env=env)
    assert r.ok and r.stdout == "" and r.stderr == "", str(r)
    assert [row["reference"] for row in _images(lazyroot)] == [registry.ref("oci-gzip")]
    time.sleep(1.1)
    r = lazyroot.run("prewarm", "--cache-dir", str(cache_dir), registry.ref("estargz"), env=env)
    assert r.ok, str(r)
    assert [row["reference"] for row in _images(lazyroot)] == [registry.ref("estargz")]


def test_gc_during_a_mounts_pull_keeps_the_image(lazyroot, registry, mountpoint, cache_dir):
    """Explicit gcs that run, back to back, all the while a mount pulls and starts: none may
    evict the image the mount is about to serve (a gc either runs before the pull or finds
    the image mounted, never in between)."""
    import subprocess
    import threading
    from proxy import Fault, Proxy
    results, done = [], threading.Event()

    def gc_loop():
        while not done.is_set():
            results.append(lazyroot.run("gc", "--max-size", "1", timeout=120))

    with Proxy(registry.addr) as p:
        p.set_fault(lambda req: Fault.delay(0.1))
        ref = registry.ref("oci-gzip").replace(registry.addr, p.addr)
        t = threading.Thread(target=gc_loop)
        t.start()
        try:
            mount = subprocess.run([str(lazyroot.binary), "mount", "--cache-dir", str(cache_dir),
                                    ref, str(mountpoint)], env=lazyroot._env(None),
                                   capture_output=True, text=True, timeout=120)
        finally:
            done.set()
            t.join()
    assert mount.returncode == 0, (mount.stdout, mount.stderr)
    assert results, "no gc raced the mount"
    assert all(g.returncode in (0, 1) for g in results), [str(g) for g in results]
    assert not compare_with_oracle(mountpoint, FIXTURES / "oci-gzip")
    assert [row["mounted"] for row in _images(lazyroot)] == [True]
    assert lazyroot.umount().ok


def test_mounted_is_decided_per_cache(lazyroot, registry, test_dir, mountpoint, cache_dir):
    """A mount from cache A pins its image in A only: rm and gc in cache B, which holds the
    same image, go ahead, and A's mount keeps reading from A."""
    ref = registry.ref("oci-gzip")
    cache_b = test_dir / "cache-b"
    other = test_dir / "other"
    other.mkdir()
    in_b = ("--cache-dir", str(cache_b))
    assert lazyroot.mount(ref).ok
    try:
        r = lazyroot.mount(ref, other, *in_b)
        assert r.ok, str(r)
        assert lazyroot.umount(other).ok
        r = lazyroot.run("images", "--json", *in_b)
        assert r.ok and [row["mounted"] for row in json.loads(r.stdout)] == [False], str(r)
        assert blob_files(cache_b) == blob_files(cache_dir)
        assert _images(lazyroot)[0]["mounted"] is True

        r = lazyroot.run("rm", ref, *in_b)
        assert r.ok and r.stdout.strip() == "removed " + ref, str(r)
        assert blob_files(cache_b) == set()
        r = lazyroot.run("rm", ref)
        assert r.returncode == 1 and "is mounted" in r.stderr, str(r)

        r = lazyroot.mount(ref, other, *in_b)
        assert r.ok, str(r)
        assert lazyroot.umount(other).ok
        r = lazyroot.run("gc", "--max-size", "1", *in_b)
        assert r.ok, str(r)
        assert r.stdout.splitlines()[0] == "evicted " + registry.digest("oci-gzip"), r.stdout
        assert blob_files(cache_b) == set()
        # the summary counts what is left, as the files say
        assert r.stdout.rstrip().endswith("cache now 0 blobs, 0 bytes"), r.stdout

        diffs = compare_with_oracle(mountpoint, FIXTURES / "oci-gzip")
        assert not diffs, "\n".join(diffs)
        f = lazyroot.run("fsck")
        assert f.ok and "clean" in f.stdout, str(f)
    finally:
        assert lazyroot.umount().ok


def test_rm_force_forgets_the_reference_of_a_mounted_image(lazyroot, registry, mountpoint,
                                                          cache_dir):
    """rm --force on a mounted image: only the reference goes; the mount keeps reading (from
    the cache, its blobs untouched); once unmounted, the image (known by its digest alone)
    is evicted by gc --max-size like any image (a plain gc keeps it: lazyroot(1), rm)."""
    ref, layout = registry.ref("oci-gzip"), FIXTURES / "oci-gzip"
    assert lazyroot.mount(ref).ok
    r = lazyroot.run("rm", ref)
    assert r.returncode == 1 and "mounted" in r.stderr, str(r)
    r = lazyroot.run("rm", "--force", ref)
    assert r.ok, str(r)
    rows = _images(lazyroot)
    assert [(x["reference"], x["digest"], x["mounted"]) for x in rows] == \
        [(None, registry.digest("oci-gzip"), True)], rows
    assert set(_content_blob_sizes(cache_dir)) == set(layer_contents(layout))
    for p in mountpoint.rglob("*"):   # the page cache may not hold these: reads reach lazyroot
        if p.is_file() and not p.is_symlink():
            p.read_bytes()
    assert not compare_with_oracle(mountpoint, layout)
    assert lazyroot.umount().ok
    assert lazyroot.run("gc").ok and len(_images(lazyroot)) == 1
    r = lazyroot.run("gc", "--max-size", "1")
    assert r.ok and [l for l in r.stdout.splitlines() if l.startswith("evicted ")] == \
        ["evicted " + registry.digest("oci-gzip")], str(r)
    assert _images(lazyroot) == [] and blob_files(cache_dir) == set()
    assert sqlite(_db(cache_dir), "SELECT count(*) FROM layers")[0][0] == 0
