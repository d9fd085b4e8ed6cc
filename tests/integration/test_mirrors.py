"""registries.conf (CONTAINERS_REGISTRIES_CONF): mirrors, prefix/location rewriting, blocked and
insecure registries, against real docker-registry instances.

  origin   the session registry (every fixture), behind a logging proxy (tests/tools/proxy.py)
  mirror   a second registry with fixtures/oci-gzip and fixtures/estargz pushed, behind a proxy
  empty    a third registry with nothing in it (a mirror that lacks the image)

The proxies count who got which request.  For the insecure tests, a TLS registry with a
self-signed certificate and a plain-HTTP one listen on an address this module adds to the
machine (a dummy interface, or an extra address on lo where dummy links are unavailable):
a non-loopback address, so lazyroot treats the registries as secure unless told otherwise.
"""

import hashlib
import os
from pathlib import Path

import pytest

import conftest
import helpers
import push
import registry as registry_mod
import tls
from proxy import Fault, Proxy
from test_faults import bad_blobs, expected_files, victims

EXIT_USAGE = 2
EXIT_REGISTRY = 3
REPO = "fixtures/oci-gzip"
LAZY_REPO = "fixtures/estargz"
TAG = "edge"



def tag_asked(requests):
    """Whether the tag was resolved there: a HEAD of it (what lazyroot sends first, as
    Docker Hub counts only GETs against its pull limit) or a GET (after a refused HEAD)."""
    return any(r in ("%s /v2/%s/manifests/%s" % (m, REPO, TAG) for m in ("HEAD", "GET"))
               for r in requests)

def _have_registry():
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")


@pytest.fixture(scope="module")
def mirror_registry():
    _have_registry()
    with registry_mod.Registry() as reg:
        for name in ("oci-gzip", "estargz"):
            push.push_layout(reg.addr, str(conftest.FIXTURES / name), "fixtures/" + name, TAG)
        yield reg


@pytest.fixture(scope="module")
def empty_registry():
    _have_registry()
    with registry_mod.Registry() as reg:
        yield reg


@pytest.fixture
def origin(registry):
    with Proxy(registry.addr) as p:
        yield p


@pytest.fixture
def mirror(mirror_registry):
    with Proxy(mirror_registry.addr) as p:
        yield p


def write_conf(test_dir, text):
    path = Path(test_dir) / "registries.conf"
    path.write_text(text)
    return {"CONTAINERS_REGISTRIES_CONF": str(path)}


def api_requests(proxy):
    """What the proxy forwarded, as "METHOD PATH" (pings of /v2/ left out)."""
    return ["%s %s" % (r["method"], r["path"]) for r in proxy.requests if r["path"] != "/v2/"]


def assert_tree(mnt, fixture):
    diffs = helpers.compare_with_oracle(mnt, conftest.FIXTURES / fixture)
    assert not diffs, "\n".join(diffs)


def mirror_conf(origin_addr, *mirrors, extra="", mirror_extra=""):
    """@extra: lines of the registry; @mirror_extra: lines of each mirror."""
    text = '[[registry]]\nprefix = "%s"\n%s' % (origin_addr, extra)
    for m in mirrors:
        text += '[[registry.mirror]]\nlocation = "%s"\n%s' % (m, mirror_extra)
    return text


def mount_oci_gzip(lazyroot, test_dir, origin, conf, *extra, ref=None):
    """Mounts oci-gzip (the origin's REPO:TAG unless @ref) with registries.conf @conf and the
    options @extra, checks its tree and unmounts; returns the mount's result."""
    env = write_conf(test_dir, conf)
    r = lazyroot.mount(ref or "%s/%s:%s" % (origin.addr, REPO, TAG), None, *extra, env=env)
    r.check()
    try:
        assert_tree(lazyroot.mountpoint, "oci-gzip")
    finally:
        lazyroot.umount(env=env)
    return r


def test_mirror_serves_everything_when_it_has_the_image(lazyroot, test_dir, origin, mirror):
    mount_oci_gzip(lazyroot, test_dir, origin, mirror_conf(origin.addr, mirror.addr))
    assert origin.requests == [], "the origin was asked: %s" % api_requests(origin)
    got = api_requests(mirror)
    assert tag_asked(got), got
    assert any("/blobs/" in r for r in got), got


