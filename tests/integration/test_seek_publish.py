"""Seek indexes shared through the registry (docs/formats.md, "Seek index artifacts"): host A
builds and publishes them (`lazyroot index --push`, `prewarm --publish-index`, the config key
seek-index-publish), host B, with an empty cache, finds them with one lookup and mounts the
gzip image lazily; a missing, broken or oversized index is one warning line and today's eager
mount. Against the real docker-registry 2.8 (referrers tag schema) and, through
tests/tools/referrers.py, the referrers API.

Every test pushes its images to repositories of its own on a module registry (not the session
one), so that no other test's mount ever finds an index published here.
"""

import hashlib
import json
import os
import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest

import conftest
import helpers
import push
from helpers import compare_with_oracle, sqlite
from proxy import Proxy
from referrers import ReferrersFront

FIXTURE = "oci-gzip"
ARTIFACT_TYPE = "application/vnd.lazyroot.seek-index.v1"
INDEX_MEDIA_TYPE = "application/vnd.lazyroot.seek-index.v1+binary"
LAYER_ANNOTATION = "org.lazyroot.layer.digest"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def reg(request):
    return helpers.module_registry(request)


class Host:
    """One host of the fleet: a cache of its own, the test's configuration file."""

    def __init__(self, lazyroot, cache, config):
        self.lz = lazyroot
        self.cache = Path(cache)
        self.config = config
        self.db = str(self.cache / "index.db")
        self.extra_env = {}

    def env(self):
        return dict(self.extra_env, LAZYROOT_CONFIG=str(self.config))

    def run(self, *args, timeout=120):
        return self.lz.run(*args, "--cache-dir", str(self.cache), timeout=timeout,
                           env=self.env())

    def mount(self, ref, *extra):
        return self.lz.run("mount", ref, str(self.lz.mountpoint), "--cache-dir", str(self.cache),
                           *extra, timeout=120, env=self.env())

    def umount(self):
        assert self.lz.umount(env=self.env()).ok

    def formats(self):
        return sorted(f for (f,) in sqlite(self.db, "SELECT format FROM layers"))

    def stats(self):
        r = self.lz.run("stats", "--json", str(self.lz.mountpoint), timeout=30)
        assert r.ok, str(r)
        return json.loads(r.stdout)


@pytest.fixture
def hosts(lazyroot, test_dir):
    config = test_dir / "lazyroot.conf"
    # The by-product index of a full pull is off here: what a host has comes from the registry.
    config.write_text("seek-index-on-pull = no\n")
    a = Host(lazyroot, test_dir / "cache-a", config)
    b = Host(lazyroot, lazyroot.cache_dir, config)
    return a, b


def layout_of(name=FIXTURE):
    return conftest.FIXTURES / name


def fresh_image(addr, layout=None, name="img"):
    repo = "seek/%s-%s" % (name, uuid.uuid4().hex[:8])
    pushed = push.push_layout(addr, str(layout or layout_of()), repo, "edge")
    return "%s/%s:edge" % (addr, repo), repo, pushed["digest"]


def manifest_of(layout):
    with open(os.path.join(layout, "index.json")) as f:
        digest = json.load(f)["manifests"][0]["digest"]
    with open(os.path.join(layout, "blobs", "sha256", digest[7:])) as f:
        return json.load(f)


def gzip_layers(layout=None):
    return [(l["digest"], l["size"]) for l in manifest_of(layout or layout_of())["layers"]]


def lookups(proxy):
    """Referrers lookups: the API, or the referrers tag of the schema."""
    return [r for r in proxy.requests
            if "/referrers/" in r["path"] or "/manifests/sha256-" in r["path"]]


def one_lookup(proxy):
    """One lookup: the referrers API asked once and, while the registry's route is not known,
    the referrers tag once beside it (its answer used only when the API 404s); the tag alone
    where the registry is known to lack the API, the API alone where it is known to have it."""
    api = [r for r in lookups(proxy) if "/referrers/" in r["path"]]
    tag = [r for r in lookups(proxy) if "/manifests/sha256-" in r["path"]]
    return len(api) <= 1 and len(tag) <= 1 and bool(api + tag)


def layer_bytes(proxy, layers):
    return sum(r["bytes"] for r in proxy.requests
               for d, _ in layers if r["method"] == "GET" and r["path"].endswith("/blobs/" + d))


