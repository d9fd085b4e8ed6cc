"""How lazyroot talks to registries as they are in the wild: Docker Hub's token flow with
expiring tokens and blob redirects to a CDN with signed, expiring URLs; servers that ignore
Range, answer 429 with Retry-After, fail with 503 or break connections mid-body; tag
resolution with HEAD; forward proxies from HTTP_PROXY/HTTPS_PROXY/NO_PROXY; HTTP/2 over TLS.

Every server is real: Debian's docker-registry, behind tests/tools/proxy.py (a logging reverse
proxy with fault hooks, or a forward proxy), tests/tools/tokenserver.py and tests/tools/cdn.py
(blobs served from the registry's storage directory at signed URLs).
"""

import base64
import concurrent.futures
import email.utils
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

import conftest
import helpers
import push
import registry as registry_mod
import tls
import tokenserver
from cdn import BlobCDN
from proxy import Fault, Proxy

EXIT_REGISTRY = 3
TAG = "edge"
RANGE_LINE = "ignores Range requests"
NO_PROXY_ENV = {"HTTP_PROXY": "", "http_proxy": "", "HTTPS_PROXY": "", "https_proxy": "",
                "NO_PROXY": "", "no_proxy": "", "ALL_PROXY": "", "all_proxy": ""}


def assert_tree(mnt, name, which=("tree", "hardlinks")):
    diffs = helpers.compare_with_oracle(str(mnt), conftest.FIXTURES / name, which=which)
    assert not diffs, "\n".join(diffs)


def assert_failed_cleanly(res, mnt, *words):
    assert res.returncode == EXIT_REGISTRY and not res.timed_out, str(res)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, "expected one error line:\n%s" % res
    for w in words:
        assert w.lower() in lines[0].lower(), "%r not in the error line:\n%s" % (w, res)
    assert not conftest.mounts_under(mnt), conftest.mounts_under(mnt)
    assert os.listdir(mnt) == []
    return lines[0]


def mount_ok(lazyroot, ref, *extra, env=None):
    res = lazyroot.mount(ref, None, *extra, env=dict(NO_PROXY_ENV, **(env or {})))
    assert res.ok, str(res)
    assert conftest.is_mounted(lazyroot.mountpoint)
    return res


def umount_ok(lazyroot):
    res = lazyroot.umount()
    assert res.ok, str(res)


def layers(name):
    return helpers.layout_layers(conftest.FIXTURES / name)


def largest_layer(name):
    return max(layers(name), key=lambda l: l["size"])


def manifest_requests(proxy, method=None):
    return [r for r in proxy.requests if "/manifests/" in r["path"]
            and (method is None or r["method"] == method)]


def first_n(n, fault, match):
    """A hook answering the first n requests that match(req) with fault(req)."""
    state = {"left": n}
    lock = threading.Lock()

    def hook(req):
        if not match(req):
            return None
        with lock:
            if state["left"] <= 0:
                return None
            state["left"] -= 1
        return fault(req)
    return hook


def is_manifest(req):
    return "/manifests/" in req["path"]


# ---------------------------------------------------------------------------------------------
# A Docker Hub look-alike: token server with short-lived tokens, registry, a front that checks
# token expiry and redirects blob GETs to a CDN.

@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    d = tmp_path_factory.mktemp("protocol-storage") / "storage"
    with registry_mod.Registry(storage=str(d)) as reg:
        for name in ("oci-gzip", "estargz"):
            push.push_layout(reg.addr, str(conftest.FIXTURES / name), "fixtures/" + name, TAG)
    return d


