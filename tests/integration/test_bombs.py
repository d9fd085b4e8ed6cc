"""What one layer may cost (docs/security.md, "Bombs: what a layer may cost"): zeros are stored
as holes, whatever made them (a gzip bomb, a sparse tar entry); what a layer expands to is
bounded absolutely (layer-max-expanded) and against its compressed size (layer-max-ratio), both
set in the config file; a refusal is one line naming the layer, the limit and its key, and
leaves nothing behind.  The layers are made by tests/tools/hostile.py and by GNU tar."""

import hashlib
import json
import os
import subprocess

import pytest

import hostile
import mkdemo
from helpers import assert_nothing_recorded, sha256_file
from test_hostile import assert_refused, indexed_layers, push_case

GIB = 1 << 30


def zeros_sha256(size):
    h = hashlib.sha256()
    mib = bytes(1 << 20)
    for _ in range(size >> 20):
        h.update(mib)
    return h.hexdigest()


def disk_use(path):
    """Bytes the files below @path take on disk (du), holes not counted."""
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512
               for d, _, files in os.walk(path) for f in files)


def blob_path(cache_dir, hexdigest):
    return cache_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest


def write_conf(test_dir, text):
    conf = test_dir / "lazyroot.conf"
    conf.write_text(text)
    return {"LAZYROOT_CONFIG": str(conf)}, str(conf)


@pytest.fixture(scope="module")
def bomb():
    """2 GiB of zeros in a 2 MiB gzip layer (deflate's ~1000:1, under the default ratio)."""
    return hostile.gzip_zeros(2 * GIB)


def test_gzip_bomb_is_stored_as_holes(lazyroot, registry, test_dir, cache_dir, mountpoint, bomb):
    """With the default limits the layer mounts: its file reads back as 2 GiB of zeros, and
    the cache holds holes, not 2 GiB."""
    assert len(bomb) < 4 << 20
    ref = push_case(registry, test_dir, "gzip-bomb", [(mkdemo.MT_LAYER_GZIP, bomb)])
    r = lazyroot.mount(ref, mountpoint, timeout=300)
    assert r.ok, str(r)
    try:
        used = disk_use(cache_dir)
        print("cache disk use after a 2 GiB zero layer: %d bytes" % used)
        assert used < 64 << 20, "the cache took %d bytes" % used
        want = zeros_sha256(2 * GIB)
        assert os.stat(blob_path(cache_dir, want)).st_size == 2 * GIB
        assert os.stat(mountpoint / "zeros").st_size == 2 * GIB
        assert sha256_file(mountpoint / "zeros") == want
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_gzip_bomb_over_the_absolute_limit(lazyroot, registry, test_dir, cache_dir, mountpoint,
                                           bomb):
    """layer-max-expanded bounds what a layer expands to whatever its ratio: the same layer
    under a 1 GiB limit is refused while it is read, and nothing of it is kept."""
    ref = push_case(registry, test_dir, "gzip-bomb-abs", [(mkdemo.MT_LAYER_GZIP, bomb)])
    env, conf = write_conf(test_dir, "# bombs\nlayer-max-expanded = 1G\n")
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref,
                          [mkdemo.sha256(bomb), "refused", "more than 1 GiB",
                           "(layer-max-expanded in %s)" % conf], env=env)
    print(line)
    assert_nothing_recorded(lazyroot, cache_dir)


def test_gzip_bomb_over_a_configured_ratio(lazyroot, registry, test_dir, cache_dir, mountpoint,
                                           bomb):
    ref = push_case(registry, test_dir, "gzip-bomb-ratio", [(mkdemo.MT_LAYER_GZIP, bomb)])
    env, conf = write_conf(test_dir, "layer-max-ratio = 100\n")
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref,
                          [mkdemo.sha256(bomb), "refused",
                           "100 times its compressed size beyond 256 MiB",
                           "(layer-max-ratio in %s)" % conf], env=env)
    print(line)
    assert_nothing_recorded(lazyroot, cache_dir)