@pytest.mark.parametrize("how", ["down", "missing"])
def test_origin_serves_when_the_mirror_cannot(lazyroot, test_dir, origin, empty_registry, how):
    if how == "down":
        mirrors = ["127.0.0.1:%d" % registry_mod.free_port()]
    else:
        mirrors = [empty_registry.addr]
    r = mount_oci_gzip(lazyroot, test_dir, origin, mirror_conf(origin.addr, *mirrors), "--verbose")
    assert tag_asked(api_requests(origin)), api_requests(origin)
    assert "mirror '%s/%s' failed" % (mirrors[0], REPO) in r.stderr, str(r)


def test_second_mirror_serves_when_the_first_lacks_the_image(lazyroot, test_dir, origin, mirror,
                                                             empty_registry):
    mount_oci_gzip(lazyroot, test_dir, origin,
                   mirror_conf(origin.addr, empty_registry.addr, mirror.addr))
    assert origin.requests == [], api_requests(origin)
    assert any("/blobs/" in r for r in api_requests(mirror))


def test_layer_cut_short_at_the_mirror_continues_from_the_origin(lazyroot, test_dir, origin,
                                                                  mirror):
    """A whole layer is a range open at its end: when the mirror breaks off a layer and then
    cannot serve the rest, the origin is asked only for the bytes not taken yet."""
    cut = 100000
    seen = set()

    def hook(req):
        if req["method"] != "GET" or "/blobs/" not in req["path"]:
            return None
        if req["path"] not in seen:
            seen.add(req["path"])
            return Fault.truncate(cut)
        return Fault.status(404) if req["range"] else None

    mirror.set_fault(hook)
    env = write_conf(test_dir, mirror_conf(origin.addr, mirror.addr))
    lazyroot.mount("%s/%s:%s" % (origin.addr, REPO, TAG), env=env).check()
    try:
        diffs = helpers.compare_with_oracle(lazyroot.mountpoint, conftest.FIXTURES / "oci-gzip")
    finally:
        lazyroot.umount(env=env)
    assert not diffs, "\n".join(diffs)
    # The first layer broke off at the mirror; the origin, which served its rest, serves the
    # later blobs from then on (the endpoint that served last is asked first).
    by_path = {}
    for r in origin.blob_requests():
        by_path.setdefault(r["path"], []).append(r["range"])
    resumed = [p for p, ranges in by_path.items() if "bytes=%d-" % cut in ranges]
    assert resumed, by_path
    assert all(by_path[p] == ["bytes=%d-" % cut] for p in resumed), by_path


def test_mirror_by_digest_only_resolves_tags_at_the_origin(lazyroot, test_dir, origin, mirror):
    mount_oci_gzip(lazyroot, test_dir, origin,
                   mirror_conf(origin.addr, mirror.addr, extra="mirror-by-digest-only = true\n"))
    at_origin, at_mirror = api_requests(origin), api_requests(mirror)
    assert tag_asked(at_origin), at_origin
    assert not any("/blobs/" in r for r in at_origin), at_origin
    assert not any(r.endswith("/manifests/" + TAG) for r in at_mirror), at_mirror
    assert any("/blobs/" in r for r in at_mirror), at_mirror


def test_pull_from_mirror_digest_only_per_mirror(lazyroot, test_dir, origin, mirror):
    mount_oci_gzip(lazyroot, test_dir, origin,
                   mirror_conf(origin.addr, mirror.addr,
                               mirror_extra='pull-from-mirror = "digest-only"\n'))
    assert tag_asked(api_requests(origin)), api_requests(origin)
    assert not any("/blobs/" in r for r in api_requests(origin))
    assert any("/blobs/" in r for r in api_requests(mirror))


def test_prefix_rewritten_to_location(lazyroot, test_dir, origin):
    mount_oci_gzip(lazyroot, test_dir, origin,
                   '[[registry]]\nprefix = "registry.example:5000/fixtures"\n'
                   'location = "%s/fixtures"\n' % origin.addr,
                   ref="registry.example:5000/fixtures/oci-gzip:edge")
    assert tag_asked(api_requests(origin)), api_requests(origin)