class Hub:
    """The front of the look-alike: a Proxy whose hook plays Docker Hub's edge."""

    TOKEN_TTL = 3

    def __init__(self, ts, reg, cdn):
        self.ts, self.reg, self.cdn = ts, reg, cdn
        self.expired_tokens_seen = 0
        self.redirects = 0
        self._lock = threading.Lock()
        self.front = Proxy(reg.addr, fault=self.hook)

    def challenge(self, repo):
        return 'Bearer realm="%s",service="%s",scope="repository:%s:pull"' % (
            self.ts.realm, self.ts.service, repo)

    @staticmethod
    def token_exp(token):
        try:
            payload = token.split(".")[1]
            payload += "=" * (-len(payload) % 4)
            return json.loads(base64.urlsafe_b64decode(payload))["exp"]
        except (IndexError, ValueError, KeyError):
            return 0

    def hook(self, req):
        path = req["path"].split("?")[0]
        m = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$", path)
        if not m:
            return None  # /v2/ itself: the registry's own challenge
        headers = {k.lower(): v for k, v in req["headers"].items()}
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return Fault.status(401, {"WWW-Authenticate": self.challenge(m.group(1))})
        if self.token_exp(auth[7:]) < time.time():
            with self._lock:
                self.expired_tokens_seen += 1
            return Fault.status(401, {"WWW-Authenticate": self.challenge(m.group(1))})
        if m.group(2) == "blobs" and req["method"] == "GET":
            with self._lock:
                self.redirects += 1
            return Fault.redirect(self.cdn.sign_url(m.group(3), ttl=60))
        return None

    def ref(self, name):
        return "%s/fixtures/%s:%s" % (self.front.addr, name, TAG)


@pytest.fixture(scope="module")
def hub(request, storage, tmp_path_factory):
    # The registry itself accepts the tokens for five minutes; the front enforces the short
    # lifetime the token server announces, as Docker Hub's edge does.
    ts = tokenserver.TokenServer(str(tmp_path_factory.mktemp("hub-tokens")), anonymous=["*"],
                                 expires_in=Hub.TOKEN_TTL)
    request.addfinalizer(ts.stop)
    ts.start()
    auth = dict(ts.registry_auth())
    reg = registry_mod.Registry(storage=str(storage), token_auth=auth)
    request.addfinalizer(reg.stop)
    reg.start()
    cdn = BlobCDN(storage)
    request.addfinalizer(cdn.stop)
    cdn.start()
    h = Hub(ts, reg, cdn)
    request.addfinalizer(h.front.stop)
    h.front.start()
    return h


def test_hub_tokens_expire_and_blobs_come_from_cdn(lazyroot, hub):
    """eStargz mounted through the look-alike: TOC and chunks are ranged GETs that the front
    redirects to the CDN, which never sees the registry's token; tokens expire while mounted
    and are renewed on the 401."""
    hub.cdn.violations.clear()
    mount_ok(lazyroot, hub.ref("estargz"))
    ranged = [r for r in hub.cdn.requests if r["range"]]
    assert ranged and all(r["status"] == 206 for r in ranged), hub.cdn.requests

    # The daemon's fetch connections get their tokens on their first request: one read now
    # gives one of them a token, which has expired when the next read (alone, so the same
    # idle connection takes it; busybox is far from this file in the layer) goes out.
    (Path(lazyroot.mountpoint) / "data/tree/d00/s0/f00.txt").read_bytes()
    tokens_before = hub.ts.count
    time.sleep(Hub.TOKEN_TTL + 1.5)  # every token lazyroot holds has expired now
    (Path(lazyroot.mountpoint) / "bin/busybox").read_bytes()
    assert_tree(lazyroot.mountpoint, "estargz")
    assert hub.expired_tokens_seen >= 1, "lazyroot never presented an expired token"
    assert hub.ts.count > tokens_before, "no new token after expiry"
    assert hub.cdn.violations == [], hub.cdn.violations
    assert hub.front.bytes_for("/v2/fixtures/estargz/blobs/") == 0  # all bytes came from the CDN
    umount_ok(lazyroot)


