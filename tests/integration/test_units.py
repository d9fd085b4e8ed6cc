"""The commands that docs/examples' systemd units and crontab line run, run on this machine
as the units would run them: %i/%I and the EnvironmentFile's variables substituted, the
lazyroot binary under test for /usr/bin/lazyroot, and /var/lib moved below the test's dir
(the cache is the test's own through $LAZYROOT_CACHE_DIR). systemd is not PID 1 on every test
machine: there, like `lazyroot run`, --register=no is added to systemd-nspawn."""

import os
import re
import shlex
import signal
import socket
from pathlib import Path

import pytest

import helpers
from conftest import REPO_ROOT, is_mounted, mounts_under
from lifecycle_helpers import host_runs_systemd

EXAMPLES = REPO_ROOT / "docs" / "examples"


def unit_exec_lines(unit, key):
    lines = []
    for line in (EXAMPLES / unit).read_text().splitlines():
        if line.startswith(key + "="):
            lines.append(line[len(key) + 1:])
    return lines


def expand(line, lazyroot, test_dir, instance, env):
    """One Exec line as systemd would run it: prefix characters, specifiers, ${VAR} (one word)
    and $VAR (split at white space)."""
    ignore_failure = line.startswith("-")
    line = line.lstrip("-@+!")
    line = line.replace("%I", instance).replace("%i", instance)
    words = []
    for w in shlex.split(line):
        m = re.fullmatch(r"\$([A-Za-z_]+)", w)
        if m:
            words.extend(env.get(m.group(1), "").split())
            continue
        w = re.sub(r"\$\{([A-Za-z_]+)\}", lambda m: env[m.group(1)], w)
        w = w.replace("/var/lib/", str(test_dir / "var" / "lib") + "/")
        words.append(w)
    if words[0] == "/usr/bin/lazyroot":
        words[0] = str(lazyroot.binary)
    if words[0].endswith("systemd-nspawn") and not host_runs_systemd():
        words.insert(1, "--register=no")
    return words, ignore_failure


def run_line(lazyroot, words, timeout=120):
    from conftest import run_cmd
    return run_cmd(words, timeout=timeout, env=lazyroot._env(None))


def test_nspawn_unit_commands(lazyroot, registry, test_dir):
    instance = "lrtest-unit"
    env = {"IMAGE": registry.ref("demo"), "NSPAWN_ARGS": "/usr/local/bin/hello"}
    machine_dir = test_dir / "var" / "lib" / "machines" / instance
    upper = test_dir / "var" / "lib" / "lazyroot" / "upper" / instance

    for line in unit_exec_lines("lazyroot-nspawn@.service", "ExecStartPre"):
        words, _ = expand(line, lazyroot, test_dir, instance, env)
        r = run_line(lazyroot, words)
        assert r.ok, str(r)
    assert machine_dir.is_dir() and (upper / "upper").is_dir()
    assert mounts_under(machine_dir), "ExecStartPre did not mount the machine's directory"

    (start,) = unit_exec_lines("lazyroot-nspawn@.service", "ExecStart")
    words, _ = expand(start, lazyroot, test_dir, instance, env)
    r = run_line(lazyroot, words)
    assert r.ok and "hello from layer 2" in r.stdout, str(r)

    for key in ("ExecStop", "ExecStopPost"):
        for line in unit_exec_lines("lazyroot-nspawn@.service", key):
            words, ignore = expand(line, lazyroot, test_dir, instance, env)
            r = run_line(lazyroot, words)
            assert r.ok or ignore, str(r)
    assert not mounts_under(test_dir), mounts_under(test_dir)


def test_prewarm_unit_and_cron_commands(lazyroot, registry, test_dir, cache_dir):
    (line,) = unit_exec_lines("lazyroot-prewarm@.service", "ExecStart")
    words, _ = expand(line, lazyroot, test_dir, registry.ref("estargz"), {})
    r = run_line(lazyroot, words)
    assert r.ok and r.stdout == "" and r.stderr == "", str(r)
    assert any((cache_dir / "blobs").rglob("*")), "prewarm stored nothing"

    cron = [l for l in (EXAMPLES / "lazyroot-prewarm.cron").read_text().splitlines()
            if l and not l.startswith("#")]
    assert len(cron) == 1
    fields = cron[0].split()
    assert len(fields[:5]) == 5 and fields[5] == "root" and fields[6] == "/usr/bin/lazyroot"
    # the same command line with this registry's images instead of the example's
    cmd = [str(lazyroot.binary), fields[7], registry.ref("oci-gzip"), registry.ref("demo")]
    r = run_line(lazyroot, cmd)
    assert r.ok and r.stdout == "" and r.stderr == "", str(r)


def test_timer_names_the_service():
    timer = (EXAMPLES / "lazyroot-prewarm@.timer").read_text()
    assert re.search(r"^OnCalendar=", timer, re.M) and re.search(r"^Persistent=true", timer, re.M)
    assert (EXAMPLES / "lazyroot-prewarm@.service").exists()


def test_units_pass_systemd_analyze_verify(tmp_path):
    import shutil
    import subprocess
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    names = []
    for src, inst in (("lazyroot-prewarm@.service", "lazyroot-prewarm@x.service"),
                      ("lazyroot-prewarm@.timer", "lazyroot-prewarm@x.timer"),
                      ("lazyroot-nspawn@.service", "lazyroot-nspawn@x.service")):
        shutil.copy(EXAMPLES / src, tmp_path / inst)
        names.append(str(tmp_path / inst))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True,
                       text=True, timeout=60)
    # lazyroot is installed to /usr/bin by a package (meson setup --prefix=/usr); a test
    # machine runs it from the build tree
    problems = [l for l in (r.stdout + r.stderr).splitlines()
                if l.strip() and "/usr/bin/lazyroot is not executable" not in l]
    assert not problems, "\n".join(problems)


def test_foreground_mount_reports_readiness(lazyroot, registry, test_dir, mountpoint):
    """mount -f (Type=notify in a unit): READY=1 reaches $NOTIFY_SOCKET only once the tree is
    mounted and serves the image; SIGTERM unmounts it and the process exits 0."""
    path = str(test_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(120)
    try:
        proc = lazyroot.spawn("mount", "-f", registry.ref("oci-gzip"), mountpoint, "--cache-dir",
                              lazyroot.cache_dir, env={"NOTIFY_SOCKET": path})
        msg = b""
        while b"READY=1" not in msg.split(b"\n"):
            msg = sock.recv(4096)
        mounted = is_mounted(mountpoint)   # at once: ready means mounted
    finally:
        sock.close()
    assert mounted, "READY=1 came before the mount: %r" % msg
    assert not helpers.compare_with_oracle(mountpoint, registry.layout("oci-gzip"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, (test_dir / "spawn-0.err").read_text()
    assert not mounts_under(test_dir)
