"""Machines: `lazyroot mount --machine NAME REF`, `umount --machine`, `rm --machine`, and the
units that start them (lazyroot-machine@.service with the drop-in for systemd's own
systemd-nspawn@.service, lazyroot-machine-fill@.service).

The machine's paths are moved below the test's dir with LAZYROOT_MACHINES_DIR,
LAZYROOT_MACHINE_STATE_DIR, LAZYROOT_NSPAWN_DIR and LAZYROOT_SYSTEMD_DIR: the host's
/var/lib/machines and /etc/systemd are never written. Real `systemd-nspawn -M NAME` finds the
machine at the real paths: it runs in a private mount namespace (unshare -m) where the test's
directories are bind-mounted over /var/lib/machines and /etc/systemd/nspawn.
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import conftest
import lifecycle_helpers as h
import mkdemo
import mkestargz
from proxy import Proxy
from test_units import EXAMPLES, unit_exec_lines

NSPAWN_UNIT = Path("/lib/systemd/system/systemd-nspawn@.service")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG = {"Entrypoint": ["/bin/sh", "-c"],
          "Cmd": ["echo machine-ran cwd=$(pwd) foo=$FOO; cat /etc/motd"],
          "Env": ["FOO=bar baz", PATH_ENV],
          "WorkingDir": "/srv/work"}
EXPECTED = "machine-ran cwd=/srv/work foo=bar baz"
MOTD = b"motd of the machine image\n"
DATA_BYTES = 6 * 10**6


@pytest.fixture(scope="session")
def machine_image(registry, tmp_path_factory):
    """lrtest/machine:latest: eStargz, busybox + /srv/work + /etc/motd in layer 1, 6 MB of random
    files under /data in layer 2 that the image's command never reads."""
    out = tmp_path_factory.mktemp("machine-image") / "layout"
    t = mkdemo.T2
    l1 = mkestargz.base_entries() + [("srv", "d", 0o755, None, t),
                                     ("srv/work", "d", 0o777, None, t),
                                     ("etc/motd", "f", 0o644, MOTD, t)]
    l2 = mkestargz.large_entries(DATA_BYTES, 12, seed=15)
    info = mkestargz.build_layout(str(out), [("estargz", l1), ("estargz", l2, {"level": 1})],
                                  config=CONFIG)
    size = sum(l["size"] for l in info["layers"])
    return {"ref": h.push_image(registry.addr, out, "lrtest/machine"), "size": size,
            "data": sorted(e[0] for e in l2 if e[1] == "f")}


@pytest.fixture(scope="session")
def user_image(registry, tmp_path_factory):
    """lrtest/machine-user:latest: eStargz, busybox, User "nobody" (a name: resolving it reads
    the image's /etc/passwd)."""
    out = tmp_path_factory.mktemp("machine-user") / "layout"
    cfg = dict(CONFIG, User="nobody")
    mkestargz.build_layout(str(out), [("estargz", mkestargz.base_entries() + [
        ("srv", "d", 0o755, None, mkdemo.T2), ("srv/work", "d", 0o777, None, mkdemo.T2),
        ("etc/motd", "f", 0o644, MOTD, mkdemo.T2)])], config=cfg)
    return h.push_image(registry.addr, out, "lrtest/machine-user")