def test_hub_expired_signed_url_is_refreshed(lazyroot, hub):
    """The CDN refuses a signed URL (403, expired): lazyroot goes back to the registry for a
    fresh redirect, for the buffered config GET and for streamed layers alike."""
    blobs = [l["digest"] for l in layers("oci-gzip")]
    hub.cdn.violations.clear()
    hub.front.reset()
    n_cdn = len(hub.cdn.requests)
    hub.cdn.fail_next = 2  # the config GET, then the first layer
    mount_ok(lazyroot, hub.ref("oci-gzip"))
    assert_tree(lazyroot.mountpoint, "oci-gzip")
    cdn_reqs = hub.cdn.requests[n_cdn:]
    assert [r["status"] for r in cdn_reqs].count(403) == 2, cdn_reqs
    blob_gets = hub.front.blob_requests()
    # each refused URL cost one more GET at the registry, nothing more
    assert len([r for r in blob_gets if r["status"] == 307]) == len(blobs) + 1 + 2, blob_gets
    assert hub.cdn.violations == [], hub.cdn.violations
    umount_ok(lazyroot)


# ---------------------------------------------------------------------------------------------
# Servers that get Range, retries and sizes wrong or right

def test_range_ignored_whole_body(lazyroot, registry, test_dir):
    """A proxy that drops Range (200 + the whole blob): every file still reads correctly, and
    lazyroot says once that lazy reads download whole layers."""
    def hook(req):
        return Fault.ignore_range() if req["range"] else None
    with Proxy(registry.addr, fault=hook) as p:
        ref = "%s/fixtures/estargz:%s" % (p.addr, TAG)
        err = Path(test_dir) / "fg.err"
        with open(err, "wb") as f:
            proc = lazyroot.spawn("mount", "-f", ref, lazyroot.mountpoint, "--cache-dir",
                                  lazyroot.cache_dir, env=NO_PROXY_ENV, stderr=f)
        try:
            conftest.wait_mounted(str(lazyroot.mountpoint), timeout=60)
            assert_tree(lazyroot.mountpoint, "estargz")
        finally:
            lazyroot.umount()
            proc.wait(30)
        ranged = [r for r in p.requests if r["range"]]
        assert len(ranged) >= 2 and all(r["status"] == 200 for r in ranged), ranged
        lines = [ln for ln in err.read_text().splitlines() if RANGE_LINE in ln]
        assert len(lines) == 1, err.read_text()
        assert p.addr in lines[0], lines


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured(lazyroot, registry, form):
    def fault(req):
        if form == "seconds":
            return Fault.status(429, {"Retry-After": "2"})
        return Fault.status(429, {"Retry-After": email.utils.formatdate(time.time() + 3,
                                                                        usegmt=True)})
    with Proxy(registry.addr, fault=first_n(2, fault, is_manifest)) as p:
        t0 = time.monotonic()
        mount_ok(lazyroot, "%s/fixtures/oci-gzip:%s" % (p.addr, TAG))
        took = time.monotonic() - t0
        statuses = [r["status"] for r in manifest_requests(p)]
        assert statuses[:2] == [429, 429] and 200 in statuses[2:], statuses
        reqs = manifest_requests(p)
        gap = reqs[2]["time"] - reqs[1]["time"]
        assert gap >= 1.0, "retried %.2f s after a Retry-After of about 2 s" % gap
        assert took >= 2.5, took
    assert_tree(lazyroot.mountpoint, "oci-gzip")
    umount_ok(lazyroot)


def test_429_beyond_the_deadline_fails_cleanly(lazyroot, registry):
    """Retry-After longer than LAZYROOT_REGISTRY_TIMEOUT: one clear line, exit 3, nothing
    mounted, and no waiting for the full Retry-After."""
    hook = first_n(1000, lambda r: Fault.status(429, {"Retry-After": "60"}), is_manifest)
    with Proxy(registry.addr, fault=hook) as p:
        t0 = time.monotonic()
        res = lazyroot.mount("%s/fixtures/oci-gzip:%s" % (p.addr, TAG), None,
                             env=dict(NO_PROXY_ENV, LAZYROOT_REGISTRY_TIMEOUT="3"))
        took = time.monotonic() - t0
    line = assert_failed_cleanly(res, lazyroot.mountpoint, "429", "LAZYROOT_REGISTRY_TIMEOUT")
    assert "60 s" in line, line
    assert took < 20, took


