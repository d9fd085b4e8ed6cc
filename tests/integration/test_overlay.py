"""Writable overlays on a lazyroot mount, used by a real systemd-nspawn: `--overlay UPPER` puts
the container's writes (files and whiteouts) into UPPER/upper, `--volatile` keeps them in a tmpfs
that goes away at unmount; neither the FUSE lower tree nor the cache ever changes; `umount`
takes down the overlay and the FUSE tree and the daemon exits; an upper dir outlives its mount.
"""

import errno
import os
import re
import stat

import pytest

import conftest
import lifecycle_helpers as h
import mkdemo

# writes in three places nspawn does not cover with its own mounts (/tmp is nspawn's tmpfs)
SCRIPT = ("date; echo hi > /root/x; rm /etc/motd; mkdir -p /var/lrtest; echo v > /var/lrtest/y; "
          "cat /root/x; test -e /etc/motd || echo motd-gone")
DATE_RE = re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}$", re.M)


def mount_ok(lazyroot, registry, *extra):
    r = lazyroot.mount(registry.ref("demo"), None, *extra)
    assert r.ok, r
    return r


def run_script_ok(mnt, script=SCRIPT):
    r = h.nspawn(mnt, script)
    assert r.ok, r
    return r


def assert_lower_pristine(lower):
    """The FUSE tree still shows the image exactly as pushed where the container wrote."""
    assert not os.path.lexists(os.path.join(lower, "root/x")), "write reached the FUSE lower"
    assert not os.path.lexists(os.path.join(lower, "var/lrtest")), "write reached the FUSE lower"
    with open(os.path.join(lower, "etc/motd"), "rb") as f:
        assert f.read() == mkdemo.MOTD, "/etc/motd changed in the FUSE lower"


def assert_whiteout(path):
    st = os.lstat(path)
    assert stat.S_ISCHR(st.st_mode), "%s is not a character device (mode %o)" % (path, st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (0, 0), \
        "%s is not a 0:0 whiteout (rdev %d:%d)" % (path, os.major(st.st_rdev), os.minor(st.st_rdev))


def test_overlay_writes_land_in_upper_only(lazyroot, registry, test_dir, cache_dir, mountpoint):
    upper = test_dir / "upper"
    mount_ok(lazyroot, registry, "--overlay", str(upper))
    pid = h.daemon_pid(test_dir)
    info = h.state_infos(test_dir)[0]
    assert info.get("upper") == "overlay", info
    assert info.get("target") == str(mountpoint), info
    assert h.daemons_of(test_dir) == [pid]
    top = conftest.wait_mounted(mountpoint, timeout=1)
    assert top and top["fstype"] == "overlay", top
    lower = h.fuse_lower(test_dir)["mountpoint"]
    assert info.get("fuse") == lower, (info, lower)
    assert_lower_pristine(lower)

    before = h.cache_snapshot(cache_dir)
    assert before[0], "the cache has no blobs after the mount"
    assert before[1].get("layers", 0) >= 2, before[1]

    r = run_script_ok(mountpoint)
    assert DATE_RE.search(r.stdout), r
    assert "hi" in r.stdout.split("\n") and "motd-gone" in r.stdout, r

    # the writes: in the upper dir, and visible through the overlay
    assert (upper / "upper" / "root" / "x").read_bytes() == b"hi\n"
    assert (upper / "upper" / "var" / "lrtest" / "y").read_bytes() == b"v\n"
    assert_whiteout(upper / "upper" / "etc" / "motd")
    assert (mountpoint / "root" / "x").read_bytes() == b"hi\n"
    assert not os.path.lexists(mountpoint / "etc" / "motd")
    assert (upper / "work").is_dir()

    # ... and nowhere else
    assert_lower_pristine(lower)
    with pytest.raises(OSError) as e:
        open(os.path.join(lower, "root", "z"), "w")
    assert e.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM), e.value
    assert h.cache_snapshot(cache_dir) == before, "the cache changed while the container wrote"

    r = lazyroot.umount()
    assert r.ok, r
    h.assert_all_clean(test_dir, pid)
    assert h.daemons_of(test_dir) == []
    assert h.cache_snapshot(cache_dir) == before, "the cache changed at unmount"
    # the upper dir is the user's: it stays, with the writes
    assert (upper / "upper" / "root" / "x").read_bytes() == b"hi\n"
    assert_whiteout(upper / "upper" / "etc" / "motd")
    assert os.listdir(mountpoint) == []


