"""Private users without copy-up (`--private-users=BASE|pick`): the FUSE tree shows every uid
and gid shifted by BASE, the overlay's upper and work dirs are owned by BASE, so that a real
`systemd-nspawn -U` (and `--private-users=pick`, and `lazyroot run --private-users=...`) takes
the range from the root dir's owner and chowns nothing: the upper dir holds only what the
container (and nspawn) wrote, and the lazy layer's bytes fetched are those the command read.
Inside, files are owned as in the image and permission checks follow the shifted ids; pick is
deterministic for a name and skips ranges live mounts hold; a bad BASE and an image id the
range cannot hold are refused with one line and nothing mounted.
"""

import fcntl
import json
import os
import re
import stat
import struct

import pytest

import conftest
import lifecycle_helpers as h
import mkdemo
import mkestargz as M
import push

NSPAWN_UID_DIR = "/run/systemd/nspawn-uid"
RANGE = 65536
PICK_MIN, PICK_MAX = 0x00080000, 0x6FFF0000
# An explicit base, per test process: nspawn -U takes the root's range only while no other
# container runs in it, and test runs (or their leftovers) may overlap on a shared host.
BASE = (40 + os.getpid() % 4000) * RANGE
MiB = 1 << 20
T = mkdemo.T2
SMALL = b"small file the command reads\n"
SECRET = b"only root may read this\n"


def owned(uid, gid=None, **more):
    return {"uid": uid, "gid": uid if gid is None else gid, **more}


ACL_NAME = "system.posix_acl_access"
ACL_ENTRIES = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF), (0x08, 4, 1001),
               (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]