class Machines:
    """The test's machine directories and the lazyroot runner that uses them."""

    def __init__(self, lazyroot, test_dir):
        self.lr = lazyroot
        root = Path(test_dir)
        self.machines = root / "var/lib/machines"
        self.state = root / "var/lib/lazyroot/machines"
        self.nspawn_dir = root / "etc/systemd/nspawn"
        self.units = root / "etc/systemd/system"
        lazyroot.env.update({"LAZYROOT_MACHINES_DIR": str(self.machines),
                             "LAZYROOT_MACHINE_STATE_DIR": str(self.state),
                             "LAZYROOT_NSPAWN_DIR": str(self.nspawn_dir),
                             "LAZYROOT_SYSTEMD_DIR": str(self.units)})

    def run(self, *args, **kw):
        return self.lr.run(*args, **kw)

    def add(self, name, ref, *extra, timeout=120):
        return self.lr.run("mount", "--cache-dir", str(self.lr.cache_dir), "--machine", name,
                           *([ref] if ref else []), *extra, timeout=timeout)

    def files(self, name):
        return {"dir": self.machines / name, "state": self.state / name,
                "image": self.state / name / "image",
                "settings": self.nspawn_dir / (name + ".nspawn"),
                "dropin": self.units / ("systemd-nspawn@%s.service.d" % name) / "lazyroot.conf"}

    def leftovers(self):
        """Every file or directory below the four machine directories."""
        out = []
        for d in (self.machines, self.state, self.nspawn_dir, self.units):
            if d.exists():
                out += [str(p) for p in d.rglob("*")]
        return sorted(out)

    def in_namespace(self, argv, timeout=120):
        """argv in a private mount namespace where the test's machines and settings directories
        are /var/lib/machines and /etc/systemd/nspawn, as systemd-nspawn -M looks for them."""
        self.nspawn_dir.mkdir(parents=True, exist_ok=True)
        script = ('set -e; mount --rbind "$1" /var/lib/machines; '
                  'mount -t tmpfs -o mode=0755 tmpfs /etc/systemd; mkdir /etc/systemd/nspawn; '
                  'mount --bind "$2" /etc/systemd/nspawn; shift 2; exec "$@"')
        return conftest.run_cmd(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                                 "sh", self.machines, self.nspawn_dir, *argv],
                                timeout=timeout, env=self.lr._env(None))

    def nspawn_m(self, name, *command, timeout=120):
        """`systemd-nspawn -M NAME`: the image's command (from NAME.nspawn) unless given."""
        return self.in_namespace(["systemd-nspawn", "-M", name, *h.nspawn_host_flags(),
                                  "--quiet", "--console=pipe",
                                  *(["--"] + list(command) if command else [])],
                                 timeout=timeout)


@pytest.fixture
def machines(lazyroot, test_dir):
    conftest.need_tool("unshare", "util-linux")
    if not Path("/var/lib/machines").is_dir():
        pytest.skip("/var/lib/machines does not exist on this host")
    m = Machines(lazyroot, test_dir)
    yield m
    # never leave a mount behind, whatever failed
    for d in sorted(m.machines.glob("*")):
        if conftest.is_mounted(d):
            lazyroot.run("umount", "--lazy", str(d))


def machine_name(tag):
    return "lrtest-%s-%d" % (tag, os.getpid() % 100000)


