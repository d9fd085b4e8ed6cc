"""Integrity rules for layers read whole (docs/security.md, "Integrity rules"): every layer here
is pushed as is to the real registry, so its blob matches the manifest's digest and size and
only what the digest cannot see is wrong: a gzip trailer, the config's diff_ids.  A refusal is
one line naming the layer and what disagrees, exit status 3, nothing mounted, nothing of the
layer kept: no image or tag row, no layers row, no blob (helpers.assert_nothing_recorded)."""

import os

import pytest

import hostile
import mkdemo
import push
from helpers import assert_clean_failure, assert_nothing_recorded, lazyroot_mounts, sqlite


def push_image(registry, test_dir, name, layers, diff_ids=None):
    layout = test_dir / ("layout-" + name)
    hostile.write_layout(layout, layers, diff_ids=diff_ids)
    return push.push_layout(registry.addr, str(layout), "integrity/" + name, "latest")["ref"]


def rows(cache_dir, table):
    db = cache_dir / "index.db"
    return sqlite(db, "SELECT COUNT(*) FROM " + table)[0][0] if db.exists() else 0


def refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref):
    before = lazyroot_mounts()
    r = lazyroot.mount(ref, mountpoint)
    line = assert_clean_failure(r, 3, [], test_dir, before, related=(registry.addr, ref),
                                mnt=mountpoint)
    assert os.listdir(mountpoint) == []
    print(line)
    return line


def tar_of(name, data):
    return hostile.tarfile_bytes([(name, "f", data)])


def corrupt(blob, from_end):
    b = bytearray(blob)
    b[len(b) - from_end] ^= 0x5A
    return bytes(b)


@pytest.mark.parametrize("field,from_end,words", [("crc32", 8, "the CRC32 in its trailer"),
                                                   ("isize", 2, "the length (ISIZE) in its trailer")])
def test_gzip_trailer_is_checked(lazyroot, registry, test_dir, cache_dir, mountpoint, field,
                                 from_end, words):
    """The deflate data is intact, so the files would read back fine: only the trailer lies.
    libarchive alone never looked at it."""
    tar = tar_of("f", b"trailer\n" * 1000)
    blob = corrupt(mkdemo.gzip_bytes(tar), from_end)
    ref = push_image(registry, test_dir, "gzip-" + field, [(mkdemo.MT_LAYER_GZIP, blob)],
                     diff_ids=[mkdemo.sha256(tar)])
    line = refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref)
    assert line.endswith("Bad message: layer '%s' is not a valid tar archive: gzip member 1 is "
                         "corrupt: %s does not match its data" % (mkdemo.sha256(blob), words)), line
    assert_nothing_recorded(lazyroot, cache_dir)


def test_zstd_checksum_is_checked(lazyroot, registry, test_dir, cache_dir, mountpoint):
    tar = tar_of("f", os.urandom(3000))
    blob = corrupt(hostile.zstd_bytes(tar), 2)   # the frame's content checksum
    ref = push_image(registry, test_dir, "zstd-checksum", [(hostile.MT_LAYER_ZSTD, blob)],
                     diff_ids=[mkdemo.sha256(tar)])
    line = refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref)
    assert "layer '%s' is not a valid tar archive: the zstd stream is corrupt: " % (
        mkdemo.sha256(blob)) in line and "checksum" in line, line
    assert_nothing_recorded(lazyroot, cache_dir)


def test_gzip_members_back_to_back_mount(lazyroot, registry, test_dir, mountpoint):
    """A layer cut into many gzip members (as eStargz is, here without its annotations, so it
    is read whole): every member is inflated and checked, and the files are whole."""
    files = [("f%02d" % i, os.urandom(20000)) for i in range(30)]
    tar = hostile.tarfile_bytes([(n, "f", d) for n, d in files])
    blob = b"".join(mkdemo.gzip_bytes(tar[i:i + 7000]) for i in range(0, len(tar), 7000))
    assert blob.count(b"\x1f\x8b\x08") >= len(tar) // 7000
    ref = push_image(registry, test_dir, "members", [(mkdemo.MT_LAYER_GZIP, blob)])
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        for n, d in files:
            assert (mountpoint / n).read_bytes() == d, n
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_diff_id_mismatch_is_refused(lazyroot, registry, test_dir, cache_dir, mountpoint):
    tar = tar_of("f", b"content\n")
    blob = mkdemo.gzip_bytes(tar)
    wrong = mkdemo.sha256(b"something else")
    ref = push_image(registry, test_dir, "diff-id", [(mkdemo.MT_LAYER_GZIP, blob)],
                     diff_ids=[wrong])
    line = refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref)
    assert "Bad message: layer %s failed verification: its uncompressed content is %s, the " \
           "config sha256:" % (mkdemo.sha256(blob), mkdemo.sha256(tar)) in line, line
    assert line.endswith(" says %s: nothing of it was kept" % wrong), line
    assert_nothing_recorded(lazyroot, cache_dir)