def test_503_twice_then_ok(lazyroot, registry):
    with Proxy(registry.addr, fault=first_n(2, lambda r: Fault.status(503), is_manifest)) as p:
        mount_ok(lazyroot, "%s/fixtures/oci-gzip:%s" % (p.addr, TAG))
        statuses = [r["status"] for r in manifest_requests(p)]
        assert statuses[:2] == [503, 503] and 200 in statuses, statuses
    assert_tree(lazyroot.mountpoint, "oci-gzip")
    umount_ok(lazyroot)


def test_reset_mid_layer_resumes(lazyroot, registry):
    """The connection breaks in the middle of a tar layer: the stream resumes at the byte
    where it stopped (Range: bytes=N-) and the layer verifies."""
    layer = largest_layer("oci-gzip")
    cut = layer["size"] // 2

    def match(req):
        return req["method"] == "GET" and req["path"].endswith("/blobs/" + layer["digest"])
    with Proxy(registry.addr, fault=first_n(1, lambda r: Fault.truncate(cut), match)) as p:
        mount_ok(lazyroot, "%s/fixtures/oci-gzip:%s" % (p.addr, TAG))
        gets = p.blob_requests(layer["digest"])
    assert len(gets) == 2, gets
    assert gets[0]["range"] is None and gets[1]["range"] == "bytes=%d-" % cut, gets
    assert gets[1]["bytes"] == layer["size"] - cut, gets
    assert_tree(lazyroot.mountpoint, "oci-gzip")
    umount_ok(lazyroot)


def test_reset_mid_range_retried(lazyroot, registry):
    """A chunk read of an eStargz layer breaks mid-body: retried, the files read right."""
    def match(req):
        return req["method"] == "GET" and req["range"] is not None
    with Proxy(registry.addr, fault=first_n(2, lambda r: Fault.truncate(10), match)) as p:
        mount_ok(lazyroot, "%s/fixtures/estargz:%s" % (p.addr, TAG))
        assert_tree(lazyroot.mountpoint, "estargz")
        assert len([r for r in p.requests if r["fault"] and "truncate" in r["fault"]]) == 2
    umount_ok(lazyroot)


@pytest.mark.parametrize("change, words", [
    (lambda b: b + b"\0" * 16, ["larger than the manifest says"]),
    (lambda b: b[:-16], ["failed verification"]),
])
def test_layer_size_is_enforced(lazyroot, registry, change, words):
    """A tar layer whose stream is longer or shorter than the manifest says fails."""
    layer = largest_layer("oci-gzip")

    def hook(req):
        if req["method"] == "GET" and req["path"].endswith("/blobs/" + layer["digest"]):
            return Fault.corrupt(change)
        return None
    with Proxy(registry.addr, fault=hook) as p:
        res = lazyroot.mount("%s/fixtures/oci-gzip:%s" % (p.addr, TAG), None, env=NO_PROXY_ENV)
    assert_failed_cleanly(res, lazyroot.mountpoint, layer["digest"], *words)


def test_content_range_total_must_match_manifest(lazyroot, registry):
    """A Content-Range whose total is not the layer size the manifest declares: the TOC of
    the eStargz layer is refused, the mount fails with one line naming both sizes."""
    layer = largest_layer("estargz")

    def bump(value):
        m = re.match(r"^bytes (\d+)-(\d+)/(\d+)$", value or "")
        return "bytes %s-%s/%d" % (m.group(1), m.group(2), int(m.group(3)) + 1) if m else value

    def hook(req):
        if req["range"] and req["path"].endswith("/blobs/" + layer["digest"]):
            return Fault.header("Content-Range", bump)
        return None
    with Proxy(registry.addr, fault=hook) as p:
        res = lazyroot.mount("%s/fixtures/estargz:%s" % (p.addr, TAG), None, env=NO_PROXY_ENV)
    assert_failed_cleanly(res, lazyroot.mountpoint, layer["digest"],
                          "%d bytes" % (layer["size"] + 1), "manifest says %d" % layer["size"])


# ---------------------------------------------------------------------------------------------
# Tag resolution with HEAD

