"""Mount options and privileges (issue "reliability and security", privilege part).

As root, a mount is a container's root: allow_other, default_permissions, suid and dev. Any
other user gets what FUSE lets users have: nosuid and nodev always (an image must not hand a
user a setuid root binary or a device node), allow_other only when /etc/fuse.conf says
user_allow_other, no overlay (kernel overlayfs needs root), runtime state under
$XDG_RUNTIME_DIR, and `lazyroot umount` through fusermount3.

The unprivileged user is nobody (65534) via setpriv. FUSE for users needs /dev/fuse open to
them (Debian's udev rule makes it 0666); when this machine has it 0600, the test sets the
Debian mode for its duration and restores what it found.
"""

import csv
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

import conftest

NOBODY = 65534
FILES = ["/etc/os-release", "/bin/busybox", "/sizes/f4097", "/sizes/random-12MiB"]


def options_of(path):
    """The mount's per-mount and super-block options at @path, or None if nothing is there."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a, b = left.split(), right.split()
            if conftest._unescape_mountinfo(a[4]) == str(path):
                return set(a[5].split(",")) | set(b[2].split(",") if len(b) > 2 else ())
    return None


def expected_sha256(name):
    tsv = Path(__file__).resolve().parents[1] / "fixtures" / name / "expected-tree.tsv"
    with open(tsv, newline="") as f:
        return {row["path"]: row["sha256"] for row in csv.DictReader(f, delimiter="\t")}


@pytest.fixture
def user_dirs():
    """A world-traversable dir with mnt/, cache/ and run/ owned by nobody; /dev/fuse usable."""
    st = os.stat("/dev/fuse")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)
    top = Path(tempfile.mkdtemp(prefix="lazyroot-user-"))
    os.chmod(top, 0o755)
    dirs = {}
    for name in ("mnt", "cache", "run"):
        dirs[name] = top / name
        dirs[name].mkdir()
        os.chown(dirs[name], NOBODY, NOBODY)
    try:
        yield dirs
    finally:
        conftest.unmount_all_under(str(top))
        os.chmod("/dev/fuse", mode)
        shutil.rmtree(top, ignore_errors=True)


def as_nobody(lazyroot_bin, dirs, *args, timeout=120):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(dirs["run"]),
           "XDG_RUNTIME_DIR": str(dirs["run"])}
    argv = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]
    return conftest.run_cmd(argv + list(args), timeout=timeout, env=env)


def test_user_mount_is_nosuid_nodev(lazyroot_bin, registry, user_dirs):
    bin_ = str(lazyroot_bin)
    mnt = user_dirs["mnt"]
    r = as_nobody(bin_, user_dirs, bin_, "mount", "--cache-dir", str(user_dirs["cache"]),
                  registry.ref("estargz"), str(mnt))
    assert r.returncode == 0, str(r)
    try:
        opts = options_of(mnt)
        assert opts is not None, "not mounted"
        assert {"ro", "nosuid", "nodev", "default_permissions"} <= opts, opts
        allow = any(l.strip() == "user_allow_other" for l in open("/etc/fuse.conf")) \
            if os.path.exists("/etc/fuse.conf") else False
        assert ("allow_other" in opts) == allow, opts
        # The state is the user's own, not /run/lazyroot's.
        assert list((user_dirs["run"] / "lazyroot" / "mounts").iterdir()), "no runtime state"

        want = expected_sha256("estargz")
        for path in FILES:
            c = as_nobody(bin_, user_dirs, "sha256sum", str(mnt) + path)
            assert c.returncode == 0, str(c)
            assert c.stdout.split()[0] == want[path], path

        # Its cache is private: 0700 directories, 0600 files.
        for p in Path(user_dirs["cache"]).rglob("*"):
            m = stat.S_IMODE(p.lstat().st_mode)
            assert m & 0o077 == 0, "%s is %o" % (p, m)
    finally:
        u = as_nobody(bin_, user_dirs, bin_, "umount", str(mnt))
    assert u.returncode == 0, str(u)
    assert options_of(mnt) is None, "still mounted after umount"
    assert not list((user_dirs["run"] / "lazyroot" / "mounts").iterdir())


def test_user_overlay_refused(lazyroot_bin, registry, user_dirs):
    bin_ = str(lazyroot_bin)
    r = as_nobody(bin_, user_dirs, bin_, "mount", "--cache-dir", str(user_dirs["cache"]),
                  "--volatile", registry.ref("estargz"), str(user_dirs["mnt"]))
    assert r.returncode == 5, str(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "need root" in lines[0], r.stderr
    assert options_of(user_dirs["mnt"]) is None


def test_root_mount_is_a_container_root(lazyroot, registry):
    r = lazyroot.mount(registry.ref("estargz"), lazyroot.mountpoint)
    assert r.ok, str(r)
    try:
        opts = options_of(lazyroot.mountpoint)
        assert {"ro", "allow_other", "default_permissions"} <= opts, opts
        assert not ({"nosuid", "nodev"} & opts), opts
    finally:
        lazyroot.umount().check()
