"""`lazyroot run` as docker runs an image (issue 15, point 4), on busybox images without getent:
the image's User (or --user/-u) as a name, uid, uid:gid, name:group or uid:group, resolved by
lazyroot from the image's /etc/passwd and /etc/group and set by lazyroot-exec, with docker's
supplementary groups and HOME; the exit statuses 125 (lazyroot or nspawn failed before the
command), 126 (not executable), 127 (not found), else the command's. And a machine's settings
file (nspawn_settings_format) run by real systemd-nspawn -M NAME --settings=override.
"""

import json
import os
import re
from pathlib import Path

import pytest

import conftest
import lifecycle_helpers as h
import mkdemo
from test_run import PATH_ENV, assert_run_clean, lr_run, stderr_lines

PASSWD = (mkdemo.PASSWD + b"app:x:1000:1001:App:/home/app:/bin/sh\n"
          b"svc:x:2000:2000:svc:/var/svc:/bin/sh\n")
GROUP = (mkdemo.GROUP + b"apps:x:1001:\nstaff:x:50:app,svc\naudio:x:29:app\n"
         b"svcgrp:x:2000:\n")
# What the kernel says the process runs as, and HOME: "uid gid [groups...] home"
SHOW_IDS = ("set -- $(grep ^Uid: /proc/self/status) $(grep ^Gid: /proc/self/status); "
            "echo uid=$2 gid=$7 groups=$(grep ^Groups: /proc/self/status | cut -f2 | "
            "sed 's/ *$//') home=$HOME")
USERS_CONFIG = {"Cmd": ["/bin/sh", "-c", SHOW_IDS], "Env": [PATH_ENV], "User": "app"}
# the settings-file image: Entrypoint + Cmd with a space, a quote, a backslash and a '%' in
# them, Env, WorkingDir and a numeric User
ARGS_SCRIPT = ('echo "id=$(id -u):$(id -g) cwd=$(pwd) foo=$FOO home=$HOME"; '
               'for a in "$@"; do echo "arg=[$a]"; done')
MACHINE_CONFIG = {"Entrypoint": ["/bin/sh", "-c", ARGS_SCRIPT, "sh"],
                  "Cmd": ["two words", "it's \"quoted\"", "back\\slash", "100%h", ""],
                  "Env": [PATH_ENV, "FOO=bar baz"],
                  "WorkingDir": "/srv/work",
                  "User": "1000:1001"}
MACHINE_EXPECTED = ["id=1000:1001 cwd=/srv/work foo=bar baz home=/home/app",
                    "arg=[two words]", "arg=[it's \"quoted\"]", "arg=[back\\slash]",
                    "arg=[100%h]", "arg=[]"]


def errors(r):
    """stderr lines, without the warning nspawn 252 prints at exit where /run is no tmpfs (its
    propagation directory is then on a disk file system it refuses to remove)."""
    return [l for l in stderr_lines(r) if "/run/systemd/nspawn/propagate/" not in l]


def _dirs(*paths):
    return [(p, "d", 0o755, None, mkdemo.T2) for p in paths]


@pytest.fixture(scope="session")
def user_images(registry, tmp_path_factory):
    """lrtest/users (User "app", Cmd shows the ids), lrtest/ghost (User "ghost", in no passwd),
    lrtest/linked (/etc/passwd a symlink climbing out of the tree to /srv/pw), lrtest/machine
    (MACHINE_CONFIG). None has getent."""
    base = tmp_path_factory.mktemp("user-images")
    t = mkdemo.T2
    group = [("etc", "d", 0o755, None, t), ("etc/group", "f", 0o644, GROUP, t)]
    home = _dirs("home", "home/app", "var", "var/svc")
    h.build_image(base / "users", group + home + [("bin/notexec", "f", 0o644, b"#!/bin/sh\n", t),
                                                   ("bin/noshebang", "f", 0o755, b"echo hi\n", t)],
                  USERS_CONFIG, passwd=PASSWD)
    h.build_image(base / "ghost", group, dict(USERS_CONFIG, User="ghost"), passwd=PASSWD)
    h.build_image(base / "linked", _dirs("srv") + [
        ("srv/pw", "f", 0o644, b"daemon:x:4321:4322:d:/srv:/bin/sh\n", t),
        ("etc", "d", 0o755, None, t),
        ("etc/passwd", "l", 0o777, "../../../../../../../srv/pw", t)],
        dict(USERS_CONFIG, User="daemon"))
    h.build_image(base / "machine", group + home + _dirs("srv", "srv/work"), MACHINE_CONFIG,
                  passwd=PASSWD)
    return {name: h.push_image(registry.addr, base / name, "lrtest/" + name)
            for name in ("users", "ghost", "linked", "machine")}


