"""lazyroot against the real docker-registry over HTTPS and behind token authentication.

Servers (module scope, each stopped by its fixture's finalizer), all on 127.0.0.1:
  seeded_storage   a plain registry that received fixtures/oci-gzip:edge and private/oci-gzip:edge
                   (push.py speaks plain HTTP only), then stopped; its storage dir is served by:
  tls_registry     HTTPS with a server certificate from a throw-away test CA (tls.py)
  mtls_registry    HTTPS that also requires a client certificate signed by that CA
  token_server     tokenserver.py: anonymous pull of fixtures/oci-gzip only
  auth_registry    plain HTTP, auth.token pointing at token_server

Loopback registries are "insecure" (docker's default 127.0.0.0/8): without CAs configured for
them lazyroot speaks HTTPS without verifying the certificate (docker's InsecureSkipVerify),
falling back to plain HTTP when TLS fails; with CAs in the certificate directory it verifies.
"""

import os
import shutil
from pathlib import Path

import pytest

import conftest
import registry as registry_mod
import push
import tls
import tokenserver
import treewalk
from proxy import Fault, Proxy

FIXTURE = "oci-gzip"
REPO = "fixtures/oci-gzip"
PRIVATE_REPO = "private/oci-gzip"
TAG = "edge"
EXIT_REGISTRY = 3