def settings_of(path):
    """The .nspawn file as {key: [values]}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def stats(machines, name):
    r = machines.run("stats", "--json", str(machines.files(name)["dir"]))
    assert r.ok, r
    return json.loads(r.stdout)


def test_add_writes_settings_dropin_and_ref(machines, machine_image):
    name = machine_name("add")
    f = machines.files(name)
    r = machines.add(name, machine_image["ref"], "--prefetch=none")
    assert r.ok and r.stderr == "", r
    assert conftest.is_mounted(f["dir"]), "machine not mounted at %s" % f["dir"]
    assert (f["state"] / "upper").is_dir() and (f["state"] / "work").is_dir()
    assert "IMAGE=%s\n" % machine_image["ref"] in f["image"].read_text()
    # the settings round trip: what the image config says, as nspawn reads it
    s = settings_of(f["settings"])
    assert s.get("Boot") == ["no"], s
    params = shlex.split(s["Parameters"][0])
    # the command through the exec helper bound read-only into the container
    assert params[params.index("--") + 1:] == CONFIG["Entrypoint"] + CONFIG["Cmd"], s
    assert s["BindReadOnly"][0].endswith(":" + params[0]), s
    env = [e for v in s.get("Environment", []) for e in shlex.split(v)]
    assert sorted(env) == sorted(CONFIG["Env"]), s
    assert s.get("WorkingDirectory") == [CONFIG["WorkingDir"]], s
    base = int(s["PrivateUsers"][0])
    assert base > 0 and base % 65536 == 0, s
    assert os.stat(f["state"] / "upper").st_uid == base
    dropin = f["dropin"].read_text()
    assert re.search(r"^BindsTo=lazyroot-machine@%i\.service$", dropin, re.M), dropin
    assert re.search(r"^After=lazyroot-machine@%i\.service$", dropin, re.M), dropin

    # the same machine again while mounted: one line, nothing changed
    before = f["settings"].read_text()
    r = machines.add(name, machine_image["ref"])
    assert r.returncode == 5 and len(conftest_lines(r)) == 1 and "already" in r.stderr, r
    assert f["settings"].read_text() == before
    # another image under the same name: refused, naming the stored one
    r = machines.run("umount", "--machine", name)
    assert r.ok, r
    r = machines.add(name, "127.0.0.1:1/other:latest")
    assert r.returncode == 2 and machine_image["ref"] in r.stderr, r
    assert len(conftest_lines(r)) == 1, r
    assert not conftest.is_mounted(f["dir"])


def conftest_lines(r):
    return [l for l in r.stderr.splitlines() if l.strip()]


def test_nspawn_M_runs_the_image_command_lazily(machines, machine_image):
    name = machine_name("lazy")
    assert machines.add(name, machine_image["ref"], "--prefetch=none").ok
    r = machines.nspawn_m(name)
    assert r.ok, r
    assert EXPECTED in r.stdout and MOTD.decode() in r.stdout, r
    st = stats(machines, name)
    print("machine start fetched %d bytes in %d requests; image %d bytes" % (
        st["bytes_fetched"], st["requests"], machine_image["size"]))
    assert st["bytes_fetched"] > 0, st
    assert st["bytes_fetched"] < machine_image["size"] / 2, \
        "fetched %d of %d bytes: not lazy" % (st["bytes_fetched"], machine_image["size"])
    # -U (private users) copied nothing up: the upper holds only what the container wrote
    upper = machines.files(name)["state"] / "upper"
    written = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
    assert len(written) < 20, written
    assert machines.run("umount", "--machine", name).ok


def test_writes_survive_umount_and_remount(machines, machine_image):
    name = machine_name("keep")
    f = machines.files(name)
    assert machines.add(name, machine_image["ref"], "--prefetch=none").ok
    r = machines.nspawn_m(name, "/bin/sh", "-c", "echo kept > /srv/work/note; id -u")
    assert r.ok and r.stdout.strip().endswith("0"), r
    uid = os.stat(f["state"] / "upper").st_uid
    assert machines.run("umount", "--machine", name).ok
    assert not conftest.is_mounted(f["dir"])
    # remount from the stored REF: the writes, the range and the settings come back
    r = machines.add(name, None, "--prefetch=none")
    assert r.ok, r
    assert (f["dir"] / "srv/work/note").read_text() == "kept\n"
    assert os.stat(f["state"] / "upper").st_uid == uid
    assert settings_of(f["settings"])["PrivateUsers"] == [str(uid)]
    r = machines.nspawn_m(name, "/bin/cat", "/srv/work/note")
    assert r.ok and r.stdout == "kept\n", r
    assert machines.run("umount", "--machine", name).ok


def test_remount_keeps_private_users_off(machines, machine_image):
    """Added with --private-users=no: the writes are root's, and a remount without options (the
    boot unit's) keeps that instead of picking a range the upper dir does not match."""
    name = machine_name("nopriv")
    f = machines.files(name)
    assert machines.add(name, machine_image["ref"], "--prefetch=none", "--private-users=no").ok
    assert "PrivateUsers" not in settings_of(f["settings"])
    assert os.stat(f["state"] / "upper").st_uid == 0
    assert machines.run("umount", "--machine", name).ok
    r = machines.add(name, None, "--prefetch=none")
    assert r.ok, r
    assert "PrivateUsers" not in settings_of(f["settings"])
    assert machines.run("rm", "--machine", name).ok


def test_offline_remount_keeps_settings_it_cannot_update(machines, registry, user_image):
    """The settings resolve the image's user in its /etc/passwd. Remounted offline with that
    file's chunk gone from the cache, the machine still mounts (one warning) and keeps the
    settings it has, and starts with them: the image's command runs as the user's id, which
    the settings carry (nothing in the container reads the missing file)."""
    name = machine_name("user")
    f = machines.files(name)
    with Proxy(registry.addr) as p:
        ref = user_image.replace(registry.addr, p.addr)
        assert machines.add(name, ref, "--prefetch=none").ok
        assert machines.nspawn_m(name).ok     # what the command reads, into the cache
        before = f["settings"].read_text()
        assert machines.run("umount", "--machine", name).ok
        passwd = machines.lr.cache_dir / "blobs" / "sha256" / mkdemo.sha256(mkdemo.PASSWD)[7:9] \
            / mkdemo.sha256(mkdemo.PASSWD)[7:]
        assert passwd.exists(), "the add read /etc/passwd: its chunk is stored"
        passwd.unlink()
        p.down()
        r = machines.add(name, None, "--prefetch=none", "--timeout=2")
        assert r.ok and "keeping" in r.stderr and len(conftest_lines(r)) == 1, r
        assert f["settings"].read_text() == before
        r = machines.nspawn_m(name)
        assert r.ok and EXPECTED in r.stdout, r
    assert machines.run("rm", "--machine", name).ok


