"""Registry credentials: --creds, --creds-file, auth files, docker's config, credential helpers,
and `lazyroot login` / `logout`, against the real docker-registry.

Servers (module scope), all on 127.0.0.1:
  seeded_storage   a plain registry that received fixtures/oci-gzip:edge, then stopped
  basic_registry   serves that storage behind htpasswd (HTTP Basic) authentication
  token_server     tokenserver.py: user bob only, nothing anonymous
  token_registry   serves the storage with auth.token pointing at token_server

Every lazyroot process gets its own HOME, XDG_RUNTIME_DIR and no REGISTRY_AUTH_FILE,
XDG_CONFIG_HOME or DOCKER_CONFIG, so that only the files a test writes are found.
"""

import base64
import json
import os
import pty
import select
import stat
import subprocess
import termios
import time
from pathlib import Path

import pytest

import conftest
import helpers
import push
import registry as registry_mod
import tokenserver

FIXTURE = "oci-gzip"
REPO = "fixtures/oci-gzip"
TAG = "edge"
USER, PASSWORD = "alice", "Pw-of-alice-7c1e9a"
TOKEN_USER, TOKEN_PASSWORD = "bob", "Pw-of-bob-52d0f3"
EXIT_USAGE, EXIT_REGISTRY = 2, 3


@pytest.fixture(scope="module")
def seeded_storage(tmp_path_factory):
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    conftest.need_tool(registry_mod.HTPASSWD_BIN, "apache2-utils")
    storage = tmp_path_factory.mktemp("creds-storage") / "storage"
    with registry_mod.Registry(storage=str(storage)) as reg:
        push.push_layout(reg.addr, str(conftest.FIXTURES / FIXTURE), REPO, TAG)
    return storage


@pytest.fixture(scope="module")
def basic_registry(request, seeded_storage):
    reg = registry_mod.Registry(storage=str(seeded_storage), htpasswd={USER: PASSWORD})
    request.addfinalizer(reg.stop)
    return reg.start()


@pytest.fixture(scope="module")
def token_server(request, tmp_path_factory):
    ts = tokenserver.TokenServer(str(tmp_path_factory.mktemp("creds-tokens")),
                                 users={TOKEN_USER: TOKEN_PASSWORD})
    request.addfinalizer(ts.stop)
    return ts.start()


@pytest.fixture(scope="module")
def token_registry(request, seeded_storage, token_server):
    reg = registry_mod.Registry(storage=str(seeded_storage), token_auth=token_server.registry_auth())
    request.addfinalizer(reg.stop)
    return reg.start()


@pytest.fixture
def lr(lazyroot, test_dir):
    """lazyroot with a private HOME and runtime dir and none of the auth variables set."""
    for k in ("REGISTRY_AUTH_FILE", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        lazyroot.env.pop(k, None)
    (test_dir / "home").mkdir()
    lazyroot.env["HOME"] = str(test_dir / "home")
    lazyroot.env["XDG_RUNTIME_DIR"] = str(test_dir / "xdgrun")
    return lazyroot


def ref_of(reg):
    return "%s/%s:%s" % (reg.addr, REPO, TAG)


def b64(user, password):
    return base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def write_json(path, doc):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def auth_doc(host, user, password):
    return {"auths": {host: {"auth": b64(user, password)}}}


def assert_mounted_image(lr, res):
    assert res.ok, str(res)
    assert conftest.is_mounted(lr.mountpoint)
    diffs = helpers.compare_with_oracle(lr.mountpoint, conftest.FIXTURES / FIXTURE,
                                        which=("tree",))
    assert not diffs, "\n".join(diffs)
    lr.umount().check()


def assert_failed(res, lr, rc, *words, secrets=(PASSWORD, TOKEN_PASSWORD)):
    assert res.returncode == rc and not res.timed_out, str(res)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, "expected one error line:\n%s" % res
    for w in words:
        assert w.lower() in lines[0].lower(), "%r not in the error line:\n%s" % (w, res)
    for s in secrets:
        assert s not in res.stderr and s not in res.stdout
    assert not conftest.mounts_under(lr.mountpoint)
    assert os.listdir(lr.mountpoint) == []
    return lines[0]


# ---------------------------------------------------------------------------------------------
# where credentials come from

def test_basic_auth_needs_credentials(lr, basic_registry):
    res = lr.mount(ref_of(basic_registry))
    assert_failed(res, lr, EXIT_REGISTRY, "login", basic_registry.addr)


def test_creds_option(lr, basic_registry):
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry), None,
                                      "--creds", "%s:%s" % (USER, PASSWORD)))


