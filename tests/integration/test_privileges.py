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
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

import conftest
from proxy import Proxy

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


def as_nobody(lazyroot_bin, dirs, *args, timeout=120, env=None):
    if env is None:
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


# ---------------------------------------------------------------------------------------------
# Mount records of users other than root (issue 13 point 4): they live in $XDG_RUNTIME_DIR, and
# every verb looks for them there.

def wait_prefetched(bin_, dirs, mnt, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = as_nobody(bin_, dirs, bin_, "stats", "--json", str(mnt), timeout=30)
        assert r.returncode == 0, str(r)
        pf = json.loads(r.stdout)["prefetch"]
        if pf["total"] > 0 and pf["done"] == pf["total"] and not pf["running"]:
            return
        time.sleep(0.2)
    raise AssertionError("prefetch not done after %ds" % timeout)


def test_user_gc_and_rm_keep_the_users_mounted_image(lazyroot_bin, registry, user_dirs):
    """A user's gc --max-size and rm see that user's own mount: the mounted image stays, its
    reads stay in the cache (no request reaches the registry) and fsck finds nothing."""
    bin_, mnt, cache = str(lazyroot_bin), user_dirs["mnt"], str(user_dirs["cache"])
    other = user_dirs["run"] / "other"
    other.mkdir()
    os.chown(other, NOBODY, NOBODY)
    with Proxy(registry.addr) as p:
        lazy = "%s/fixtures/estargz:edge" % p.addr
        tar = "%s/fixtures/oci-gzip:edge" % p.addr
        for ref in (tar, lazy):   # the mounted image is the most recently used one
            r = as_nobody(bin_, user_dirs, bin_, "mount", "--cache-dir", cache,
                          "--prefetch=all", ref, str(mnt if ref == lazy else other))
            assert r.returncode == 0, str(r)
            if ref == tar:
                u = as_nobody(bin_, user_dirs, bin_, "umount", str(other))
                assert u.returncode == 0, str(u)
        try:
            wait_prefetched(bin_, user_dirs, mnt)
            p.reset()
            r = as_nobody(bin_, user_dirs, bin_, "rm", "--cache-dir", cache, lazy)
            assert r.returncode == 1 and "is mounted" in r.stderr, str(r)
            r = as_nobody(bin_, user_dirs, bin_, "gc", "--cache-dir", cache, "--max-size", "1")
            # the other image goes; what is left is mounted, so the cache cannot fit
            assert r.returncode == 1, str(r)
            assert [l for l in r.stdout.splitlines() if l.startswith("evicted")] == \
                ["evicted " + registry.digest("oci-gzip")], r.stdout

            want = expected_sha256("estargz")
            for path in FILES:
                c = as_nobody(bin_, user_dirs, "sha256sum", str(mnt) + path)
                assert c.returncode == 0, str(c)
                assert c.stdout.split()[0] == want[path], path
            assert p.blob_requests() == [], "reads went to the registry: %s" % p.blob_requests()
            f = as_nobody(bin_, user_dirs, bin_, "fsck", "--cache-dir", cache)
            assert f.returncode == 0 and "clean" in f.stdout, str(f)
        finally:
            u = as_nobody(bin_, user_dirs, bin_, "umount", str(mnt))
        assert u.returncode == 0, str(u)


@pytest.fixture
def run_lazyroot_unreadable():
    """/run/lazyroot as root leaves it after using lazyroot: 0700, owned by root, with records
    in it; restored (or removed) afterwards."""
    path = Path("/run/lazyroot")
    existed = path.exists()
    if existed:
        st = path.stat()
    else:
        path.mkdir(mode=0o700)
    os.chown(path, 0, 0)
    os.chmod(path, 0o700)
    (path / "mounts").mkdir(exist_ok=True)
    try:
        yield path
    finally:
        if existed:
            os.chown(path, st.st_uid, st.st_gid)
            os.chmod(path, stat.S_IMODE(st.st_mode))
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("xdg", [True, False], ids=["xdg-runtime-dir", "no-xdg-runtime-dir"])
def test_user_cache_verbs_ignore_unreadable_run_lazyroot(lazyroot_bin, registry, user_dirs,
                                                         run_lazyroot_unreadable, xdg):
    """Where root has used lazyroot, a user's images, gc and rm still work: root's records are
    not the user's (with or without $XDG_RUNTIME_DIR)."""
    bin_, cache = str(lazyroot_bin), str(user_dirs["cache"])
    ref = registry.ref("oci-gzip")
    r = as_nobody(bin_, user_dirs, bin_, "mount", "--cache-dir", cache, ref, str(user_dirs["mnt"]))
    assert r.returncode == 0, str(r)
    u = as_nobody(bin_, user_dirs, bin_, "umount", str(user_dirs["mnt"]))
    assert u.returncode == 0, str(u)
    env = None if xdg else {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                            "HOME": str(user_dirs["run"])}

    i = as_nobody(bin_, user_dirs, bin_, "images", "--json", "--cache-dir", cache, env=env)
    assert i.returncode == 0, str(i)
    rows = json.loads(i.stdout)
    assert [(row["reference"], row["mounted"]) for row in rows] == [(ref, False)], rows
    g = as_nobody(bin_, user_dirs, bin_, "gc", "--cache-dir", cache, env=env)
    assert g.returncode == 0, str(g)
    d = as_nobody(bin_, user_dirs, bin_, "rm", "--cache-dir", cache, ref, env=env)
    assert d.returncode == 0 and d.stdout.strip() == "removed " + ref, str(d)
