"""`lazyroot run`: mount + volatile overlay + systemd-nspawn + clean-up, with the container's
exit status and output, nspawn options passed through, the machine named after the image, and
the image's Entrypoint/Cmd/Env/WorkingDir/User used when no command is given. After every run
nothing is left mounted and no mountpoint is left in RUNTIME/run/.
"""

import re

import pytest

import conftest
import lifecycle_helpers as h
import mkdemo

DATE_RE = re.compile(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}$")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# busybox has no getent, and systemd-nspawn --user=NAME runs `getent passwd NAME` and
# `getent initgroups NAME` inside the container: the runcfg image brings a minimal one.
GETENT = b"""#!/bin/sh
case "$1" in
passwd)
	while IFS=: read -r n p u g rest; do
		if [ "$n" = "$2" ] || [ "$u" = "$2" ]; then echo "$n:$p:$u:$g:$rest"; exit 0; fi
	done < /etc/passwd
	exit 2;;
initgroups)
	echo "$2"; exit 0;;
esac
exit 1
"""
PASSWD = mkdemo.PASSWD + b"app:x:1000:1000:app:/srv/work:/bin/sh\n"
RUNCFG_CONFIG = {"Entrypoint": ["/bin/sh", "-c"],
                 "Cmd": ["echo cwd=$(pwd) user=$(id -u) foo=$FOO"],
                 "Env": ["FOO=bar", PATH_ENV],
                 "WorkingDir": "/srv/work",
                 "User": "1000"}
RUNCFG_EXPECTED = "cwd=/srv/work user=1000 foo=bar"


@pytest.fixture(scope="session")
def run_images(registry, tmp_path_factory):
    """Pushes lrtest/runcfg:latest (config with Entrypoint, Cmd, Env, WorkingDir, User 1000) and
    lrtest/nocmd:latest (neither Entrypoint nor Cmd) to the session registry."""
    base = tmp_path_factory.mktemp("run-images")
    t = mkdemo.T2
    extra = [("srv", "d", 0o755, None, t), ("srv/work", "d", 0o755, None, t),
             ("usr", "d", 0o755, None, t), ("usr/bin", "d", 0o755, None, t),
             ("usr/bin/getent", "f", 0o755, GETENT, t)]
    h.build_image(base / "runcfg", extra, RUNCFG_CONFIG, passwd=PASSWD)
    h.build_image(base / "nocmd", [("srv", "d", 0o755, None, t)],
                  {"Env": [PATH_ENV], "WorkingDir": "/"})
    return {"runcfg": h.push_image(registry.addr, base / "runcfg", "lrtest/runcfg"),
            "nocmd": h.push_image(registry.addr, base / "nocmd", "lrtest/nocmd")}


def lr_run(lazyroot, ref, *args, timeout=120):
    return lazyroot.run("run", "--cache-dir", str(lazyroot.cache_dir), ref, *args, timeout=timeout)


def stderr_lines(r):
    return [l for l in r.stderr.splitlines() if l.strip()]


def assert_run_clean(test_dir):
    left = conftest.mounts_under(test_dir)
    assert left == [], "still mounted after lazyroot run: %r" % left
    rundir = test_dir / "run" / "run"
    leftovers = sorted(p.name for p in rundir.iterdir()) if rundir.is_dir() else []
    assert leftovers == [], "mountpoints left in %s: %r" % (rundir, leftovers)
    assert h.state_dirs(test_dir) == [], h.state_dirs(test_dir)
    # `run` returns after its daemon is gone (umount waits for it); allow a short grace
    left = h.wait_no_daemons(test_dir, timeout=3)
    assert left == [], "lazyroot daemon(s) still running after lazyroot run: %r" % left


def test_exit_status_and_stdout_pass_through(lazyroot, registry, test_dir):
    r = lr_run(lazyroot, registry.ref("demo"), "--",
               "/bin/sh", "-c", "echo out-line; echo err-line >&2; exit 7")
    assert r.returncode == 7 and not r.timed_out, r
    assert r.stdout == "out-line\n", r
    assert "err-line" in r.stderr, r
    assert_run_clean(test_dir)

    r = lr_run(lazyroot, registry.ref("demo"), "--", "/bin/sh", "-c", "exit 0")
    assert r.ok and r.stdout == "", r
    assert_run_clean(test_dir)


