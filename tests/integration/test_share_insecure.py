"""Artifacts (seek indexes, start profiles) at a registry registries.conf marks insecure: they
are published and looked up with the settings the image pull uses for that registry (insecure,
blocked, location rewrites; cache/registry/source.h, source_origin_new()), not as a secure
registry.

The registry is a real docker-registry speaking plain HTTP on an address this module adds to
the machine (a dummy interface, or an extra address on lo): not loopback, so lazyroot treats it
as secure unless registries.conf says `insecure = true` -- no --tls-verify flag anywhere.
"""

import json
import os
import uuid

import pytest

import conftest
import helpers
import push
import registry as registry_mod
from proxy import Proxy

EXIT_REGISTRY = 3
TAG = "edge"
LINK = "lr-shareins0"


@pytest.fixture(scope="module")
def outside_addr():
    """An address on this machine that is not loopback for lazyroot (not 127/8 nor ::1)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to add an address")
    with helpers.outside_address("10.217.0.0/16", LINK) as addr:
        yield addr


@pytest.fixture(scope="module")
def http_registry(request, outside_addr):
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    reg = registry_mod.Registry(host=outside_addr)
    request.addfinalizer(reg.stop)
    return reg.start()


def fresh_image(reg, fixture, sub=""):
    """The fixture in a repository of this test's own, so that no other test finds its
    artifacts: (ref, repository)."""
    repo = "share/%s%s-%s" % (sub, fixture, uuid.uuid4().hex[:8])
    push.push_layout(reg.addr, str(conftest.FIXTURES / fixture), repo, TAG)
    return "%s/%s:%s" % (reg.addr, repo, TAG), repo


@pytest.fixture
def conf(lazyroot, test_dir, http_registry):
    """Writes registries.conf: conf(insecure=True) marks the registry insecure, conf() names
    nothing, conf(text) writes text.  No artifact repository, no by-product seek index."""
    lz = test_dir / "lazyroot.conf"
    lz.write_text("seek-index-on-pull = no\n")
    path = test_dir / "registries.conf"
    lazyroot.env.update({"LAZYROOT_CONFIG": str(lz), "CONTAINERS_REGISTRIES_CONF": str(path)})

    def write(text=None, insecure=False):
        if text is None:
            text = ('[[registry]]\nlocation = "%s"\ninsecure = true\n' % http_registry.addr
                    if insecure else "")
        path.write_text(text)
    yield write
    for mnt in (lazyroot.mountpoint,):
        if conftest.is_mounted(mnt):
            lazyroot.umount(mnt)


def use_cache(lazyroot, name):
    lazyroot.cache_dir = lazyroot.test_dir / name
    lazyroot.cache_dir.mkdir(exist_ok=True)


def run(lazyroot, *args):
    return lazyroot.run(*args, "--cache-dir", str(lazyroot.cache_dir), timeout=120)


def stats(lazyroot):
    r = lazyroot.run("stats", "--json", str(lazyroot.mountpoint), timeout=30)
    assert r.ok, str(r)
    return json.loads(r.stdout)


def read_all(root):
    n = 0
    for d, _, names in os.walk(root):
        for name in names:
            p = os.path.join(d, name)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    n += len(f.read())
    return n


def profile_of(lazyroot, ref):
    r = run(lazyroot, "profile", ref)
    return json.loads(r.stdout) if r.ok else None


def record_profile(lazyroot, ref):
    r = lazyroot.mount(ref, None, "--prefetch=none", "--record-profile=2")
    assert r.ok, str(r)
    try:
        assert read_all(lazyroot.mountpoint) > 0
        got = []
        assert conftest.wait_until(lambda: got.append(profile_of(lazyroot, ref)) or got[-1],
                                   30, 0.3), "no profile kept 30 s after the reads"
    finally:
        assert lazyroot.umount().ok
    assert got[-1]["chunks"], got[-1]
    return got[-1]


# ---------------------------------------------------------------------------------------------

def published_ref(ref, via):
    """The name to publish @ref's artifacts under: @ref itself (the insecure registry), or
    through a proxy on 127.0.0.1 (loopback: insecure without registries.conf), which leaves the
    lookup at the registry the only thing under test."""
    return ref.replace(ref.split("/")[0], via.addr, 1) if via else ref


def check_lazy_mount(lazyroot, ref, place):
    """A mount on an empty cache finds the published index at @place and serves the gzip
    layers through it."""
    use_cache(lazyroot, "cache-b")
    r = lazyroot.mount(ref, None, "--prefetch=none")
    assert r.ok, str(r)
    try:
        assert r.stderr.strip() == "", r.stderr
        layers = stats(lazyroot)["layers"]
        assert [l["served"] for l in layers] == ["gzip-index"] * len(layers), layers
        assert {l["seek_index"] for l in layers} == {"fetched from " + place}, layers
        diffs = helpers.compare_with_oracle(lazyroot.mountpoint, conftest.FIXTURES / "oci-gzip")
        assert not diffs, "\n".join(diffs)
    finally:
        assert lazyroot.umount().ok


@pytest.mark.parametrize("publish", ["here", "prewarm", "loopback"])
def test_seek_index_push_and_lookup(lazyroot, conf, http_registry, publish):
    """index --push (or prewarm --publish-index) publishes at the insecure registry over plain
    HTTP (or, "loopback", through a local proxy); a lazy mount on an empty cache finds the
    index at the registry."""
    ref, repo = fresh_image(http_registry, "oci-gzip")
    conf(insecure=True)
    use_cache(lazyroot, "cache-a")
    if publish == "prewarm":
        r = run(lazyroot, "prewarm", "--publish-index", ref)
        assert r.ok and r.stderr.strip() == "", str(r)
    else:
        with Proxy(http_registry.addr) as p:
            pub = published_ref(ref, p if publish == "loopback" else None)
            r = run(lazyroot, "index", "--push", pub)
        assert r.ok and "published in 1 place" in r.stdout, str(r)
    check_lazy_mount(lazyroot, ref, "%s/%s" % (http_registry.addr, repo))


@pytest.mark.parametrize("prefix", ["share-alias.invalid/share", "ADDR/share"])
def test_seek_index_rewritten_location(lazyroot, conf, http_registry, prefix):
    """A name registries.conf rewrites to a repository of the insecure registry: the index is
    published there and found there.  The location lies under the prefix ("ADDR/share"): a
    rewrite applied twice would look in the wrong repository."""
    ref, repo = fresh_image(http_registry, "oci-gzip", sub="in/")
    prefix = prefix.replace("ADDR", http_registry.addr)
    conf('[[registry]]\nprefix = "%s"\nlocation = "%s/share/in"\ninsecure = true\n'
         % (prefix, http_registry.addr))
    name = "%s/%s" % (prefix, ref.split("/share/in/", 1)[1])
    use_cache(lazyroot, "cache-a")
    r = run(lazyroot, "index", "--push", name)
    assert r.ok and "published in 1 place" in r.stdout, str(r)
    check_lazy_mount(lazyroot, name, "%s/%s" % (http_registry.addr, repo))


@pytest.mark.parametrize("publish", ["here", "loopback"])
def test_profile_push_and_lookup(lazyroot, conf, http_registry, publish):
    """profile --push publishes at the insecure registry over plain HTTP (or through a local
    proxy); a mount on an empty cache finds the profile at the registry and fetches its
    chunks."""
    ref, _ = fresh_image(http_registry, "estargz")
    conf(insecure=True)
    use_cache(lazyroot, "cache-a")
    with Proxy(http_registry.addr) as p:
        pub = published_ref(ref, p if publish == "loopback" else None)
        prof = record_profile(lazyroot, pub)
        r = run(lazyroot, "profile", "--push", pub)
    assert r.ok and "in 1 place" in r.stdout, str(r)
    check_profile_mount(lazyroot, ref, prof)


def check_profile_mount(lazyroot, ref, prof):
    """A mount on an empty cache finds the published profile @prof at the registry and
    fetches its chunks."""
    use_cache(lazyroot, "cache-b")
    r = lazyroot.mount(ref, None, "--prefetch=none")
    assert r.ok, str(r)
    try:
        assert r.stderr.strip() == "", r.stderr
        last = []

        def fetched():
            last.append(stats(lazyroot)["profile"])
            return not last[-1]["fetching"]
        assert conftest.wait_until(fetched, 60, 0.2), "profile fetch still running: %s" % last
        assert last[-1]["chunks"] == len(prof["chunks"]), last[-1]
    finally:
        assert lazyroot.umount().ok
    assert profile_of(lazyroot, ref)["chunks"] == prof["chunks"]


def test_profile_rewritten_location(lazyroot, conf, http_registry):
    """A name registries.conf rewrites to another registry's repository: the mount pulled from
    the image's origin (the rewritten location), so it looks the profile up there too (it
    used to compare the location with the name as written, and looked up nothing)."""
    ref, _ = fresh_image(http_registry, "estargz", sub="in/")
    conf('[[registry]]\nprefix = "share-alias.invalid/share"\nlocation = "%s/share/in"\n'
         'insecure = true\n' % http_registry.addr)
    name = "share-alias.invalid/share/%s" % ref.split("/share/in/", 1)[1]
    use_cache(lazyroot, "cache-a")
    prof = record_profile(lazyroot, name)
    r = run(lazyroot, "profile", "--push", name)
    assert r.ok and "in 1 place" in r.stdout, str(r)
    check_profile_mount(lazyroot, name, prof)


@pytest.mark.parametrize("how", ["secure", "blocked"])
def test_profile_push_refused(lazyroot, conf, http_registry, test_dir, how):
    """The same registry not marked insecure (or blocked): one error line naming it, the
    registry exit status, as an image pull from it gives."""
    ref, _ = fresh_image(http_registry, "estargz")
    conf(insecure=True)
    use_cache(lazyroot, "cache-a")
    record_profile(lazyroot, ref)
    conf('[[registry]]\nlocation = "%s"\nblocked = true\n' % http_registry.addr
         if how == "blocked" else None)
    words = [http_registry.addr] + (["blocked"] if how == "blocked" else [])
    before = helpers.lazyroot_mounts()
    r = run(lazyroot, "profile", "--push", ref)
    line = helpers.assert_clean_failure(r, EXIT_REGISTRY, words, test_dir, before)
    assert "start profile" in line, line
    # a pull of the image from it says the same about the registry
    use_cache(lazyroot, "cache-c")
    r = lazyroot.mount(ref, None, "--prefetch=none")
    helpers.assert_clean_failure(r, EXIT_REGISTRY, words, test_dir, before)


def test_index_push_not_insecure(lazyroot, conf, http_registry, test_dir):
    ref, _ = fresh_image(http_registry, "oci-gzip")
    conf()
    use_cache(lazyroot, "cache-a")
    before = helpers.lazyroot_mounts()
    r = run(lazyroot, "index", "--push", ref)
    helpers.assert_clean_failure(r, EXIT_REGISTRY, [http_registry.addr], test_dir, before)