# umoci clamped the mtime of /times/2300-01-01 (10413792000) to INT32_MIN when it wrote the
# oracle; the layer itself has the right value, which is what a mount must show.
MTIME_OVERRIDES = {"/times/2300-01-01": "10413792000"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    p = tls.make_test_pki(str(d))
    p["other_ca"] = tls.make_ca(str(d), name="other-ca", cn="some other CA")
    return p


@pytest.fixture(scope="module")
def seeded_storage(tmp_path_factory):
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    storage = tmp_path_factory.mktemp("tls-auth-storage") / "storage"
    layout = str(conftest.FIXTURES / FIXTURE)
    with registry_mod.Registry(storage=str(storage)) as reg:
        pushed = push.push_layout(reg.addr, layout, REPO, TAG)
        push.push_layout(reg.addr, layout, PRIVATE_REPO, TAG)
    return storage, pushed


def _start_registry(request, **kw):
    reg = registry_mod.Registry(**kw)
    request.addfinalizer(reg.stop)
    reg.start()
    return reg


@pytest.fixture(scope="module")
def tls_registry(request, seeded_storage, pki):
    return _start_registry(request, storage=str(seeded_storage[0]),
                           tls=(pki["server"].cert, pki["server"].key))


@pytest.fixture(scope="module")
def mtls_registry(request, seeded_storage, pki):
    return _start_registry(request, storage=str(seeded_storage[0]),
                           tls=(pki["server"].cert, pki["server"].key, pki["ca"].cert))


@pytest.fixture(scope="module")
def token_server(request, tmp_path_factory):
    ts = tokenserver.TokenServer(str(tmp_path_factory.mktemp("tokens")), anonymous=[REPO])
    request.addfinalizer(ts.stop)
    return ts.start()


@pytest.fixture(scope="module")
def auth_registry(request, seeded_storage, token_server):
    return _start_registry(request, storage=str(seeded_storage[0]),
                           token_auth=token_server.registry_auth())


def cert_dir(test_dir, *files, name="certs.d"):
    """A certificate directory holding copies of files under the names given: (src, name)."""
    d = Path(test_dir) / name
    d.mkdir()
    for src, dst in files:
        shutil.copy(src, d / dst)
    return d


def ref_of(reg, repo=REPO):
    return "%s/%s:%s" % (reg.addr, repo, TAG)


def assert_tree_matches(mnt):
    layout = conftest.FIXTURES / FIXTURE
    diffs = treewalk.compare_to_expected(str(mnt), str(layout), which=("tree", "hardlinks"))
    assert not diffs, "\n".join(diffs)
    expected = []
    for line in treewalk.read_lines(str(layout / "expected-mtimes.tsv")):
        path, _, mtime = line.partition("\t")
        expected.append("%s\t%s" % (path, MTIME_OVERRIDES[path]) if path in MTIME_OVERRIDES else line)
    actual = treewalk.mtime_lines(treewalk.walk(str(mnt), with_content=False))
    diffs = treewalk.diff_lines(actual, expected, label="mtimes")
    assert not diffs, "\n".join(diffs)


def assert_mount_failed(res, mnt, *words):
    assert res.returncode == EXIT_REGISTRY and not res.timed_out, str(res)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, "expected one error line:\n%s" % res
    for w in words:
        assert w.lower() in lines[0].lower(), "%r not in the error line:\n%s" % (w, res)
    assert not conftest.mounts_under(mnt), conftest.mounts_under(mnt)
    assert os.listdir(mnt) == []
    return lines[0]


def mounted_ok(lazyroot, res):
    assert res.ok, str(res)
    assert conftest.is_mounted(lazyroot.mountpoint)


# ---------------------------------------------------------------------------------------------
# HTTPS

def test_https_with_cert_dir(lazyroot, tls_registry, pki, test_dir):
    """The test CA from --cert-dir is trusted (with it configured, the certificate is checked)."""
    certs = cert_dir(test_dir, (pki["ca"].cert, "ca.crt"))
    res = lazyroot.mount(ref_of(tls_registry), None, "--cert-dir", str(certs))
    mounted_ok(lazyroot, res)
    assert_tree_matches(lazyroot.mountpoint)
    lazyroot.umount().check()


def test_https_wrong_ca_fails_cleanly(lazyroot, tls_registry, pki, test_dir):
    """A CA in the certificate directory that did not sign the server's certificate: the
    verification fails, plain HTTP is tried (loopback is insecure) and fails against the
    TLS-only server, and the error names the TLS failure."""
    certs = cert_dir(test_dir, (pki["other_ca"].cert, "ca.crt"))
    res = lazyroot.mount(ref_of(tls_registry), None, "--cert-dir", str(certs))
    line = assert_mount_failed(res, lazyroot.mountpoint, "TLS certificate", "not trusted")
    assert tls_registry.addr in line


def test_https_loopback_without_cert_dir(lazyroot, tls_registry):
    """No CA configured for a loopback registry: like docker for insecure registries, HTTPS
    without certificate verification."""
    res = lazyroot.mount(ref_of(tls_registry))
    mounted_ok(lazyroot, res)
    assert_tree_matches(lazyroot.mountpoint)
    lazyroot.umount().check()


def test_missing_cert_dir_fails_cleanly(lazyroot, tls_registry, test_dir):
    res = lazyroot.mount(ref_of(tls_registry), None, "--cert-dir", str(test_dir / "nonexistent"))
    assert_mount_failed(res, lazyroot.mountpoint, "certificate directory", "nonexistent")


def test_client_certificate(lazyroot, mtls_registry, pki, test_dir):
    """A *.cert + *.key pair in the certificate directory is presented to a registry that
    requires client certificates."""
    certs = cert_dir(test_dir, (pki["ca"].cert, "ca.crt"), (pki["client"].cert, "client.cert"),
                     (pki["client"].key, "client.key"))
    res = lazyroot.mount(ref_of(mtls_registry), None, "--cert-dir", str(certs))
    mounted_ok(lazyroot, res)
    lazyroot.umount().check()


def test_client_certificate_missing(lazyroot, mtls_registry, pki, test_dir):
    certs = cert_dir(test_dir, (pki["ca"].cert, "ca.crt"))
    res = lazyroot.mount(ref_of(mtls_registry), None, "--cert-dir", str(certs))
    assert_mount_failed(res, lazyroot.mountpoint, "TLS")


def test_client_key_missing(lazyroot, mtls_registry, pki, test_dir):
    certs = cert_dir(test_dir, (pki["ca"].cert, "ca.crt"), (pki["client"].cert, "client.cert"))
    res = lazyroot.mount(ref_of(mtls_registry), None, "--cert-dir", str(certs))
    assert_mount_failed(res, lazyroot.mountpoint, "client.cert", "client.key")


def test_plain_http_loopback_still_works(lazyroot, registry):
    """The session's plain-HTTP registry: the HTTPS attempt fails in the handshake and lazyroot
    falls back to HTTP."""
    res = lazyroot.mount(registry.ref(FIXTURE))
    mounted_ok(lazyroot, res)
    lazyroot.umount().check()


# ---------------------------------------------------------------------------------------------
# token authentication

def test_token_auth_anonymous_pull(lazyroot, auth_registry, token_server):
    token_server.reset()
    res = lazyroot.mount(ref_of(auth_registry))
    mounted_ok(lazyroot, res)
    assert_tree_matches(lazyroot.mountpoint)
    # one token for the whole pull: ping, manifest, config and every layer reuse it; the
    # artifact lookup (seek index, start profile: one request for both) has a client of its
    # own, which asks for one more (to share: docs/registries.md, "Artifacts ...")
    assert 1 <= token_server.count <= 2, token_server.requests
    for req in token_server.requests:
        assert req["scopes"] == ["repository:%s:pull" % REPO], req
        assert req["service"] == token_server.service and req["granted"] == [REPO], req
    lazyroot.umount().check()


def test_token_auth_no_access(lazyroot, auth_registry, token_server):
    token_server.reset()
    res = lazyroot.mount(ref_of(auth_registry, PRIVATE_REPO))
    line = assert_mount_failed(res, lazyroot.mountpoint, PRIVATE_REPO)
    assert "401" in line or "denied" in line.lower(), line
    # the token is renewed once on the 401, then lazyroot gives up
    assert 1 <= token_server.count <= 2, token_server.requests
    assert all(r["granted"] == [] for r in token_server.requests), token_server.requests
    for t in token_server.tokens:
        assert t not in res.stderr and t.split(".")[2] not in res.stderr


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
        if int(fields[3]) == sid:  # session id
            pids.append(int(p))
    return pids


def test_token_never_leaks(lazyroot, auth_registry, token_server, test_dir):
    """Neither the verbose log nor any process's command line or environment shows a token."""
    token_server.reset()
    p = lazyroot.spawn("mount", "--foreground", "--verbose", "--cache-dir", lazyroot.cache_dir,
                       ref_of(auth_registry), lazyroot.mountpoint)
    m = conftest.wait_mounted(lazyroot.mountpoint, timeout=60)
    assert m, (test_dir / "spawn-0.err").read_text(errors="replace")
    assert token_server.count >= 1
    secrets = [t for t in token_server.tokens] + [t.split(".")[2] for t in token_server.tokens]
    pids = _session_processes(p.pid)
    assert p.pid in pids
    for pid in pids:
        for what in ("cmdline", "environ"):
            try:
                data = Path("/proc/%d/%s" % (pid, what)).read_bytes().decode(errors="replace")
            except OSError:
                continue
            for s in secrets:
                assert s not in data, "token in /proc/%d/%s" % (pid, what)
    lazyroot.umount().check()
    conftest.wait_until(lambda: p.poll() is not None, 30)
    err = (test_dir / "spawn-0.err").read_text(errors="replace")
    out = (test_dir / "spawn-0.out").read_text(errors="replace")
    assert "token" in err.lower() or auth_registry.addr in err, "verbose log is empty:\n" + err
    for s in secrets:
        assert s not in err and s not in out, "token in the log:\n" + err


def test_token_service_busy_is_retried(lazyroot, request, seeded_storage, token_server):
    """A token service answering 503 and 429 (auth.docker.io does under load) is asked again
    with backoff, as the registry itself is, instead of failing the pull at once."""
    token_addr = token_server.realm.split("/")[2]
    with Proxy(token_addr) as p:
        failures = {"n": 0}

        def busy_twice(req):
            if req["path"].startswith("/token") and failures["n"] < 2:
                failures["n"] += 1
                return Fault.status(503) if failures["n"] == 1 else \
                    Fault.status(429, {"Retry-After": "1"})
            return None

        p.set_fault(busy_twice)
        auth = dict(token_server.registry_auth(), realm="http://%s/token" % p.addr)
        reg = _start_registry(request, storage=str(seeded_storage[0]), token_auth=auth)
        token_server.reset()
        res = lazyroot.mount(ref_of(reg))
        mounted_ok(lazyroot, res)
        assert_tree_matches(lazyroot.mountpoint)
        lazyroot.umount().check()
    statuses = [r["status"] for r in p.requests if r["path"].startswith("/token")]
    assert statuses[:3] == [503, 429, 200], statuses
    assert token_server.count >= 1