def warnings(res):
    return [ln for ln in res.stderr.splitlines() if ln.strip()]


def publish(host, ref):
    r = host.run("index", "--push", ref)
    assert r.ok, str(r)
    assert "published in 1 place" in r.stdout, r.stdout
    return r


def read_one_file(root):
    files = sorted(os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns
                   if os.path.isfile(os.path.join(d, n)) and
                   not os.path.islink(os.path.join(d, n)) and
                   os.path.getsize(os.path.join(d, n)) > 0)
    with open(files[len(files) // 2], "rb") as f:
        return f.read()


def check_lazy_mount(b, ref, proxy, place):
    """B mounts with an empty cache through the proxy: one lookup, the layers lazy, the tree
    the reference one, and far fewer layer bytes fetched than the layers hold."""
    layers = gzip_layers()
    r = b.mount(ref, "--prefetch=none")
    assert r.ok, str(r)
    try:
        assert warnings(r) == [], r.stderr
        assert one_lookup(proxy), lookups(proxy)
        assert b.formats() == ["gzip-index"] * len(set(layers)), b.formats()
        s = b.stats()
        assert [l["served"] for l in s["layers"]] == ["gzip-index"] * len(layers), s
        assert {l["seek_index"] for l in s["layers"]} == {"fetched from " + place}, s
        assert layer_bytes(proxy, layers) == 0
        read_one_file(b.lz.mountpoint)
        assert 0 < layer_bytes(proxy, layers) < sum(n for _, n in layers) / 2
        diffs = compare_with_oracle(b.lz.mountpoint, layout_of())
        assert not diffs, "\n".join(diffs)
        assert b.stats()["chunks_failed"] == 0
    finally:
        b.umount()


# ---------------------------------------------------------------------------------------------

def test_push_then_lazy_mount_tag_schema(reg, hosts):
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    publish(a, ref)
    # the referrers tag schema: an index tagged after the subject lists the artifact
    with Proxy(reg.addr) as p:
        pref = ref.replace(reg.addr, p.addr)
        check_lazy_mount(b, pref, p, "%s/%s" % (p.addr, repo))
        # the second mount of the image asks nothing about indexes
        p.reset()
        r = b.mount(pref)
        assert r.ok, str(r)
        b.umount()
        assert lookups(p) == [], lookups(p)
    # pushing twice adds nothing: the same artifact manifest
    tags = json.loads(conftest.run_cmd(["curl", "-s", "-H", "Accept: application/vnd.oci."
                                        "image.index.v1+json", "http://%s/v2/%s/manifests/%s"
                                        % (reg.addr, repo, digest.replace(":", "-"))]).stdout)
    publish(a, ref)
    again = json.loads(conftest.run_cmd(["curl", "-s", "-H", "Accept: application/vnd.oci."
                                         "image.index.v1+json", "http://%s/v2/%s/manifests/%s"
                                         % (reg.addr, repo, digest.replace(":", "-"))]).stdout)
    assert [m["digest"] for m in again["manifests"]] == [m["digest"] for m in tags["manifests"]]
    assert [m["artifactType"] for m in tags["manifests"]] == [ARTIFACT_TYPE]


def test_push_then_lazy_mount_referrers_api(reg, hosts):
    a, b = hosts
    with ReferrersFront(reg.addr) as f:
        ref, repo, digest = fresh_image(f.addr)
        publish(a, ref)
        assert [d["artifactType"] for d in f.referrers[(repo, digest)]] == [ARTIFACT_TYPE]
        with Proxy(f.addr) as p:
            check_lazy_mount(b, ref.replace(f.addr, p.addr), p, "%s/%s" % (p.addr, repo))
            assert [r["path"].split("?")[0] for r in lookups(p) if "/referrers/" in r["path"]] \
                == ["/v2/%s/referrers/%s" % (repo, digest)]


def test_a_fetched_index_is_never_published(reg, hosts):
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    publish(a, ref)
    assert b.mount(ref, "--prefetch=none").ok
    b.umount()
    assert sqlite(b.db, "SELECT count(*) FROM seek_indexes WHERE trusted = 0")[0][0] > 0
    # B's own index --push rebuilds the indexes from the verified layers before publishing
    r = b.run("index", "--push", ref)
    assert r.ok, str(r)
    assert sqlite(b.db, "SELECT count(*) FROM seek_indexes WHERE trusted = 0")[0][0] == 0
    r = b.run("inspect", ref)
    assert r.ok and "seek index built here" in r.stdout, str(r)


def test_miss_remembered(reg, hosts, test_dir):
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    with Proxy(reg.addr) as p:
        pref = ref.replace(reg.addr, p.addr)
        r = b.mount(pref)
        assert r.ok, str(r)
        assert warnings(r) == [], r.stderr
        b.umount()
        assert b.formats() == ["tar"] * len(gzip_layers()), b.formats()
        assert len(lookups(p)) >= 1
        # forgotten layers, the same image: "none" is remembered (artifact-miss-ttl)
        assert b.run("rm", pref).ok
        p.reset()
        assert b.mount(pref).ok
        b.umount()
        assert lookups(p) == [], lookups(p)
        # --pull=always asks again
        assert b.run("rm", pref).ok
        p.reset()
        assert b.mount(pref, "--pull=always").ok
        b.umount()
        assert one_lookup(p), lookups(p)
        # and so does every mount when misses are not kept
        b.config.write_text("seek-index-on-pull = no\nartifact-miss-ttl = 0\n")
        assert b.run("rm", pref).ok
        p.reset()
        assert b.mount(pref).ok
        b.umount()
        assert one_lookup(p), lookups(p)
        # --pull=never asks nothing
        p.reset()
        r = b.mount(pref, "--pull=never")
        assert r.ok, str(r)
        b.umount()
        assert p.requests == [], p.requests


def test_seek_index_fetch_no_config_asks_nothing(reg, hosts):
    """seek-index-fetch = no (the operator's lever, docs/security.md): a mount never looks up
    or keeps a published index, and reads the gzip layers whole; = yes (the default) finds it."""
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    publish(a, ref)
    b.config.write_text("seek-index-on-pull = no\nseek-index-fetch = no\n")
    with Proxy(reg.addr) as p:
        pref = ref.replace(reg.addr, p.addr)
        r = b.mount(pref, "--prefetch=none")
        assert r.ok, str(r)
        try:
            assert warnings(r) == [], r.stderr
            assert lookups(p) == [], lookups(p)
            assert [l["served"] for l in b.stats()["layers"]] == \
                ["eager"] * len(gzip_layers()), b.stats()
        finally:
            b.umount()
        assert b.formats() == ["tar"] * len(set(gzip_layers())), b.formats()
        assert sqlite(b.db, "SELECT count(*) FROM seek_indexes")[0][0] == 0
        # the same cache, the key back to its default: looked up, the layers lazy
        b.config.write_text("seek-index-on-pull = no\n")
        assert b.run("rm", pref).ok
        p.reset()
        r = b.mount(pref, "--prefetch=none")
        assert r.ok, str(r)
        try:
            assert lookups(p), p.requests
            assert [l["served"] for l in b.stats()["layers"]] == \
                ["gzip-index"] * len(gzip_layers()), b.stats()
        finally:
            b.umount()


def test_index_shared_by_images_with_the_layer(reg, hosts, test_dir):
    """An index fetched for one image serves another image with the same layers, with no
    request about indexes for the second (docs/formats.md)."""
    a, b = hosts
    ref1, repo1, _ = fresh_image(reg.addr, name="one")
    other = variant_layout(test_dir / "variant")
    ref2, repo2, digest2 = fresh_image(reg.addr, layout=other, name="two")
    publish(a, ref1)
    with Proxy(reg.addr) as p:
        assert b.mount(ref1.replace(reg.addr, p.addr), "--prefetch=none").ok
        b.umount()
        p.reset()
        # (a start profile of its own is another question: not asked here)
        r = b.mount(ref2.replace(reg.addr, p.addr), "--prefetch=none", "--profile=no")
        assert r.ok, str(r)
        try:
            assert lookups(p) == [], lookups(p)
            s = b.stats()
            assert s["digest"] == digest2
            assert [l["served"] for l in s["layers"]] == ["gzip-index"] * len(s["layers"]), s
            assert {l["seek_index"] for l in s["layers"]} == \
                {"fetched from %s/%s" % (p.addr, repo1)}, s
            diffs = compare_with_oracle(b.lz.mountpoint, other)
            assert not diffs, "\n".join(diffs)
        finally:
            b.umount()


def variant_layout(dst):
    """The fixture with another config (another Cmd): another image, the same layers."""
    shutil.copytree(layout_of(), dst)
    blobs = dst / "blobs" / "sha256"
    manifest = manifest_of(dst)
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    config.setdefault("config", {})["Cmd"] = ["/bin/true", uuid.uuid4().hex]
    data = json.dumps(config).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    manifest["config"].update(digest="sha256:" + digest, size=len(data))
    mdata = json.dumps(manifest).encode()
    mdigest = hashlib.sha256(mdata).hexdigest()
    (blobs / mdigest).write_bytes(mdata)
    (dst / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": "sha256:" + mdigest, "size": len(mdata),
        "annotations": {"org.opencontainers.image.ref.name": "edge"}}]}))
    return dst


