"""Artifacts that refer to an image (cache/registry/artifact*.c) against the real docker-registry
2.8, which has no referrers API: published with the referrers tag schema of distribution-spec
1.1, found through it, cached in the index database, looked up in an artifact repository;
their blobs verified and bounded. Driven by build/tests/artifact-tool (tests/tools/artifact-tool.c).

Every test pushes the oci-gzip fixture to a repository of its own on a module registry, so the
referrers tags of one test never show in another.
"""

import hashlib
import json
import os
import urllib.request
import uuid
from pathlib import Path

import pytest

import conftest
import helpers
import push
import registry as registry_mod
import tokenserver
from proxy import Fault, Proxy
from referrers import ReferrersFront

FIXTURE = "oci-gzip"
TYPE = "application/vnd.lazyroot.test.v1"
OTHER = "application/vnd.lazyroot.other.v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="module")
def reg(request):
    return helpers.module_registry(request)


@pytest.fixture(scope="module")
def tool(lazyroot_bin):
    p = Path(lazyroot_bin).resolve().parent.parent / "tests" / "artifact-tool"
    if not p.exists():
        pytest.skip("artifact-tool not built at %s" % p)
    return p


class Tool:
    def __init__(self, path, test_dir):
        self.path = path
        self.db = str(test_dir / "index.db")
        self.config = test_dir / "lazyroot.conf"
        self.config.write_text("")
        self.env = dict(os.environ, LAZYROOT_CONFIG=str(self.config))
        for k in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG"):
            self.env.pop(k, None)
        self.env["HOME"] = str(test_dir)
        self.env["XDG_RUNTIME_DIR"] = str(test_dir)
        self.test_dir = test_dir

    def run(self, *args, env=None):
        e = dict(self.env)
        e.update(env or {})
        return conftest.run_cmd([str(self.path), *map(str, args)], timeout=60, env=e)

    def push(self, image, artifact_type, *blobs, to=None, env=None):
        """blobs: (media_type, bytes); returns the artifact digest."""
        args = ["push"] + (["--to", to] if to else []) + [image, artifact_type]
        for i, (mt, data) in enumerate(blobs):
            f = self.test_dir / ("blob-%s" % uuid.uuid4().hex)
            f.write_bytes(data)
            args.append("%s=%s" % (mt, f))
        res = self.run(*args, env=env)
        assert res.ok, str(res)
        return res.stdout.strip()

    def ls(self, image, artifact_type="-", cache=True):
        res = self.run("ls", *(["--cache", self.db] if cache else []), image, artifact_type)
        assert res.ok, str(res)
        return [tuple(ln.split()) for ln in res.stdout.splitlines()]


@pytest.fixture
def art(tool, test_dir):
    return Tool(tool, test_dir)


def fresh_image(reg, name="img"):
    repo = "art/%s-%s" % (name, uuid.uuid4().hex[:8])
    pushed = push.push_layout(reg.addr, str(conftest.FIXTURES / FIXTURE), repo, "edge")
    return "%s/%s:edge" % (reg.addr, repo), repo, pushed["digest"]


def get(reg_addr, path, accept=OCI_INDEX):
    req = urllib.request.Request("http://%s%s" % (reg_addr, path), headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def referrers_tag(reg_addr, repo, subject):
    status, body = get(reg_addr, "/v2/%s/manifests/%s" % (repo, subject.replace(":", "-")))
    assert status == 200, (status, body)
    return json.loads(body)


def put_manifest(reg_addr, repo, ref, media_type, doc):
    body = json.dumps(doc).encode()
    req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (reg_addr, repo, ref),
                                 data=body, method="PUT", headers={"Content-Type": media_type})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 201
    return "sha256:" + hashlib.sha256(body).hexdigest()


# ---------------------------------------------------------------------------------------------

