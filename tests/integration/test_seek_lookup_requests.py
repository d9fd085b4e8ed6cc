"""How many requests, and how many one after the other, a cold mount of a plain gzip image
spends finding and fetching the seek indexes another host published (issue 16, docs/formats.md
"Seek index artifacts"; docs/benchmarks.md "Cold start, taken apart").

Host A publishes (`lazyroot index --push`) straight at the registry; host B, with an empty
cache, mounts through tests/tools/proxy.py holding every request DELAY seconds, so that
requests sent together overlap and requests that wait for each other do not (as
test_coldstart_requests.py counts them; no request is timed against a bound):

  (a) the lookup asks through the pull's own client of the image's repository: one GET /v2/
      and one HTTPS probe for the whole mount (it was two of each: the lookup's own client
      pinged again), on docker-registry 2.8 (no referrers API) the referrers API and the
      referrers tag asked at once and beside the config (the lookup waits for the manifest
      only), the index blobs of the three layers in flight at once; the mount waits for at
      most 6 sequential round trips at the proxy (it was 11)
  (b) on a registry with token authentication, the pull and the lookup of the same
      repository use one token (it was two)
  (c) a registry known to have the referrers API is asked the API alone (no tag beside it)
  (d) the start profile lookup of a lazy (eStargz) image adds no sequential round trip to the
      mount's chain: the referrers API and tag are asked once each, beside the config and the
      layers' tails, so the chain stays at 4 at the proxy (test_coldstart_requests.py's image
      and proxy); it was 5 (after the layers were indexed), 6 before the API and the tag were
      asked at once
  (e) an image named by a name registries.conf rewrites: the lookup still shares the pull's
      client of the image's real location (one GET /v2/; it was two)
"""

import uuid

import pytest

import conftest
import helpers
import push
from proxy import Fault, Proxy
from referrers import ReferrersFront
from test_coldstart_requests import images, longest_chain, mount_through_delay  # noqa: F401

DELAY = 0.3       # s per request at the proxy: overlap is clear even on a loaded machine
FIXTURE = conftest.FIXTURES / "oci-gzip"   # three tar+gzip layers
USER, PASSWORD = "pusher", "push-secret"
TOKEN_REPO = "seekrtt/tok"


@pytest.fixture(scope="module")
def reg(request):
    return helpers.module_registry(request)


@pytest.fixture
def hosts(lazyroot, test_dir):
    config = test_dir / "lazyroot.conf"
    config.write_text("seek-index-on-pull = no\n")
    env = {"LAZYROOT_CONFIG": str(config)}
    cache_a = test_dir / "cache-a"

    def a(*args):
        r = lazyroot.run(*args, "--cache-dir", str(cache_a), timeout=120, env=env)
        assert r.ok, str(r)
        return r

    def b_mount(ref):
        return lazyroot.run("mount", ref, str(lazyroot.mountpoint), "--cache-dir",
                            str(lazyroot.cache_dir), "--prefetch=none", timeout=120, env=env)

    return a, b_mount, env


def fresh_image(addr):
    repo = "seekrtt/img-%s" % uuid.uuid4().hex[:8]
    pushed = push.push_layout(addr, str(FIXTURE), repo, "edge")
    return repo, pushed["digest"]


def answered(p):
    return [r for r in p.requests if r["status"]]


def overlap(a, b):
    return a["time"] < b["time"] + b["duration"] and b["time"] < a["time"] + a["duration"]


def all_overlap(reqs):
    return all(overlap(x, y) for i, x in enumerate(reqs) for y in reqs[i + 1:])


def brief(records):
    return [(r["method"], r["path"][-40:], r["status"], r["conn"], round(r["time"] % 100, 2),
             round(r["duration"], 2)) for r in records]


def mount_counted(lazyroot, b_mount, p, ref):
    r = b_mount(ref)
    assert r.ok, str(r)
    try:
        s = lazyroot.run("stats", "--json", str(lazyroot.mountpoint), timeout=30)
        assert s.ok and s.stdout.count('"gzip-index"') >= 3, str(s)
        return answered(p)
    finally:
        assert lazyroot.umount().ok


def test_lookup_reuses_the_pull_and_asks_side_by_side(lazyroot, reg, hosts):
    a, b_mount, _ = hosts
    repo, digest = fresh_image(reg.addr)
    a("index", "--push", "%s/%s:edge" % (reg.addr, repo))
    with Proxy(reg.addr, fault=lambda req: Fault.delay(DELAY)) as p:
        records = mount_counted(lazyroot, b_mount, p, "%s/%s:edge" % (p.addr, repo))
        hellos = p.tls_hellos
    pings = [r for r in records if r["path"] == "/v2/"]
    api = [r for r in records if "/referrers/" in r["path"]]
    tag = [r for r in records if "/manifests/sha256-" in r["path"]]
    artifact = [r for r in records if r["path"].startswith("/v2/%s/manifests/sha256:" % repo)
                and r["path"] != "/v2/%s/manifests/%s" % (repo, digest)]
    blobs = [r for r in records if r["method"] == "GET" and "/blobs/" in r["path"] and
             not r["range"]]
    chain = longest_chain(records)
    print("requests %d, sequential round trips %d, TLS probes %d" % (len(records), chain,
                                                                      hellos))
    assert len(pings) == 1 and hellos == 1, (hellos, brief(records))
    assert len(api) == 1 and len(tag) == 1 and api[0]["status"] == 404, brief(records)
    assert overlap(api[0], tag[0]), brief(api + tag)
    assert len(artifact) == 1, brief(records)
    # the index blobs: GETs after the artifact manifest, one per layer, all in flight at once
    index_blobs = [r for r in blobs if r["time"] >= artifact[0]["time"]]
    assert len(index_blobs) == 3, brief(records)
    assert all_overlap(index_blobs), brief(index_blobs)
    # the lookup does not wait for the config: the config blob beside the referrers requests
    config = [r for r in blobs if r["time"] < artifact[0]["time"]]
    assert len(config) == 1 and overlap(config[0], api[0]), brief(records)
    assert chain <= 6, brief(records)


