#!/usr/bin/python3
"""Lazy gzip benchmark (not a test, root only): issue 16's targets, measured in one run on the
Debian bookworm minbase + python3 image (tests/bench/debimage.py) as plain tar+gzip layers,
over coldstart.py's shaped link (netns + veth + tbf, delaying relay). See tests/bench/README.md,
"seekindex.py".

  a) cold start, nothing cached -> `python3 -c 'import json'` exited inside systemd-nspawn:
       indexed     lazyroot mount --volatile of the gzip image whose seek indexes are published
                   (the cache is empty but for what --seed gives it, below)
       unindexed   the same image with no index anywhere: lazyroot reads its layers whole
       traditional coldstart.py's pull-and-extract flow: manifest, config and every layer
                   downloaded whole (digest checked), `gzip -dc | tar -x`, nspawn on the tree
       indexed + profile  (--seed push) the same image in a repository of its own where an
                   earlier start's profile was pushed too (mount --record-profile, the
                   workload, `lazyroot profile --push`): what a fleet's second host gets
     target: traditional / indexed >= 5x (time);
  b) the seek indexes' size / the layers' compressed size (target <= 3%);
  c) bytes the relay forwarded before the command exited (indexed, index included) / the
     layers' compressed size (target <= 15%);
  d) a full read of the tree through the indexes, as the layers' compressed bytes per second
     of wall time / the link's rate (target >= 80%): `lazyroot prewarm` into a cache seeded as
     in a), and `tar -cf - . | wc -c` over a fresh mount (--prefetch=none) of the same; with the
     bytes each fetched / the layers (a read that fetches a span twice shows here), and one
     plain GET of the biggest layer as what one connection gets out of the link.

--seed says where the indexed flows' index comes from:
  push   `lazyroot index --push REF` from a seed cache publishes it in the registry (an OCI
         artifact whose subject is the image); the indexed mount finds it itself (needs the
         branches that publish and look up seek indexes).
  local  a stand-in with the same costs on the link: `lazyroot index` in a seed cache, the
         image removed from it (only the indexes stay), the index blobs uploaded to the
         registry as plain blobs; each indexed run then, inside its timed window, asks the
         registry twice for a manifest (the referrers lookup and the artifact manifest) and
         GETs each index blob through the relay, then copies the seed cache (its indexes
         marked untrusted, as a fetched one is kept) into its empty cache and mounts.
"""

import argparse
import datetime
import glob
import http.client
import json
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import coldstart as C  # noqa: E402
import debimage  # noqa: E402
import prewarm as P  # noqa: E402
import push  # noqa: E402

WORKLOAD = ["/usr/bin/python3", "-c", "import json"]
REPO_INDEXED, REPO_PLAIN = "bench/debian-gzip-indexed", "bench/debian-gzip"
REPO_PROFILED = "bench/debian-gzip-profiled"
TARGETS = {"cold_x": 5.0, "index_share": 0.03, "fetched_share": 0.15, "read_share": 0.80}
FLOWS = ("lazyroot gzip, indexed", "lazyroot gzip, unindexed", "traditional (pull+extract)")
PROFILED = "lazyroot gzip, indexed + profile"
BASELINE = "indexed, --baseline binary"


def env_for(workdir):
    return dict(os.environ, LAZYROOT_RUNTIME_DIR=os.path.join(workdir, "run"))


def loadavg():
    return "%.1f/%.1f/%.1f" % os.getloadavg()


# ---------------------------------------------------------------------------------------------
# seeding