def acl_bytes(entries):
    """A POSIX access ACL as the kernel stores it in the xattr (version 2, little-endian)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def acl_ids(value):
    """{tag: id} of the ACL_USER (2) and ACL_GROUP (8) entries."""
    ents = [struct.unpack_from("<HHI", value, off) for off in range(4, len(value), 8)]
    return {tag: ident for tag, _, ident in ents if tag in (0x02, 0x08)}


@pytest.fixture(scope="module")
def images(registry, tmp_path_factory):
    """Pushes to the session registry:
      pu/lazy   gzip busybox base + an eStargz layer: /home/user (1000:1000) and its file, a
                0600 root file, /data/small.txt, and 12 MB of /data/bulk the commands never read
      pu/bigid  the demo base + a gzip layer with /opt/odd owned by 70000:70001"""
    work = tmp_path_factory.mktemp("pu-images")
    base = M.base_entries()
    bulk = M.large_entries(12 * 10**6, 24, seed=21, top="data/bulk")
    lazy = [("home", "d", 0o755, None, T),
            ("home/user", "d", 0o750, None, T, owned(1000)),
            ("home/user/mine", "f", 0o640, b"mine\n", T, owned(1000, 1001)),
            ("home/user/shared", "f", 0o640, b"shared\n", T,
             owned(1000, xattrs={ACL_NAME: acl_bytes(ACL_ENTRIES)})),
            ("etc", "d", 0o755, None, T),
            ("etc/secret", "f", 0o600, SECRET, T),
            ("etc/passwd", "f", 0o644, mkdemo.PASSWD + b"user:x:1000:1000::/home/user:/bin/sh\n", T),
            ("etc/group", "f", 0o644, mkdemo.GROUP + b"user:x:1000:\n", T),
            ("data", "d", 0o755, None, T),
            ("data/small.txt", "f", 0o644, SMALL, T)] + bulk
    info = M.build_layout(str(work / "lazy"), [("gzip", base), ("estargz", lazy)])
    odd = [("opt", "d", 0o755, None, T), ("opt/odd", "f", 0o644, b"odd\n", T, owned(70000, 70001))]
    M.build_layout(str(work / "bigid"), [("gzip", base), ("gzip", odd)])
    return {"lazy": push.push_layout(registry.addr, str(work / "lazy"), "pu/lazy", "latest")["ref"],
            "bigid": push.push_layout(registry.addr, str(work / "bigid"), "pu/bigid", "latest")["ref"],
            "lazy_layer_size": info["layers"][1]["size"]}


def mount_ok(lazyroot, ref, mnt, *extra):
    r = lazyroot.mount(ref, mnt, "--prefetch=none", *extra)
    assert r.ok, r
    return r


def record_of(test_dir, target):
    infos = [i for i in h.state_infos(test_dir) if i.get("target") == str(target)]
    assert len(infos) == 1, h.state_infos(test_dir)
    return infos[0]


def stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt), timeout=30)
    assert r.ok, r
    return json.loads(r.stdout)


def tree_below(top):
    """Every path below top, relative, sorted."""
    out = []
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(d, n), top))
    return sorted(out)


# What systemd-nspawn 252 itself leaves in a container's tree, seen on this host with
# --register=no: /etc/resolv.conf and /etc/localtime (copied or linked from the host), the
# directories /var/log/journal and /sbin (created empty), with their parents.  Anything else in
# the upper dir is the container's own write -- or a copy-up, which must not happen.
NSPAWN_WRITES = {"etc", "etc/resolv.conf", "etc/localtime", "var", "var/log", "var/log/journal",
                 "sbin"}

SCRIPT = ("cat /proc/self/uid_map; "
          "echo owner=$(stat -c %u:%g /home/user/mine) root=$(stat -c %u:%g /); "
          "cat /data/small.txt; echo written > /root/out; "
          "su -s /bin/sh -c 'id -u; cat /etc/secret' user; echo secret-rc=$?; "
          "su -s /bin/sh -c 'cat /home/user/mine' user; echo mine-rc=$?")


def uid_map_base(out):
    m = re.search(r"^\s*0\s+(\d+)\s+(\d+)\s*$", out, re.M)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def check_container_output(r, base):
    assert r.ok, r
    assert uid_map_base(r.stdout) == (base, RANGE), r
    assert "owner=1000:1001 root=0:0" in r.stdout, r
    assert SMALL.decode() in r.stdout, r
    assert "1000\n" in r.stdout and SECRET.decode() not in r.stdout, r
    assert "secret-rc=1" in r.stdout, r
    assert "Permission denied" in r.stderr, r
    assert "mine\nmine-rc=0" in r.stdout, r


def check_upper_holds_only_writes(upper):
    written = tree_below(upper)
    assert "root/out" in written, written
    assert (upper / "root" / "out").read_bytes() == b"written\n"
    others = [p for p in written if p not in NSPAWN_WRITES | {"root", "root/out"}]
    assert others == [], "copied up beyond the container's writes: %r (all: %r)" % (others, written)
    for p in ("var/log/journal", "sbin"):
        assert not os.path.exists(upper / p) or os.listdir(upper / p) == [], (p, written)
    return written


@pytest.mark.parametrize("how", ["pick", "base"])
def test_nspawn_private_users_without_copy_up(lazyroot, registry, images, test_dir, mountpoint,
                                              fuse_available, how):
    ov = test_dir / "ov"
    mount_ok(lazyroot, images["lazy"], mountpoint, "--overlay", str(ov),
             "--private-users=" + ("pick" if how == "pick" else str(BASE)))
    base = int(record_of(test_dir, mountpoint)["private_users"])
    if how == "pick":
        assert base % RANGE == 0 and PICK_MIN <= base < PICK_MAX, base
    else:
        assert base == BASE

    # outside: every owner shifted, on the overlay and on the FUSE lower alike
    lower = h.fuse_lower(test_dir)["mountpoint"]
    for top in (str(mountpoint), lower):
        st = os.stat(os.path.join(top, "home/user/mine"))
        assert (st.st_uid, st.st_gid) == (base + 1000, base + 1001), top
        st = os.stat(os.path.join(top, "etc/secret"))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (base, base, 0o600), top
    # the ACL's named user and group are shifted too, as nspawn's chown would have
    assert acl_ids(os.getxattr(os.path.join(lower, "home/user/shared"), ACL_NAME)) == \
        {0x02: base + 1000, 0x08: base + 1001}
    for d in ("upper", "work"):
        st = os.stat(ov / d)
        assert (st.st_uid, st.st_gid) == (base, base), d
    assert stat.S_IMODE(os.stat(ov / "upper").st_mode) == 0o755
    st = os.stat(mountpoint)
    assert (st.st_uid, st.st_gid) == (base, base)

    fetched0 = stats(lazyroot, mountpoint)["bytes_fetched"]
    for flags in (["-U"], ["--private-users=pick"]):
        r = h.nspawn(mountpoint, SCRIPT, extra=flags)
        check_container_output(r, base)
    written = check_upper_holds_only_writes(ov / "upper")
    # the image's files never reached the upper dir: not one of /data, /bin, /home, /etc/secret
    assert not any(p.startswith(("data", "bin/", "home", "etc/secret", "etc/passwd"))
                   for p in written), written

    # the bytes fetched are what the commands read, nowhere near the 12 MB lazy layer
    fetched = stats(lazyroot, mountpoint)["bytes_fetched"] - fetched0
    assert fetched < images["lazy_layer_size"] // 4, (fetched, images["lazy_layer_size"])
    r = lazyroot.umount(mountpoint)
    assert r.ok, r
    h.assert_all_clean(test_dir)


def test_run_private_users(lazyroot, registry, images, test_dir, fuse_available):
    ov = test_dir / "ov"
    r = lazyroot.run("run", "--overlay", str(ov), "--private-users=%d" % BASE,
                     "--prefetch=none", images["lazy"], "--", "/bin/sh", "-c", SCRIPT, timeout=120)
    check_container_output(r, BASE)
    check_upper_holds_only_writes(ov / "upper")
    assert (os.stat(ov / "upper" / "root" / "out").st_uid) == BASE

    bases = []
    for _ in range(2):
        r = lazyroot.run("run", "--private-users=pick", images["lazy"], "--", "/bin/sh", "-c",
                         "cat /proc/self/uid_map; stat -c root=%u:%g /; echo x > /root/x",
                         timeout=120)
        assert r.ok, r
        # the volatile upper is owned by the range too: the root shows as the container's root
        assert "root=0:0" in r.stdout, r
        bases.append(uid_map_base(r.stdout))
    assert bases[0] == bases[1], bases
    assert bases[0][0] % RANGE == 0 and PICK_MIN <= bases[0][0] < PICK_MAX, bases
    h.assert_all_clean(test_dir)


def pick_at(lazyroot, test_dir, ref, mnt):
    """Mounts ref with pick at mnt, unmounts; the base it picked (checked on a file too)."""
    mount_ok(lazyroot, ref, mnt, "--private-users=pick")
    base = int(record_of(test_dir, mnt)["private_users"])
    assert os.stat(mnt / "home/user/mine").st_uid == base + 1000
    assert lazyroot.umount(mnt).ok
    return base


def held_by_nspawn_lock(base, fn):
    """Calls fn() while this process holds nspawn's lock of base."""
    os.makedirs(NSPAWN_UID_DIR, exist_ok=True)
    path = os.path.join(NSPAWN_UID_DIR, str(base))
    existed = os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
        return fn()
    finally:
        os.close(fd)
        if not existed:
            os.unlink(path)