@pytest.mark.parametrize("n", [0, 2])
def test_diff_id_count_is_checked(lazyroot, registry, test_dir, cache_dir, mountpoint, n):
    tar = tar_of("f", b"content\n")
    ids = [mkdemo.sha256(tar)] * n
    ref = push_image(registry, test_dir, "count-%d" % n,
                     [(mkdemo.MT_LAYER_GZIP, mkdemo.gzip_bytes(tar))], diff_ids=ids)
    line = refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref)
    assert line.endswith("Bad message: config sha256:%s lists %d diff_ids for the manifest's "
                         "1 layers" % (line.split("config sha256:")[1][:64], n)), line
    assert_nothing_recorded(lazyroot, cache_dir)


def test_shared_layer_is_checked_per_image(lazyroot, registry, test_dir, cache_dir, mountpoint):
    """The layer is indexed (and checked) for image A; image B names the same blob with
    another diff_id.  The diff_id recorded at import is compared with B's config too, so B is
    refused, while the layer stays for A, which still mounts."""
    tar = tar_of("shared", b"shared\n")
    blob = mkdemo.gzip_bytes(tar)
    good = push_image(registry, test_dir, "shared-a", [(mkdemo.MT_LAYER_GZIP, blob)])
    wrong = mkdemo.sha256(b"not this layer")
    bad = push_image(registry, test_dir, "shared-b", [(mkdemo.MT_LAYER_GZIP, blob)],
                     diff_ids=[wrong])
    r = lazyroot.mount(good, mountpoint)
    assert r.ok, str(r)
    assert lazyroot.umount(mountpoint).ok
    line = refused(lazyroot, registry, test_dir, cache_dir, mountpoint, bad)
    assert line.endswith("Bad message: layer %s does not match the image's config: its "
                         "uncompressed content is %s, the config sha256:%s says %s" % (
                             mkdemo.sha256(blob), mkdemo.sha256(tar),
                             line.split("the config sha256:")[1][:64], wrong)), line
    assert rows(cache_dir, "layers") == 1
    r = lazyroot.mount(good, mountpoint, "--pull=never")
    assert r.ok, str(r)
    assert (mountpoint / "shared").read_bytes() == b"shared\n"
    assert lazyroot.umount(mountpoint).ok


def test_refused_layer_after_good_ones_records_no_image(lazyroot, registry, test_dir, cache_dir,
                                                        mountpoint):
    """The first layer is whole and right, the second's diff_id is wrong: the image and its tag
    are recorded only once every layer is in, so `images` lists nothing and fsck is clean; the
    first layer, verified, stays for gc (or for the next image that has it)."""
    good, bad = tar_of("a", b"first\n"), tar_of("b", b"second\n")
    ref = push_image(registry, test_dir, "second-bad",
                     [(mkdemo.MT_LAYER_GZIP, mkdemo.gzip_bytes(good)),
                      (mkdemo.MT_LAYER_GZIP, mkdemo.gzip_bytes(bad))],
                     diff_ids=[mkdemo.sha256(good), mkdemo.sha256(b"not the second")])
    line = refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref)
    assert "layer %s failed verification" % mkdemo.sha256(mkdemo.gzip_bytes(bad)) in line, line
    assert_nothing_recorded(lazyroot, cache_dir, layers=1)
    r = lazyroot.run("gc")
    assert r.ok, str(r)
    assert rows(cache_dir, "layers") == 0
