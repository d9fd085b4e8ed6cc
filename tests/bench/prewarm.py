#!/usr/bin/python3
"""Prewarm throughput benchmark (not a test): how much of a shaped link `lazyroot prewarm`
uses when it fetches a whole image into an empty cache, for one image as eStargz,
zstd:chunked and plain gzip, with several --jobs values, over one or more link settings
(tbf rate + one-way delay). See tests/bench/README.md.

The topology, the images, the registry and the delaying relay are coldstart.py's (imported):

  lazyroot prewarm ──► 127.0.0.1:RELAY (+delay per direction, bytes counted)
                         ▼
   host veth 10.213.N.1/30 ══ tbf RATE both ways ══ 10.213.N.2/30 in netns lrbench-PID
                                                     └─ docker-registry :5000

Throughput = bytes the relay forwarded registry -> client / wall time of `lazyroot prewarm`
(process start to exit), shown as a fraction of the tbf rate. Goal (issue): >= 0.90.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import coldstart as C  # noqa: E402
from benchlib import disk_use  # noqa: E402

GOAL = 0.90


def rate_bits(rate):
    """tc rate string -> bits/s (tc: kbit/mbit/gbit are powers of 1000)."""
    r = rate.strip().lower()
    for suf, mul in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)):
        if r.endswith(suf):
            return float(r[:-len(suf)]) * mul
    return float(r)


def parse_settings(s):
    """"100mbit:10,500mbit:2" -> [("100mbit", 10.0), ("500mbit", 2.0)]"""
    out = []
    for item in s.split(","):
        rate, _, delay = item.strip().partition(":")
        out.append((rate, float(delay or 10)))
    return out


def reshape(link, rate, burst):
    """Set (first call: add, then change) tbf on both ends of the veth pair."""
    tbf = ["root", "tbf", "rate", rate, "burst", burst, "latency", "400ms"]
    for pre, dev in (([], link.host_if), (["ip", "netns", "exec", link.ns], link.ns_if)):
        C.sh(pre + ["tc", "qdisc", "replace", "dev", dev] + tbf)


def whole_blob_get(base_url, repo, digest):
    """Reference: one plain GET of a whole blob through the relay (one TCP connection)."""
    t0 = time.monotonic()
    n = 0
    with urllib.request.urlopen("%s/v2/%s/blobs/%s" % (base_url, repo, digest),
                                timeout=600) as r:
        for buf in iter(lambda: r.read(1 << 20), b""):
            n += len(buf)
    return n, time.monotonic() - t0


class FreshExt4:
    """A new ext4 file system (sparse file, loop device) to hold one run's cache.

    Why: every run starts with an empty cache, and deleting the previous run's thousands of
    chunk blobs leaves ext4 inodes "recently deleted" (dtime within 5 s, or 300 s while their
    inode table block is dirty), which ext4's allocator skips one by one; perf showed two
    thirds of a zstd:chunked prewarm's CPU in recently_deleted()/find_inode_bit() on a
    file system the benchmark had just churned.  A cache on a host lives on a file system that
    is not wiped every few seconds, so each run gets a fresh one (--cache-fs=dir: a plain
    directory under the work dir, to see the effect)."""

    def __init__(self, workdir, size_mb=2048):
        self.image = tempfile.mktemp(prefix="cachefs-", suffix=".img", dir=workdir)
        self.mnt = tempfile.mkdtemp(prefix="cachefs-", dir=workdir)
        self.size_mb = size_mb

    def __enter__(self):
        with open(self.image, "wb") as f:
            f.truncate(self.size_mb << 20)
        C.sh(["mkfs.ext4", "-q", "-F", self.image])
        C.sh(["mount", "-o", "loop", self.image, self.mnt])
        return os.path.join(self.mnt, "cache")

    def __exit__(self, *exc):
        C.sh(["umount", self.mnt], check=False)
        os.unlink(self.image)
        os.rmdir(self.mnt)


class PlainDir:
    def __init__(self, workdir):
        self.workdir = workdir

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="cache-", dir=self.workdir)
        return self.path

    def __exit__(self, *exc):
        C.retire(self.path, self.workdir)


CACHE_FS = "fresh"


def prewarm_run(lazyroot, ref, workdir, jobs, extra):
    with (FreshExt4(workdir) if CACHE_FS == "fresh" else PlainDir(workdir)) as cache:
        return _prewarm_run(lazyroot, ref, workdir, jobs, extra, cache)


def _prewarm_run(lazyroot, ref, workdir, jobs, extra, cache):
    env = dict(os.environ, LAZYROOT_RUNTIME_DIR=os.path.join(workdir, "run"))
    t0 = time.monotonic()
    r = C.sh([lazyroot, "prewarm", "--jobs", str(jobs), "--cache-dir", cache, *extra, ref],
             check=False, env=env, timeout=900)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("lazyroot prewarm %s failed (rc %d): %s"
                           % (ref, r.returncode, r.stderr.strip()[-800:]))
    return {"wall_s": wall, "cache_bytes": disk_use(cache)}


def main(argv=None):
    ap = argparse.ArgumentParser(description="lazyroot prewarm throughput benchmark (root only)")
    ap.add_argument("--lazyroot", default=os.path.join(C.ROOT, "build", "cli", "lazyroot"))
    ap.add_argument("--total-mb", type=float, default=60)
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--settings", default="100mbit:10,500mbit:2",
                    help="comma list of RATE:ONE_WAY_DELAY_MS (default 100mbit:10,500mbit:2)")
    ap.add_argument("--burst", default="32kbit", help="tbf burst (default 32kbit, as coldstart)")
    ap.add_argument("--jobs", default="1,4,8", help="comma list of --jobs values")
    ap.add_argument("--runs", type=int, default=1, help="runs per cell (median wall time)")
    ap.add_argument("--limit-rate", help="pass --limit-rate to lazyroot prewarm")
    ap.add_argument("--no-zstd", action="store_true", help="skip the zstd:chunked variant")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--cache-fs", choices=["fresh", "dir"], default="fresh",
                    help="fresh: each run's cache on a new ext4 (loop device, default); "
                         "dir: a directory under the work dir (see FreshExt4)")
    args = ap.parse_args(argv)
    global CACHE_FS
    CACHE_FS = args.cache_fs
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, tc)")
    for tool in ("ip", "tc", C.REGISTRY_BIN, args.lazyroot):
        if not shutil.which(tool) and not os.path.exists(tool):
            raise SystemExit("missing: %s" % tool)
    settings = parse_settings(args.settings)
    jobs_list = [int(j) for j in args.jobs.split(",")]
    extra = ["--limit-rate", args.limit_rate] if args.limit_rate else []

    workdir = tempfile.mkdtemp(prefix="lazyroot-bench-")
    link = C.Link(settings[0][0])
    reg = relay = None
    rows = []
    try:
        print("building images (%.0f MB, %d files) ..." % (args.total_mb, args.files), flush=True)
        images = C.build_images(workdir, args.total_mb, args.files, args.seed, not args.no_zstd)
        link.up()
        reg = C.start_registry(link, workdir)
        direct = "%s:5000" % link.ns_ip
        for fmt, im in images.items():
            im["repo"] = "bench/" + fmt.replace(":", "-")
            C.push.push_layout(direct, im["layout"], im["repo"], "latest")
        relay = C.Relay(link.ns_ip, 5000, settings[0][1] / 1000.0).start()
        addr = "127.0.0.1:%d" % relay.port
        base_url = "http://" + addr
        gz_man = json.loads(urllib.request.urlopen(urllib.request.Request(
            "%s/v2/%s/manifests/latest" % (base_url, images["gzip"]["repo"]),
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}), timeout=60).read())
        big = max(gz_man["layers"], key=lambda l: l["size"])
        fmts = [f for f in ("estargz", "zstd:chunked", "gzip") if f in images]

        for rate, delay_ms in settings:
            reshape(link, rate, args.burst)
            relay.delay = delay_ms / 1000.0
            bps = rate_bits(rate)
            print("link: %s tbf (burst %s) + %.0f ms one-way delay (relay %s -> %s)"
                  % (rate, args.burst, delay_ms, addr, direct), flush=True)
            relay.reset()
            n, t = whole_blob_get(base_url, images["gzip"]["repo"], big["digest"])
            ref_frac = n * 8 / t / bps
            print("  reference: one GET of the %.1f MB gzip layer: %.2fs, %.1f Mbit/s = %.2f of link"
                  % (n / 1e6, t, n * 8 / t / 1e6, ref_frac), flush=True)
            rows.append({"rate": rate, "delay_ms": delay_ms, "flow": "single GET (reference)",
                         "jobs": 1, "wall_s": t, "relay_bytes": relay.down, "cache_bytes": 0,
                         "layer_bytes": n, "mbit_s": n * 8 / t / 1e6, "fraction": ref_frac})
            for fmt in fmts:
                ref = "%s/%s:latest" % (addr, images[fmt]["repo"])
                for jobs in jobs_list:
                    runs = []
                    for i in range(args.runs):
                        relay.reset()
                        r = prewarm_run(args.lazyroot, ref, workdir, jobs, extra)
                        r["relay_bytes"] = relay.down
                        runs.append(r)
                        print("  %-13s jobs %d run %d: %.2fs, relay %.1f MB, cache %.1f MB, "
                              "%.1f Mbit/s = %.2f of link"
                              % (fmt, jobs, i + 1, r["wall_s"], r["relay_bytes"] / 1e6,
                                 r["cache_bytes"] / 1e6, r["relay_bytes"] * 8 / r["wall_s"] / 1e6,
                                 r["relay_bytes"] * 8 / r["wall_s"] / bps), flush=True)
                    runs.sort(key=lambda r: r["wall_s"])
                    med = runs[len(runs) // 2]
                    mbit = med["relay_bytes"] * 8 / med["wall_s"] / 1e6
                    rows.append({"rate": rate, "delay_ms": delay_ms, "flow": fmt, "jobs": jobs,
                                 "wall_s": med["wall_s"], "relay_bytes": med["relay_bytes"],
                                 "cache_bytes": med["cache_bytes"],
                                 "layer_bytes": images[fmt]["layer_bytes"], "mbit_s": mbit,
                                 "fraction": mbit * 1e6 / bps, "runs": runs})
    finally:
        if relay:
            relay.stop()
        C.stop_proc(reg)
        link.down()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("%-9s %6s %-23s %4s %8s %9s %9s %9s %8s %6s %5s" % (
        "rate", "delay", "flow", "jobs", "wall s", "relay MB", "cache MB", "layers MB",
        "Mbit/s", "frac", "goal"))
    for r in rows:
        ok = "" if r["flow"].startswith("single") else ("ok" if r["fraction"] >= GOAL else "MISS")
        print("%-9s %4.0fms %-23s %4d %8.2f %9.2f %9.2f %9.2f %8.1f %6.2f %5s" % (
            r["rate"], r["delay_ms"], r["flow"], r["jobs"], r["wall_s"], r["relay_bytes"] / 1e6,
            r["cache_bytes"] / 1e6, r["layer_bytes"] / 1e6, r["mbit_s"], r["fraction"], ok))
    print("(frac = relay bytes registry->client * 8 / prewarm wall time / tbf rate; goal >= %.2f."
          " 'single GET' = one plain HTTP GET of the biggest gzip layer: what one TCP"
          " connection gets from this link)" % GOAL)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