def test_push_and_find_through_the_tag_schema(reg, art):
    image, repo, subject = fresh_image(reg)
    digest = art.push(image, TYPE, ("application/octet-stream", b"seek index bytes"))
    index = referrers_tag(reg.addr, repo, subject)
    assert index["mediaType"] == OCI_INDEX
    assert [(m["digest"], m["artifactType"], m["mediaType"]) for m in index["manifests"]] == \
        [(digest, TYPE, OCI_MANIFEST)]
    status, body = get(reg.addr, "/v2/%s/manifests/%s" % (repo, digest), accept=OCI_MANIFEST)
    manifest = json.loads(body)
    assert manifest["subject"]["digest"] == subject
    assert manifest["artifactType"] == TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert art.ls(image, TYPE, cache=False) == [("%s/%s" % (reg.addr, repo), digest, TYPE)]

    out = art.test_dir / "out"
    res = art.run("fetch", image, TYPE, 1 << 20, out)
    assert res.ok, str(res)
    assert out.read_bytes() == b"seek index bytes"


def test_two_artifacts_listed_and_filtered(reg, art):
    image, repo, subject = fresh_image(reg)
    a = art.push(image, TYPE, ("application/octet-stream", b"one"))
    b = art.push(image, OTHER, ("application/x-two", b"two"), ("application/x-three", b"three"))
    assert a != b
    assert sorted(d for _, d, _ in art.ls(image, "-", cache=False)) == sorted([a, b])
    assert [d for _, d, _ in art.ls(image, OTHER, cache=False)] == [b]
    assert [d for _, d, _ in art.ls(image, "application/vnd.none", cache=False)] == []


def test_second_push_not_duplicated(reg, art):
    image, repo, subject = fresh_image(reg)
    a = art.push(image, TYPE, ("application/octet-stream", b"same"))
    assert art.push(image, TYPE, ("application/octet-stream", b"same")) == a
    assert [m["digest"] for m in referrers_tag(reg.addr, repo, subject)["manifests"]] == [a]


def test_entries_of_other_tools_kept(reg, art):
    """The tag index is appended to, never rewritten: a referrer another tool listed stays."""
    image, repo, subject = fresh_image(reg)
    theirs = art.push(image, OTHER, ("application/x-theirs", b"theirs"))
    index = referrers_tag(reg.addr, repo, subject)
    index["manifests"][0]["annotations"] = {"org.example.kept": "yes"}
    put_manifest(reg.addr, repo, subject.replace(":", "-"), OCI_INDEX, index)
    ours = art.push(image, TYPE, ("application/octet-stream", b"ours"))
    manifests = referrers_tag(reg.addr, repo, subject)["manifests"]
    assert [m["digest"] for m in manifests] == [theirs, ours]
    assert manifests[0]["annotations"] == {"org.example.kept": "yes"}


def test_lost_tag_update_redone(reg, art):
    """Another writer overwrote the referrers tag right after our PUT (simulated: the proxy
    answers the first PUT of the tag 201 without storing it): the re-read sees our entry
    missing and adds it again; a tag that never keeps it fails after a bounded number of tries."""
    image, repo, subject = fresh_image(reg)
    tag_path = "/v2/%s/manifests/%s" % (repo, subject.replace(":", "-"))
    lost = []

    def lose_first(req):
        if req["method"] == "PUT" and req["path"] == tag_path and not lost:
            lost.append(req)
            return Fault.status(201)
        return None

    with Proxy(reg.addr, fault=lose_first) as p:
        a = art.push(image.replace(reg.addr, p.addr), TYPE, ("application/x-a", b"raced"))
        puts = [r for r in p.requests if r["method"] == "PUT" and r["path"] == tag_path]
    assert len(lost) == 1 and len(puts) == 2, puts
    assert [m["digest"] for m in referrers_tag(reg.addr, repo, subject)["manifests"]] == [a]

    def lose_all(req):
        if req["method"] == "PUT" and req["path"] == tag_path:
            return Fault.status(201)
        return None

    with Proxy(reg.addr, fault=lose_all) as p:
        res = art.run("push", image.replace(reg.addr, p.addr), OTHER,
                      "application/octet-stream=/etc/hostname")
        puts = [r for r in p.requests if r["method"] == "PUT" and r["path"] == tag_path]
    assert res.returncode == 1 and "EAGAIN" in res.stderr and "changed under each of 5" in res.stderr, \
        str(res)
    assert len(puts) == 5, puts


