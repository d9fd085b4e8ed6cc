"""What happens to a mount when its daemon dies or is told to stop, and when it is busy:
- SIGKILL leaves a dead mount ("Transport endpoint is not connected") that `lazyroot umount`
  still takes down completely (FUSE-only, --overlay and --volatile);
- SIGTERM makes the daemon unmount everything itself and exit;
- `lazyroot umount` of a busy mount fails with exit 5 and leaves it working; --lazy detaches it.
"""

import errno
import os
import signal
import subprocess

import pytest

import conftest
import lifecycle_helpers as h
import mkdemo

MODES = ["fuse", "overlay", "volatile"]


def mount_mode(lazyroot, registry, test_dir, mode):
    extra = {"fuse": [], "overlay": ["--overlay", str(test_dir / "upper")],
             "volatile": ["--volatile"]}[mode]
    r = lazyroot.mount(registry.ref("demo"), None, *extra)
    assert r.ok, r
    pid = h.daemon_pid(test_dir)
    lower = h.fuse_lower(test_dir, below="")["mountpoint"]
    if mode == "fuse":
        assert lower == str(lazyroot.mountpoint)
    else:
        assert conftest.wait_mounted(lazyroot.mountpoint, 1)["fstype"] == "overlay"
    return pid, lower


def stderr_lines(r):
    return [l for l in r.stderr.splitlines() if l.strip()]


@pytest.fixture
def holder():
    """Starts `sleep` with its cwd in a directory; killed at teardown."""
    procs = []

    def start(cwd):
        p = subprocess.Popen(["sleep", "300"], cwd=str(cwd), start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        procs.append(p)
        def in_cwd():
            try:
                return os.readlink("/proc/%d/cwd" % p.pid) == str(cwd)
            except OSError:
                return False
        assert conftest.wait_until(in_cwd, 5, 0.02), "sleep did not start in %s" % cwd
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.parametrize("mode", MODES)
def test_sigkilled_daemon_leaves_dead_mount_that_umount_cleans(lazyroot, registry, test_dir,
                                                               mountpoint, mode):
    pid, lower = mount_mode(lazyroot, registry, test_dir, mode)
    os.kill(pid, signal.SIGKILL)
    assert h.wait_pid_gone(pid), "daemon %d survived SIGKILL" % pid

    with pytest.raises(OSError) as e:
        os.stat(lower)
    assert e.value.errno == errno.ENOTCONN, e.value
    if mode != "fuse":
        with pytest.raises(OSError) as e:
            os.listdir(mountpoint / "etc")
        assert e.value.errno == errno.ENOTCONN, e.value
    assert conftest.is_mounted(mountpoint), "the dead mount went away by itself"
    assert h.state_dirs(test_dir), "the state went away by itself"

    r = lazyroot.umount()
    assert r.returncode == 0 and not r.timed_out, r
    h.assert_all_clean(test_dir)
    assert os.listdir(mountpoint) == []

    # the mountpoint is usable again
    pid2, _ = mount_mode(lazyroot, registry, test_dir, mode)
    assert (mountpoint / "etc" / "os-release").read_bytes() == mkdemo.OS_RELEASE
    r = lazyroot.umount()
    assert r.ok, r
    h.assert_all_clean(test_dir, pid2)


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_daemon_unmounts_and_exits(lazyroot, registry, test_dir, mountpoint, mode):
    pid, lower = mount_mode(lazyroot, registry, test_dir, mode)
    os.kill(pid, signal.SIGTERM)
    assert h.wait_pid_gone(pid, timeout=15), \
        "daemon %d still running 15 s after SIGTERM (state %s)" % (pid, h.proc_state(pid))
    left = conftest.mounts_under(test_dir)
    assert left == [], "still mounted after the daemon exited on SIGTERM: %r" % left
    assert h.state_dirs(test_dir) == [], "mount state left behind: %r" % h.state_dirs(test_dir)
    if mode == "overlay":
        assert (test_dir / "upper" / "upper").is_dir()


@pytest.mark.parametrize("mode", MODES)
def test_umount_busy_fails_then_lazy_detaches(lazyroot, registry, test_dir, mountpoint, holder,
                                              mode):
    pid, lower = mount_mode(lazyroot, registry, test_dir, mode)
    sleeper = holder(mountpoint)

    r = lazyroot.umount()
    assert r.returncode == 5, r
    assert len(stderr_lines(r)) == 1 and "busy" in r.stderr, r
    # still mounted and working
    assert conftest.is_mounted(mountpoint)
    assert "etc" in os.listdir(mountpoint)
    assert (mountpoint / "etc" / "os-release").read_bytes() == mkdemo.OS_RELEASE
    assert not h.pid_exited(pid), "the daemon exited although the mount is busy"
    assert len(h.state_infos(test_dir)) == 1
    if mode != "fuse":
        assert h.fuse_lower(test_dir)["mountpoint"] == lower

    r = lazyroot.run("umount", "--lazy", str(mountpoint))
    assert r.returncode == 0 and not r.timed_out, r
    assert not conftest.is_mounted(mountpoint), "--lazy left the mount attached"
    assert conftest.mounts_under(test_dir) == [], conftest.mounts_under(test_dir)
    assert h.state_dirs(test_dir) == []

    # once the last user is gone, the daemon is too
    sleeper.kill()
    sleeper.wait()
    assert h.wait_pid_gone(pid, timeout=15), \
        "daemon %d still running after the detached mount was released" % pid
    h.assert_all_clean(test_dir)


@pytest.mark.parametrize("mode", ["fuse", "volatile"])
def test_lazy_umount_keeps_serving_existing_users(lazyroot, registry, test_dir, mountpoint,
                                                  holder, mode):
    """umount(2) MNT_DETACH semantics: a detached mount stays usable by the processes that
    still use it, until the last one lets go; only then does the filesystem go away (and the
    FUSE daemon with it)."""
    pid, lower = mount_mode(lazyroot, registry, test_dir, mode)
    sleeper = holder(mountpoint)

    r = lazyroot.run("umount", "--lazy", str(mountpoint))
    assert r.returncode == 0 and not r.timed_out, r
    cwd = "/proc/%d/cwd" % sleeper.pid
    try:
        names = os.listdir(cwd)
        err = None
    except OSError as e:
        names, err = None, e
    assert err is None and "etc" in names, (
        "the process using the detached mount lost it: listdir(its cwd) -> %r; daemon state %s; "
        "umount --lazy took %.1fs, stderr: %r" % (err, h.proc_state(pid), r.duration, r.stderr))
    with open(os.path.join(cwd, "etc", "os-release"), "rb") as f:
        assert f.read() == mkdemo.OS_RELEASE
    assert r.duration < 5, "umount --lazy blocked for %.1fs: %s" % (r.duration, r)
    assert "terminating" not in r.stderr, r

    sleeper.kill()
    sleeper.wait()
    assert h.wait_pid_gone(pid, timeout=15), \
        "daemon %d still running after the detached mount was released" % pid
    h.assert_all_clean(test_dir)