def test_pick_is_deterministic_and_skips_live_ranges(lazyroot, registry, images, test_dir,
                                                     fuse_available):
    ref = images["lazy"]
    a, b = test_dir / "a", test_dir / "b"
    a.mkdir()
    b.mkdir()
    first = pick_at(lazyroot, test_dir, ref, a)
    assert pick_at(lazyroot, test_dir, ref, a) == first, "pick changed for one name"

    # a running systemd-nspawn holds that range: it keeps an OFD write lock on
    # /run/systemd/nspawn-uid/BASE (seen with nspawn 252 -U); the same lock taken here
    second = held_by_nspawn_lock(first, lambda: pick_at(lazyroot, test_dir, ref, a))
    assert second != first and second % RANGE == 0 and PICK_MIN <= second < PICK_MAX, second

    # another live mount holds that range: pick for the same name takes another one
    mount_ok(lazyroot, images["lazy"], b, "--private-users=%d" % first)
    mount_ok(lazyroot, images["lazy"], a, "--private-users=pick")
    second = int(record_of(test_dir, a)["private_users"])
    assert second != first and second % RANGE == 0 and PICK_MIN <= second < PICK_MAX, second
    assert os.stat(a / "home/user/mine").st_uid == second + 1000
    assert os.stat(b / "home/user/mine").st_uid == first + 1000
    assert lazyroot.umount(a).ok and lazyroot.umount(b).ok
    h.assert_all_clean(test_dir)