@pytest.mark.parametrize("name", ["oci-gzip", "multiarch"])
def test_unchanged_tag_costs_one_head(lazyroot, registry, name):
    with Proxy(registry.addr) as p:
        ref = "%s/fixtures/%s:%s" % (p.addr, name, TAG)
        mount_ok(lazyroot, ref)
        umount_ok(lazyroot)
        # the first pull, of a reference the cache never saw, got the manifest by tag at
        # once: a HEAD could not have spared that GET, only cost a round trip
        assert not manifest_requests(p, "HEAD")
        by_tag = [r for r in manifest_requests(p, "GET") if r["path"].endswith("/" + TAG)]
        assert len(by_tag) == 1, manifest_requests(p, "GET")
        p.reset()
        mount_ok(lazyroot, ref, "--pull=always")
        reqs = [(r["method"], r["path"]) for r in p.requests if r["path"] != "/v2/"]
        assert reqs == [("HEAD", "/v2/fixtures/%s/manifests/%s" % (name, TAG))], reqs
        umount_ok(lazyroot)


def test_prewarm_of_unchanged_tag_costs_one_head(lazyroot, registry):
    """What a cron job does: prewarm the same tag again and again."""
    with Proxy(registry.addr) as p:
        ref = "%s/fixtures/oci-gzip:%s" % (p.addr, TAG)
        for _ in range(2):
            p.reset()
            res = lazyroot.run("prewarm", "--cache-dir", str(lazyroot.cache_dir), ref,
                               env=NO_PROXY_ENV)
            assert res.ok, str(res)
        reqs = [(r["method"], r["path"]) for r in p.requests if r["path"] != "/v2/"]
        assert reqs == [("HEAD", "/v2/fixtures/oci-gzip/manifests/" + TAG)], reqs


def test_head_refused_falls_back_to_get(lazyroot, registry):
    def hook(req):
        return Fault.status(405) if req["method"] == "HEAD" else None
    with Proxy(registry.addr, fault=hook) as p:
        ref = "%s/fixtures/oci-gzip:%s" % (p.addr, TAG)
        mount_ok(lazyroot, ref)
        umount_ok(lazyroot)
        p.reset()
        mount_ok(lazyroot, ref, "--pull=always")
        assert [r["status"] for r in manifest_requests(p, "HEAD")] == [405]
        assert [r["status"] for r in manifest_requests(p, "GET")] == [200]
    assert_tree(lazyroot.mountpoint, "oci-gzip")
    umount_ok(lazyroot)


# ---------------------------------------------------------------------------------------------
# Forward proxies and HTTP/2, over TLS

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("protocol-pki"))
    ca = tls.make_ca(d)
    server = tls.make_server_cert(d, ca, ips=("127.0.0.1",), dns=("localhost", "registry.test"))
    return {"ca": ca, "server": server}


@pytest.fixture(scope="module")
def tls_token_registry(request, storage, pki, tmp_path_factory):
    """HTTPS registry with token auth whose realm is http://auth.test:PORT/token: reached by
    name only through a forward proxy (CONNECT for the registry, absolute-URI GET for the
    token service)."""
    ts = tokenserver.TokenServer(str(tmp_path_factory.mktemp("proxy-tokens")), anonymous=["*"])
    request.addfinalizer(ts.stop)
    ts.start()
    auth = dict(ts.registry_auth(), realm="http://auth.test:%d/token" % ts.port)
    reg = registry_mod.Registry(storage=str(storage), token_auth=auth,
                                tls=(pki["server"].cert, pki["server"].key))
    request.addfinalizer(reg.stop)
    reg.start()
    return reg, ts


@pytest.fixture(scope="module")
def tls_registry(request, storage, pki):
    reg = registry_mod.Registry(storage=str(storage), tls=(pki["server"].cert, pki["server"].key))
    request.addfinalizer(reg.stop)
    reg.start()
    return reg


def ca_dir(test_dir, pki):
    d = Path(test_dir) / "certs.d"
    d.mkdir(exist_ok=True)
    (d / "ca.crt").write_bytes(Path(pki["ca"].cert).read_bytes())
    return d


PROXY_USER, PROXY_PASSWORD = "proxyuser", "pr0xy-s3cret"


