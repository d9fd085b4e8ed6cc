"""How many requests, one after the other, a cold mount of a lazy image waits for (issue 17).

A mount's requests are counted at a fault proxy that holds every request DELAY seconds before
forwarding it, so that requests sent together overlap and requests that wait for each other do
not: the longest chain of requests each starting after the previous one ended is the number of
round trips the mount waited for in sequence. Requests are never timed against a bound; only
their order and overlap count.

  (a) a 4-layer eStargz image: each layer's footer and TOC come in ONE request (a tail of the
      blob), the config comes while they do, and the mount waits for at most 3 sequential
      round trips (ping, the manifest got by tag, then config and the layers' tails side by
      side); it was 6 before (config, then footer, then TOC), 4 with a HEAD of the tag first
  (b) an eStargz layer whose TOC is bigger than the tail: two requests, the second only for
      the TOC's bytes before the tail (no byte asked for twice), and the tree is right
  (c) the trace ($LAZYROOT_TRACE): one JSON line per HTTP exchange of the mount, each with a
      start, a first byte and an end in order, the same count as the proxy saw; reads list
      the fetch calls they waited for, and tests/bench/trace.py takes the trace apart
"""

import json
import os
import subprocess
import sys

import pytest

import conftest
import mkestargz as M
import push
import registry as registry_mod
from proxy import Fault, Proxy, parse_range

DELAY = 0.3       # s per request at the proxy: overlap is clear even on a loaded machine
TAIL_MIN = 64 << 10
REPO_ROOT = conftest.REPO_ROOT