def lookups(proxy, repo):
    return [r for r in proxy.requests
            if r["path"].startswith("/v2/%s/referrers/" % repo)
            or r["path"].startswith("/v2/%s/manifests/sha256-" % repo)]


def test_answer_cached(reg, art):
    image, repo, subject = fresh_image(reg)
    with Proxy(reg.addr) as p:
        pimage = image.replace(reg.addr, p.addr)
        a = art.push(pimage, TYPE, ("application/octet-stream", b"cached"))
        p.reset()
        assert [d for _, d, _ in art.ls(pimage, TYPE)] == [a]
        first = lookups(p, repo)
        # no referrers API on docker-registry: its 404, then the tag
        assert [(r["method"], r["status"]) for r in first] == [("GET", 404), ("GET", 200)], first
        p.reset()
        assert [d for _, d, _ in art.ls(pimage, TYPE)] == [a]
        assert lookups(p, repo) == []
        # another type of the same subject is answered from the same listing, kept for every
        # type (a mount's seek index and start profile lookups): no request
        assert art.ls(pimage, OTHER) == []
        assert lookups(p, repo) == [], lookups(p, repo)


def test_miss_remembered_briefly(reg, art):
    image, repo, subject = fresh_image(reg)
    assert art.ls(image, TYPE) == []
    # published by another host: this cache still remembers "none"
    a = art.push(image, TYPE, ("application/octet-stream", b"late"))
    assert art.ls(image, TYPE) == []
    art.config.write_text("artifact-miss-ttl = 0\n")
    assert [d for _, d, _ in art.ls(image, TYPE)] == [a]
    # a found answer is kept for artifact-ttl (1 day by default)
    b = art.push(image, TYPE, ("application/octet-stream", b"later"))
    assert [d for _, d, _ in art.ls(image, TYPE)] == [a]
    art.config.write_text("artifact-ttl = 0s\n")
    assert sorted(d for _, d, _ in art.ls(image, TYPE)) == sorted([a, b])


def test_artifact_repository(reg, art):
    """Artifacts for an image nobody can push next to, in the configured artifact repository."""
    image, repo, subject = fresh_image(reg)
    fleet = "%s/fleet/artifacts-%s" % (reg.addr, uuid.uuid4().hex[:8])
    a = art.push(image, TYPE, ("application/octet-stream", b"fleet index"), to=fleet)
    assert art.ls(image, TYPE, cache=False) == []
    # the tag schema in the artifact repository, keyed by the image manifest's digest
    fleet_repo = fleet.split("/", 1)[1]
    assert [m["digest"] for m in referrers_tag(reg.addr, fleet_repo, subject)["manifests"]] == [a]
    # the subject was copied there (blobs by cross-repository mount), byte for byte
    status, copied = get(reg.addr, "/v2/%s/manifests/%s" % (fleet_repo, subject), accept=OCI_MANIFEST)
    assert status == 200 and "sha256:" + hashlib.sha256(copied).hexdigest() == subject
    art.config.write_text("# fleet\nartifact-repository = %s\n" % fleet)
    assert art.ls(image, TYPE) == [(fleet, a, TYPE)]
    out = art.test_dir / "out"
    res = art.run("fetch", "--cache", art.db, image, TYPE, 100, out)
    assert res.ok, str(res)
    assert out.read_bytes() == b"fleet index"
    # the image's own repository is asked first; an artifact there wins
    b = art.push(image, TYPE, ("application/octet-stream", b"own"))
    art.config.write_text("artifact-repository = %s\nartifact-miss-ttl = 0\n" % fleet)
    assert art.ls(image, TYPE) == [("%s/%s" % (reg.addr, repo), b, TYPE)]


