"""Errors: every failure of `lazyroot mount` / `umount` exits with the documented status
(lazyroot(1), EXIT STATUS: 2 usage / bad reference or platform, 3 registry / network / unknown
image, 5 mount), prints exactly one line on stderr that says what is wrong, and leaves nothing
behind: nothing mounted, no daemon, and a cache that still works."""

import json
import os
import subprocess

import pytest

from conftest import mounts_under, run_cmd
from helpers import (assert_clean_failure, assert_no_daemon, assert_one_line, blob_files,
                     compare_with_oracle, daemons, lazyroot_mounts, mountinfo_options)
from registry import free_port


@pytest.fixture
def before():
    """fuse.lazyroot mounts that existed before the test (other sessions may have some)."""
    return lazyroot_mounts()


# ---------------------------------------------------------------------------------------------
# registry and reference errors: (id, ref-maker, extra args, exit status, key words)

def _unreachable_ref(registry):
    return "127.0.0.1:%d/fixtures/oci-gzip:edge" % free_port()


REF_CASES = [
    ("unknown-tag", lambda reg: "%s/fixtures/oci-gzip:no-such-tag" % reg.addr, (), 3,
     ["manifest unknown", "no-such-tag"]),
    ("unknown-repository", lambda reg: "%s/fixtures/no-such-repo:edge" % reg.addr, (), 3,
     ["unknown", "no-such-repo"]),
    ("unreachable-registry", _unreachable_ref, (), 3, ["cannot connect", "127.0.0.1"]),
    ("upper-case", lambda reg: "%s/Fixtures/oci-gzip:edge" % reg.addr, (), 2,
     ["invalid image reference", "lowercase"]),
    ("bad-digest", lambda reg: "%s/fixtures/oci-gzip@sha256:abc" % reg.addr, (), 2,
     ["invalid image reference", "digest"]),
    ("empty-tag", lambda reg: "x:", (), 2, ["invalid image reference", "tag"]),
    ("empty-tag-with-host", lambda reg: "%s/fixtures/oci-gzip:" % reg.addr, (), 2,
     ["invalid image reference", "tag"]),
    ("unknown-platform", lambda reg: reg.ref("multiarch"), ("--platform", "linux/s390x"), 3,
     ["platform", "linux/s390x"]),
    ("invalid-platform", lambda reg: reg.ref("multiarch"), ("--platform", "bogus"), 2,
     ["invalid platform", "bogus"]),
    ("invalid-platform-empty-arch", lambda reg: reg.ref("multiarch"), ("--platform", "linux/"), 2,
     ["platform"]),
    ("overlay-and-volatile", lambda reg: reg.ref("oci-gzip"), ("--overlay", "@UPPER@", "--volatile"),
     2, ["--overlay", "--volatile"]),
]


@pytest.mark.parametrize("case", REF_CASES, ids=[c[0] for c in REF_CASES])
def test_mount_error(lazyroot, registry, test_dir, mountpoint, cache_dir, before, case):
    _, make_ref, extra, rc, words = case
    ref = make_ref(registry)
    extra = tuple(str(test_dir / "upper") if a == "@UPPER@" else a for a in extra)
    r = lazyroot.mount(ref, mountpoint, *extra)
    assert_clean_failure(r, rc, words, test_dir, before, related=(registry.addr, ref), mnt=mountpoint)
    assert os.listdir(mountpoint) == []
    if rc == 2:
        # a usage error is found before anything is fetched: no blob in the cache
        assert blob_files(cache_dir) == set()


# ---------------------------------------------------------------------------------------------
# mountpoint errors

def test_missing_mountpoint(lazyroot, registry, test_dir, before):
    mnt = test_dir / "does-not-exist"
    r = lazyroot.mount(registry.ref("oci-gzip"), mnt)
    assert_clean_failure(r, 5, ["does not exist", str(mnt)], test_dir, before, mnt=mnt)
    assert not os.path.lexists(mnt), "the missing mountpoint was created"


def test_non_empty_mountpoint(lazyroot, registry, test_dir, mountpoint, before):
    (mountpoint / "keep-me").write_text("data\n")
    r = lazyroot.mount(registry.ref("oci-gzip"), mountpoint)
    assert_clean_failure(r, 5, ["not empty", str(mountpoint)], test_dir, before, mnt=mountpoint)
    assert os.listdir(mountpoint) == ["keep-me"]
    assert (mountpoint / "keep-me").read_text() == "data\n"