@pytest.mark.parametrize("value", ["70000", str(0xFFFF0000), "-65536", "65536x", "", "yes"])
def test_bad_base_is_refused(lazyroot, registry, images, test_dir, mountpoint, fuse_available,
                             value):
    r = lazyroot.mount(images["lazy"], mountpoint, "--private-users=" + value)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid --private-users" in lines[0] and "65536" in lines[0], r
    h.assert_all_clean(test_dir)


def test_id_outside_the_range_is_refused(lazyroot, registry, images, test_dir, mountpoint,
                                         fuse_available):
    for extra in (["--private-users=pick"], ["--private-users=%d" % BASE, "--volatile"]):
        r = lazyroot.mount(images["bigid"], mountpoint, *extra)
        assert r.returncode == 5, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r
        assert "'/opt/odd'" in lines[0] and "70000:70001" in lines[0] and "65536" in lines[0], r
        h.assert_all_clean(test_dir)
        assert os.listdir(mountpoint) == []
    # without private users the same image mounts, owners as they are
    mount_ok(lazyroot, images["bigid"], mountpoint)
    st = os.stat(mountpoint / "opt" / "odd")
    assert (st.st_uid, st.st_gid) == (70000, 70001)
    assert lazyroot.umount(mountpoint).ok


def test_upper_of_another_range_is_refused(lazyroot, registry, images, test_dir, mountpoint,
                                           fuse_available):
    ov = test_dir / "ov"
    mount_ok(lazyroot, images["lazy"], mountpoint, "--overlay", str(ov),
             "--private-users=%d" % BASE)
    assert lazyroot.umount(mountpoint).ok
    for extra in (["--private-users=%d" % (BASE + RANGE)], []):
        r = lazyroot.mount(images["lazy"], mountpoint, "--overlay", str(ov), *extra)
        assert r.returncode == 5, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(ov) in lines[0] and "%d:%d" % (BASE, BASE) in lines[0], r
        h.assert_all_clean(test_dir)
    # the range it was written with mounts it again
    mount_ok(lazyroot, images["lazy"], mountpoint, "--overlay", str(ov),
             "--private-users=%d" % BASE)
    assert lazyroot.umount(mountpoint).ok


def test_pick_takes_the_range_a_kept_upper_was_written_in(lazyroot, registry, images, test_dir,
                                                          fuse_available):
    """As nspawn's pick tries its root dir's owner first: an overlay kept in a directory and
    mounted at another mountpoint (another name, so another hash) keeps its range."""
    ov, a, b = test_dir / "ov", test_dir / "a", test_dir / "b"
    a.mkdir()
    b.mkdir()
    mount_ok(lazyroot, images["lazy"], a, "--overlay", str(ov), "--private-users=pick")
    first = int(record_of(test_dir, a)["private_users"])
    assert lazyroot.umount(a).ok
    mount_ok(lazyroot, images["lazy"], b, "--private-users=pick")
    other = int(record_of(test_dir, b)["private_users"])
    assert lazyroot.umount(b).ok
    assert other != first, "the two names hash to one range: the test shows nothing"
    mount_ok(lazyroot, images["lazy"], b, "--overlay", str(ov), "--private-users=pick")
    assert int(record_of(test_dir, b)["private_users"]) == first
    assert os.stat(b / "home/user/mine").st_uid == first + 1000
    assert lazyroot.umount(b).ok
    h.assert_all_clean(test_dir)