def test_subject_copy_by_mount(reg, art):
    """Into an artifact repository of the same registry the subject is copied by mounting its
    blobs (no upload); on another registry it is not copied, and the push still works."""
    image, repo, subject = fresh_image(reg)
    fleet_repo = "fleet/mount-%s" % uuid.uuid4().hex[:8]
    with Proxy(reg.addr) as p:
        a = art.push(image.replace(reg.addr, p.addr), TYPE, ("application/x-a", b"mounted"),
                     to="%s/%s" % (p.addr, fleet_repo))
        posts = [r for r in p.requests if r["method"] == "POST"]
        mounts = [r for r in posts if "mount=" in r["path"]]
        layers = json.loads(get(reg.addr, "/v2/%s/manifests/%s" % (repo, subject),
                                accept=OCI_MANIFEST)[1])["layers"]
        assert len(mounts) == 1 + len(layers), posts  # config and layers
        assert all(r["status"] == 201 for r in mounts), mounts
        assert len(posts) == len(mounts) + 2, posts  # + the empty config and the artifact's blob
        p.reset()
        art.push(image.replace(reg.addr, p.addr), TYPE, ("application/x-a", b"mounted"),
                 to="%s/%s" % (p.addr, fleet_repo))
        assert not [r for r in p.requests if "mount=" in r["path"]], "copied twice"
    assert get(reg.addr, "/v2/%s/manifests/%s" % (fleet_repo, subject), accept=OCI_MANIFEST)[0] == 200

    other_repo = "fleet/other-%s" % uuid.uuid4().hex[:8]
    with Proxy(reg.addr) as p:  # "another registry": a different host:port for the same one
        b = art.push(image, TYPE, ("application/x-a", b"dangling"), to="%s/%s" % (p.addr, other_repo))
        assert not [r for r in p.requests if "mount=" in r["path"]]
    assert get(reg.addr, "/v2/%s/manifests/%s" % (other_repo, subject), accept=OCI_MANIFEST)[0] == 404
    assert [m["digest"] for m in referrers_tag(reg.addr, other_repo, subject)["manifests"]] == [b]


def test_bad_config_refused(reg, art):
    image, _, _ = fresh_image(reg)
    for line in ("artifact-ttl = soon", "artifact-miss-ttl = -1", "artifact-repository = a b"):
        art.config.write_text(line + "\n")
        res = art.run("ls", image, TYPE)
        assert res.returncode == 1 and "EINVAL" in res.stderr, str(res)


def test_oversized_blob_refused(reg, art):
    image, _, _ = fresh_image(reg)
    art.push(image, TYPE, ("application/octet-stream", b"x" * 1000))
    res = art.run("fetch", image, TYPE, 999, art.test_dir / "out")
    assert res.returncode == 1 and "EFBIG" in res.stderr and "over the limit of 999" in res.stderr, \
        str(res)
    assert not (art.test_dir / "out").exists()


def test_blob_larger_than_declared_refused(reg, art):
    """A hostile artifact declares a small size for a big blob: the download stops there."""
    image, repo, subject = fresh_image(reg)
    good = art.push(image, TYPE, ("application/octet-stream", b"y" * 5000))
    status, body = get(reg.addr, "/v2/%s/manifests/%s" % (repo, good), accept=OCI_MANIFEST)
    doc = json.loads(body)
    doc["layers"][0]["size"] = 10
    doc["annotations"] = {"hostile": "1"}
    bad = put_manifest(reg.addr, repo, "hostile", OCI_MANIFEST, doc)
    index = referrers_tag(reg.addr, repo, subject)
    index["manifests"] = [dict(index["manifests"][0], digest=bad, size=len(json.dumps(doc)))]
    put_manifest(reg.addr, repo, subject.replace(":", "-"), OCI_INDEX, index)
    res = art.run("fetch", image, TYPE, 1 << 20, art.test_dir / "out")
    assert res.returncode == 1 and "EFBIG" in res.stderr and "larger than the 10 bytes" in res.stderr, \
        str(res)