def test_machine_named_after_image(lazyroot, registry, test_dir):
    r = lr_run(lazyroot, registry.ref("demo"), "--", "hostname")
    assert r.ok, r
    assert r.stdout.strip() == "demo", r
    assert_run_clean(test_dir)


def test_machine_option_wins(lazyroot, registry, test_dir):
    r = lr_run(lazyroot, registry.ref("demo"), "--machine", "foo", "--", "hostname")
    assert r.ok, r
    assert r.stdout.strip() == "foo", r
    assert_run_clean(test_dir)


def test_setenv_passes_through(lazyroot, registry, test_dir):
    r = lr_run(lazyroot, registry.ref("demo"), "--setenv", "X=1", "--",
               "/bin/sh", "-c", 'echo "X=$X"')
    assert r.ok, r
    assert r.stdout == "X=1\n", r
    assert_run_clean(test_dir)


def test_bind_passes_through(lazyroot, registry, test_dir):
    share = test_dir / "share"
    share.mkdir()
    (share / "file").write_text("from the host\n")
    r = lr_run(lazyroot, registry.ref("demo"), "--bind", "%s:/mnt/x" % share, "--",
               "cat", "/mnt/x/file")
    assert r.ok, r
    assert r.stdout == "from the host\n", r
    assert_run_clean(test_dir)
    assert (share / "file").read_text() == "from the host\n"


def test_default_command_from_image_config(lazyroot, run_images, test_dir):
    r = lr_run(lazyroot, run_images["runcfg"])
    assert r.ok, r
    assert r.stdout.strip().splitlines() == [RUNCFG_EXPECTED], r
    assert_run_clean(test_dir)


def test_command_replaces_entrypoint_and_cmd(lazyroot, run_images, test_dir):
    # a command given after -- replaces Entrypoint + Cmd; Env, WorkingDir, User still apply
    r = lr_run(lazyroot, run_images["runcfg"], "--", "/bin/sh", "-c", 'echo "$(pwd) $(id -u) $FOO"')
    assert r.ok, r
    assert r.stdout == "/srv/work 1000 bar\n", r
    assert_run_clean(test_dir)


def test_no_entrypoint_no_cmd_fails_clearly(lazyroot, run_images, test_dir):
    r = lr_run(lazyroot, run_images["nocmd"])
    assert r.returncode == 125 and not r.timed_out, r
    lines = stderr_lines(r)
    assert len(lines) == 1, r
    assert "Entrypoint" in lines[0] and "Cmd" in lines[0], r
    assert r.stdout == "", r
    assert_run_clean(test_dir)


def test_unknown_tag_fails_with_one_line(lazyroot, registry, test_dir):
    ref = "%s/demo:no-such-tag" % registry.addr
    r = lr_run(lazyroot, ref, "--", "true")
    assert r.returncode == 125 and not r.timed_out, r
    lines = stderr_lines(r)
    assert len(lines) == 1, r
    assert "no-such-tag" in lines[0], r
    assert_run_clean(test_dir)


def test_overlay_keeps_writes(lazyroot, registry, test_dir):
    upper = test_dir / "upper"
    r = lazyroot.run("run", "--cache-dir", str(lazyroot.cache_dir), "--overlay", str(upper),
                     registry.ref("demo"), "--", "/bin/sh", "-c", "echo kept > /root/x")
    assert r.ok, r
    assert (upper / "upper" / "root" / "x").read_text() == "kept\n"
    assert_run_clean(test_dir)
    # ... and without --overlay they are dropped
    r = lr_run(lazyroot, registry.ref("demo"), "--", "/bin/sh", "-c",
               "test -e /root/x && echo present; echo dropped > /root/x")
    assert r.ok and r.stdout == "", r
    assert_run_clean(test_dir)
    assert h.files_outside(test_dir, skip=("cache", "upper")) == []


def test_demo_default_command(lazyroot, registry, test_dir):
    """The README's demo in miniature: the demo image's own Cmd prints the date 3 times, 5 s
    apart."""
    r = lr_run(lazyroot, registry.ref("demo"), timeout=90)
    assert r.ok, r
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(DATE_RE.match(l) for l in lines), r
    assert r.duration >= 10, r
    assert_run_clean(test_dir)