class Seed:
    """Where the indexed flows' seek indexes come from (--seed; module docstring)."""

    def __init__(self, mode, lazyroot, workdir, addr, direct, layout):
        self.mode, self.lazyroot, self.workdir = mode, lazyroot, workdir
        self.addr, self.direct, self.layout = addr, direct, layout
        self.cache = os.path.join(workdir, "seed-cache")
        self.ref = "%s/%s:latest" % (addr, REPO_INDEXED)
        self.blobs = []     # (digest, size) of the index blobs

    def build(self):
        """Indexes the image in the seed cache (unshaped link), and publishes or uploads."""
        env = env_for(self.workdir)
        argv = [self.lazyroot, "index", "--cache-dir", self.cache]
        if self.mode == "push":
            argv.append("--push")
        r = C.sh(argv + [self.ref], check=False, env=env, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError("lazyroot index %s failed: %s" % (self.ref, r.stderr.strip()))
        print("  " + r.stdout.strip().replace("\n", "\n  "), flush=True)
        db = os.path.join(self.cache, "index.db")
        con = sqlite3.connect(db)
        rows = con.execute("SELECT digest FROM seek_indexes").fetchall()
        con.close()
        self.blobs = [(d, os.path.getsize(self._blob(d))) for (d,) in rows]
        if self.mode == "local":
            C.sh([self.lazyroot, "rm", "--cache-dir", self.cache, self.ref], env=env)
            self._upload()
        else:
            self._profile(env)

    def _profile(self, env):
        """The image again under REPO_PROFILED, its index published there too, and the profile
        of one start of the workload (an empty cache, mount --record-profile) pushed."""
        ref = "%s/%s:latest" % (self.addr, REPO_PROFILED)
        push.push_layout(self.direct, self.layout, REPO_PROFILED, "latest")
        C.sh([self.lazyroot, "index", "--push", "--cache-dir", self.cache, ref], env=env,
             timeout=1800)
        cache = os.path.join(self.workdir, "profile-cache")
        mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.workdir)
        try:
            mount(self.lazyroot, ref, mnt, cache, env, "none", ["--record-profile=30"])
            n = C.nspawn(mnt, "lrbench-seekprof-%d" % os.getpid(), WORKLOAD)
            if n.returncode != 0:
                raise RuntimeError("nspawn on %s: rc %d %s" % (ref, n.returncode,
                                                               n.stderr[-500:]))
        finally:
            C.sh([self.lazyroot, "umount", mnt], check=False, env=env, timeout=120)
            os.rmdir(mnt)
        r = C.sh([self.lazyroot, "profile", "--push", "--cache-dir", cache, ref], check=False,
                 env=env, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("lazyroot profile --push %s failed: %s" % (ref, r.stderr.strip()))
        print("  profile: " + r.stdout.strip(), flush=True)
        C.retire(cache, self.workdir)

    def _blob(self, digest):
        return os.path.join(self.cache, "blobs", "sha256", digest[7:9], digest[7:])

    def _upload(self):
        """The index blobs into the registry (plain blobs of the repository), for run()."""
        lay = os.path.join(self.workdir, "seed-layout")
        os.makedirs(os.path.join(lay, "blobs", "sha256"), exist_ok=True)
        for d, _ in self.blobs:
            shutil.copy(self._blob(d), os.path.join(lay, "blobs", "sha256", d[7:]))
        p = push._Pusher(self.direct, lay, REPO_INDEXED)
        try:
            for d, n in self.blobs:
                p.blob({"digest": d, "size": n})
        finally:
            p.c.close()

    def index_bytes(self):
        return sum(n for _, n in self.blobs)

    def prepare(self, cache):
        """Inside a timed window: what the mount would do to find and fetch the index
        (local: the stand-in), leaving it in the empty cache @cache."""
        if self.mode == "push":
            os.makedirs(cache, exist_ok=True)
            return
        host, port = self.addr.split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            accept = "application/vnd.oci.image.manifest.v1+json"
            for _ in range(2):   # the referrers lookup, then the artifact manifest
                c.request("GET", "/v2/%s/manifests/latest" % REPO_INDEXED,
                          headers={"Accept": accept})
                c.getresponse().read()
            for d, n in self.blobs:
                c.request("GET", "/v2/%s/blobs/%s" % (REPO_INDEXED, d))
                resp = c.getresponse()
                body = resp.read()
                if resp.status != 200 or len(body) != n:
                    raise RuntimeError("index blob %s: HTTP %d, %d bytes" % (d, resp.status,
                                                                             len(body)))
        finally:
            c.close()
        shutil.copytree(self.cache, cache)
        con = sqlite3.connect(os.path.join(cache, "index.db"))
        with con:
            con.execute("UPDATE seek_indexes SET trusted = 0")
        con.close()


# ---------------------------------------------------------------------------------------------
# a) cold start


def mount(lazyroot, ref, mnt, cache, env, prefetch, extra=()):
    r = C.sh([lazyroot, "mount", ref, mnt, "--cache-dir", cache, "--volatile",
              "--prefetch=" + prefetch, *extra], check=False, env=env, timeout=900)
    if r.returncode != 0:
        raise RuntimeError("lazyroot mount %s failed: %s" % (ref, r.stderr.strip()))


def stats(lazyroot, mnt, env):
    st = C.sh([lazyroot, "stats", "--json", mnt], check=False, env=env)
    return json.loads(st.stdout) if st.returncode == 0 else {}


def trace_mark(env, what):
    """trace.py's harness marks (same clock as the trace's)."""
    if env.get("LAZYROOT_TRACE"):
        with open(env["LAZYROOT_TRACE"], "a") as f:
            f.write(json.dumps({"ev": "mark", "what": what,
                                "t": int(time.monotonic() * 1e6)}) + "\n")


def lazy_cold(args, seed, ref, workdir, indexed, lazyroot=None):
    cache = os.path.join(tempfile.mkdtemp(prefix="cold-", dir=workdir), "cache")
    mnt = tempfile.mkdtemp(prefix="mnt-", dir=workdir)
    env = env_for(workdir)
    if indexed and args.trace:
        # one file per cold start: trace.py takes one start apart
        env["LAZYROOT_TRACE"] = "%s.%d" % (args.trace, len(glob.glob(args.trace + ".*")) + 1)
    t0 = time.monotonic()
    try:
        if indexed:
            seed.prepare(cache)
        t_seed = time.monotonic() - t0
        mount(lazyroot or args.lazyroot, ref, mnt, cache, env, args.prefetch)
        t_mount = time.monotonic() - t0
        trace_mark(env, "cmd-start")
        n = C.nspawn(mnt, "lrbench-seek-%d" % os.getpid(), WORKLOAD)
        trace_mark(env, "cmd-end")
        t_total = time.monotonic() - t0
        if n.returncode != 0:
            raise RuntimeError("nspawn on %s: rc %d %s" % (ref, n.returncode, n.stderr[-500:]))
        s = stats(args.lazyroot, mnt, env)
    finally:
        C.sh([args.lazyroot, "umount", mnt], check=False, env=env, timeout=120)
        C.retire(os.path.dirname(cache), workdir)
        os.rmdir(mnt)
    served = sorted({l.get("served", "?") for l in s.get("layers", [])})
    if indexed and served != ["gzip-index"]:
        raise RuntimeError("the indexed image's layers were served as %s, not gzip-index: is "
                           "the index found?" % served)
    return {"seed_s": t_seed, "mount_s": t_mount, "total_s": t_total, "served": served,
            "daemon_requests": s.get("requests"), "daemon_bytes": s.get("bytes_fetched")}


def traditional(args, workdir):
    """coldstart.py's traditional flow with this workload."""
    return C.traditional_flow("http://" + args.addr, REPO_PLAIN, workdir, WORKLOAD)


def coldstart(args, seed, relay, workdir):
    flows = list(FLOWS) + ([PROFILED] if seed.mode == "push" else []) + \
        ([BASELINE] if args.baseline else [])
    per = {f: [] for f in flows}
    for i in range(args.runs):
        # the flows take turns run by run, so that the load of the shared machine falls on all
        for name in flows:
            # the flow before may have left dirty pages (the traditional flow writes and
            # removes the whole tree): written back now, not while this one runs
            os.sync()
            relay.reset()
            load = loadavg()
            if name == FLOWS[0]:
                r = lazy_cold(args, seed, seed.ref, workdir, True)
            elif name == BASELINE:
                r = lazy_cold(args, seed, seed.ref, workdir, True, args.baseline)
            elif name == PROFILED:
                r = lazy_cold(args, seed, "%s/%s:latest" % (args.addr, REPO_PROFILED),
                              workdir, True)
            elif name == FLOWS[1]:
                r = lazy_cold(args, seed, "%s/%s:latest" % (args.addr, REPO_PLAIN), workdir,
                              False)
            else:
                r = traditional(args, workdir)
            r.update(bytes=relay.down, requests=relay.requests, load=load)
            per[name].append(r)
            print("  %-32s run %d: %6.2fs total (%.2fs to ready), %7.2f MB, %4d requests, "
                  "load %s" % (name, i + 1, r["total_s"], r["mount_s"], r["bytes"] / 1e6,
                               r["requests"], load), flush=True)
    rows = []
    for name, runs in per.items():
        rows.append({"flow": name, "runs": runs,
                     **{k: statistics.median(r[k] for r in runs)
                        for k in ("total_s", "mount_s", "bytes", "requests")}})
    return rows


# ---------------------------------------------------------------------------------------------
# d) full read


FULL_READS = ("prewarm", "tar", "prewarm, unindexed")
TAR_BASELINE = "tar, --baseline"


def full_reads_wanted(args):
    """--only-tar: the tar read alone (and the --baseline binary's, in turns), to iterate on
    the sequential read path."""
    if args.only_tar:
        return ("tar",) + ((TAR_BASELINE,) if args.baseline else ())
    return FULL_READS + ((TAR_BASELINE,) if args.baseline else ())


def full_read(args, seed, relay, workdir, what):
    """One full read into an empty cache: `lazyroot prewarm` or a tar of a mount of the indexed
    image (seeded as in a), or, as what this machine and link give a whole-layer pull right
    now, `lazyroot prewarm` of the unindexed image (its layers are read whole)."""
    cache = os.path.join(tempfile.mkdtemp(prefix="full-", dir=workdir), "cache")
    mnt = tempfile.mkdtemp(prefix="mnt-", dir=workdir)
    env = env_for(workdir)
    if what.startswith("tar") and args.trace:
        env["LAZYROOT_TRACE"] = "%s.%s.%d" % (args.trace, "base" if what == TAR_BASELINE else
                                             "tar", len(glob.glob(args.trace + ".*")) + 1)
    mounted = False
    os.sync()   # as for the cold starts: no writeback of the read before during this one
    relay.reset()
    load = loadavg()
    t0 = time.monotonic()
    try:
        if what == "prewarm, unindexed":
            os.makedirs(cache)
        else:
            seed.prepare(cache)
        if what.startswith("prewarm"):
            ref = seed.ref if what == "prewarm" else "%s/%s:latest" % (args.addr, REPO_PLAIN)
            r = C.sh([args.lazyroot, "prewarm", "--cache-dir", cache, ref], check=False,
                     env=env, timeout=1800)
            if r.returncode != 0:
                raise RuntimeError("prewarm failed: %s" % r.stderr.strip()[-800:])
            out = None
        else:
            mount(args.baseline if what == TAR_BASELINE else args.lazyroot, seed.ref, mnt,
                  cache, env, "none")
            mounted = True
            r = C.sh(["bash", "-o", "pipefail", "-c", "tar -cf - . | wc -c"], cwd=mnt,
                     timeout=1800)
            out = int(r.stdout.strip())
        wall = time.monotonic() - t0
        s = stats(args.lazyroot, mnt, env) if mounted else {}
    finally:
        if mounted:
            C.sh([args.lazyroot, "umount", mnt], check=False, env=env, timeout=120)
        C.retire(os.path.dirname(cache), workdir)
        os.rmdir(mnt)
    return {"what": what, "wall_s": wall, "bytes": relay.down, "requests": relay.requests,
            "tar_bytes": out, "load": load, "chunks_failed": s.get("chunks_failed")}


def full_reads(args, seed, relay, workdir, layer_bytes):
    per = {what: [] for what in full_reads_wanted(args)}
    for i in range(args.runs):
        for what in per:   # in turns, as the cold starts
            r = full_read(args, seed, relay, workdir, what)
            per[what].append(r)
            print("  full read (%s) run %d: %.2fs, %.1f MB fetched (%.2fx the layers), %.0f "
                  "Mbit/s of layer, load %s" % (what, i + 1, r["wall_s"], r["bytes"] / 1e6,
                                                r["bytes"] / layer_bytes,
                                                layer_bytes * 8 / r["wall_s"] / 1e6, r["load"]),
                  flush=True)
    rows = []
    for what, runs in per.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        rows.append({"what": what, "runs": runs, "wall_s": wall,
                     "bytes": statistics.median(r["bytes"] for r in runs),
                     "requests": statistics.median(r["requests"] for r in runs),
                     "mbit_s": layer_bytes * 8 / wall / 1e6})
    return rows


def reference_get(args, layout):
    """One plain GET of the biggest layer through the relay: what one connection gets."""
    man = debimage_manifest(layout)
    big = max(man["layers"], key=lambda l: l["size"])
    n, dt = P.whole_blob_get("http://" + args.addr, REPO_PLAIN, big["digest"])
    return {"bytes": n, "wall_s": dt, "mbit_s": n * 8 / dt / 1e6}


def debimage_manifest(layout):
    idx = push.read_index(layout)
    d = idx["manifests"][0]["digest"]
    with open(os.path.join(layout, "blobs", "sha256", d[7:])) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# report


def verdict(value, target, higher):
    ok = value >= target if higher else value <= target
    return "ok" if ok else "MISS"


def report(res):
    rate = res["rate_bits"]
    if not res["coldstart"]:
        return report_full_reads(res, [])
    cold = {r["flow"]: r for r in res["coldstart"]}
    ind, trad = cold[FLOWS[0]], cold[FLOWS[2]]
    layers = res["layer_bytes"]
    lines = []
    lines.append("%-32s %8s %10s %11s %9s %14s" % ("cold start (median)", "ready s",
                                                  "cmd done s", "fetched MB", "requests",
                                                  "trad / this"))
    for r in res["coldstart"]:
        lines.append("%-32s %8.2f %10.2f %11.2f %9d %13.1fx" % (
            r["flow"], r["mount_s"], r["total_s"], r["bytes"] / 1e6, r["requests"],
            trad["total_s"] / r["total_s"]))
    lines.append("")
    x = trad["total_s"] / ind["total_s"]
    idx = res["index_bytes"] / layers
    fetched = ind["bytes"] / layers
    lines.append("%-47s %5.1fx   (target >= %gx)  %s" % (
        "a) cold start, traditional / indexed:", x, TARGETS["cold_x"],
        verdict(x, TARGETS["cold_x"], True)))
    if PROFILED in cold:
        xp = trad["total_s"] / cold[PROFILED]["total_s"]
        lines.append("%-47s %5.1fx   (target >= %gx)  %s" % (
            "   cold start, traditional / indexed + profile:", xp, TARGETS["cold_x"],
            verdict(xp, TARGETS["cold_x"], True)))
    lines.append("%-47s %5.1fx" % ("   cold start, unindexed / indexed:",
                                     cold[FLOWS[1]]["total_s"] / ind["total_s"]))
    lines.append("b) index / layers:  %.2f MB / %.2f MB = %5.2f%%   (target <= %g%%)  %s"
                 % (res["index_bytes"] / 1e6, layers / 1e6, 100 * idx,
                    100 * TARGETS["index_share"], verdict(idx, TARGETS["index_share"], False)))
    lines.append("c) fetched before exit / layers: %.2f MB = %5.2f%%   (target <= %g%%)  %s"
                 % (ind["bytes"] / 1e6, 100 * fetched, 100 * TARGETS["fetched_share"],
                    verdict(fetched, TARGETS["fetched_share"], False)))
    return report_full_reads(res, lines)


def report_full_reads(res, lines):
    rate, layers = res["rate_bits"], res["layer_bytes"]
    for r in res["full_read"]:
        share = r["mbit_s"] * 1e6 / rate
        target = "" if r["what"] not in ("prewarm", "tar") else " (target >= %g%%) %s" % (
            100 * TARGETS["read_share"], verdict(share, TARGETS["read_share"], True))
        lines.append("d) full read, %-19s %5.2f s, %5.1f Mbit/s of layer = %3.0f%% of the "
                     "link%s; fetched %.2fx the layers, %d requests"
                     % (r["what"] + ":", r["wall_s"], r["mbit_s"], 100 * share, target,
                        r["bytes"] / layers, r["requests"]))
    if res.get("reference"):
        ref = res["reference"]
        lines.append("   (one plain GET of the biggest layer: %.1f Mbit/s = %.0f%% of the link)"
                     % (ref["mbit_s"], 100 * ref["mbit_s"] * 1e6 / rate))
    return lines


SECTION = "## Lazy gzip (issue 16)"


def markdown(res, lines):
    """docs/benchmarks.md's section for this run."""
    L = [SECTION, ""]
    L.append("Written by `tests/bench/seekindex.py` (how to run it: tests/bench/README.md) on %s, "
             "%s, %d CPUs, kernel %s; lazyroot %s; `--seed %s`%s. Load average (1/5/15 min) "
             "%s at the start of the first cold start, %s at the end: the machine was shared, "
             "so times move by tens of percent between runs; every cell is the median of %d "
             "runs, the flows taking turns run by run."
             % (res["date"], res["host"], res["cpus"], res["kernel"], res["commit"], res["seed"],
                " (the stand-in: index blobs fetched through the relay in the timed window, "
                "then copied into the empty cache)" if res["seed"] == "local" else "",
                res["coldstart"][0]["runs"][0]["load"], res["load_end"], res["runs"]))
    L.append("")
    L.append("The image: suite.py's Debian bookworm minbase + python3, plain tar+gzip layers "
             "(%.1f MB), over %s tbf + %g ms each way (coldstart.py's netns, veth and relay); the "
             "command `%s` in systemd-nspawn. Caches, trees and the registry's storage on %s "
             "(tests/bench/README.md, \"Deleted files made the other flows slow\")."
             % (res["layer_bytes"] / 1e6, res["rate"], res["delay_ms"],
                shlex.join(res["workload"]), res.get("fs", "/var/tmp's file system")))
    L.append("")
    L.append("```")
    L.extend(lines)
    L.append("```")
    L.append("")
    return "\n".join(L)


def write_section(path, text):
    """Replaces this benchmark's section of @path (up to the next "## " heading), or appends it."""
    old = open(path).read() if os.path.exists(path) else ""
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[end + 1:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(new)


# ---------------------------------------------------------------------------------------------


def has_push(lazyroot):
    r = C.sh([lazyroot, "index", "--help"], check=False)
    return "--push" in r.stdout + r.stderr


def run(args, img, workdir):
    layout = img["layouts"]["gzip"]["layout"]
    res = {"seed": args.seed, "rate": args.rate, "delay_ms": args.delay_ms, "runs": args.runs,
           "prefetch": args.prefetch, "layer_bytes": img["layouts"]["gzip"]["layer_bytes"],
           "rate_bits": P.rate_bits(args.rate), "workload": WORKLOAD}
    link = C.Link(args.rate)
    reg = relay = None
    try:
        link.up()
        reg = C.start_registry(link, workdir)
        direct = "%s:5000" % link.ns_ip
        for repo in (REPO_PLAIN, REPO_INDEXED):   # REPO_PROFILED: Seed._profile()
            push.push_layout(direct, layout, repo, "latest")
        relay = C.Relay(link.ns_ip, 5000, 0).start()
        args.addr = "127.0.0.1:%d" % relay.port
        seed = Seed(args.seed, args.lazyroot, workdir, args.addr, direct, layout)
        print("seeding (--seed %s, unshaped link) ..." % args.seed, flush=True)
        seed.build()
        res["index_bytes"] = seed.index_bytes()
        res["index_blobs"] = seed.blobs
        P.reshape(link, args.rate, "32kbit")
        relay.delay = args.delay_ms / 1000.0
        print("link: %s tbf + %.0f ms one-way delay (relay %s -> %s); runs: %d; load %s"
              % (args.rate, args.delay_ms, args.addr, direct, args.runs, loadavg()), flush=True)
        res["reference"] = reference_get(args, layout)
        print("\n[a] cold start", flush=True)
        res["coldstart"] = [] if args.only_tar else coldstart(args, seed, relay, workdir)
        if not args.no_full_read:
            print("\n[d] full read through the index", flush=True)
            res["full_read"] = full_reads(args, seed, relay, workdir, res["layer_bytes"])
        else:
            res["full_read"] = []
    finally:
        if relay:
            relay.stop()
        C.stop_proc(reg)
        link.down()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description="lazyroot lazy gzip benchmark (root only)")
    ap.add_argument("--lazyroot", default=os.path.join(ROOT, "build", "cli", "lazyroot"))
    ap.add_argument("--image-cache", default=debimage.DEFAULT_CACHE)
    ap.add_argument("--seed", choices=["push", "local"], default="push",
                    help="where the indexed flows' index comes from (default push)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--prefetch", default="none", choices=["none", "landmark", "all"],
                    help="lazyroot mount's --prefetch in the cold starts (default none)")
    ap.add_argument("--no-full-read", action="store_true", help="skip d)")
    ap.add_argument("--root-fs", action="store_true", help="caches, trees and the registry in "
                    "/var/tmp itself, not on a fresh ext4 of their own (coldstart.scratch_fs())")
    ap.add_argument("--only-tar", action="store_true", help="only d)'s tar read (and the "
                    "--baseline binary's, in turns); prints the d) lines only")
    ap.add_argument("--baseline", help="a) also mounts the indexed image with this lazyroot "
                    "binary (the seed cache is still made by --lazyroot)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--trace", help="trace each indexed cold start (LAZYROOT_TRACE) into "
                    "TRACE.1, TRACE.2, ..., and each tar read into TRACE.tar.N (TRACE.base.N "
                    "for --baseline's): tests/bench/trace.py takes one apart")
    ap.add_argument("--write", nargs="?", const=os.path.join(ROOT, "docs", "benchmarks.md"),
                    help="replace the \"%s\" section of docs/benchmarks.md (or FILE) with "
                    "this run's" % SECTION)
    ap.add_argument("--from-json", help="measure nothing: report (and --write) a --json file")
    args = ap.parse_args(argv)
    if args.only_tar and args.write:
        raise SystemExit("--only-tar measures too little for --write")
    if args.from_json:
        res = json.load(open(args.from_json))
        lines = report(res)
        print("\n".join(lines))
        if args.write:
            write_section(args.write, markdown(res, lines))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, FUSE, nspawn)")
    if not os.path.exists(args.lazyroot):
        raise SystemExit("missing %s (build first, or pass --lazyroot)" % args.lazyroot)
    if args.seed == "push" and not has_push(args.lazyroot):
        raise SystemExit("%s has no `index --push` (issue 16's publishing); measure with "
                         "--seed local until it does" % args.lazyroot)
    img = debimage.build(args.image_cache)
    t0 = time.monotonic()
    if args.root_fs:
        workdir = tempfile.mkdtemp(prefix="lazyroot-seekbench-", dir="/var/tmp")
        try:
            res = run(args, img, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    else:
        with C.scratch_fs("lazyroot-seekbench-") as workdir:
            res = run(args, img, workdir)
    res["fs"] = "/var/tmp's" if args.root_fs else "a fresh ext4 (journal) on a loop file"
    res.update(elapsed_s=time.monotonic() - t0, load_end=loadavg(), host=platform.node(),
               cpus=os.cpu_count(), kernel=platform.release(),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               commit=subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                     stdout=subprocess.PIPE, text=True).stdout.strip())
    print("\nseek index benchmark: --seed %s, %s + %g ms, %d runs, %s, load at the end %s, "
          "%.0f s\n" % (args.seed, args.rate, args.delay_ms, args.runs, res["commit"],
                        res["load_end"], res["elapsed_s"]))
    lines = report(res)
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.write:
        write_section(args.write, markdown(res, lines))
        print("wrote the \"%s\" section of %s" % (SECTION, args.write))
    return 0


if __name__ == "__main__":
    sys.exit(main())