def test_creds_file(lr, basic_registry, test_dir):
    f = test_dir / "creds"
    f.write_text("%s:%s\nignored\n" % (USER, PASSWORD))
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry), None, "--creds-file", str(f)))


def test_creds_file_missing_is_usage_error(lr, basic_registry, test_dir):
    res = lr.mount(ref_of(basic_registry), None, "--creds-file", str(test_dir / "nope"))
    assert_failed(res, lr, EXIT_USAGE, "--creds-file", "nope")


def test_registry_auth_file(lr, basic_registry, test_dir):
    f = write_json(test_dir / "auth.json", auth_doc(basic_registry.addr, USER, PASSWORD))
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry),
                                      env={"REGISTRY_AUTH_FILE": str(f)}))


def test_authfile_option(lr, basic_registry, test_dir):
    f = write_json(test_dir / "my-auth.json",
                   {"auths": {"%s/%s" % (basic_registry.addr, REPO):
                              {"username": USER, "password": PASSWORD}}})
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry), None, "--authfile", str(f)))


def test_runtime_auth_file(lr, basic_registry, test_dir):
    write_json(test_dir / "xdgrun/containers/auth.json",
               auth_doc(basic_registry.addr, USER, PASSWORD))
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry)))


def test_docker_config(lr, basic_registry, test_dir):
    """docker writes URL keys; HOME of the lazyroot process decides where config.json is."""
    write_json(test_dir / "home/.docker/config.json",
               auth_doc("https://%s/v1/" % basic_registry.addr, USER, PASSWORD))
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry)))


def write_helper(test_dir, server, user=USER, secret=PASSWORD):
    """docker-credential-test on a PATH of its own: it logs each call, and refuses (status 9)
    unless its argv is exactly ["get"] and no environment variable holds the secret."""
    bindir = test_dir / "bin"
    bindir.mkdir(exist_ok=True)
    log = test_dir / "helper.log"
    script = bindir / "docker-credential-test"
    script.write_text("""#!/usr/bin/python3
import json, os, sys
LOG, USER, SECRET, SERVER = %r, %r, %r, %r
server = sys.stdin.readline().strip()
bad = []
if sys.argv[1:] != ["get"]:
    bad.append("argv is %%r" %% (sys.argv[1:],))
if any(SECRET in v for v in os.environ.values()):
    bad.append("the secret is in the environment")
with open(LOG, "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "server": server, "bad": bad}) + "\\n")
if bad:
    sys.exit(9)
if server != SERVER:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({"ServerURL": server, "Username": USER, "Secret": SECRET}))
""" % (str(log), user, secret, server))
    script.chmod(0o755)
    return {"PATH": "%s:%s" % (bindir, os.environ.get("PATH", "/usr/bin:/bin"))}, log


def helper_calls(log):
    if not log.exists():
        return []
    return [json.loads(ln) for ln in log.read_text().splitlines()]


def test_credential_helper(lr, basic_registry, test_dir):
    env, log = write_helper(test_dir, basic_registry.addr)
    write_json(test_dir / "home/.docker/config.json",
               {"auths": {basic_registry.addr: {}}, "credsStore": "test"})
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry), env=env))
    calls = helper_calls(log)
    assert calls, "the helper never ran"
    assert all(c["argv"] == ["get"] and not c["bad"] for c in calls), calls
    assert calls[0]["server"] == basic_registry.addr, calls