def test_rm_removes_everything_and_keep_writes_keeps_them(machines, machine_image, test_dir):
    name = machine_name("rm")
    f = machines.files(name)
    assert machines.add(name, machine_image["ref"], "--prefetch=none").ok
    (f["dir"] / "srv/work/note").write_text("mine\n")
    r = machines.run("rm", "--machine", name, "--keep-writes")
    assert r.ok, r
    assert not conftest.is_mounted(f["dir"])
    assert machines.leftovers() == sorted(str(p) for p in [
        f["state"], f["state"] / "upper", f["state"] / "upper/srv", f["state"] / "upper/srv/work",
        f["state"] / "upper/srv/work/note", f["state"] / "work", f["state"] / "work/work"]
        if p.exists()) and (f["state"] / "upper/srv/work/note").read_text() == "mine\n"
    # added again: the kept writes are there
    assert machines.add(name, machine_image["ref"], "--prefetch=none").ok
    assert (f["dir"] / "srv/work/note").read_text() == "mine\n"
    r = machines.run("rm", "--machine", name)
    assert r.ok, r
    assert machines.leftovers() == [], machines.leftovers()
    assert h.wait_no_daemons(test_dir, timeout=10) == []
    # a machine that does not exist: one line, exit 2
    r = machines.run("rm", "--machine", name)
    assert r.returncode == 2 and len(conftest_lines(r)) == 1 and name in r.stderr, r
    r = machines.run("umount", "--machine", name)
    assert r.returncode == 2 and len(conftest_lines(r)) == 1, r


def test_rm_of_a_busy_machine_removes_nothing(machines, machine_image):
    name = machine_name("busy")
    f = machines.files(name)
    assert machines.add(name, machine_image["ref"], "--prefetch=none").ok
    before = machines.leftovers()
    busy = subprocess.Popen(["sleep", "120"], cwd=str(f["dir"] / "srv/work"))
    try:
        r = machines.run("rm", "--machine", name)
        assert r.returncode == 5 and len(conftest_lines(r)) == 1 and "busy" in r.stderr, r
        assert conftest.is_mounted(f["dir"]) and machines.leftovers() == before
        r = machines.run("umount", "--machine", name)
        assert r.returncode == 5 and len(conftest_lines(r)) == 1, r
    finally:
        busy.kill()
        busy.wait()
    r = machines.run("rm", "--machine", name)
    assert r.ok, r
    assert machines.leftovers() == []


def test_failed_add_leaves_nothing(machines, registry):
    r = machines.add("lrtest-fail", registry.addr + "/lrtest/no-such-image:latest")
    assert r.returncode == 3 and len(conftest_lines(r)) == 1, r
    assert machines.leftovers() == [] or all(
        Path(p).is_dir() and not any(Path(p).iterdir()) for p in machines.leftovers()), \
        machines.leftovers()
    assert not (machines.machines / "lrtest-fail").exists()
    r = machines.add("bad/name", registry.ref("demo"))
    assert r.returncode == 2 and "invalid machine name" in r.stderr, r


def test_offline_start_from_complete_and_partial_cache(machines, registry, machine_image,
                                                      test_dir):
    full, part = machine_name("full"), machine_name("part")
    part_cache = ("--cache-dir", str(test_dir / "cache-partial"))   # the fill never sees it
    with Proxy(registry.addr) as p:
        ref = machine_image["ref"].replace(registry.addr, p.addr)
        # complete: the fill unit's command line fetched the rest of the image
        assert machines.add(full, ref, "--prefetch=none").ok
        fill = expand_fill(machines, full)
        r = conftest.run_cmd(fill, timeout=120, env=machines.lr._env(None))
        assert r.ok, r
        assert machines.run("umount", "--machine", full).ok
        # partial: only what one start read
        assert machines.add(part, ref, "--prefetch=none", *part_cache).ok
        assert machines.nspawn_m(part).ok
        assert machines.run("umount", "--machine", part).ok
        p.down()
        r = machines.add(full, None)
        assert r.ok, r
        r = machines.nspawn_m(full, "/bin/sh", "-c", "cat /%s | wc -c" % machine_image["data"][0])
        assert r.ok and int(r.stdout) > 0, r
        r = machines.add(part, None, "--timeout=2", *part_cache)
        assert r.ok, r
        r = machines.nspawn_m(part)
        assert r.ok and EXPECTED in r.stdout, r
        r = machines.nspawn_m(part, "/bin/cat", "/" + machine_image["data"][-1], timeout=60)
        assert r.returncode != 0 and not r.timed_out, r
        assert "Input/output error" in r.stderr + r.stdout, r
        assert r.duration < 30, "an uncached read took %.1fs with --timeout=2" % r.duration
        for n in (full, part):
            assert machines.run("rm", "--machine", n).ok
    assert machines.leftovers() == []