def test_blocked_registry_is_refused(lazyroot, test_dir, origin):
    env = write_conf(test_dir, '[[registry]]\nlocation = "%s"\nblocked = true\n' % origin.addr)
    before = helpers.lazyroot_mounts()
    r = lazyroot.mount("%s/%s:%s" % (origin.addr, REPO, TAG), env=env)
    helpers.assert_clean_failure(r, EXIT_REGISTRY, ["blocked", origin.addr, "registries.conf"],
                                 test_dir, before)
    assert origin.requests == []


def test_syntax_error_names_file_and_line(lazyroot, test_dir, origin):
    env = write_conf(test_dir, '# mirrors\n[[registry]]\nprefix = "%s"\ninsecure = yes\n'
                     % origin.addr)
    before = helpers.lazyroot_mounts()
    r = lazyroot.mount("%s/%s:%s" % (origin.addr, REPO, TAG), env=env)
    # lazyroot(1): a syntax error in registries.conf is a usage error, exit status 2
    line = helpers.assert_clean_failure(r, EXIT_USAGE, ["registries.conf:4:"], test_dir, before)
    assert "invalid value" in line, line
    assert origin.requests == []


def test_lazy_reads_after_mount_go_to_the_mirror(lazyroot, test_dir, origin, mirror):
    env = write_conf(test_dir, mirror_conf(origin.addr, mirror.addr))
    lazyroot.mount("%s/%s:%s" % (origin.addr, LAZY_REPO, TAG), None, "--prefetch=none",
                   env=env).check()
    try:
        ranged_at_mount = mirror.count("/v2/%s/blobs/" % LAZY_REPO, ranged=True)
        assert_tree(lazyroot.mountpoint, "estargz")
        ranged_after = mirror.count("/v2/%s/blobs/" % LAZY_REPO, ranged=True)
    finally:
        lazyroot.umount(env=env)
    assert ranged_after > ranged_at_mount, "reads fetched nothing from the mirror"
    assert origin.requests == [], api_requests(origin)


# ---------------------------------------------------------------------------------------------
# insecure registries on a non-loopback address