def test_cred_helpers_entry(lr, basic_registry, test_dir):
    env, log = write_helper(test_dir, basic_registry.addr)
    write_json(test_dir / "home/.config/containers/auth.json",
               {"credHelpers": {basic_registry.addr: "test"}})
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry), env=env))
    assert [c["argv"] for c in helper_calls(log)] and \
        all(not c["bad"] for c in helper_calls(log)), helper_calls(log)


def test_helper_not_run_for_anonymous_registry(lr, registry, test_dir):
    """Credentials are looked up on an auth challenge only: an open registry runs no helper."""
    env, log = write_helper(test_dir, registry.addr)
    write_json(test_dir / "home/.docker/config.json", {"credsStore": "test"})
    res = lr.mount(registry.ref(FIXTURE), None, env=env)
    assert res.ok, str(res)
    lr.umount().check()
    assert helper_calls(log) == []


def test_helper_without_credentials(lr, basic_registry, test_dir):
    env, log = write_helper(test_dir, "some-other-registry:1")
    write_json(test_dir / "home/.docker/config.json", {"credsStore": "test"})
    res = lr.mount(ref_of(basic_registry), None, env=env)
    assert_failed(res, lr, EXIT_REGISTRY, "login")
    assert len(helper_calls(log)) == 1


def test_malformed_auth_file(lr, basic_registry, test_dir):
    f = test_dir / "auth.json"
    f.write_text('{"auths": {"%s": {"auth": "%s"' % (basic_registry.addr, b64(USER, PASSWORD)))
    res = lr.mount(ref_of(basic_registry), env={"REGISTRY_AUTH_FILE": str(f)})
    line = assert_failed(res, lr, EXIT_REGISTRY, str(f), "JSON")
    assert b64(USER, PASSWORD) not in line


def test_wrong_password(lr, basic_registry, test_dir):
    res = lr.mount(ref_of(basic_registry), None, "--creds", "%s:%s" % (USER, "wrong-password-1"))
    assert_failed(res, lr, EXIT_REGISTRY, "invalid username or password", basic_registry.addr,
                  secrets=(PASSWORD, "wrong-password-1"))
    f = write_json(test_dir / "auth.json", auth_doc(basic_registry.addr, USER, "wrong-password-2"))
    res = lr.mount(ref_of(basic_registry), env={"REGISTRY_AUTH_FILE": str(f)})
    assert_failed(res, lr, EXIT_REGISTRY, "invalid username or password", str(f),
                  secrets=(PASSWORD, "wrong-password-2"))


# ---------------------------------------------------------------------------------------------
# token authentication with credentials

def test_token_auth_with_credentials(lr, token_registry, token_server, test_dir):
    token_server.reset()
    res = lr.mount(ref_of(token_registry))
    assert_failed(res, lr, EXIT_REGISTRY, REPO)
    assert all(r["user"] is None for r in token_server.requests), token_server.requests

    token_server.reset()
    write_json(test_dir / "xdgrun/containers/auth.json",
               auth_doc(token_registry.addr, TOKEN_USER, TOKEN_PASSWORD))
    assert_mounted_image(lr, lr.mount(ref_of(token_registry)))
    assert token_server.requests and token_server.requests[0]["user"] == TOKEN_USER
    assert token_server.requests[0]["granted"] == [REPO], token_server.requests


def test_token_auth_wrong_password(lr, token_registry, token_server):
    res = lr.mount(ref_of(token_registry), None, "--creds", "%s:nope-nope" % TOKEN_USER)
    assert_failed(res, lr, EXIT_REGISTRY, "invalid username or password",
                  secrets=(TOKEN_PASSWORD, "nope-nope"))


