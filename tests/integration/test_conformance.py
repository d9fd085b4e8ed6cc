"""Conformance: the tree lazyroot mounts is the tree the reference unpacker (umoci) produced,
entry for entry: tests/fixtures/<variant>/expected-{tree,hardlinks,mtimes}[.linux-arm64].tsv.

The one documented oracle error (/times/2300-01-01, see helpers.MTIME_OVERRIDES) is corrected in
the test; every other oracle line is compared exactly."""

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import Lazyroot, mounts_under, unmount_all_under
from helpers import (assert_no_daemon, compare_with_oracle, lazyroot_mounts, mountinfo_options,
                     new_lazyroot_mounts, oracle_lines)

# (fixture, --platform or None, oracle suffix)
CASES = [
    ("oci-gzip", None, ""),
    ("docker-v2s2-gzip", None, ""),
    ("oci-zstd", None, ""),
    ("oci-uncompressed", None, ""),
    ("multiarch", None, ""),                      # host platform: linux/amd64
    ("multiarch", "linux/arm64/v8", ".linux-arm64"),
]


def _host_is_amd64():
    return os.uname().machine in ("x86_64", "amd64")


def _mount_compare_umount(lazyroot, registry, test_dir, mountpoint, ref, layout, platform, suffix):
    before = lazyroot_mounts()
    extra = ("--platform", platform) if platform else ()
    r = lazyroot.mount(ref, mountpoint, *extra)
    assert r.ok, str(r)
    info = mountinfo_options(mountpoint)
    assert info is not None, "nothing mounted on %s after:\n%s" % (mountpoint, r)
    diffs = compare_with_oracle(mountpoint, layout, suffix)
    assert not diffs, "tree of %s differs from the oracle:\n%s" % (ref, "\n".join(diffs))
    u = lazyroot.umount(mountpoint)
    assert u.ok, str(u)
    assert not mounts_under(test_dir), mounts_under(test_dir)
    assert not new_lazyroot_mounts(before, related=(str(test_dir), registry.addr))
    assert_no_daemon(mountpoint)
    assert os.listdir(mountpoint) == []


@pytest.mark.parametrize("name,platform,suffix", CASES,
                         ids=["%s%s" % (n, "-" + p.replace("/", "-") if p else "") for n, p, _ in CASES])
def test_tree_matches_oracle(lazyroot, registry, test_dir, mountpoint, name, platform, suffix):
    if name == "multiarch" and platform is None and not _host_is_amd64():
        pytest.skip("the default-platform oracle is linux/amd64; host is %s" % os.uname().machine)
    _mount_compare_umount(lazyroot, registry, test_dir, mountpoint, registry.ref(name),
                          registry.layout(name), platform, suffix)


def test_mount_by_digest(lazyroot, registry, test_dir, mountpoint):
    ref = registry.ref("docker-v2s2-gzip", digest=True)
    assert "@sha256:" in ref
    _mount_compare_umount(lazyroot, registry, test_dir, mountpoint, ref,
                          registry.layout("docker-v2s2-gzip"), None, "")


def test_multiarch_index_by_digest_with_platform(lazyroot, registry, test_dir, mountpoint):
    """The digest of an image index plus --platform selects that platform's manifest."""
    _mount_compare_umount(lazyroot, registry, test_dir, mountpoint,
                          registry.ref("multiarch", digest=True), registry.layout("multiarch"),
                          "linux/arm64/v8", ".linux-arm64")


def test_oracle_override_is_the_documented_one(registry):
    """The override touches exactly one line per single-arch oracle, and only that line."""
    import treewalk
    for name in ("oci-gzip", "docker-v2s2-gzip", "oci-zstd", "oci-uncompressed"):
        raw = treewalk.read_lines(os.path.join(str(registry.layout(name)), "expected-mtimes.tsv"))
        fixed = oracle_lines(registry.layout(name), "mtimes")
        changed = [(a, b) for a, b in zip(raw, fixed) if a != b]
        assert changed == [("/times/2300-01-01\t-2147483648", "/times/2300-01-01\t10413792000")], name


