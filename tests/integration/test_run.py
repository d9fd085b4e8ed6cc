"""`lazyroot run`: mount + volatile overlay + systemd-nspawn + clean-up, with the container's
exit status and output, nspawn options passed through, the machine named after the image, and
the image's Entrypoint/Cmd/Env/WorkingDir/User used when no command is given. After every run
nothing is left mounted and no mountpoint is left in RUNTIME/run/.
"""

import json
import os
import re
import shutil
import signal

import pytest

import conftest
import lifecycle_helpers as h
import mkdemo
from proxy import Fault, Proxy

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


# ---------------------------------------------------------------------------------------------
# the options lazyroot(1) gives `run` (--platform, --pull, --timeout) and its exit statuses

@pytest.fixture(scope="session")
def platform_image(registry, tmp_path_factory):
    """lrtest/platforms:latest, an image index of two manifests, linux/amd64 and linux/arm64,
    each the demo's first layer plus /arch naming its platform. The bytes are the same
    busybox for both: the test only reads a file, which does not care."""
    base = tmp_path_factory.mktemp("platforms")
    t = mkdemo.T2
    entries = []
    for arch in ("amd64", "arm64"):
        h.build_image(base / arch, [("arch", "f", 0o644, arch.encode() + b"\n", t)])
        entry = json.loads((base / arch / "index.json").read_bytes())["manifests"][0]
        entry["platform"] = {"architecture": arch, "os": "linux"}
        entry.pop("annotations", None)
        entries.append(entry)
        if arch != "amd64":
            for b in (base / arch / "blobs" / "sha256").iterdir():
                shutil.copy(b, base / "amd64" / "blobs" / "sha256" / b.name)
    index = mkdemo.canon({"schemaVersion": 2, "mediaType": mkdemo.MT_INDEX, "manifests": entries})
    digest = mkdemo.sha256(index)
    (base / "amd64" / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(index)
    (base / "amd64" / "index.json").write_bytes(mkdemo.canon(
        {"schemaVersion": 2, "manifests": [{"mediaType": mkdemo.MT_INDEX, "digest": digest,
                                            "size": len(index)}]}))
    return h.push_image(registry.addr, base / "amd64", "lrtest/platforms")


@pytest.mark.parametrize("platform,want", [(None, "amd64"), ("linux/arm64", "arm64")])
def test_platform_picks_the_manifest(lazyroot, platform_image, test_dir, platform, want):
    """Without --platform the host's manifest is run, with --platform=linux/arm64 arm64's."""
    if os.uname().machine not in ("x86_64", "amd64"):
        pytest.skip("the host's platform must be linux/amd64")
    opts = ["--platform", platform] if platform else []
    r = lazyroot.run("run", "--cache-dir", str(lazyroot.cache_dir), *opts, platform_image,
                     "--", "cat", "/arch")
    assert r.ok, r
    assert r.stdout == want + "\n", r
    assert_run_clean(test_dir)


def test_platform_missing_is_lazyroots_failure(lazyroot, platform_image, test_dir):
    r = lazyroot.run("run", "--cache-dir", str(lazyroot.cache_dir), "--platform", "linux/s390x",
                     platform_image, "--", "true")
    assert r.returncode == 125, r
    lines = stderr_lines(r)
    assert len(lines) == 1 and "linux/s390x" in lines[0], r
    assert_run_clean(test_dir)


def run_opts(lazyroot, opts, ref, *args, timeout=120):
    """lazyroot run --cache-dir C OPTS... REF ARGS...: lazyroot's options go before REF."""
    return lazyroot.run("run", "--cache-dir", str(lazyroot.cache_dir), *opts, ref, *args,
                        timeout=timeout)


def test_pull_never_and_always(lazyroot, registry, test_dir):
    """--pull=never: an empty cache fails (125) without a request; once cached, the image
    runs with the registry gone. --pull=always asks the registry for the tag again."""
    with Proxy(registry.addr) as p:
        ref = registry.ref("demo").replace(registry.addr, p.addr)
        r = run_opts(lazyroot, ["--pull=never"], ref, "--", "true")
        assert r.returncode == 125 and len(stderr_lines(r)) == 1, r
        assert [q for q in p.requests if q["path"].startswith("/v2/")] == [], p.requests
        assert_run_clean(test_dir)
        assert lr_run(lazyroot, ref, "--", "true").ok
        p.reset()
        r = run_opts(lazyroot, ["--pull=always"], ref, "--", "true")
        assert r.ok, r
        assert [q for q in p.requests if "/manifests/" in q["path"]], p.requests
        p.down()
        r = run_opts(lazyroot, ["--pull=never"], ref, "--", "/bin/sh", "-c", "echo offline")
        assert r.ok and r.stdout == "offline\n", r
        p.up()
    assert_run_clean(test_dir)


def test_timeout_bounds_a_stalled_read(lazyroot, registry, test_dir):
    """--timeout=1 on a lazy image (its TOCs cached) whose registry stops answering Range
    requests: the reads the container needs fail after 1 s, so run fails (the container's failure, not 125) long
    before the default 30 s would have let it."""
    with Proxy(registry.addr) as p:
        ref = registry.ref("estargz").replace(registry.addr, p.addr)
        # the TOCs into the cache first (the mount's own Range requests), then no more answers
        assert lazyroot.mount(ref, None, "--prefetch=none").ok
        assert lazyroot.umount().ok
        p.set_fault(lambda req: Fault.stall() if req["range"] else None)
        p.reset()
        r = run_opts(lazyroot, ["--pull=never", "--prefetch=none", "--timeout=1"], ref, "--",
                     "/bin/busybox", "true")
        stalled = [q for q in p.requests if q["range"]]
        p.set_fault(None)
        p.release()
    assert r.returncode not in (0, 125) and not r.timed_out, r
    assert stalled, "no lazy read reached the registry: %s" % p.requests
    assert r.duration < 25, "run took %.1fs: the 30 s default, not --timeout=1" % r.duration
    assert_run_clean(test_dir)


def _container_sleep(marker, under):
    """pid of `/bin/sleep MARKER` descending from process `under`, or None."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                if f.read().split(b"\0")[:2] != [b"/bin/sleep", marker.encode()]:
                    continue
        except OSError:
            continue
        pid = int(name)
        while pid > 1:
            if pid == under:
                return int(name)
            try:
                with open("/proc/%d/stat" % pid) as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                break
    return None


def test_killed_container_exits_as_nspawn_says(lazyroot, registry, test_dir):
    """The container's process killed by SIGKILL: systemd-nspawn says so on stderr and exits
    with 1 (it does not pass 128+N on), and run exits with that status and cleans up; see
    lazyroot(1), EXIT STATUS."""
    marker = str(40000 + os.getpid() % 20000)
    proc = lazyroot.spawn("run", "--cache-dir", str(lazyroot.cache_dir), registry.ref("demo"),
                          "--", "/bin/sleep", marker)
    pid = conftest.wait_until(lambda: _container_sleep(marker, proc.pid), 60)
    err = test_dir / "spawn-0.err"
    assert pid, "the container's sleep did not start: %s" % err.read_text(errors="replace")
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(60) == 1, err.read_text()
    assert "terminated by signal KILL" in err.read_text(), err.read_text()
    assert_run_clean(test_dir)