def test_lookup_of_a_rewritten_name_reuses_the_pull(lazyroot, reg, hosts, test_dir):
    """A name registries.conf rewrites to the image's real location: the lookup starts at that
    location (the image's origin) and shares the pull's client of it, one GET /v2/ for the
    whole mount (it looked the pull's client up under the name as written, found none and
    pinged again with a client of its own)."""
    a, b_mount, env = hosts
    repo, _ = fresh_image(reg.addr)
    a("index", "--push", "%s/%s:edge" % (reg.addr, repo))
    conf = test_dir / "registries.conf"
    env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    with Proxy(reg.addr, fault=lambda req: Fault.delay(DELAY)) as p:
        conf.write_text('[[registry]]\nprefix = "alias.invalid/seekrtt"\n'
                        'location = "%s/seekrtt"\n' % p.addr)
        name = "alias.invalid/%s:edge" % repo
        records = mount_counted(lazyroot, b_mount, p, name)
    pings = [r for r in records if r["path"] == "/v2/"]
    assert len(pings) == 1, brief(records)


@pytest.fixture(scope="module")
def token_reg(request, tmp_path_factory):
    """A registry with token authentication (anyone pulls, USER pushes) holding the fixture
    in TOKEN_REPO, pushed before."""
    return helpers.token_registry(request, tmp_path_factory, FIXTURE, TOKEN_REPO, USER, PASSWORD,
                                  "rtt")


def test_one_token_for_the_pull_and_the_lookup(lazyroot, token_reg, hosts):
    a, b_mount, _ = hosts
    r, ts = token_reg
    a("index", "--push", "--creds", "%s:%s" % (USER, PASSWORD),
      "%s/%s:edge" % (r.addr, TOKEN_REPO))
    ts.reset()
    with Proxy(r.addr) as p:
        records = mount_counted(lazyroot, b_mount, p, "%s/%s:edge" % (p.addr, TOKEN_REPO))
    assert ts.count == 1, (ts.requests, brief(records))
    assert any("/manifests/sha256-" in x["path"] and x["status"] == 200 for x in records), \
        brief(records)


def test_known_referrers_api_asked_alone(lazyroot, reg, hosts, test_dir):
    a, b_mount, env = hosts
    with ReferrersFront(reg.addr) as f:
        repo, digest = fresh_image(f.addr)
        a("index", "--push", "%s/%s:edge" % (f.addr, repo))
        other, _ = fresh_image(f.addr)
        with Proxy(f.addr) as p:
            # first contact: the route is not known, the tag is asked beside the API
            records = mount_counted(lazyroot, b_mount, p, "%s/%s:edge" % (p.addr, repo))
            assert [x["path"].split("?")[0] for x in records if "/referrers/" in x["path"]] \
                == ["/v2/%s/referrers/%s" % (repo, digest)], brief(records)
            p.reset()
            # the route is remembered: another image of the registry, the API alone
            r = b_mount("%s/%s:edge" % (p.addr, other))
            assert r.ok, str(r)
            assert lazyroot.umount().ok
            lookups = [x for x in answered(p) if "/referrers/" in x["path"] or
                       "/manifests/sha256-" in x["path"]]
            assert len(lookups) == 1 and "/referrers/" in lookups[0]["path"], brief(lookups)


def test_start_profile_lookup_costs_no_round_trip(lazyroot, images):
    img = images["four"]
    records = mount_through_delay(lazyroot, images["addr"], "cold/four",
                                  {"/bin/busybox": img["files"]["/bin/busybox"]})
    records = [r for r in records if r["status"]]
    api = [r for r in records if "/referrers/" in r["path"]]
    tag = [r for r in records if "/manifests/sha256-" in r["path"]]
    tails = [r for r in records if r["range"] and
             any(layer["digest"] in r["path"] for layer in img["layers"])]
    chain = longest_chain(records)
    print("requests %d, sequential round trips %d" % (len(records), chain))
    # asked once (the mount did not ask again after the pull), both at once, and while every
    # layer's tail was in flight: the lookup no longer waits for the layers to be indexed
    assert len(api) == 1 and len(tag) == 1 and overlap(api[0], tag[0]), brief(records)
    assert len(tails) == len(img["layers"]), brief(records)
    assert all(overlap(x, t) for x in api + tag for t in tails), brief(records)
    assert chain <= 4, brief(records)
    assert lazyroot.umount().ok
