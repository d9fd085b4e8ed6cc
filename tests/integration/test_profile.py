"""Start profiles (issue 17, point 3): a mount records which chunks its first seconds read
(mount --record-profile), `lazyroot profile --push` publishes the profile as an artifact that
refers to the image, and a mount on another, empty cache fetches those chunks at mount, before
the first read asks, so that the reads then cost no request. A profile is a hint: a bad one is
one warning and a normal mount; chunks it names that the image has not are skipped; a lookup
that finds none is cached like a tag.

Everything runs against a real docker-registry of this module (no referrers API: the referrers
tag schema), real FUSE mounts and the counting proxy (tests/tools/proxy.py). Each test pushes the
image to a repository of its own, so that one test's artifacts never show in another.
"""

import json
import os
import uuid
from pathlib import Path

import pytest

import conftest
import mkestargz as M
import push
import registry as registry_mod
from proxy import Fault, Proxy

ARTIFACT_TYPE = "application/vnd.lazyroot.start-profile.v1"
MEDIA_TYPE = "application/vnd.lazyroot.start-profile.v1+json"
WINDOW = "3"


class Image:
    pass


@pytest.fixture(scope="module")
def img(tmp_path_factory):
    """~4 MB eStargz image: layer 1 busybox + /etc, layer 2 40 random files in 64 KiB chunks."""
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    work = tmp_path_factory.mktemp("profile-image")
    reg = registry_mod.Registry()
    reg.start()
    try:
        im = Image()
        im.reg = reg
        im.layout = work / "img"
        im.built = M.build_large_image(str(im.layout), "estargz", total_bytes=4 * 10**6,
                                       n_files=40, seed=17, chunk_size=64 * 1024)
        im.files = im.built["files"]
        data = sorted(p for p in im.files if p.startswith("/data/") and len(im.files[p]) > 100000)
        im.read = data[:6]
        im.data_layer = im.built["layers"][-1]["digest"]
        yield im
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def tool(lazyroot_bin):
    p = Path(lazyroot_bin).resolve().parent.parent / "tests" / "artifact-tool"
    if not p.exists():
        pytest.skip("artifact-tool not built at %s" % p)
    return p


@pytest.fixture
def repo(img):
    """The image in a repository of this test's own: REF through the registry itself."""
    name = "profile/%s" % uuid.uuid4().hex[:12]
    pushed = push.push_layout(img.reg.addr, str(img.layout), name, "latest")
    return Repo(img, name, pushed["digest"])


class Repo:
    def __init__(self, img, name, digest):
        self.img, self.name, self.digest = img, name, digest

    def ref(self, addr=None):
        return "%s/%s:latest" % (addr or self.img.reg.addr, self.name)


@pytest.fixture(autouse=True)
def _isolated_config(lazyroot, test_dir):
    """No artifact repository from the host's configuration file."""
    conf = test_dir / "lazyroot.conf"
    conf.write_text("")
    lazyroot.env["LAZYROOT_CONFIG"] = str(conf)
    yield
    for mnt in (lazyroot.mountpoint, test_dir / "mnt2"):
        if conftest.is_mounted(mnt):
            lazyroot.umount(mnt)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def stats(lazyroot, mnt):
    r = lazyroot.run("stats", "--json", str(mnt))
    assert r.ok, str(r)
    return json.loads(r.stdout)


def use_cache(lazyroot, name):
    lazyroot.cache_dir = lazyroot.test_dir / name
    lazyroot.cache_dir.mkdir(exist_ok=True)


def profile_of(lazyroot, ref):
    r = lazyroot.run("profile", "--cache-dir", str(lazyroot.cache_dir), ref)
    return json.loads(r.stdout) if r.ok else None


def record(lazyroot, img, ref):
    """Mounts @ref with --record-profile on the current cache, reads img.read, and returns the
    profile once the window has passed (the mount stays up)."""
    r = lazyroot.mount(ref, None, "--prefetch=none", "--record-profile=" + WINDOW)
    assert r.ok, str(r)
    for p in img.read:
        assert read(str(lazyroot.mountpoint) + p) == img.files[p]
    got = []
    assert conftest.wait_until(lambda: got.append(profile_of(lazyroot, ref)) or got[-1], 30, 0.3), \
        "no profile kept 30 s after the reads"
    assert stats(lazyroot, lazyroot.mountpoint)["profile"]["recorded"] == len(got[-1]["chunks"])
    return got[-1]