def test_zero_means_no_limit(lazyroot, registry, test_dir, cache_dir, mountpoint):
    """The zstd layer test_hostile.py sees refused for its ratio (300 MiB of zeros in ~10 KiB)
    mounts when layer-max-ratio is 0, and takes no disk for its zeros either."""
    blob = hostile.zstd_bytes(hostile.zero_file(300 << 20))
    assert len(blob) * 2048 < 256 << 20
    ref = push_case(registry, test_dir, "zstd-no-ratio", [(hostile.MT_LAYER_ZSTD, blob)])
    env, _ = write_conf(test_dir, "layer-max-ratio = 0\nlayer-max-expanded = 0\n")
    r = lazyroot.mount(ref, mountpoint, env=env)
    assert r.ok, str(r)
    try:
        assert os.stat(mountpoint / "zeros").st_size == 300 << 20
        assert disk_use(cache_dir / "blobs") < 1 << 20
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_holes_do_not_count_against_max_size(lazyroot, registry, test_dir, cache_dir,
                                             mountpoint):
    """gc's max-size and the bytes `images` shows are disk space: 300 MiB of zeros stored as
    holes are well under a 16 MiB max-size, and the image stays.  (Counted by length, the blob
    would be evicted at once.)"""
    blob = hostile.zstd_bytes(hostile.zero_file(300 << 20))
    ref = push_case(registry, test_dir, "zstd-holes-gc", [(hostile.MT_LAYER_ZSTD, blob)])
    env, _ = write_conf(test_dir, "layer-max-ratio = 0\n")
    r = lazyroot.mount(ref, mountpoint, env=env)
    assert r.ok, str(r)
    assert lazyroot.umount(mountpoint).ok
    r = lazyroot.run("images", "--json")
    assert r.ok, str(r)
    (row,) = json.loads(r.stdout)
    print("images: size %d, cached_bytes %d" % (row["size"], row["cached_bytes"]))
    assert row["cached_bytes"] < 1 << 20, row
    r = lazyroot.run("gc", "--max-size=16M")
    assert r.ok, str(r)
    print(r.stdout.strip())
    assert "evicted 0 images" in r.stdout, r.stdout
    assert [i["reference"] for i in json.loads(lazyroot.run("images", "--json").stdout)] == [ref]


def test_bad_limit_in_the_config_file(lazyroot, registry, test_dir, cache_dir, mountpoint):
    blob = mkdemo.gzip_bytes(hostile.tarfile_bytes([("f", "f", b"x\n")]))
    ref = push_case(registry, test_dir, "bad-conf", [(mkdemo.MT_LAYER_GZIP, blob)])
    env, conf = write_conf(test_dir, "max-size = 10G\n\nlayer-max-ratio = lots\n")
    r = lazyroot.mount(ref, mountpoint, env=env)
    assert r.returncode == 2, str(r)
    assert "bad line 3 in '%s'" % conf in r.stderr, str(r)
    assert not os.listdir(mountpoint)
    assert indexed_layers(cache_dir) == 0


def make_sparse_file(path, size):
    """A file of @size bytes with a few bytes of data at its start, in its middle, at its end,
    and holes between them."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in ((0, b"head"), (10 * (1 << 20) + 100, b"middle"),
                          (size - 4, b"tail")):
            f.seek(off)
            f.write(data)


SPARSE_FORMATS = {
    "gnu": ["--format=gnu"],
    "pax-0.0": ["--format=posix", "--sparse-version=0.0"],
    "pax-0.1": ["--format=posix", "--sparse-version=0.1"],
    "pax-1.0": ["--format=posix", "--sparse-version=1.0"],
}


@pytest.mark.parametrize("fmt", sorted(SPARSE_FORMATS))
def test_sparse_entry_is_served_with_holes(lazyroot, registry, test_dir, cache_dir, mountpoint,
                                           fmt):
    """GNU tar's sparse entries (GNU 'S' headers and the three PAX encodings) are served as the
    file they describe, and stored with holes."""
    size = 64 << 20
    src = test_dir / "src"
    src.mkdir()
    make_sparse_file(src / "sparse", size)
    tar = test_dir / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-c", "-f", str(tar), "-C", str(src), "--owner=0",
                    "--group=0", *SPARSE_FORMATS[fmt], "sparse"], check=True)
    data = tar.read_bytes()
    assert len(data) < 1 << 20, "tar did not write a sparse entry"
    ref = push_case(registry, test_dir, "sparse-" + fmt,
                    [(mkdemo.MT_LAYER_GZIP, mkdemo.gzip_bytes(data))])
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        want = sha256_file(src / "sparse")
        assert sorted(os.listdir(mountpoint)) == ["sparse"]
        assert os.stat(mountpoint / "sparse").st_size == size
        assert sha256_file(mountpoint / "sparse") == want
        blob = os.stat(blob_path(cache_dir, want))
        assert blob.st_size == size
        assert blob.st_blocks * 512 <= 64 << 10, "the blob takes %d bytes" % (
            blob.st_blocks * 512)
    finally:
        assert lazyroot.umount(mountpoint).ok