# ---------------------------------------------------------------------------------------------
# indexes that cannot be used: one warning line, the eager mount


def push_artifact(addr, repo, subject, blobs, test_dir):
    """Publishes, with the referrers tag schema, a seek-index artifact for manifest @subject of
    @repo whose blobs are [(layer digest, bytes)], as another tool (or a liar) would."""
    layout = test_dir / ("artifact-%s" % uuid.uuid4().hex[:8])
    (layout / "blobs" / "sha256").mkdir(parents=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    with open(layout_of() / "blobs" / "sha256" / subject[7:], "rb") as f:
        subject_size = len(f.read())
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": dict(put(b"{}"), mediaType="application/vnd.oci.empty.v1+json"),
                "layers": [dict(put(data), mediaType=INDEX_MEDIA_TYPE,
                                annotations={LAYER_ANNOTATION: layer}) for layer, data in blobs],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject,
                            "size": subject_size}}
    mdesc = dict(put(json.dumps(manifest).encode()), mediaType=OCI_MANIFEST,
                 artifactType=ARTIFACT_TYPE)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [mdesc]}
    idesc = dict(put(json.dumps(index).encode()),
                 mediaType="application/vnd.oci.image.index.v1+json")
    push._Pusher(addr, str(layout), repo).node(idesc, ref=subject.replace(":", "-"))