# ---------------------------------------------------------------------------------------------
# precedence

def test_creds_over_auth_file(lr, basic_registry, test_dir):
    f = write_json(test_dir / "auth.json", auth_doc(basic_registry.addr, USER, "bad-in-file"))
    env = {"REGISTRY_AUTH_FILE": str(f)}
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry), None,
                                      "--creds", "%s:%s" % (USER, PASSWORD), env=env))
    f2 = write_json(test_dir / "good.json", auth_doc(basic_registry.addr, USER, PASSWORD))
    res = lr.mount(ref_of(basic_registry), None, "--pull", "always",
                   "--creds", "%s:bad-on-cmdline" % USER, env={"REGISTRY_AUTH_FILE": str(f2)})
    assert_failed(res, lr, EXIT_REGISTRY, "invalid username or password",
                  secrets=(PASSWORD, "bad-on-cmdline"))


def test_auth_file_over_docker_config(lr, basic_registry, test_dir):
    good = auth_doc(basic_registry.addr, USER, PASSWORD)
    bad = auth_doc(basic_registry.addr, USER, "bad-password")
    f = write_json(test_dir / "auth.json", good)
    write_json(test_dir / "home/.docker/config.json", bad)
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry), env={"REGISTRY_AUTH_FILE": str(f)}))
    write_json(f, bad)
    write_json(test_dir / "home/.docker/config.json", good)
    res = lr.mount(ref_of(basic_registry), None, "--pull", "always",
                   env={"REGISTRY_AUTH_FILE": str(f)})
    assert_failed(res, lr, EXIT_REGISTRY, "invalid username or password", str(f),
                  secrets=(PASSWORD, "bad-password"))


# ---------------------------------------------------------------------------------------------
# login and logout

def login(lr, reg, user, password, *extra):
    return lr.run("login", "--username", user, "--password-stdin", *extra, reg.addr,
                  input=password + "\n")


def test_login_writes_auth_file(lr, basic_registry, test_dir):
    path = test_dir / "xdgrun/containers/auth.json"
    res = login(lr, basic_registry, USER, PASSWORD)
    assert res.ok, str(res)
    assert PASSWORD not in res.stdout + res.stderr
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == auth_doc(basic_registry.addr, USER, PASSWORD)

    # other entries and keys survive a second login; the entry is replaced
    doc = json.loads(path.read_text())
    doc["auths"]["other.example:5000"] = {"auth": b64("x", "y")}
    doc["auths"]["https://%s/v1/" % basic_registry.addr] = {"auth": b64("old", "old")}
    doc["credHelpers"] = {"helped.example": "pass"}
    doc["custom"] = [1, 2]
    write_json(path, doc)
    res = login(lr, basic_registry, USER, PASSWORD)
    assert res.ok, str(res)
    doc = json.loads(path.read_text())
    assert doc["auths"] == {basic_registry.addr: {"auth": b64(USER, PASSWORD)},
                            "other.example:5000": {"auth": b64("x", "y")}}, doc
    assert doc["credHelpers"] == {"helped.example": "pass"} and doc["custom"] == [1, 2]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["auth.json"], "temporary file left behind"

    # what login stored is what mount uses
    assert_mounted_image(lr, lr.mount(ref_of(basic_registry)))
    res = lr.run("login", "--get-login", basic_registry.addr)
    assert res.ok and res.stdout.strip() == USER, str(res)


def test_login_authfile_and_token_registry(lr, token_registry, token_server, test_dir):
    path = test_dir / "elsewhere" / "a.json"
    token_server.reset()
    res = login(lr, token_registry, TOKEN_USER, TOKEN_PASSWORD, "--authfile", str(path))
    assert res.ok, str(res)
    assert any(r["user"] == TOKEN_USER for r in token_server.requests), token_server.requests
    assert json.loads(path.read_text()) == auth_doc(token_registry.addr, TOKEN_USER,
                                                   TOKEN_PASSWORD)