# ---------------------------------------------------------------------------------------------
# the units, their exact command lines


def unit_env(unit, image_file):
    """Environment= of the unit, then its machine's image file (EnvironmentFile= overrides)."""
    env = {}
    for line in unit_exec_lines(unit, "Environment"):
        k, v = line.split("=", 1)
        env[k] = v
    for line in Path(image_file).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


def expand_unit_line(line, lazyroot, instance, env):
    """One Exec line of a unit as systemd runs it: %i, ${VAR} and the binary under test."""
    ignore = line.startswith("-")
    words = []
    for w in shlex.split(line.lstrip("-@+!").replace("%i", instance).replace("%I", instance)):
        words.append(re.sub(r"\$\{([A-Za-z_]+)\}", lambda m: env[m.group(1)], w))
    if words[0] == "/usr/bin/lazyroot":
        words[0] = str(lazyroot.binary)
    return words, ignore


def expand_fill(machines, name):
    unit = "lazyroot-machine-fill@.service"
    (line,) = unit_exec_lines(unit, "ExecStart")
    env = unit_env(unit, machines.files(name)["image"])
    words, _ = expand_unit_line(line, machines.lr, name, env)
    assert "--limit-rate=2M" in words, words
    return words + ["--cache-dir", str(machines.lr.cache_dir)]


def nspawn_unit_argv(name, network=True):
    """systemd's own ExecStart of systemd-nspawn@.service for machine NAME, as it is on this
    machine; --register=no where systemd is not PID 1 (it has --keep-unit already);
    network=False drops --network-veth."""
    (line,) = [l[len("ExecStart="):] for l in NSPAWN_UNIT.read_text().splitlines()
               if l.startswith("ExecStart=")]
    words = shlex.split(line.replace("%i", name))
    if not h.host_runs_systemd():
        words.insert(1, "--register=no")
    if not network:
        words.remove("--network-veth")
    return words


def start_machine_unit(machines, name, test_dir):
    """lazyroot-machine@NAME.service's ExecStart, as systemd runs a Type=notify service:
    returns the process once READY=1 arrived."""
    (start,) = unit_exec_lines("lazyroot-machine@.service", "ExecStart")
    words, _ = expand_unit_line(start, machines.lr, name, {})
    path = str(test_dir / ("notify-" + name))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(120)
    try:
        proc = machines.lr.spawn(*words[1:], "--cache-dir", machines.lr.cache_dir,
                                 env={"NOTIFY_SOCKET": path})
        msg = b""
        while b"READY=1" not in msg.split(b"\n"):
            msg = sock.recv(4096)
    finally:
        sock.close()
    return proc


def test_unit_stands_for_a_machine_mounted_by_hand(machines, machine_image, test_dir):
    """`lazyroot mount --machine NAME REF`, then `machinectl start NAME`: the unit the drop-in
    binds to must not fail on the existing mount; it is ready at once, the container runs, and
    stopping the unit unmounts the machine."""
    name = machine_name("adopt")
    assert machines.add(name, machine_image["ref"], "--prefetch=none").ok
    proc = start_machine_unit(machines, name, test_dir)
    assert proc.poll() is None
    r = machines.in_namespace(nspawn_unit_argv(name, network=False))
    assert r.ok and EXPECTED in r.stdout, r
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert not conftest.mounts_under(test_dir)
    assert h.wait_no_daemons(test_dir, timeout=10) == []
    assert machines.run("rm", "--machine", name).ok


