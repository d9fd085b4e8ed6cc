"""Offline: with the default --pull=missing a second mount of an image already in the cache
needs no network at all (lazyroot(1): the tag resolution and the layers are cached), while
--pull=always must reach the registry and --pull=never must not."""

import os

import pytest

import push
from conftest import mounts_under
from helpers import (assert_clean_failure, assert_no_daemon, blob_files, compare_with_oracle,
                     lazyroot_mounts, sqlite)
from registry import Registry
from conftest import FIXTURES

# (fixture, --platform, oracle suffix)
CASES = [("oci-gzip", None, ""), ("multiarch", "linux/arm64/v8", ".linux-arm64")]


@pytest.fixture
def own_registry():
    reg = Registry()
    reg.start()
    try:
        for name in ("oci-gzip", "multiarch", "oci-zstd"):
            push.push_layout(reg.addr, str(FIXTURES / name), "fixtures/" + name, "edge")
        yield reg
    finally:
        reg.stop()


def _mount_ok(lazyroot, ref, mnt, layout, suffix, *extra):
    r = lazyroot.mount(ref, mnt, *extra)
    assert r.ok, str(r)
    diffs = compare_with_oracle(mnt, layout, suffix)
    assert not diffs, "\n".join(diffs)
    u = lazyroot.umount(mnt)
    assert u.ok, str(u)
    assert not mounts_under(lazyroot.test_dir)
    assert_no_daemon(mnt)


@pytest.mark.parametrize("name,platform,suffix", CASES, ids=[c[0] for c in CASES])
def test_second_mount_needs_no_registry(lazyroot, own_registry, test_dir, mountpoint, cache_dir,
                                        name, platform, suffix):
    reg = own_registry
    ref = "%s/fixtures/%s:edge" % (reg.addr, name)
    extra = ("--platform", platform) if platform else ()
    _mount_ok(lazyroot, ref, mountpoint, FIXTURES / name, suffix, *extra)

    reg.stop()   # nothing listens on its port any more
    blobs = blob_files(cache_dir)
    _mount_ok(lazyroot, ref, mountpoint, FIXTURES / name, suffix, *extra)
    # explicitly: --pull=never works for a cached image too
    _mount_ok(lazyroot, ref, mountpoint, FIXTURES / name, suffix, "--pull=never", *extra)
    assert blob_files(cache_dir) == blobs

    # --pull=always must resolve the tag at the (stopped) registry: exit 3, one line
    before = lazyroot_mounts()
    r = lazyroot.mount(ref, mountpoint, "--pull=always", *extra)
    assert_clean_failure(r, 3, [reg.addr.split(":")[0]], test_dir, before,
                         related=(reg.addr, ref), mnt=mountpoint)
    assert os.listdir(mountpoint) == []
    # and that failure did not spoil the cache for an offline mount
    _mount_ok(lazyroot, ref, mountpoint, FIXTURES / name, suffix, *extra)


def test_pull_never_uncached_image_fails(lazyroot, own_registry, test_dir, mountpoint, cache_dir):
    """--pull=never with the registry UP: the image is not fetched, the mount fails with 3."""
    reg = own_registry
    ref = "%s/fixtures/oci-zstd:edge" % reg.addr
    before = lazyroot_mounts()
    r = lazyroot.mount(ref, mountpoint, "--pull=never")
    assert_clean_failure(r, 3, [], test_dir, before, related=(reg.addr, ref), mnt=mountpoint)
    assert blob_files(cache_dir) == set()
    db = cache_dir / "index.db"
    if db.exists():
        assert sqlite(db, "SELECT count(*) FROM layers")[0][0] == 0
        assert sqlite(db, "SELECT count(*) FROM refs")[0][0] == 0


def test_pull_never_other_image_cached(lazyroot, own_registry, test_dir, mountpoint, cache_dir):
    """One image cached, another asked for with --pull=never and the registry stopped: exit 3."""
    reg = own_registry
    _mount_ok(lazyroot, "%s/fixtures/oci-gzip:edge" % reg.addr, mountpoint, FIXTURES / "oci-gzip", "")
    reg.stop()
    ref = "%s/fixtures/oci-zstd:edge" % reg.addr
    before = lazyroot_mounts()
    r = lazyroot.mount(ref, mountpoint, "--pull=never")
    assert_clean_failure(r, 3, [], test_dir, before, related=(reg.addr, ref), mnt=mountpoint)
    # the multiarch image is not cached for any platform either
    r = lazyroot.mount("%s/fixtures/multiarch:edge" % reg.addr, mountpoint, "--pull=never")
    assert_clean_failure(r, 3, [], test_dir, before, related=(reg.addr,), mnt=mountpoint)