def test_login_wrong_password(lr, basic_registry, token_registry, test_dir):
    path = test_dir / "xdgrun/containers/auth.json"
    res = login(lr, basic_registry, USER, "wrong-password-3")
    assert_failed(res, lr, EXIT_REGISTRY, "invalid username or password", basic_registry.addr,
                  secrets=(PASSWORD, "wrong-password-3"))
    assert not path.exists()
    write_json(path, {"auths": {"keep.example": {"auth": b64("k", "k")}}})
    before = path.read_bytes()
    res = login(lr, token_registry, TOKEN_USER, "wrong-password-4")
    assert_failed(res, lr, EXIT_REGISTRY, "invalid username or password",
                  secrets=(TOKEN_PASSWORD, "wrong-password-4"))
    assert path.read_bytes() == before


def test_login_refuses_password_from_non_terminal(lr, basic_registry, test_dir):
    res = lr.run("login", "--username", USER, basic_registry.addr)  # stdin: /dev/null
    assert_failed(res, lr, EXIT_USAGE, "--password-stdin")
    assert not (test_dir / "xdgrun/containers/auth.json").exists()


def test_logout(lr, basic_registry, test_dir):
    path = test_dir / "xdgrun/containers/auth.json"
    write_json(path, {"auths": {"https://%s" % basic_registry.addr: {"auth": b64(USER, PASSWORD)},
                                "keep.example": {"auth": b64("k", "k")}},
                      "credsStore": "x"})
    res = lr.run("logout", basic_registry.addr)
    assert res.ok, str(res)
    assert json.loads(path.read_text()) == {"auths": {"keep.example": {"auth": b64("k", "k")}},
                                            "credsStore": "x"}
    res = lr.run("logout", basic_registry.addr)
    assert res.returncode == 1 and "not logged in" in res.stderr, str(res)
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, str(res)
    res = lr.run("logout", "--all")
    assert res.ok, str(res)
    assert json.loads(path.read_text()) == {"auths": {}, "credsStore": "x"}


def _read_until(fd, want, timeout=30):
    """What the terminal's master side gives until `want` appears (bytes)."""
    out = b""
    deadline = time.monotonic() + timeout
    while want not in out:
        left = deadline - time.monotonic()
        assert left > 0, "no %r from the terminal, got %r" % (want, out)
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:   # EIO: the other side is closed
                chunk = b""
            assert chunk, "terminal closed before %r, got %r" % (want, out)
            out += chunk
    return out