@pytest.fixture(scope="module")
def mounted_gzip(lazyroot_bin, fuse_available, registry):
    """oci-gzip mounted once for the read-only checks below (a module-scoped test dir, cleaned
    up like conftest's test_dir), unmounted with lazyroot umount at the end."""
    d = Path(tempfile.mkdtemp(prefix="lazyroot-test-"))
    spawned = []
    try:
        (d / "cache").mkdir()
        (d / "mnt").mkdir()
        lr = Lazyroot(lazyroot_bin, d / "cache", d / "mnt", d, spawned)
        before = lazyroot_mounts()
        r = lr.mount(registry.ref("oci-gzip"))
        assert r.ok, str(r)
        yield d / "mnt"
        u = lr.umount()
        assert u.ok, str(u)
        assert not mounts_under(d), mounts_under(d)
        assert not new_lazyroot_mounts(before, related=(str(d), registry.addr))
        assert_no_daemon(d / "mnt")
    finally:
        unmount_all_under(d)
        if not mounts_under(d):
            shutil.rmtree(d, ignore_errors=True)


def test_hardlinks_share_inode(mounted_gzip):
    a = os.stat(mounted_gzip / "hardlinks" / "a", follow_symlinks=False)
    b = os.stat(mounted_gzip / "hardlinks" / "b", follow_symlinks=False)
    assert a.st_ino == b.st_ino
    assert a.st_dev == b.st_dev
    assert a.st_nlink == 2 and b.st_nlink == 2
    assert (mounted_gzip / "hardlinks" / "a").read_bytes() == (mounted_gzip / "hardlinks" / "b").read_bytes()
    # an ordinary file has one link and its own inode
    one = os.stat(mounted_gzip / "sizes" / "one", follow_symlinks=False)
    assert one.st_nlink == 1 and one.st_ino != a.st_ino


def test_security_capability_xattr(mounted_gzip):
    val = os.getxattr(mounted_gzip / "xattr" / "cap-net-raw", "security.capability",
                      follow_symlinks=False)
    assert len(val) == 20
    # vfs_cap_data, VFS_CAP_REVISION_2 with the effective flag; permitted = CAP_NET_RAW (bit 13)
    assert val.hex() == "0100000200200000000000000000000000000000"
    assert os.getxattr(mounted_gzip / "xattr" / "user-demo", "user.demo") == b"value"


def test_mountinfo_fuse_lazyroot_readonly(mounted_gzip, registry):
    info = mountinfo_options(mounted_gzip)
    assert info is not None
    mnt_opts, fstype, source, super_opts = info
    assert fstype == "fuse.lazyroot"
    assert "ro" in mnt_opts, mnt_opts
    assert "ro" in super_opts, super_opts
    assert source == registry.ref("oci-gzip")
    assert os.statvfs(mounted_gzip).f_flag & os.ST_RDONLY


@pytest.mark.parametrize("op", ["open-existing-for-write", "create-file", "mkdir", "unlink",
                                "rename", "chmod", "symlink", "setxattr", "truncate"])
def test_writes_fail_with_erofs(mounted_gzip, op):
    m = mounted_gzip
    ops = {
        "open-existing-for-write": lambda: os.open(m / "etc" / "hostname", os.O_WRONLY),
        "create-file": lambda: os.open(m / "new-file", os.O_WRONLY | os.O_CREAT, 0o644),
        "mkdir": lambda: os.mkdir(m / "new-dir"),
        "unlink": lambda: os.unlink(m / "sizes" / "one"),
        "rename": lambda: os.rename(m / "sizes" / "one", m / "sizes" / "two"),
        "chmod": lambda: os.chmod(m / "sizes" / "one", 0o600),
        "symlink": lambda: os.symlink("x", m / "new-link"),
        "setxattr": lambda: os.setxattr(m / "sizes" / "one", "user.x", b"1"),
        "truncate": lambda: os.truncate(m / "sizes" / "one", 0),
    }
    with pytest.raises(OSError) as ei:
        fd = ops[op]()
        if isinstance(fd, int):
            os.close(fd)
    assert ei.value.errno == errno.EROFS, ei.value
    # and nothing changed
    assert (m / "sizes" / "one").stat().st_size == 1
    assert not (m / "new-file").exists() and not (m / "new-dir").exists()