def test_artifact_for_another_subject_refused(reg, art):
    """A referrers tag listing an artifact of another image is caught by artifact_get()."""
    image, repo, subject = fresh_image(reg)
    ours = art.push(image, TYPE, ("application/octet-stream", b"for another image"))
    status, body = get(reg.addr, "/v2/%s/manifests/%s" % (repo, ours), accept=OCI_MANIFEST)
    doc = json.loads(body)
    doc["subject"]["digest"] = "sha256:" + "0" * 64
    forged = put_manifest(reg.addr, repo, "forged", OCI_MANIFEST, doc)
    index = referrers_tag(reg.addr, repo, subject)
    index["manifests"] = [dict(index["manifests"][0], digest=forged, size=len(json.dumps(doc)))]
    put_manifest(reg.addr, repo, subject.replace(":", "-"), OCI_INDEX, index)
    res = art.run("fetch", image, TYPE, 1 << 20, art.test_dir / "out")
    assert res.returncode == 1 and "EBADMSG" in res.stderr and "does not refer to" in res.stderr, \
        str(res)


def test_artifact_of_another_type_refused(reg, art):
    """A listing that calls an artifact of another kind ours is caught by artifact_get()."""
    image, repo, subject = fresh_image(reg)
    art.push(image, OTHER, ("application/octet-stream", b"a profile, say"))
    index = referrers_tag(reg.addr, repo, subject)
    index["manifests"][0]["artifactType"] = TYPE
    put_manifest(reg.addr, repo, subject.replace(":", "-"), OCI_INDEX, index)
    res = art.run("fetch", image, TYPE, 1 << 20, art.test_dir / "out")
    assert res.returncode == 1 and "EBADMSG" in res.stderr and "is not of type" in res.stderr, \
        str(res)


def test_wrong_bytes_refused(reg, art):
    image, repo, _ = fresh_image(reg)
    art.push(image, TYPE, ("application/octet-stream", b"z" * 300))

    def corrupt(req):
        if req["method"] == "GET" and "/blobs/" in req["path"]:
            return Fault.corrupt(lambda b: bytes([b[0] ^ 1]) + b[1:])
        return None

    with Proxy(reg.addr, fault=corrupt) as p:
        res = art.run("fetch", image.replace(reg.addr, p.addr), TYPE, 1 << 20,
                      art.test_dir / "out")
    assert res.returncode == 1 and "EBADMSG" in res.stderr, str(res)
    assert not (art.test_dir / "out").exists()


# ---------------------------------------------------------------------------------------------
# the referrers API, served by tests/tools/referrers.py in front of the real registry

def test_referrers_api(reg, art):
    image, repo, subject = fresh_image(reg)
    with ReferrersFront(reg.addr, page_size=2) as f:
        fimage = image.replace(reg.addr, f.addr)
        pushed = [art.push(fimage, TYPE, ("application/octet-stream", b"api %d" % i))
                  for i in range(4)]
        pushed.append(art.push(fimage, OTHER, ("application/octet-stream", b"other")))
        # the registry answered OCI-Subject: no referrers tag was written
        assert get(reg.addr, "/v2/%s/manifests/%s" % (repo, subject.replace(":", "-")))[0] == 404
        assert not [r for r in f.requests if "/manifests/sha256-" in r[1]], f.requests
        f.requests.clear()
        found = art.ls(fimage, TYPE, cache=False)
        assert sorted(d for _, d, _ in found) == sorted(pushed[:4])
        # two per page: every page read (the listing of every type: 5); the route not known,
        # the referrers tag asked once beside the first page, its answer unused
        assert [r for r in f.requests if "/referrers/" in r[1]] == \
            [("GET", "/v2/%s/referrers/%s" % (repo, subject))] * 3, f.requests
        assert len([r for r in f.requests if "/manifests/sha256-" in r[1]]) == 1, f.requests
        assert sorted(d for _, d, _ in art.ls(fimage, "-", cache=False)) == sorted(pushed)