def ids_of(r):
    m = re.fullmatch(r"uid=(\d+) gid=(\d+) groups=([\d ]*) home=(\S*)\n", r.stdout)
    assert m, r
    # the kernel keeps the supplementary groups sorted
    return int(m[1]), int(m[2]), sorted(int(g) for g in m[3].split()), m[4]


@pytest.mark.parametrize("opts,want", [
    ((), (1000, 1001, [29, 50], "/home/app")),                      # the image's User, a name
    (("--user=1000",), (1000, 1001, [29, 50], "/home/app")),        # a uid with an entry
    (("-u", "1000:2000"), (1000, 2000, [], "/home/app")),           # uid:gid
    (("--user", "app:staff"), (1000, 50, [], "/home/app")),         # name:group
    (("-u1000:audio",), (1000, 29, [], "/home/app")),               # uid:group
    (("--user=svc",), (2000, 2000, [50], "/var/svc")),
    (("--user=4242",), (4242, 0, [], "/")),                         # a uid in no passwd
    (("--user=root",), (0, 0, [], "/root")),
], ids=["image-name", "uid", "uid:gid", "name:group", "uid:group", "other-name", "bare-uid",
        "root"])
def test_user_as_docker_resolves_it(lazyroot, user_images, test_dir, opts, want):
    r = lr_run(lazyroot, user_images["users"], *opts)
    assert r.ok, r
    assert ids_of(r) == want, r
    assert_run_clean(test_dir)


def test_home_from_the_environment_wins(lazyroot, user_images, test_dir):
    r = lr_run(lazyroot, user_images["users"], "--setenv=HOME=/elsewhere")
    assert r.ok and ids_of(r)[3] == "/elsewhere", r
    assert_run_clean(test_dir)


def test_passwd_symlink_resolves_inside_the_tree(lazyroot, user_images, test_dir):
    # the host's daemon is uid 1; the image's /etc/passwd -> ../../../srv/pw says 4321
    r = lr_run(lazyroot, user_images["linked"])
    assert r.ok, r
    assert ids_of(r)[:2] == (4321, 4322), r
    assert_run_clean(test_dir)


@pytest.mark.parametrize("image,opts,name", [("ghost", (), "ghost"),
                                              ("users", ("--user=nosuch",), "nosuch"),
                                              ("users", ("-u", "app:nosuchgroup"), None)])
def test_unknown_user_is_125_with_one_line(lazyroot, user_images, test_dir, image, opts, name):
    r = lr_run(lazyroot, user_images[image], *opts)
    assert r.returncode == 125 and r.stdout == "", r
    lines = errors(r)
    assert len(lines) == 1, r
    if name:
        assert lines[0] == "lazyroot: unable to find user %s: no matching entries in passwd file" % name, r
    else:
        assert "unable to find group nosuchgroup" in lines[0], r
    assert_run_clean(test_dir)


@pytest.mark.parametrize("command,status,message", [
    (["nosuchcmd"], 127, 'exec: "nosuchcmd": executable file not found in $PATH'),
    (["/bin/nosuchcmd"], 127,
     'exec: "/bin/nosuchcmd": stat /bin/nosuchcmd: no such file or directory'),
    (["/bin/notexec"], 126, 'exec: "/bin/notexec": permission denied'),
    (["/bin/noshebang"], 126, 'exec: "/bin/noshebang": exec format error'),
    (["/etc"], 126, 'exec: "/etc": permission denied'),
    # found in $PATH as docker (Go's LookPath) finds: a file nobody may execute is no match
    (["notexec"], 127, 'exec: "notexec": executable file not found in $PATH'),
    (["noshebang"], 126, 'exec: "/bin/noshebang": exec format error'),
    (["/bin/sh", "-c", "exit 3"], 3, None),
    (["/bin/sh", "-c", "exit 1"], 1, None),
    (["/bin/sh", "-c", "exit 125"], 125, None),
], ids=["not-found", "no-such-path", "not-executable", "no-shebang", "directory",
        "path-not-executable", "path-no-shebang", "exit-3",
        "exit-1", "exit-125"])