def wait_profile_fetched(lazyroot, mnt):
    last = []

    def done():
        s = stats(lazyroot, mnt)["profile"]
        last.append(s)
        return not s["fetching"]
    assert conftest.wait_until(done, 60, 0.2), "profile fetch still running: %s" % last[-1:]
    return last[-1]


def test_record_push_and_mount_elsewhere(lazyroot, repo, test_dir):
    img = repo.img
    use_cache(lazyroot, "cache-a")
    prof = record(lazyroot, img, repo.ref())
    assert prof["schemaVersion"] == 1 and prof["mediaType"] == MEDIA_TYPE
    assert prof["image"] == repo.digest
    assert prof["layers"] == [l["digest"] for l in img.built["layers"]]
    data_idx = prof["layers"].index(img.data_layer)
    # 6 files of > 100 kB in 64 KiB chunks: at least 2 chunks each, all in the data layer
    assert len(prof["chunks"]) >= 12 and all(c[0] == data_idx for c in prof["chunks"])
    assert len({c[4] for c in prof["chunks"]}) == len(prof["chunks"]), "chunks recorded twice"
    r = lazyroot.run("profile", "--push", "--cache-dir", str(lazyroot.cache_dir), repo.ref())
    assert r.ok and "in 1 place" in r.stdout, str(r)
    assert lazyroot.umount().ok

    with Proxy(img.reg.addr) as p:
        # without the profile (--profile=no): the reads fetch, and no lookup is made
        use_cache(lazyroot, "cache-c")
        r = lazyroot.mount(repo.ref(p.addr), None, "--prefetch=none", "--profile=no")
        assert r.ok, str(r)
        assert p.count("/v2/%s/manifests/sha256-" % repo.name) == 0
        p.reset()
        for f in img.read:
            assert read(str(lazyroot.mountpoint) + f) == img.files[f]
        assert p.blob_requests(img.data_layer), "reads of uncached files made no request"
        assert lazyroot.umount().ok

        # with it: the chunks come at mount, the reads then make no request
        use_cache(lazyroot, "cache-b")
        p.reset()
        r = lazyroot.mount(repo.ref(p.addr), None, "--prefetch=none")
        assert r.ok, str(r)
        assert r.stderr.strip() == "", r.stderr
        # looked up once, beside the pull (the mount does not ask again): the referrers tag
        # and the profile's blob one request each
        assert p.count("/v2/%s/manifests/sha256-" % repo.name) == 1, p.requests
        assert len([x for x in p.requests if "/blobs/" in x["path"] and not x["range"] and
                    x["status"] == 200]) == 2, p.requests   # the config and the profile
        s = wait_profile_fetched(lazyroot, lazyroot.mountpoint)
        assert s["chunks"] == len(prof["chunks"]) and s["skipped"] == 0, s
        assert s["fetched"] == s["chunks"], s
        fetched = p.blob_requests(img.data_layer)
        assert fetched and all(r["range"] for r in fetched), fetched
        # four jobs of 32 chunks, adjacent chunks merged: far fewer requests than chunks
        assert len(fetched) < len(prof["chunks"]), fetched
        p.reset()
        for f in img.read:
            assert read(str(lazyroot.mountpoint) + f) == img.files[f]
        assert p.blob_requests() == [], "reads after the profile's fetch: %s" % p.blob_requests()
        s = stats(lazyroot, lazyroot.mountpoint)["profile"]
        assert s["used"] == s["chunks"], s
    # the fetched profile is kept: the next mount needs no lookup
    assert profile_of(lazyroot, repo.ref())["chunks"] == prof["chunks"]


def push_profile(tool, lazyroot, ref, data, test_dir):
    f = test_dir / ("profile-%s" % uuid.uuid4().hex)
    f.write_bytes(data)
    res = conftest.run_cmd([str(tool), "push", ref, ARTIFACT_TYPE, "%s=%s" % (MEDIA_TYPE, f)],
                           timeout=60, env=lazyroot.env)
    assert res.ok, str(res)