def test_forward_proxy_from_environment(lazyroot, tls_token_registry, pki, test_dir, registry):
    reg, ts = tls_token_registry
    port = reg.addr.rpartition(":")[2]
    ref = "registry.test:%s/fixtures/oci-gzip:%s" % (port, TAG)
    certs = ca_dir(test_dir, pki)
    with Proxy(forward=True, proxy_auth=(PROXY_USER, PROXY_PASSWORD)) as fwd:
        url = "http://%s:%s@%s" % (PROXY_USER, PROXY_PASSWORD, fwd.addr)
        # upper-case HTTP_PROXY (which libcurl alone would ignore), lower-case https_proxy
        env = dict(NO_PROXY_ENV, HTTP_PROXY=url, https_proxy=url)
        res = mount_ok(lazyroot, ref, "--cert-dir", str(certs), "-v", env=env)
        assert PROXY_PASSWORD not in res.stderr and PROXY_PASSWORD not in res.stdout
        assert_tree(lazyroot.mountpoint, "oci-gzip")
        umount_ok(lazyroot)
        connects = [r for r in fwd.requests if r["method"] == "CONNECT"]
        assert connects and all(r["target"] == "registry.test:" + port for r in connects), connects
        assert all(r["status"] == 200 for r in connects), connects
        tokens = [r for r in fwd.requests if r["method"] == "GET"]
        assert tokens and tokens[0]["target"] == "auth.test:%d" % ts.port, tokens
        assert tokens[0]["path"].startswith("/token?"), tokens

        # NO_PROXY names the registry: it is reached directly, and does not resolve
        fwd.reset()
        res = lazyroot.mount(ref, None, "--cert-dir", str(certs), "--pull=always",
                             env=dict(env, NO_PROXY="example.org,registry.test"))
        assert_failed_cleanly(res, lazyroot.mountpoint, "registry.test")
        assert fwd.requests == [], fwd.requests
        res = lazyroot.mount(ref, None, "--cert-dir", str(certs), "--pull=always",
                             env=dict(env, no_proxy="example.org, *"))
        assert_failed_cleanly(res, lazyroot.mountpoint, "registry.test")
        assert fwd.requests == [], fwd.requests

        # loopback registries are never proxied (as in docker and podman)
        mount_ok(lazyroot, registry.ref("oci-gzip"), env=env)
        assert fwd.requests == [], fwd.requests
        umount_ok(lazyroot)


def test_http2_over_tls(lazyroot, tls_registry, pki, test_dir):
    certs = ca_dir(test_dir, pki)
    res = mount_ok(lazyroot, "%s/fixtures/oci-gzip:%s" % (tls_registry.addr, TAG),
                   "--cert-dir", str(certs), "-v")
    assert re.search(r"GET https://\S+/manifests/\S+: 200 HTTP/2", res.stderr), res.stderr
    umount_ok(lazyroot)


def test_lazy_reads_do_not_ping_again(lazyroot, registry):
    """The mount's fetch connections start from the scheme the pull found: reads from many
    threads (so several connections open) cost no `GET /v2/` beyond the pull's own -- on a
    10 ms link each one was a round trip added to a cold read."""
    with Proxy(registry.addr) as p:
        mount_ok(lazyroot, "%s/fixtures/estargz:%s" % (p.addr, TAG))
        pings = [r for r in p.requests if r["path"] == "/v2/"]
        assert len(pings) == 1, p.requests
        files = [os.path.join(d, f) for d, _, fs in os.walk(lazyroot.mountpoint) for f in fs
                 if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f))]

        def read(path):
            with open(path, "rb") as f:
                return len(f.read())
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(read, files))
        ranged = [r for r in p.requests if r["range"]]
        assert len(ranged) > 4, "the reads were not lazy: %s" % p.requests
        pings = [r for r in p.requests if r["path"] == "/v2/"]
        assert len(pings) == 1, "reads pinged again: %s" % [r["path"] for r in p.requests]
        assert_tree(lazyroot.mountpoint, "estargz")
    umount_ok(lazyroot)