def test_login_prompts_on_a_terminal(lr, basic_registry, test_dir):
    """On a terminal, login asks for the username (echoed) and the password (not echoed),
    then stores them as with --password-stdin."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([str(lr.binary), "login", basic_registry.addr], stdin=slave,
                                stdout=slave, stderr=slave, env=lr._env(None),
                                start_new_session=True)
        os.close(slave)
        seen = _read_until(master, b"Username: ")
        os.write(master, USER.encode() + b"\n")
        seen += _read_until(master, b"Password: ")
        assert USER.encode() in seen, seen   # the username is echoed
        # echo goes off after the prompt (TCSAFLUSH drops what was typed before): wait for it
        assert conftest.wait_until(lambda: not termios.tcgetattr(master)[3] & termios.ECHO, 10)
        os.write(master, PASSWORD.encode() + b"\n")
        assert proc.wait(60) == 0
        while True:   # the rest of what it wrote, to check for the password
            ready, _, _ = select.select([master], [], [], 0.5)
            try:
                chunk = os.read(master, 4096) if ready else b""
            except OSError:
                chunk = b""
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert PASSWORD.encode() not in seen, "the password was echoed: %r" % seen
    path = test_dir / "xdgrun/containers/auth.json"
    assert json.loads(path.read_text()) == auth_doc(basic_registry.addr, USER, PASSWORD)


def test_logout_authfile(lr, basic_registry, test_dir):
    """logout --authfile FILE edits FILE only: the default auth file keeps its entry."""
    default = test_dir / "xdgrun/containers/auth.json"
    other = test_dir / "elsewhere/auth.json"
    entry = {"auth": b64(USER, PASSWORD)}
    write_json(default, {"auths": {basic_registry.addr: entry}})
    write_json(other, {"auths": {basic_registry.addr: entry, "keep.example": {"auth": b64("k", "k")}}})
    res = lr.run("logout", "--authfile", str(other), basic_registry.addr)
    assert res.ok, str(res)
    assert json.loads(other.read_text()) == {"auths": {"keep.example": {"auth": b64("k", "k")}}}
    assert json.loads(default.read_text()) == {"auths": {basic_registry.addr: entry}}
    res = lr.run("logout", "--authfile", str(other), basic_registry.addr)
    assert res.returncode == 1 and str(other) in res.stderr, str(res)
    res = lr.run("logout", "--authfile=%s" % other, "--all")
    assert res.ok and json.loads(other.read_text()) == {"auths": {}}, str(res)
    assert json.loads(default.read_text()) == {"auths": {basic_registry.addr: entry}}


# ---------------------------------------------------------------------------------------------
# the secret stays secret

def _session_processes(sid):
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(p))
    return pids


def _assert_not_in_procs(pids, secrets):
    for pid in pids:
        for what in ("cmdline", "environ"):
            try:
                data = Path("/proc/%d/%s" % (pid, what)).read_bytes().decode(errors="replace")
            except OSError:
                continue
            for s in secrets:
                assert s not in data, "secret in /proc/%d/%s" % (pid, what)


def test_secret_never_leaks(lr, basic_registry, test_dir):
    """--creds is overwritten in argv; neither the verbose log nor any process shows it, nor
    the secret a helper hands over."""
    secrets = [PASSWORD, b64(USER, PASSWORD)]
    p = lr.spawn("mount", "--foreground", "--verbose", "--cache-dir", lr.cache_dir,
                 "--creds", "%s:%s" % (USER, PASSWORD), ref_of(basic_registry), lr.mountpoint)
    assert conftest.wait_mounted(lr.mountpoint, timeout=60), \
        (test_dir / "spawn-0.err").read_text(errors="replace")
    pids = _session_processes(p.pid)
    assert p.pid in pids
    _assert_not_in_procs(pids, secrets)
    cmdline = Path("/proc/%d/cmdline" % p.pid).read_bytes()
    assert b"--creds\0" + b"*" * len("%s:%s" % (USER, PASSWORD)) + b"\0" in cmdline, cmdline
    lr.umount().check()

    env, log = write_helper(test_dir, basic_registry.addr)
    write_json(test_dir / "home/.docker/config.json", {"credsStore": "test"})
    p2 = lr.spawn("mount", "--foreground", "--verbose", "--cache-dir", lr.cache_dir,
                  "--pull", "always", ref_of(basic_registry), lr.mountpoint, env=env)
    assert conftest.wait_mounted(lr.mountpoint, timeout=60), \
        (test_dir / "spawn-1.err").read_text(errors="replace")
    _assert_not_in_procs(_session_processes(p2.pid), secrets)
    assert helper_calls(log) and all(not c["bad"] for c in helper_calls(log)), helper_calls(log)
    lr.umount().check()

    for proc in (p, p2):
        conftest.wait_until(lambda: proc.poll() is not None, 30)
    for n in (0, 1):
        err = (test_dir / ("spawn-%d.err" % n)).read_text(errors="replace")
        out = (test_dir / ("spawn-%d.out" % n)).read_text(errors="replace")
        assert basic_registry.addr in err, "verbose log is empty:\n" + err
        for s in secrets:
            assert s not in err and s not in out, "secret in the log:\n" + err