@pytest.mark.parametrize("kind", ["broken", "oversized"])
def test_unusable_index_falls_back_to_eager(reg, hosts, test_dir, kind):
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    layers = gzip_layers()
    if kind == "broken":
        data = b"LZRSEEKI" + os.urandom(200)
    else:
        data = os.urandom(layers[0][1] // 4 + (1 << 20) + 1)  # SEEK_REMOTE_MAX + 1
    push_artifact(reg.addr, repo, digest, [(layers[0][0], data)], test_dir)
    with Proxy(reg.addr) as p:
        r = b.mount(ref.replace(reg.addr, p.addr))
        assert r.ok, str(r)
        try:
            w = warnings(r)
            assert len(w) == 1 and layers[0][0] in w[0] and "whole" in w[0], r.stderr
            assert b.formats() == ["tar"] * len(layers), b.formats()
            diffs = compare_with_oracle(b.lz.mountpoint, layout_of())
            assert not diffs, "\n".join(diffs)
        finally:
            b.umount()
        if kind == "oversized":
            assert p.bytes_for("/v2/%s/blobs/%s" % (repo, "sha256:" +
                                                    hashlib.sha256(data).hexdigest())) == 0
    assert sqlite(b.db, "SELECT count(*) FROM seek_indexes")[0][0] == 0


def test_failed_lookup_falls_back_to_eager(reg, hosts):
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    publish(a, ref)

    def refuse(req):
        from proxy import Fault
        if "/manifests/sha256-" in req["path"] or "/referrers/" in req["path"]:
            return Fault.status(500)
        return None

    with Proxy(reg.addr) as p:
        p.set_fault(refuse)
        r = b.mount(ref.replace(reg.addr, p.addr))
        assert r.ok, str(r)
        try:
            w = warnings(r)
            assert len(w) == 1 and "seek indexes" in w[0] and "whole" in w[0], r.stderr
            assert b.formats() == ["tar"] * len(gzip_layers()), b.formats()
        finally:
            b.umount()


# ---------------------------------------------------------------------------------------------
# prewarm publishes


@pytest.mark.parametrize("how", ["option", "config"])
def test_prewarm_publishes(reg, hosts, how):
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    if how == "config":
        a.config.write_text("seek-index-on-pull = no\nseek-index-publish = yes\n")
        r = a.run("prewarm", ref)
    else:
        r = a.run("prewarm", "--publish-index", ref)
    assert r.ok, str(r)
    assert r.stdout.strip() == "" and r.stderr.strip() == "", str(r)
    a.config.write_text("seek-index-on-pull = no\n")
    with Proxy(reg.addr) as p:
        check_lazy_mount(b, ref.replace(reg.addr, p.addr), p, "%s/%s" % (p.addr, repo))


def test_prewarm_without_publishing_publishes_nothing(reg, hosts):
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    r = a.run("prewarm", ref)
    assert r.ok, str(r)
    assert b.mount(ref).ok
    b.umount()
    assert b.formats() == ["tar"] * len(gzip_layers())


def layer_gets(proxy, layers):
    """Per layer digest: the GETs of its blob, (Range header or None, bytes) each."""
    return {d: [(r["range"], r["bytes"]) for r in proxy.requests
                if r["method"] == "GET" and r["path"].endswith("/blobs/" + d)]
            for d, _ in layers}


@pytest.mark.parametrize("index", ["fetched", "built here"])
def test_prewarm_reads_each_layer_once(reg, hosts, index):
    """prewarm of an image read through seek indexes streams each gzip layer whole, once,
    storing its chunks on the way, instead of fetching its spans: a fetched index is verified
    by that stream (trusted after it), and an index built here by `lazyroot index` (which keeps
    no file) has most chunks missing.  A mount after it reads the tree with no request."""
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    layers = gzip_layers()
    if index == "fetched":
        publish(a, ref)
    else:
        assert b.run("index", ref).ok
        con = sqlite3.connect(b.db, timeout=10)
        with con:
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("DELETE FROM layers")
        con.close()
    with Proxy(reg.addr) as p:
        pref = ref.replace(reg.addr, p.addr)
        r = b.run("prewarm", pref, timeout=300)
        assert r.ok, str(r)
        gets = layer_gets(p, layers)
        # a fetched index is verified by its layer's stream; a layer built here whose chunks
        # the layers before it stored already (same files) needs nothing
        for d, n in set(layers):
            want = [[(None, n)]] if index == "fetched" else [[(None, n)], []]
            assert gets[d] in want, (d, n, gets[d])
        biggest = max(layers, key=lambda x: x[1])
        assert gets[biggest[0]] == [(None, biggest[1])], gets
        assert sqlite(b.db, "SELECT count(*) FROM seek_indexes WHERE trusted = 0")[0][0] == 0
        assert b.formats() == ["gzip-index"] * len(set(layers)), b.formats()
        p.reset()
        r = b.mount(pref, "--prefetch=none", "--pull=never")
        assert r.ok, str(r)
        try:
            diffs = compare_with_oracle(b.lz.mountpoint, layout_of())
            assert not diffs, "\n".join(diffs)
            for root, _, names in os.walk(b.lz.mountpoint):
                for n in names:
                    path = os.path.join(root, n)
                    if os.path.isfile(path) and not os.path.islink(path):
                        with open(path, "rb") as f:
                            f.read()
            s = b.stats()
            assert s["requests"] == 0 and s["chunks_failed"] == 0, s
        finally:
            b.umount()
        assert p.requests == [], p.requests


# ---------------------------------------------------------------------------------------------
# an artifact repository for an image nobody may push next to

USER, PASSWORD = "pusher", "push-secret"


@pytest.fixture(scope="module")
def locked(request, tmp_path_factory):
    """A registry where only USER may push; the fixture in "seek/locked", pushed before."""
    return helpers.token_registry(request, tmp_path_factory, layout_of(), "seek/locked", USER,
                                  PASSWORD, "seek-auth")[0]


def test_artifact_repository_takes_what_the_image_repository_refuses(locked, reg, hosts):
    a, b = hosts
    ref = "%s/seek/locked:edge" % locked.addr
    fleet = "%s/fleet/seek-%s" % (reg.addr, uuid.uuid4().hex[:8])
    a.config.write_text("seek-index-on-pull = no\nartifact-repository = %s\n" % fleet)
    # anonymous: no push rights next to the image; the fleet's repository takes it
    r = a.run("index", "--push", ref)
    assert r.ok, str(r)
    assert "published in 1 place" in r.stdout, r.stdout
    w = warnings(r)
    assert len(w) == 1 and "seek/locked" in w[0] and "ignoring" in w[0], r.stderr
    with Proxy(reg.addr) as p:
        fleet_via_proxy = fleet.replace(reg.addr, p.addr)
        b.config.write_text("seek-index-on-pull = no\nartifact-repository = %s\n"
                            % fleet_via_proxy)
        r = b.mount(ref, "--prefetch=none")
        assert r.ok, str(r)
        try:
            assert warnings(r) == [], r.stderr
            assert one_lookup(p), lookups(p)
            s = b.stats()
            assert {l["seek_index"] for l in s["layers"]} == \
                {"fetched from " + fleet_via_proxy}, s
            diffs = compare_with_oracle(b.lz.mountpoint, layout_of())
            assert not diffs, "\n".join(diffs)
        finally:
            b.umount()


def test_no_place_takes_it(locked, hosts):
    a, b = hosts
    ref = "%s/seek/locked:edge" % locked.addr
    r = a.run("index", "--push", ref)
    assert r.returncode == 3, str(r)
    lines = warnings(r)
    assert len(lines) == 1 and "cannot publish the seek indexes" in lines[0] and \
        "seek/locked" in lines[0], r.stderr


def referrers_tag(addr, repo, subject):
    import urllib.request
    req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (addr, repo,
                                                                   subject.replace(":", "-")),
                                 headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.code == 404, e
        return None


def test_image_index_publishes_for_the_platform_manifest(reg, hosts):
    a, b = hosts
    layout = layout_of("multiarch")
    ref, repo, top = fresh_image(reg.addr, layout=layout, name="multi")
    with open(layout / "blobs" / "sha256" / top[7:]) as f:
        arm64 = [m["digest"] for m in json.load(f)["manifests"]
                 if m["platform"]["architecture"] == "arm64"][0]
    r = a.run("index", "--push", "--platform=linux/arm64/v8", ref)
    assert r.ok and "published in 1 place" in r.stdout, str(r)
    tag = referrers_tag(reg.addr, repo, arm64)
    assert [m["artifactType"] for m in tag["manifests"]] == [ARTIFACT_TYPE], tag
    assert referrers_tag(reg.addr, repo, top) is None
    r = b.mount(ref, "--platform=linux/arm64/v8", "--prefetch=none")
    assert r.ok, str(r)
    try:
        s = b.stats()
        assert s["digest"] == arm64
        assert [l["served"] for l in s["layers"]] == ["gzip-index"] * len(s["layers"]), s
        diffs = compare_with_oracle(b.lz.mountpoint, layout, suffix=".linux-arm64")
        assert not diffs, "\n".join(diffs)
    finally:
        b.umount()


def test_mirrored_image_looked_up_in_the_artifact_repository_only(reg, hosts, test_dir):
    """Mirrors keep traffic off the origin: with mirrors in front of the image's registry the
    lookup asks only the artifact repository, never the origin."""
    a, b = hosts
    ref, repo, digest = fresh_image(reg.addr)
    fleet = "%s/fleet/mirrored-%s" % (reg.addr, uuid.uuid4().hex[:8])
    conf = "seek-index-on-pull = no\nartifact-repository = %s\n" % fleet
    a.config.write_text(conf)
    r = a.run("index", "--push", ref)
    assert r.ok and "published in 2 places" in r.stdout, str(r)
    with Proxy(reg.addr) as origin, Proxy(reg.addr) as mirror:
        rc = test_dir / "registries.conf"
        rc.write_text('[[registry]]\nprefix = "%s"\n[[registry.mirror]]\nlocation = "%s"\n'
                      % (origin.addr, mirror.addr))
        b.extra_env = {"CONTAINERS_REGISTRIES_CONF": str(rc)}
        r = b.mount(ref.replace(reg.addr, origin.addr), "--prefetch=none")
        assert r.ok, str(r)
        try:
            assert warnings(r) == [], r.stderr
            assert origin.requests == [], origin.requests
            assert lookups(mirror) == [], lookups(mirror)
            s = b.stats()
            assert [l["served"] for l in s["layers"]] == ["gzip-index"] * len(s["layers"]), s
            assert {l["seek_index"] for l in s["layers"]} == {"fetched from " + fleet}, s
            diffs = compare_with_oracle(b.lz.mountpoint, layout_of())
            assert not diffs, "\n".join(diffs)
        finally:
            b.umount()