def test_machine_units_command_lines(machines, machine_image, test_dir):
    """Boot: lazyroot-machine@NAME.service's ExecStart mounts the stored machine in the
    foreground (READY=1), systemd-nspawn@NAME.service's ExecStart runs the image's command from
    the settings, the fill unit fetches the rest, SIGTERM unmounts, ExecStopPost cleans up."""
    if not NSPAWN_UNIT.exists():
        pytest.skip("%s is not installed" % NSPAWN_UNIT)
    name = machine_name("unit")
    assert machines.add(name, machine_image["ref"], "--prefetch=none").ok
    assert machines.run("umount", "--machine", name).ok

    proc = start_machine_unit(machines, name, test_dir)
    assert conftest.is_mounted(machines.files(name)["dir"])

    argv = nspawn_unit_argv(name)
    r = machines.in_namespace(argv)
    if not r.ok and "veth" in r.stderr.lower():
        # without systemd-networkd (or the kernel's veth) on a test machine
        argv.remove("--network-veth")
        r = machines.in_namespace(argv)
    assert r.ok and EXPECTED in r.stdout, r
    assert stats(machines, name)["bytes_fetched"] < machine_image["size"] / 2

    r = conftest.run_cmd(expand_fill(machines, name), timeout=120, env=machines.lr._env(None))
    assert r.ok and r.stderr == "", r

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert not conftest.mounts_under(test_dir)
    (stop,) = unit_exec_lines("lazyroot-machine@.service", "ExecStopPost")
    words, ignore = expand_unit_line(stop, machines.lr, name, {})
    r = conftest.run_cmd(words, timeout=60, env=machines.lr._env(None))
    assert ignore and r.returncode == 5, r   # nothing left to unmount: ignored by systemd
    assert machines.run("rm", "--machine", name).ok


def test_nspawn_unit_starts_offline_without_waiting(lazyroot, registry, test_dir):
    """lazyroot-nspawn@.service's ExecStartPre lines with the registry down and the image
    cached: no prewarm --wait that needs the registry before the container starts."""
    from test_units import expand, run_line
    instance = "lrtest-offline"
    with Proxy(registry.addr) as p:
        ref = registry.ref("demo").replace(registry.addr, p.addr)
        assert lazyroot.run("prewarm", "--cache-dir", str(lazyroot.cache_dir), ref).ok
        p.down()
        env = {"IMAGE": ref, "NSPAWN_ARGS": "/usr/local/bin/hello"}
        for line in unit_exec_lines("lazyroot-nspawn@.service", "ExecStartPre"):
            words, _ = expand(line, lazyroot, test_dir, instance, env)
            r = run_line(lazyroot, words)
            assert r.ok, r
        for line in unit_exec_lines("lazyroot-nspawn@.service", "ExecStopPost"):
            words, _ = expand(line, lazyroot, test_dir, instance, env)
            run_line(lazyroot, words)
    assert not conftest.mounts_under(test_dir)


def test_machine_units_pass_systemd_analyze_verify(machines, machine_image, tmp_path):
    """The machine units and systemd's systemd-nspawn@.service with the drop-in that
    `mount --machine` wrote."""
    import shutil
    if not shutil.which("systemd-analyze") or not NSPAWN_UNIT.exists():
        pytest.skip("systemd-analyze or systemd-nspawn@.service is not installed")
    name = machine_name("verify")
    assert machines.add(name, machine_image["ref"], "--prefetch=none").ok
    dropin = machines.files(name)["dropin"].read_text()
    assert machines.run("rm", "--machine", name).ok
    shutil.copy(NSPAWN_UNIT, tmp_path / "systemd-nspawn@x.service")
    (tmp_path / "systemd-nspawn@x.service.d").mkdir()
    (tmp_path / "systemd-nspawn@x.service.d" / "lazyroot.conf").write_text(dropin)
    names = [str(tmp_path / "systemd-nspawn@x.service")]
    for src in ("lazyroot-machine@.service", "lazyroot-machine-fill@.service"):
        shutil.copy(EXAMPLES / src, tmp_path / src.replace("@", "@x"))
        names.append(str(tmp_path / src.replace("@", "@x")))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True,
                       text=True, timeout=60)
    problems = [l for l in (r.stdout + r.stderr).splitlines()
                if l.strip() and "/usr/bin/lazyroot is not executable" not in l]
    assert not problems, "\n".join(problems)