def test_mountpoint_is_a_file(lazyroot, registry, test_dir, before):
    f = test_dir / "a-file"
    f.write_text("content\n")
    r = lazyroot.mount(registry.ref("oci-gzip"), f)
    assert_clean_failure(r, 5, ["is not a directory", str(f)], test_dir, before, mnt=f)
    assert f.read_text() == "content\n"


def test_already_mounted(lazyroot, registry, test_dir, mountpoint, before):
    ref = registry.ref("oci-gzip")
    first = lazyroot.mount(ref, mountpoint)
    assert first.ok, str(first)
    mounted = mounts_under(test_dir)
    pids = set(daemons(mountpoint))
    assert mounted and len(pids) == 1, pids
    second = lazyroot.mount(ref, mountpoint)
    assert not second.timed_out and second.returncode == 5, str(second)
    line = assert_one_line(second)
    assert "already" in line and "mount" in line, line
    # nothing stacked, no second daemon, the first mount still serves
    assert mounts_under(test_dir) == mounted
    assert set(daemons(mountpoint)) == pids
    assert (mountpoint / "sizes" / "one").stat().st_size == 1
    # then umount cleans everything
    u = lazyroot.umount(mountpoint)
    assert u.ok, str(u)
    assert not mounts_under(test_dir)
    assert_no_daemon(mountpoint)


def test_no_dev_fuse(lazyroot, registry, test_dir, mountpoint, before):
    """In a private mount namespace whose /dev is a tmpfs holding only /dev/null."""
    ref = registry.ref("oci-gzip")
    script = ('mount -t tmpfs -o mode=0755 tmpfs /dev && mknod -m 0666 /dev/null c 1 3 && '
              'exec "$0" "$@"')
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
            str(lazyroot.binary), "mount", ref, str(mountpoint), "--cache-dir", str(lazyroot.cache_dir)]
    res = run_cmd(argv, timeout=120, env=lazyroot._env(None))
    assert_clean_failure(res, 5, ["/dev/fuse"], test_dir, before, related=(registry.addr,),
                         mnt=mountpoint)
    assert os.listdir(mountpoint) == []


# ---------------------------------------------------------------------------------------------
# umount errors

def test_umount_not_a_lazyroot_mount(lazyroot, test_dir, mountpoint, before):
    (mountpoint / "keep-me").write_text("x")
    r = lazyroot.umount(mountpoint)
    # lazyroot(1), EXIT STATUS: 5, mount failure (a DIR that is not a lazyroot mount)
    assert_clean_failure(r, 5, ["not a lazyroot mount"], test_dir, before)
    assert (mountpoint / "keep-me").read_text() == "x"


def test_umount_foreign_mount_is_left_alone(lazyroot, test_dir, mountpoint, before):
    """A tmpfs mounted on DIR is not lazyroot's: umount refuses and leaves it mounted."""
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mountpoint)], check=True, timeout=30)
    (mountpoint / "canary").write_text("x")
    r = lazyroot.umount(mountpoint)
    assert not r.timed_out and r.returncode == 5, str(r)
    assert "not a lazyroot mount" in assert_one_line(r)
    info = mountinfo_options(mountpoint)
    assert info is not None and info[1] == "tmpfs", info
    assert (mountpoint / "canary").read_text() == "x"
    subprocess.run(["umount", str(mountpoint)], check=True, timeout=30)


def test_umount_missing_dir(lazyroot, test_dir, before):
    r = lazyroot.umount(test_dir / "nope")
    # lazyroot(1), EXIT STATUS: 5 for a mountpoint that is missing
    assert not r.timed_out and r.returncode == 5, str(r)
    assert str(test_dir / "nope") in assert_one_line(r)


# ---------------------------------------------------------------------------------------------
# a failed mount leaves the cache usable