def test_exit_statuses(lazyroot, user_images, test_dir, command, status, message):
    r = lr_run(lazyroot, user_images["users"], "--", *command)
    assert r.returncode == status, r
    if message:
        assert errors(r) == ["lazyroot-exec: " + message], r
    assert_run_clean(test_dir)


@pytest.mark.parametrize("opts", [("--no-such-nspawn-option",), ("--chdir=/no/such/dir",),
                                  ("--bind=/no/such/host/dir:/mnt",)],
                         ids=["bad-option", "bad-chdir", "bad-bind"])
def test_nspawn_failing_before_the_command_is_125(lazyroot, user_images, test_dir, opts):
    """nspawn exits 1 for its own failures, as a command exiting 1 would: the mark the helper
    leaves on the host tells them apart."""
    r = lr_run(lazyroot, user_images["users"], *opts, "--", "/bin/sh", "-c", "exit 0")
    assert r.returncode == 125, r
    assert r.stdout == "" and errors(r), r
    assert_run_clean(test_dir)


def test_private_users_ids_and_statuses(lazyroot, user_images, test_dir):
    """Under nspawn's private users the helper runs as container root, an unprivileged host uid:
    the ids are still set, and the mark still tells the command's status from nspawn's."""
    pu = ["--private-users=1879048192", "--private-users-ownership=off"]
    r = lr_run(lazyroot, user_images["users"], *pu)
    assert r.ok, r
    assert ids_of(r) == (1000, 1001, [29, 50], "/home/app"), r
    r = lr_run(lazyroot, user_images["users"], *pu, "--", "/bin/sh", "-c", "exit 3")
    assert r.returncode == 3, r
    r = lr_run(lazyroot, user_images["users"], *pu, "--", "nosuchcmd")
    assert r.returncode == 127, r
    assert_run_clean(test_dir)


def test_helper_lands_nowhere_in_the_tree(lazyroot, user_images, test_dir):
    """lazyroot-exec and the mark are bound into nspawn's own /run tmpfs: the overlay's upper
    dir holds only what the command wrote."""
    upper = test_dir / "upper"
    r = lazyroot.run("run", "--cache-dir", str(lazyroot.cache_dir), "--overlay", str(upper),
                     user_images["users"], "--user=root", "--", "/bin/sh", "-c",
                     "test -x /run/lazyroot/exec && echo bound; echo x > /root/written")
    assert r.ok and r.stdout == "bound\n", r
    written = sorted(str(p.relative_to(upper / "upper")) for p in (upper / "upper").rglob("*"))
    assert not [p for p in written if p.startswith("run/lazyroot")], written
    assert "root/written" in written, written
    assert_run_clean(test_dir)


# ---------------------------------------------------------------------------------------------
# a machine's settings file, run by systemd-nspawn itself

SETTINGS_DIR = Path("/run/systemd/nspawn")


def settings_text(lazyroot, config, root, base=None):
    """nspawn_settings_format()'s text for image config `config` and tree `root`, through
    build/tests/nspawn-settings-print."""
    build = lazyroot.binary.resolve().parent.parent
    tool = build / "tests" / "nspawn-settings-print"
    blob = lazyroot.test_dir / "config.json"
    blob.write_text(json.dumps({"architecture": mkdemo.goarch(), "os": "linux", "config": config,
                                "rootfs": {"type": "layers", "diff_ids": []}}))
    env = dict(os.environ, LAZYROOT_EXEC_HELPER=str(build / "cli" / "lazyroot-exec"))
    r = conftest.run_cmd([tool, blob, root] + ([str(base)] if base else []), env=env)
    assert r.ok, r
    return r.stdout


@pytest.fixture
def settings_file(test_dir):
    """Writes /run/systemd/nspawn/NAME.nspawn (NAME unique to the test), removed at teardown
    with the directories it had to create."""
    made = [d for d in (SETTINGS_DIR.parent, SETTINGS_DIR) if not d.exists()]
    name = "lrtest-settings-%d" % os.getpid()
    path = SETTINGS_DIR / (name + ".nspawn")
    SETTINGS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        yield name, path
    finally:
        path.unlink(missing_ok=True)
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass


@pytest.mark.parametrize("boot", [False, True], ids=["plain", "as-systemd-nspawn@"])
def test_machine_settings_run_the_image(lazyroot, user_images, test_dir, settings_file, boot):
    """systemd-nspawn -M NAME -D DIR --settings=override runs the image's Entrypoint + Cmd
    (spaces, quotes, a backslash, '%', an empty argument), Env, WorkingDir and numeric User
    from the settings file alone; with --boot, as systemd-nspawn@.service passes it, too
    (Boot=no in the file wins)."""
    name, path = settings_file
    mnt = test_dir / "machine"
    mnt.mkdir()
    assert lazyroot.mount(user_images["machine"], mnt, "--volatile").ok
    try:
        text = settings_text(lazyroot, MACHINE_CONFIG, mnt)
        assert "Boot=no\n" in text and "BindReadOnly=" in text, text
        path.write_text(text)
        argv = ["systemd-nspawn", "--settings=override", "-M", name, "-D", mnt,
                *h.nspawn_host_flags(), "--quiet", "--console=pipe"] + (["--boot"] if boot else [])
        r = conftest.run_cmd(argv, timeout=120)
        assert r.ok, (r, text)
        assert r.stdout.splitlines() == MACHINE_EXPECTED, (r, text)
    finally:
        assert lazyroot.umount(mnt).ok


def _run_settings(lazyroot, ref, settings_file, test_dir, config, base=None):
    name, path = settings_file
    mnt = test_dir / "machine"
    mnt.mkdir()
    assert lazyroot.mount(ref, mnt, "--volatile").ok
    try:
        text = settings_text(lazyroot, config, mnt, base)
        path.write_text(text)
        r = conftest.run_cmd(["systemd-nspawn", "--settings=override", "-M", name, "-D", mnt,
                              *h.nspawn_host_flags(), "--quiet", "--console=pipe"], timeout=120)
        return r, text
    finally:
        assert lazyroot.umount(mnt).ok


def test_machine_settings_command_with_newlines(lazyroot, user_images, test_dir, settings_file):
    """A Cmd with newlines and a tab (a script, common in images) cannot sit on a settings line:
    it reaches lazyroot-exec C-escaped, and runs as written."""
    config = {"Entrypoint": ["/bin/sh", "-c"],
              "Cmd": ["echo one\necho 'two\twords \\ end'\nid -u"],
              "Env": [PATH_ENV], "User": "app"}
    r, text = _run_settings(lazyroot, user_images["machine"], settings_file, test_dir, config)
    assert '"--escaped"' in text, text
    assert r.ok and r.stdout.splitlines() == ["one", "two\twords \\ end", "1000"], (r, text)


def test_machine_settings_private_users(lazyroot, user_images, test_dir, settings_file):
    """PrivateUsers=BASE from the spec: the container's uid_map shows the range, and the
    helper still sets the image's user inside it."""
    config = {"Cmd": ["/bin/sh", "-c", "cat /proc/self/uid_map; id -u"], "Env": [PATH_ENV],
              "User": "app"}
    r, text = _run_settings(lazyroot, user_images["machine"], settings_file, test_dir, config,
                            base=1879048192)
    assert "PrivateUsers=1879048192\n" in text, text
    assert r.ok, (r, text)
    assert r.stdout.split() == ["0", "1879048192", "65536", "1000"], (r, text)


def test_terminal_belongs_to_the_user(lazyroot, user_images, test_dir):
    """On a terminal (nspawn's interactive console), the command running as the image's user
    can open its terminal again (/dev/stdout), as under docker run -t."""
    import pty
    import select
    import time

    argv = [str(lazyroot.binary), "run", "--cache-dir", str(lazyroot.cache_dir),
            user_images["users"], "--", "/bin/sh", "-c", "echo reopened > /dev/stdout; id -u"]
    env = lazyroot._env(None)
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, env)
    out, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode(errors="replace").replace("\r", "")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "reopened\n" in text and "1000\n" in text, text
    assert_run_clean(test_dir)