@pytest.mark.parametrize("kind", ["garbage", "oversized", "other-image"])
def test_bad_profile_is_one_warning(lazyroot, repo, tool, test_dir, kind):
    img = repo.img
    body = {"garbage": b"{this is not a profile",
            "oversized": b" " * (4 * 1024 * 1024 + 1),
            "other-image": json.dumps({
                "schemaVersion": 1, "mediaType": MEDIA_TYPE, "image": "sha256:" + "ab" * 32,
                "windowMs": 1000, "layers": [img.data_layer], "chunks": []}).encode()}[kind]
    push_profile(tool, lazyroot, repo.ref(), body, test_dir)
    use_cache(lazyroot, "cache-b")
    r = lazyroot.mount(repo.ref(), None, "--prefetch=none")
    assert r.ok, str(r)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "start profile" in lines[0], r.stderr
    assert {"garbage": "malformed", "oversized": "too large",
            "other-image": "not " + repo.digest}[kind] in lines[0].replace("File too large",
                                                                         "too large") or \
        "not a JSON object" in lines[0], lines[0]
    for f in img.read[:2]:
        assert read(str(lazyroot.mountpoint) + f) == img.files[f]
    s = stats(lazyroot, lazyroot.mountpoint)["profile"]
    assert s["chunks"] == 0 and s["fetched"] == 0, s
    assert profile_of(lazyroot, repo.ref()) is None, "a bad profile was kept"


def test_profile_naming_chunks_not_in_the_image(lazyroot, repo, tool, test_dir):
    img = repo.img
    use_cache(lazyroot, "cache-a")
    prof = record(lazyroot, img, repo.ref())
    assert lazyroot.umount().ok
    real = prof["chunks"][:3]
    data_idx = prof["layers"].index(img.data_layer)
    layer_size = img.built["layers"][-1]["size"]
    c = real[0]
    bogus = [
        [data_idx, 0, layer_size, 1 << 20, "sha256:" + "0" * 64],   # the whole layer, no such chunk
        [data_idx, c[1] + 1, c[2], c[3], c[4]],                     # a real digest, wrong range
        [data_idx, c[1], c[2], c[3] + 1, c[4]],                     # a real chunk, wrong size
        [len(prof["layers"]), c[1], c[2], c[3], c[4]],              # a layer the image has not
    ]
    forged = dict(prof, layers=prof["layers"] + ["sha256:" + "1" * 64], chunks=bogus + real)
    push_profile(tool, lazyroot, repo.ref(), json.dumps(forged).encode(), test_dir)
    with Proxy(img.reg.addr) as p:
        use_cache(lazyroot, "cache-b")
        r = lazyroot.mount(repo.ref(p.addr), None, "--prefetch=none")
        assert r.ok and r.stderr.strip() == "", str(r)
        s = wait_profile_fetched(lazyroot, lazyroot.mountpoint)
        assert s["chunks"] == len(real) and s["skipped"] == len(bogus), s
        assert s["fetched"] == len(real), s
        got = sum(r["bytes"] for r in p.blob_requests(img.data_layer))
        # only the real chunks' bytes (and no more than a read-around's worth besides)
        assert got <= sum(x[2] for x in real) + (256 << 10), (got, real)
        assert got < layer_size // 4, (got, layer_size)


def test_miss_is_cached_and_opt_out_asks_nothing(lazyroot, repo):
    """The first mount looks the profile up (the registry has no referrers API: the tag
    schema); a mount that re-resolves the tag (--pull=always) uses the cached "none"; a mount of
    the cached image asks nothing, as its tag resolution does; --profile=no never asks."""
    img = repo.img
    lookups = ("/v2/%s/manifests/sha256-" % repo.name, "/v2/%s/referrers/" % repo.name)
    with Proxy(img.reg.addr) as p:
        use_cache(lazyroot, "cache-b")
        for n, extra in enumerate([(), ("--pull=always",), (), ("--profile=no", "--pull=always")]):
            p.reset()
            r = lazyroot.mount(repo.ref(p.addr), None, "--prefetch=none", *extra)
            assert r.ok and r.stderr.strip() == "", str(r)
            asked = sum(p.count(x) for x in lookups)
            assert (asked >= 1) if n == 0 else (asked == 0), (n, extra, p.requests)
            if n == 1 or n == 3:
                assert p.count("/v2/%s/manifests/latest" % repo.name) >= 1, p.requests
            assert lazyroot.umount().ok


def test_unreachable_lookup_is_quiet(lazyroot, repo):
    """A registry that answers the pull but not the lookup: no warning, a normal mount."""
    img = repo.img
    with Proxy(img.reg.addr) as p:
        use_cache(lazyroot, "cache-b")
        p.set_fault(lambda req: Fault.status(500) if "/manifests/sha256-" in req["path"] or
                    "/referrers/" in req["path"] else None)
        r = lazyroot.mount(repo.ref(p.addr), None, "--prefetch=none", "--timeout=5",
                           env={"LAZYROOT_REGISTRY_TIMEOUT": "3"})
        assert r.ok and r.stderr.strip() == "", str(r)
        assert read(str(lazyroot.mountpoint) + img.read[0]) == img.files[img.read[0]]