@pytest.fixture(scope="module")
def outside_addr():
    """An address on this machine that is not loopback for lazyroot (not 127/8 nor ::1)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to add an address")
    with helpers.outside_address("10.213.0.0/16", "lr-mirrors0") as addr:
        yield addr


@pytest.fixture(scope="module")
def seeded_storage(tmp_path_factory):
    _have_registry()
    storage = tmp_path_factory.mktemp("mirrors-storage") / "storage"
    with registry_mod.Registry(storage=str(storage)) as reg:
        push.push_layout(reg.addr, str(conftest.FIXTURES / "oci-gzip"), REPO, TAG)
    return storage


@pytest.fixture(scope="module")
def outside_tls_registry(request, outside_addr, seeded_storage, tmp_path_factory):
    cert = tls.make_self_signed(str(tmp_path_factory.mktemp("selfsigned")), "server",
                                outside_addr, ca=False)
    reg = registry_mod.Registry(storage=str(seeded_storage), tls=(cert.cert, cert.key),
                                host=outside_addr)
    request.addfinalizer(reg.stop)
    return reg.start()


@pytest.fixture(scope="module")
def outside_http_registry(request, outside_addr, seeded_storage):
    reg = registry_mod.Registry(storage=str(seeded_storage), host=outside_addr)
    request.addfinalizer(reg.stop)
    return reg.start()


@pytest.mark.parametrize("kind", ["tls", "http"])
def test_outside_registry_refused_unless_insecure(lazyroot, test_dir, kind, request):
    reg = request.getfixturevalue("outside_%s_registry" % kind)
    ref = "%s/%s:%s" % (reg.addr, REPO, TAG)
    before = helpers.lazyroot_mounts()
    r = lazyroot.mount(ref, env=write_conf(test_dir, ""))
    helpers.assert_clean_failure(r, EXIT_REGISTRY, [reg.addr], test_dir, before)


@pytest.mark.parametrize("kind", ["tls", "http"])
@pytest.mark.parametrize("flag", ["--tls-verify=false", "--insecure-registry", "conf"])
def test_outside_registry_insecure(lazyroot, test_dir, kind, flag, request):
    reg = request.getfixturevalue("outside_%s_registry" % kind)
    ref = "%s/%s:%s" % (reg.addr, REPO, TAG)
    if flag == "conf":
        env, extra = write_conf(test_dir, '[[registry]]\nlocation = "%s"\ninsecure = true\n'
                                % reg.addr), []
    else:
        env, extra = write_conf(test_dir, ""), [flag]
    lazyroot.mount(ref, None, *extra, env=env).check()
    try:
        assert_tree(lazyroot.mountpoint, "oci-gzip")
    finally:
        lazyroot.umount(env=env)


def test_tls_verify_true_is_the_default(lazyroot, test_dir, outside_tls_registry):
    ref = "%s/%s:%s" % (outside_tls_registry.addr, REPO, TAG)
    env = write_conf(test_dir, "")
    r = lazyroot.mount(ref, None, "--insecure-registry", "--tls-verify=true", env=env)
    assert r.returncode == EXIT_REGISTRY, str(r)
    r = lazyroot.mount(ref, None, "--tls-verify=maybe", env=env)
    assert r.returncode == 2 and "--tls-verify" in r.stderr, str(r)


def test_insecure_mirror_of_a_secure_registry(lazyroot, test_dir, origin, outside_http_registry):
    """A mirror marked insecure is reached over plain HTTP; the origin is never asked."""
    mount_oci_gzip(lazyroot, test_dir, origin,
                   mirror_conf(origin.addr, outside_http_registry.addr,
                               mirror_extra="insecure = true\n"))
    assert origin.requests == [], api_requests(origin)


def _blob_get(req):
    return req["method"] == "GET" and "/blobs/" in req["path"]


def _short(req):
    return Fault.short(0.5) if _blob_get(req) else None


def test_origin_serves_blobs_a_mirror_keeps_answering_wrong(lazyroot, test_dir, origin, mirror):
    """A mirror whose blob answers are always short (well framed: Content-Length says so):
    each blob is asked there three times, then from the origin, and the mount succeeds."""
    mirror.set_fault(_short)
    mount_oci_gzip(lazyroot, test_dir, origin, mirror_conf(origin.addr, mirror.addr))
    at_mirror = [r["path"] for r in mirror.blob_requests()]
    assert at_mirror and all(at_mirror.count(p) == 3 for p in at_mirror), at_mirror
    assert origin.blob_requests(), api_requests(origin)


def _flip(b):
    i = len(b) // 2
    return b[:i] + bytes([b[i] ^ 0x55]) + b[i + 1:] if b else b


def test_origin_serves_chunks_a_mirror_keeps_answering_wrong(lazyroot, test_dir, origin,
                                                             mirror):
    """The same for lazy reads: chunks whose bytes the mirror flips every time are asked there
    three times, then from the origin, within the read's timeout: the right bytes, and only
    right blobs in the cache."""
    env = write_conf(test_dir, mirror_conf(origin.addr, mirror.addr))
    lazyroot.mount("%s/%s:%s" % (origin.addr, LAZY_REPO, TAG), None, "--prefetch=none",
                   "--timeout=20", env=env).check()
    try:
        mirror.set_fault(lambda req: Fault.corrupt(_flip)
                         if _blob_get(req) and req["range"] else None)
        mirror.reset()
        origin.reset()
        files = expected_files("estargz")
        for path in victims("estargz", 3):
            data = (Path(lazyroot.mountpoint) / path.lstrip("/")).read_bytes()
            assert hashlib.sha256(data).hexdigest() == files[path][1], path
    finally:
        lazyroot.umount(env=env)
    flipped = [r for r in mirror.blob_requests() if r["fault"]]
    assert len(flipped) >= 3, api_requests(mirror)
    assert any(r["range"] for r in origin.blob_requests()), api_requests(origin)
    assert bad_blobs(lazyroot.cache_dir) == []