def test_cache_usable_after_failures(lazyroot, registry, test_dir, mountpoint, cache_dir, before):
    """All the failures above, in one cache, then a good mount in that cache works and matches
    the oracle."""
    mp = mountpoint
    failures = [
        (("%s/fixtures/oci-gzip:no-such-tag" % registry.addr,), 3),
        (("%s/fixtures/no-such-repo:edge" % registry.addr,), 3),
        ((_unreachable_ref(registry),), 3),
        (("%s/Fixtures/oci-gzip:edge" % registry.addr,), 2),
        ((registry.ref("multiarch"), "--platform", "linux/s390x"), 3),
        ((registry.ref("multiarch"), "--platform", "bogus"), 2),
        ((registry.ref("oci-gzip"), "--overlay", str(test_dir / "upper"), "--volatile"), 2),
    ]
    for args, rc in failures:
        r = lazyroot.mount(args[0], mp, *args[1:])
        assert_clean_failure(r, rc, [], test_dir, before, related=(registry.addr,), mnt=mp)
    # a good mount, and then a mountpoint failure with the image already in the cache
    full = test_dir / "full"
    full.mkdir()
    (full / "x").write_text("x")
    r = lazyroot.mount(registry.ref("oci-gzip"), full)
    assert_clean_failure(r, 5, ["not empty"], test_dir, before, related=(registry.addr,), mnt=full)
    r = lazyroot.mount(registry.ref("oci-gzip"), mp)
    assert r.ok, str(r)
    diffs = compare_with_oracle(mp, registry.layout("oci-gzip"))
    assert not diffs, "\n".join(diffs)
    u = lazyroot.umount(mp)
    assert u.ok, str(u)
    assert not mounts_under(test_dir)
    assert_no_daemon(mp)
    # the cache has no stray temporary files
    tmp = cache_dir / "tmp"
    assert not tmp.exists() or os.listdir(tmp) == [], os.listdir(tmp)


@pytest.mark.parametrize("args,rc,words", [
    (("mount", "--bogus", "x", "y"), 2, ["lazyroot mount", "unrecognized option"]),
    (("mount", "--pull=sometimes", "x", "y"), 2, ["--pull", "sometimes"]),
    (("mount", "only-a-ref"), 2, ["mountpoint"]),
    (("umount",), 2, ["mountpoint"]),
    (("frobnicate",), 2, ["unknown verb", "frobnicate"]),
    # run's own failures are 125, as podman's, so they never pass for a container's status
    (("run", "--bogus", "x"), 125, ["lazyroot run", "unrecognized option"]),
    (("run",), 125, ["image reference"]),
])
def test_usage_errors(lazyroot, test_dir, args, rc, words):
    r = lazyroot.run(*args)
    assert r.returncode == rc, str(r)
    line = assert_one_line(r)
    for w in words:
        assert w in line, (w, line)
    assert not mounts_under(test_dir)


# ---------------------------------------------------------------------------------------------
# the line itself: "lazyroot: what failed: CLASS: object and reason" (lazyroot(1), DIAGNOSTICS)

EXACT_CASES = [
    ("unknown-tag", lambda reg: "%s/fixtures/oci-gzip:no-such-tag" % reg.addr, (), 3,
     "No such file or directory: manifest unknown: {addr}/fixtures/oci-gzip:no-such-tag "
     "(GET http://{addr}/v2/fixtures/oci-gzip/manifests/no-such-tag: 404 MANIFEST_UNKNOWN)"),
    ("unknown-platform", lambda reg: reg.ref("multiarch"), ("--platform", "linux/s390x"), 3,
     "No such file or directory: image index '{index}' has no manifest for platform "
     "'linux/s390x' (it has: {available})"),
    ("invalid-platform", lambda reg: reg.ref("multiarch"), ("--platform", "bogus"), 2,
     "Invalid argument: invalid platform 'bogus'"),
]


@pytest.mark.parametrize("case", EXACT_CASES, ids=[c[0] for c in EXACT_CASES])
def test_error_line_is_exact(lazyroot, registry, test_dir, mountpoint, before, case):
    _, make_ref, extra, rc, want = case
    ref = make_ref(registry)
    r = lazyroot.mount(ref, mountpoint, *extra)
    line = assert_clean_failure(r, rc, [], test_dir, before, related=(registry.addr, ref),
                                mnt=mountpoint)
    index = json.loads((registry.layout("multiarch") / "index.json").read_text())
    want = want.format(addr=registry.addr, index=index["manifests"][0]["digest"],
                       available="linux/amd64, linux/arm64/v8")
    assert line == "lazyroot: cannot pull '%s': %s" % (ref, want)