def test_referrers_api_filter_ignored(reg, art):
    """A server that ignores artifactType: the client filters."""
    image, repo, subject = fresh_image(reg)
    with ReferrersFront(reg.addr, ignore_filter=True) as f:
        fimage = image.replace(reg.addr, f.addr)
        a = art.push(fimage, TYPE, ("application/octet-stream", b"mine"))
        art.push(fimage, OTHER, ("application/octet-stream", b"not mine"))
        assert [d for _, d, _ in art.ls(fimage, TYPE, cache=False)] == [a]


# ---------------------------------------------------------------------------------------------
# token authentication: push needs a user the token service grants push to

USER, PASSWORD = "pusher", "push-secret"


@pytest.fixture(scope="module")
def token_registry(request, tmp_path_factory):
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    storage = tmp_path_factory.mktemp("art-auth-storage") / "storage"
    with registry_mod.Registry(storage=str(storage)) as r:
        subject = push.push_layout(r.addr, str(conftest.FIXTURES / FIXTURE), "art/auth",
                                   "edge")["digest"]
    ts = tokenserver.TokenServer(str(tmp_path_factory.mktemp("art-tokens")), anonymous=["*"],
                                 users={USER: PASSWORD, "reader": "read"}, pushers=[USER])
    request.addfinalizer(ts.stop)
    ts.start()
    r = registry_mod.Registry(storage=str(storage), token_auth=ts.registry_auth())
    request.addfinalizer(r.stop)
    r.start()
    r.tokens, r.storage_dir, r.subject = ts, storage, subject
    return r


def auth_file(test_dir, registry_addr, user, password):
    import base64
    f = test_dir / ("auth-%s.json" % user)
    f.write_text(json.dumps({"auths": {registry_addr: {
        "auth": base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}}}))
    return {"REGISTRY_AUTH_FILE": str(f)}


def test_push_with_token_auth(token_registry, art):
    image = "%s/art/auth:edge" % token_registry.addr
    res = art.run("push", image, TYPE, "application/octet-stream=/etc/hostname")
    assert res.returncode == 1 and "EACCES" in res.stderr, str(res)
    env = auth_file(art.test_dir, token_registry.addr, "reader", "read")
    res = art.run("push", image, TYPE, "application/octet-stream=/etc/hostname", env=env)
    assert res.returncode == 1 and "EACCES" in res.stderr, str(res)
    assert art.ls(image, TYPE, cache=False) == []

    env = auth_file(art.test_dir, token_registry.addr, USER, PASSWORD)
    digest = art.push(image, TYPE, ("application/octet-stream", b"authenticated"), env=env)
    # found anonymously
    assert [d for _, d, _ in art.ls(image, TYPE, cache=False)] == [digest]

    # into an artifact repository: one token for pushing there and pulling the image's blobs,
    # which are mounted, and the subject manifest copied
    token_registry.tokens.reset()
    fleet = "%s/fleet/auth" % token_registry.addr
    digest = art.push(image, OTHER, ("application/octet-stream", b"fleet"), to=fleet, env=env)
    scopes = [sorted(r["scopes"]) for r in token_registry.tokens.requests if r["status"] == 200]
    assert ["repository:art/auth:pull", "repository:fleet/auth:pull,push"] in scopes, scopes
    revisions = (token_registry.storage_dir / "docker/registry/v2/repositories/fleet/auth"
                 / "_manifests/revisions/sha256")
    names = sorted("sha256:" + p.name for p in revisions.iterdir())
    # the subject, the artifact and the referrers index
    assert len(names) == 3 and token_registry.subject in names and digest in names, names
    art.config.write_text("artifact-repository = %s\n" % fleet)
    assert art.ls(image, OTHER) == [(fleet, digest, OTHER)]