def test_volatile_writes_are_in_memory_and_dropped(lazyroot, registry, test_dir, cache_dir,
                                                   mountpoint):
    mount_ok(lazyroot, registry, "--volatile")
    pid = h.daemon_pid(test_dir)
    info = h.state_infos(test_dir)[0]
    assert info.get("upper") == "volatile", info
    lower = h.fuse_lower(test_dir)["mountpoint"]
    before = h.cache_snapshot(cache_dir)

    r = run_script_ok(mountpoint)
    assert DATE_RE.search(r.stdout), r
    assert (mountpoint / "root" / "x").read_bytes() == b"hi\n"
    assert (mountpoint / "var" / "lrtest" / "y").read_bytes() == b"v\n"
    assert not os.path.lexists(mountpoint / "etc" / "motd")
    assert_lower_pristine(lower)
    assert h.cache_snapshot(cache_dir) == before, "the cache changed while the container wrote"
    # on the disk below test_dir (not crossing the mounts): the cache and the state file only
    on_disk = h.files_outside(test_dir)
    # (the state file and the daemon's statistics socket)
    assert [f for f in on_disk if not re.fullmatch(r"run/mounts/[^/]+/(info|control)", f)] == [], on_disk

    r = lazyroot.umount()
    assert r.ok, r
    h.assert_all_clean(test_dir, pid)
    assert h.files_outside(test_dir) == [], "files left below %s besides the cache" % test_dir
    assert h.cache_snapshot(cache_dir) == before, "the cache changed at unmount"

    # a new volatile mount starts from the image again
    mount_ok(lazyroot, registry, "--volatile")
    pid2 = h.daemon_pid(test_dir)
    assert not os.path.lexists(mountpoint / "root" / "x")
    assert not os.path.lexists(mountpoint / "var" / "lrtest")
    assert (mountpoint / "etc" / "motd").read_bytes() == mkdemo.MOTD
    r = h.nspawn(mountpoint, "test -e /root/x && echo x-present; cat /etc/motd")
    assert r.ok, r
    assert "x-present" not in r.stdout and mkdemo.MOTD.decode() in r.stdout, r
    r = lazyroot.umount()
    assert r.ok, r
    h.assert_all_clean(test_dir, pid2)
    assert h.files_outside(test_dir) == []


def test_overlay_upper_persists_across_mounts(lazyroot, registry, test_dir, cache_dir, mountpoint):
    upper = test_dir / "upper"
    mount_ok(lazyroot, registry, "--overlay", str(upper))
    pid = h.daemon_pid(test_dir)
    run_script_ok(mountpoint, "echo one > /root/x; rm /etc/motd")
    r = lazyroot.umount()
    assert r.ok, r
    h.assert_all_clean(test_dir, pid)

    mount_ok(lazyroot, registry, "--overlay", str(upper))
    pid = h.daemon_pid(test_dir)
    assert (mountpoint / "root" / "x").read_bytes() == b"one\n"
    assert not os.path.lexists(mountpoint / "etc" / "motd")
    r = run_script_ok(mountpoint, "cat /root/x; test -e /etc/motd || echo motd-gone; "
                                  "echo two > /root/y")
    assert r.stdout.split() == ["one", "motd-gone"], r
    assert_lower_pristine(h.fuse_lower(test_dir)["mountpoint"])
    r = lazyroot.umount()
    assert r.ok, r
    h.assert_all_clean(test_dir, pid)
    assert (upper / "upper" / "root" / "x").read_bytes() == b"one\n"
    assert (upper / "upper" / "root" / "y").read_bytes() == b"two\n"
    assert_whiteout(upper / "upper" / "etc" / "motd")