def longest_chain(records):
    """The most requests that ran one after the other (each starting after the previous
    one ended): the round trips waited for in sequence."""
    spans = sorted((r["time"], r["time"] + r["duration"]) for r in records if r["status"])
    best = []
    for i, (start, _) in enumerate(spans):
        before = [best[j] for j in range(i) if spans[j][1] <= start]
        best.append(1 + max(before, default=0))
    return max(best, default=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    work = tmp_path_factory.mktemp("coldstart-images")
    reg = registry_mod.Registry()
    reg.start()
    try:
        layers = [("estargz", M.base_entries())] + [
            ("estargz", M.large_entries(2 * 10**6, 30, seed=30 + i, top="l%d" % i))
            for i in range(3)]
        four = M.build_layout(str(work / "four"), layers)
        four["files"] = M.expected_files([e for _, e in layers])
        push.push_layout(reg.addr, str(work / "four"), "cold/four", "latest")
        # 3000 small files: a TOC of ~100 KiB compressed in a blob whose tail is 64 KiB
        many = [("many", "d", 0o755, None, 0)] + [
            ("many/f%05d" % i, "f", 0o644, b"%d\n" % i, 0) for i in range(3000)]
        big_toc = M.build_layout(str(work / "bigtoc"), [("estargz", many)])
        big_toc["files"] = M.expected_files([many])
        push.push_layout(reg.addr, str(work / "bigtoc"), "cold/bigtoc", "latest")
        yield {"addr": reg.addr, "four": four, "bigtoc": big_toc}
    finally:
        reg.stop()


def mount_through_delay(lazyroot, addr, repo, files, env=None, extra=()):
    """Mounts through the delaying proxy, reads @files (path -> bytes) while it still serves,
    and returns the proxy's records of the mount alone."""
    with Proxy(addr, fault=lambda req: Fault.delay(DELAY)) as p:
        r = lazyroot.mount("%s/%s:latest" % (p.addr, repo), None, "--prefetch=none", *extra,
                           timeout=120, env=env)
        assert r.ok, "mount failed:\n%s" % r
        records = p.requests
        for path, want in files.items():
            with open(str(lazyroot.mountpoint) + path, "rb") as f:
                assert f.read() == want, path
        return records


def layer_requests(records, layer):
    return [r for r in records if layer["digest"] in r["path"] and r["status"]]


def test_each_layer_tail_in_one_request_and_few_sequential_round_trips(lazyroot, images):
    img = images["four"]
    # The image's own chain: the start profile lookup (one or two more round trips before the
    # mount serves, see docs/benchmarks.md "Cold start, taken apart") is left out here.
    records = mount_through_delay(lazyroot, images["addr"], "cold/four",
                                  {"/bin/busybox": img["files"]["/bin/busybox"]},
                                  extra=("--profile=no",))
    for layer in img["layers"]:
        reqs = layer_requests(records, layer)
        size = layer["size"]
        assert len(reqs) == 1, "layer %s (%d bytes): %s" % (layer["digest"], size, reqs)
        first, last = parse_range(reqs[0]["range"])
        assert last == size - 1 and first <= layer["estargz"].toc_offset, (reqs, size)
        assert size - first <= max(TAIL_MIN, size // 64), (reqs, size)
    chain = longest_chain(records)
    print("requests %d, sequential round trips %d" % (len([r for r in records if r["status"]]),
                                                      chain))
    assert chain <= 3, [(r["method"], r["path"][-20:], r["range"], round(r["time"] % 100, 3),
                         round(r["duration"], 3)) for r in records]
    assert lazyroot.umount().ok


def test_toc_bigger_than_the_tail_is_completed_with_one_more_request(lazyroot, images):
    img = images["bigtoc"]
    layer = img["layers"][0]
    toc_offset, size = layer["estargz"].toc_offset, layer["size"]
    assert size - toc_offset > TAIL_MIN, "the TOC must not fit the tail: %d" % (size - toc_offset)
    records = mount_through_delay(lazyroot, images["addr"], "cold/bigtoc",
                                  {"/many/f02999": img["files"]["/many/f02999"]})
    reqs = layer_requests(records, layer)
    assert len(reqs) == 2, reqs
    tail, head = parse_range(reqs[0]["range"]), parse_range(reqs[1]["range"])
    assert tail[1] == size - 1 and size - tail[0] >= TAIL_MIN, reqs   # not the footer alone
    assert head == (toc_offset, tail[0] - 1), (reqs, toc_offset)
    assert len(os.listdir(os.path.join(lazyroot.mountpoint, "many"))) == 3000
    assert lazyroot.umount().ok


def test_trace_lines_and_the_bench_tool(lazyroot, images, test_dir):
    trace = test_dir / "trace.jsonl"
    files = images["four"]["files"]
    path = sorted(p for p in files if p.startswith("/l1/"))[0]
    records = mount_through_delay(lazyroot, images["addr"], "cold/four", {path: files[path]},
                                  env={"LAZYROOT_TRACE": str(trace)})
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    http = [e for e in lines if e["ev"] == "http"]
    answered = [r for r in records if r["status"]]
    ready = [e["t"] for e in lines if e["ev"] == "mark" and e["what"] == "ready"]
    assert len(ready) == 1, lines
    at_mount = [e for e in http if e["status"] and e["t0"] < ready[0]]
    assert len(at_mount) == len(answered), (len(at_mount), len(answered))
    for e in (e for e in http if e["status"]):   # not the refused HTTPS probe
        assert e["t0"] <= e["first"] <= e["t1"], e
        assert e["t1"] - e["t0"] >= DELAY * 1e6 * 0.9, e   # the proxy held each one
    reads = [e for e in lines if e["ev"] == "fuse" and e["op"] == "read"]
    ensures = [e for e in lines if e["ev"] == "ensure"]
    assert reads and ensures, lines[-10:]
    assert {e["op"] for e in ensures} <= {e["id"] for e in reads}, (ensures, reads)
    fetches = [e for e in http if e["call"]]
    assert fetches and {e["call"] for e in fetches} <= {e["call"] for e in ensures}
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tests/bench/trace.py"), str(trace)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert "mount phase" in out.stdout and "on-demand phase" in out.stdout, out.stdout
    assert lazyroot.umount().ok