def test_docker_manifest_list(lazyroot, registry, test_dir, mountpoint):
    """A Docker manifest list (not an OCI index) resolves to the host's entry.  The list is
    made here: linux/amd64 -> the docker-v2s2-gzip manifest, and as a decoy that must not be
    chosen, linux/s390x -> the multiarch image's arm64 manifest (a different tree)."""
    import http.client
    import json

    import push
    if not _host_is_amd64():
        pytest.skip("the fixture is linux/amd64")
    src = registry.layout("docker-v2s2-gzip")
    desc = json.loads((src / "index.json").read_text())["manifests"][0]
    multi = registry.layout("multiarch")
    top = json.loads((multi / "index.json").read_text())["manifests"][0]
    inner = json.loads((multi / "blobs" / "sha256" / top["digest"].split(":")[1]).read_text())
    decoy = [m for m in inner["manifests"] if m["platform"]["architecture"] == "arm64"][0]
    # The registry accepts a list only when the manifests it names are in the repository.
    push.push_layout(registry.addr, str(src), "lrtest/mlist", "amd64")
    push.push_layout(registry.addr, str(multi), "lrtest/mlist", "multi")
    mlist = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": decoy["mediaType"], "digest": decoy["digest"], "size": decoy["size"],
             "platform": {"architecture": "s390x", "os": "linux"}},
            {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"],
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]}).encode()
    conn = http.client.HTTPConnection(registry.addr)
    conn.request("PUT", "/v2/lrtest/mlist/manifests/edge", body=mlist,
                 headers={"Content-Type": "application/vnd.docker.distribution.manifest.list.v2+json"})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status in (201, 202), (resp.status, body)
    _mount_compare_umount(lazyroot, registry, test_dir, mountpoint,
                          "%s/lrtest/mlist:edge" % registry.addr, src, None, "")


def test_gnu_tar_long_names(lazyroot, registry, test_dir, mountpoint):
    """GNU tar's long-name and long-link records (././@LongLink), as older image builders
    write them: a 300-byte path, a 200-byte symlink target and a hard link to the long path."""
    import io
    import tarfile

    import mkdemo
    long_dir = "deep/" + "d" * 120 + "/" + "e" * 120
    long_file = long_dir + "/" + "f" * 50
    target = "/" + "t" * 199
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for d in ("deep", "deep/" + "d" * 120, long_dir):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        ti = tarfile.TarInfo(long_file)
        ti.size, ti.mode = 6, 0o644
        tf.addfile(ti, io.BytesIO(b"hello\n"))
        ti = tarfile.TarInfo("deep/link")
        ti.type, ti.linkname = tarfile.SYMTYPE, target
        tf.addfile(ti)
        ti = tarfile.TarInfo("deep/hard")
        ti.type, ti.linkname = tarfile.LNKTYPE, long_file
        tf.addfile(ti)
    assert b"././@LongLink" in buf.getvalue()
    from test_verify import _layout_with_layer
    _layout_with_layer(test_dir / "gnu-layout", mkdemo.gzip_bytes(buf.getvalue()),
                       mkdemo.sha256(buf.getvalue()))
    ref = __import__("push").push_layout(registry.addr, str(test_dir / "gnu-layout"),
                                         "lrtest/gnu", "latest")["ref"]
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        f = mountpoint / long_file
        assert f.read_bytes() == b"hello\n"
        assert os.readlink(mountpoint / "deep" / "link") == target
        st_a, st_b = os.stat(f), os.stat(mountpoint / "deep" / "hard")
        assert st_a.st_ino == st_b.st_ino and st_a.st_nlink == 2
    finally:
        assert lazyroot.umount(mountpoint).ok
