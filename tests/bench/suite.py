#!/usr/bin/python3
"""The benchmark suite (not a test, root only): everything issue 7 asks for, measured side by
side in one run on one real image (tests/bench/debimage.py: Debian bookworm minbase + a python3
layer), with the ratios printed from that same run. See tests/bench/README.md, "suite.py".

  1. cold start: nothing cached -> `python3 -c 'import json'` exited inside systemd-nspawn,
     over a shaped link (coldstart.py's netns + veth + tbf + delaying relay), per link setting:
       traditional  skopeo copy docker:// -> oci: layout, umoci raw unpack, nspawn
       lazyroot     mount (empty cache, --prefetch=none) of the gzip / eStargz / zstd:chunked
                    image, nspawn
       lazyroot     the same with an optimized eStargz (tests/bench/optimize.py: the files the
                    workload read first, before the landmark) and --prefetch=landmark
     with the bytes the relay forwarded and the HTTP requests it saw;
  2. warm read: `tar -cf - . | wc -c` and `find . -ls` over the whole tree, page cache dropped
     (cold) and again (warm), on: the tree extracted on local disk, squashfuse on a squashfs
     of it, archivemount on a tar of it, and lazyroot mounts with a full cache (prewarm);
  3. mount time with an indexed layer and the daemon's VmHWM for layers of N files
     (million.py --entries N);
  4. scaling: part 1's cold start (first link setting) and part 2's whole-tree read (local
     disk, lazyroot eStargz) for the image and its ~2x and ~4x variants (debimage.VARIANTS:
     a third layer of more Debian packages), with the growth ratios per flow.

--quick: one run per cell, one link setting, 10,000 files in part 3 (part 4 keeps its three
scales); writes
docs/benchmarks.md marked as a quick run unless --no-write. Full (default): 3 runs, two
settings, 10,000 and 100,000 files.
"""

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import shutil
import signal
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
import optimize  # noqa: E402
import prewarm as P  # noqa: E402
import push  # noqa: E402
import seekindex  # noqa: E402

WORKLOAD = ["/usr/bin/python3", "-c", "import json"]
LAZY_FORMATS = ("gzip", "estargz", "zstd:chunked")
OPTIMIZED = "estargz-optimized"    # part 1 only: optimize.py's layout, --prefetch=landmark
BASELINE = "baseline "             # part 2 with --baseline: the older binary's rows
# part 4 reads the whole tree on these lazyroot formats (beside the tree on local disk)
SCALING_READ_FORMATS = ("estargz",)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Timeout(Exception):
    pass


def timed_shell(cmd, cwd, timeout=None):
    """Seconds `cmd` (bash, pipefail) took in `cwd` and its output. On timeout the whole process
    group gets SIGKILL (a process waiting on a FUSE request only dies of that)."""
    t0 = time.monotonic()
    p = subprocess.Popen(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise Timeout("%s in %s: no result after %s s" % (cmd, cwd, timeout))
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError("%s in %s: rc %d %s" % (cmd, cwd, p.returncode, err.strip()[-500:]))
    return dt, out.strip()


# ---------------------------------------------------------------------------------------------
# 1. cold start


def traditional_flow(addr, repo, workdir):
    """skopeo copy (whole image) + umoci raw unpack (layers in order, whiteouts applied)."""
    layout = tempfile.mkdtemp(prefix="pull-", dir=workdir)
    rootfs = os.path.join(workdir, "rootfs-%d" % time.monotonic_ns())
    try:
        t0 = time.monotonic()
        C.sh(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
              "docker://%s/%s:latest" % (addr, repo), "oci:%s:latest" % layout])
        t_pull = time.monotonic() - t0
        C.sh(["umoci", "raw", "unpack", "--image", layout + ":latest", rootfs])
        t_ready = time.monotonic() - t0
        n = C.nspawn(rootfs, "lrbench-trad-%d" % os.getpid(), WORKLOAD)
        t_total = time.monotonic() - t0
        if n.returncode != 0:
            raise RuntimeError("nspawn traditional: rc %d %s" % (n.returncode, n.stderr[-500:]))
    finally:
        C.retire(layout, workdir)
        C.retire(rootfs, workdir)
    return {"pull_s": t_pull, "mount_s": t_ready, "total_s": t_total}


def coldstart(args, img, link, relay, addr, workdir):
    rows = []
    for rate, delay_ms in args.settings:
        P.reshape(link, rate, "32kbit")
        relay.delay = delay_ms / 1000.0
        print("\n[1] cold start over %s + %.0f ms one-way delay" % (rate, delay_ms), flush=True)
        flows = [("traditional (skopeo+umoci)", "gzip")] + \
            [("lazyroot " + f, f) for f in LAZY_FORMATS + (OPTIMIZED,) if f in img["layouts"]]
        for name, fmt in flows:
            runs = []
            for i in range(args.runs):
                relay.reset()
                repo = img["layouts"][fmt]["repo"]
                if name.startswith("traditional"):
                    r = traditional_flow(addr, repo, workdir)
                else:
                    r = C.lazyroot_flow(args.lazyroot, "%s/%s:latest" % (addr, repo), workdir,
                                        fmt.replace(":", "-"),
                                        "landmark" if fmt == OPTIMIZED else "none", WORKLOAD)
                r["bytes"], r["requests"] = relay.down, relay.requests
                runs.append(r)
                print("  %-28s run %d: %6.2fs total (%.2fs to ready), %7.1f MB, %4d requests"
                      % (name, i + 1, r["total_s"], r["mount_s"], r["bytes"] / 1e6,
                         r["requests"]), flush=True)
            rows.append({"rate": rate, "delay_ms": delay_ms, "flow": name, "format": fmt,
                         "total_s": statistics.median(r["total_s"] for r in runs),
                         "ready_s": statistics.median(r["mount_s"] for r in runs),
                         "bytes": statistics.median(r["bytes"] for r in runs),
                         "requests": statistics.median(r["requests"] for r in runs),
                         # traditional: the unpack alone (umoci), for the mount-time target
                         "extract_s": statistics.median(r["mount_s"] - r["pull_s"] for r in runs)
                         if "pull_s" in runs[0] else None,
                         "layer_bytes": img["layouts"][fmt]["layer_bytes"]})
    return rows


# ---------------------------------------------------------------------------------------------
# 2. warm read


class Mounted:
    """A FUSE mount for the warm-read part: mount on enter, unmount on exit."""

    def __init__(self, kind, workdir, src, lazyroot=None, env=None, lazy_args=()):
        self.kind, self.src, self.lazyroot, self.env = kind, src, lazyroot, env
        self.lazy_args = list(lazy_args)
        self.dir = tempfile.mkdtemp(prefix="mnt-", dir=workdir)
        self.mount_s = None

    def __enter__(self):
        t0 = time.monotonic()
        if self.kind == "squashfuse":
            C.sh(["squashfuse", self.src, self.dir])
        elif self.kind == "archivemount":
            C.sh(["archivemount", "-o", "ro,readonly", self.src, self.dir])
        else:
            C.sh([self.lazyroot, "mount", self.src, self.dir] + self.lazy_args, env=self.env)
        self.mount_s = time.monotonic() - t0
        return self

    def __exit__(self, *exc):
        if self.kind in ("squashfuse", "archivemount"):
            if C.sh(["fusermount3", "-u", self.dir], check=False).returncode != 0:
                C.sh(["fusermount3", "-uz", self.dir], check=False)
        else:
            C.sh([self.lazyroot, "umount", self.dir], check=False, env=self.env)
        os.rmdir(self.dir)


def read_trees(paths, runs, timeout):
    """For each of @paths: median seconds of tar|wc and find -ls, page cache dropped first
    (cold) and not (warm).  The trees take turns, run by run (tar on every tree, then find on
    every tree), so that a slow spell of the shared disk falls on all of them alike instead
    of on whichever tree was being measured.  None for what did not finish within `timeout`
    seconds (then the rest of that tree is skipped too: the file system is likely stuck)."""
    res = [{k: None for k in ("tar_cold_s", "tar_warm_s", "find_cold_s", "find_warm_s")}
           for _ in paths]
    for what, cmd in (("tar", "tar -cf - . | wc -c"), ("find", "find . -ls | wc -l")):
        cold, warm = [[] for _ in paths], [[] for _ in paths]
        for _ in range(runs):
            for i, path in enumerate(paths):
                if "timed_out" in res[i]:
                    continue
                try:
                    drop_caches()
                    dt, out = timed_shell(cmd, path, timeout)
                    cold[i].append(dt)
                    dt2, out2 = timed_shell(cmd, path, timeout)
                    warm[i].append(dt2)
                    res[i][what + "_out"] = out2
                except Timeout as e:
                    print("  (%s)" % e, flush=True)
                    res[i]["timeout"] = timeout
                    res[i]["timed_out"] = what + ("_cold_s" if len(cold[i]) == len(warm[i])
                                                  else "_warm_s")
        for i in range(len(paths)):
            if "timed_out" not in res[i]:
                res[i][what + "_cold_s"] = statistics.median(cold[i])
                res[i][what + "_warm_s"] = statistics.median(warm[i])
    return res


def fmt_s(v, timeout=None, timed_out=False):
    """A time, "> N" for the pass that hit the timeout, "skipped" for those after it."""
    if v is not None:
        return "%.2f" % v
    if timed_out:
        return "> %g" % timeout
    return "skipped" if timeout else "-"


def fmt_row(r, key):
    return fmt_s(r[key], r.get("timeout"), r.get("timed_out") == key)


def warm_read(args, img, addr, workdir):
    print("\n[2] warm read (whole tree; cold = page cache dropped; the trees take turns)",
          flush=True)
    env = dict(os.environ, LAZYROOT_RUNTIME_DIR=os.path.join(workdir, "run"))
    targets = [("local disk", img["tree"], None)]   # (name, path, mount seconds)
    caches = []
    with contextlib.ExitStack() as stack:
        peers = () if args.no_peers else (("squashfuse", img["squashfs"]),
                                            ("archivemount", img["flat_tar"]))
        for kind, src in peers:
            m = stack.enter_context(Mounted(kind, workdir, src))
            targets.append((kind, m.dir, m.mount_s))
        for fmt in LAZY_FORMATS:
            if fmt not in img["layouts"]:
                continue
            cache = tempfile.mkdtemp(prefix="warmcache-", dir=workdir)
            caches.append(cache)
            ref = "%s/%s:latest" % (addr, img["layouts"][fmt]["repo"])
            C.sh([args.lazyroot, "prewarm", "--cache-dir", cache, ref], env=env, timeout=1800)
            m = stack.enter_context(Mounted("lazyroot", workdir, ref, args.lazyroot, env,
                                            ["--cache-dir", cache, "--prefetch=none"]))
            targets.append(("lazyroot " + fmt, m.dir, m.mount_s))
            if args.baseline:
                # the older binary on the same cache, read in the same turns: a before/after
                # comparison that the shared disk's slow spells hit alike
                benv = dict(env, LAZYROOT_RUNTIME_DIR=os.path.join(workdir, "run-baseline"))
                m = stack.enter_context(Mounted("lazyroot", workdir, ref, args.baseline, benv,
                                                ["--cache-dir", cache, "--prefetch=none"]))
                targets.append((BASELINE + fmt, m.dir, m.mount_s))
        results = read_trees([t[1] for t in targets], args.runs, args.read_timeout)
    for cache in caches:
        C.retire(cache, workdir)
    rows = []
    for (name, _, mount_s), r in zip(targets, results):
        r.update({"target": name, "mount_s": mount_s})
        rows.append(r)
        print("  %-24s tar %ss cold %ss warm (%s bytes)   find -ls %ss cold %ss warm%s"
              % (name, fmt_row(r, "tar_cold_s"), fmt_row(r, "tar_warm_s"),
                 r.get("tar_out", "?"), fmt_row(r, "find_cold_s"), fmt_row(r, "find_warm_s"),
                 "" if mount_s is None else "   (mount %.2fs)" % mount_s), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# 3. mount time with a cached index, daemon VmHWM


def scale(args):
    rows = []
    for n in args.entries:
        print("\n[3] million.py --entries %d" % n, flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            C.sh([sys.executable, os.path.join(HERE, "million.py"), "--entries", str(n),
                  "--lazyroot", args.lazyroot, "--json", f.name], timeout=3600)
            r = json.load(open(f.name))
        rows.append(r)
        print("  cold mount %.2fs (daemon VmHWM %.1f MiB), indexed mount %.2fs (VmHWM %.1f MiB)"
              % (r["cold"]["mount_s"], r["cold"]["daemon_vmhwm_mib"], r["indexed"]["mount_s"],
                 r["indexed"]["daemon_vmhwm_mib"]), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# 4. scaling with image size


def read_local_and_lazy(args, img, addr, workdir):
    """read_trees() of @img's tree on local disk and on lazyroot mounts with a full cache
    (prewarm first) of SCALING_READ_FORMATS, as part 2 measures them: {name: dict + mount_s}."""
    env = dict(os.environ, LAZYROOT_RUNTIME_DIR=os.path.join(workdir, "run"))
    names, paths, mounts, caches = ["local disk"], [img["tree"]], [None], []
    try:
        with contextlib.ExitStack() as stack:
            for fmt in SCALING_READ_FORMATS:
                cache = tempfile.mkdtemp(prefix="scalecache-", dir=workdir)
                caches.append(cache)
                ref = "%s/%s:latest" % (addr, img["layouts"][fmt]["repo"])
                C.sh([args.lazyroot, "prewarm", "--cache-dir", cache, ref], env=env,
                     timeout=1800)
                m = stack.enter_context(Mounted("lazyroot", workdir, ref, args.lazyroot, env,
                                                ["--cache-dir", cache, "--prefetch=none"]))
                names.append("lazyroot " + fmt)
                paths.append(m.dir)
                mounts.append(m.mount_s)
            results = read_trees(paths, args.runs, args.read_timeout)
    finally:
        for cache in caches:
            C.retire(cache, workdir)
    for r, mount_s in zip(results, mounts):
        r["mount_s"] = mount_s
    return dict(zip(names, results))


def scaling(args, imgs, link, relay, addr, workdir):
    """Per scale: coldstart() over the first link setting only, then read_trees() of the whole
    tree on local disk and on lazyroot mounts (unshaped link, as in part 2)."""
    first = copy.copy(args)
    first.settings = args.settings[:1]
    rows = []
    for s in args.scales:
        img = imgs[s]
        print("\n[4] scale x%d: %.1f MB on disk" % (s, img["tree_bytes"] / 1e6), flush=True)
        cold = coldstart(first, img, link, relay, addr, workdir)
        P.reshape(link, "10gbit", "32kbit")
        relay.delay = 0
        reads = read_local_and_lazy(args, img, addr, workdir)
        for name, r in reads.items():
            print("  read %-22s tar %ss cold %ss warm (%s bytes)"
                  % (name, fmt_row(r, "tar_cold_s"), fmt_row(r, "tar_warm_s"),
                     r.get("tar_out", "?")), flush=True)
        rows.append({"scale": s, "tree_bytes": img["tree_bytes"],
                     "packages": img.get("packages", []),
                     "layer_bytes": {f: l["layer_bytes"] for f, l in img["layouts"].items()},
                     "coldstart": cold, "read": reads})
    return rows


def scaling_read(row, flow):
    """The whole-tree read that goes with a cold-start flow: traditional ends with the tree on
    local disk, a lazyroot flow with a mount of its format; None when not measured."""
    name = "local disk" if flow.startswith("traditional") else flow
    return row["read"].get(name)


def scaling_ratios(res):
    """x2/x1, x4/x1 per flow: cold start time, bytes fetched, tar warm."""
    rows = res.get("scaling") or []
    one = next((r for r in rows if r["scale"] == 1), None)
    if one is None:
        return []
    out = []
    for r in rows:
        if r is one:
            continue
        out.append("scaling x%d/x1: image %s on disk" % (r["scale"],
                                                         rx(r["tree_bytes"], one["tree_bytes"])))
        for c in r["coldstart"]:
            c1 = next((x for x in one["coldstart"] if x["flow"] == c["flow"]), None)
            if c1 is None:
                continue
            line = "scaling x%d/x1 %s: cold start %s time, %s bytes" % (
                r["scale"], c["flow"], rx(c["total_s"], c1["total_s"]),
                rx(c["bytes"], c1["bytes"]))
            w, w1 = scaling_read(r, c["flow"]), scaling_read(one, c["flow"])
            if w and w1:
                line += "; tar warm %s" % rx(w["tar_warm_s"], w1["tar_warm_s"])
            out.append(line)
    return out


def scaling_markdown(res):
    L = ["\n## 4. Scaling\n"]
    rows = res["scaling"]
    L.append("The same cold start (part 1, first link setting only: %s, %g ms) and whole-tree "
             "read (part 2) for the image (x1) and two bigger ones (tests/bench/debimage.py "
             "`VARIANTS`): the same two layers plus a third from `apt-get install "
             "--no-install-recommends` of more Debian packages; the workload is still "
             "`python3 -c 'import json'`.\n" % tuple(res["settings"][0]))
    for r in rows:
        L.append("- x%d: %.1f MB on disk, layers gzip %.1f / eStargz %.1f / zstd:chunked %.1f MB"
                 "%s" % (r["scale"], r["tree_bytes"] / 1e6,
                         *(r["layer_bytes"][f] / 1e6 for f in LAZY_FORMATS),
                         ("; third layer: " + " ".join(r["packages"])) if r["packages"]
                         else ""))
    L.append("\n| scale | image MB | flow | cold start s | fetched MB | tar warm s |")
    L.append("|---|---:|---|---:|---:|---:|")
    for r in rows:
        for c in r["coldstart"]:
            w = scaling_read(r, c["flow"])
            L.append("| x%d | %.1f | %s | %.2f | %.1f | %s |"
                     % (r["scale"], r["tree_bytes"] / 1e6, c["flow"], c["total_s"],
                        c["bytes"] / 1e6, fmt_row(w, "tar_warm_s") if w else "-"))
    L.append("\n`tar warm s`: `tar -cf - . | wc -c` over the whole tree, page cache warm, on "
             "what the flow leaves behind: the unpacked tree on local disk (traditional) or a "
             "lazyroot mount with a full cache (`-` = not measured for that format). Growth "
             "(same run):\n")
    L.append("```")
    L.extend(scaling_ratios(res))
    L.append("```\n")
    return L


# ---------------------------------------------------------------------------------------------
# report


def ratio(a, b):
    return a / b if a is not None and b else float("nan")


def rx(a, b):
    """a / b as "1.23x", or "n/a" when either did not finish."""
    return "%.2fx" % (a / b) if a is not None and b else "n/a"


def ratios(res):
    """Lines comparing flows of the same run."""
    out = []
    for rate, delay in res["settings"]:
        rows = [r for r in res["coldstart"] if r["rate"] == rate and r["delay_ms"] == delay]
        trad = next((r for r in rows if r["flow"].startswith("traditional")), None)
        if trad is None:
            continue  # part 1 did not run
        for r in rows:
            if r is trad:
                continue
            out.append("cold start %s/%gms: traditional / %s = %.1fx time, %.1fx bytes"
                       % (rate, delay, r["flow"], ratio(trad["total_s"], r["total_s"]),
                          ratio(trad["bytes"], r["bytes"])))
    w = {r["target"]: r for r in res["warm"]}
    extracts = [r["extract_s"] for r in res["coldstart"] if r.get("extract_s")]
    if extracts:
        extract = statistics.median(extracts)
        for r in res["warm"]:
            if r["target"].startswith("lazyroot") and r.get("mount_s"):
                out.append("mount with a cached index, %s: %.3f s = 1/%.0f of the traditional "
                           "extract (umoci unpack, %.2f s)" % (r["target"], r["mount_s"],
                                                               extract / r["mount_s"], extract))
    for r in res["warm"]:
        if not r["target"].startswith(BASELINE):
            continue
        now = w.get("lazyroot " + r["target"][len(BASELINE):])
        if now:
            x = [rx(now[k], r[k]) for k in ("tar_cold_s", "tar_warm_s", "find_cold_s",
                                             "find_warm_s")]
            out.append("warm read %s / %s: tar %s cold, %s warm; find -ls %s cold, %s warm"
                       % (now["target"], r["target"], *x))
    for r in res["warm"]:
        if not r["target"].startswith("lazyroot"):
            continue
        for base in ("local disk", "squashfuse", "archivemount"):
            if base not in w:
                continue
            x = [rx(r[k], w[base][k]) for k in ("tar_cold_s", "tar_warm_s", "find_cold_s",
                                                  "find_warm_s")]
            out.append("warm read %s / %s: tar %s cold, %s warm; find -ls %s cold, %s warm"
                       % (r["target"], base, *x))
    return out


def plot(res, png):
    """Cold start time per flow and link setting (clustered bars), gnuplot -> PNG."""
    flows = []
    for r in res["coldstart"]:
        if r["flow"] not in flows:
            flows.append(r["flow"])
    with tempfile.TemporaryDirectory() as d:
        dat = os.path.join(d, "cold.dat")
        with open(dat, "w") as f:
            f.write("setting " + " ".join('"%s"' % fl for fl in flows) + "\n")
            for rate, delay in res["settings"]:
                vals = {r["flow"]: r["total_s"] for r in res["coldstart"]
                        if r["rate"] == rate and r["delay_ms"] == delay}
                f.write('"%s, %g ms" ' % (rate, delay) +
                        " ".join("%.3f" % vals.get(fl, float("nan")) for fl in flows) + "\n")
        gp = os.path.join(d, "plot.gp")
        with open(gp, "w") as f:
            f.write('set terminal pngcairo size 900,480 font "sans,11"\n'
                    'set output "%s"\n'
                    'set title "Cold start: nothing cached -> python3 -c \'import json\' exited'
                    ' in systemd-nspawn%s"\n'
                    'set ylabel "seconds (median)"\nset style data histograms\n'
                    'set style histogram clustered gap 1\nset style fill solid 0.8 border -1\n'
                    'set key outside below horizontal\nset yrange [0:*]\nset grid ytics\n'
                    'plot for [i=2:%d] "%s" using i:xtic(1) title columnheader(i)\n'
                    % (png, " (QUICK RUN)" if res["quick"] else "", len(flows) + 1, dat))
        C.sh(["gnuplot", gp])


def markdown(res, png_name):
    L = []
    q = res["quick"]
    L.append("# Benchmarks\n")
    if q:
        L.append("**QUICK RUN (`tests/bench/suite.py --quick`): one run per cell, one link "
                 "setting, on a shared and loaded machine. These numbers only show that the "
                 "suite works; they are not the measurement.**\n")
    L.append("Written by `tests/bench/suite.py` (how to run it: tests/bench/README.md) on %s, "
             "%s, %d CPUs, kernel %s; lazyroot %s. Medians of %d run(s) per cell, except "
             "part 2's `mount s` (each tree is mounted once, then read run after run) and "
             "part 3 (million.py mounts once per size): one run each.\n"
             % (res["date"], res["host"], os.cpu_count(), platform.release(), res["commit"],
                res["runs"]))
    L.append("The image: Debian bookworm `debootstrap --variant=minbase` + a layer from "
             "`apt-get install python3`: %.1f MB on disk (%s files and dirs). Layers: gzip "
             "%.1f MB, eStargz %.1f MB, zstd:chunked %.1f MB.\n"
             % (res["image"]["tree_bytes"] / 1e6, res["warm_entries"],
                *(res["image"]["layouts"][f]["layer_bytes"] / 1e6 for f in LAZY_FORMATS)))
    L.append("## 1. Cold start\n")
    L.append("From nothing cached to `python3 -c 'import json'` exited inside "
             "`systemd-nspawn`. Traditional: `skopeo copy docker://… oci:…` then `umoci raw "
             "unpack` (layers in order, whiteouts applied), then nspawn on the tree. lazyroot: "
             "`lazyroot mount --volatile --prefetch=none` with an empty cache, then nspawn on "
             "the mount. `estargz-optimized`: the eStargz layers rebuilt with the files the "
             "workload read (recorded once on a lazy mount, tests/bench/optimize.py, as "
             "`ctr-remote image optimize` does for stargz-snapshotter) first, before "
             "`.prefetch.landmark`, mounted with `--prefetch=landmark` (the default). "
             "Registry in a network namespace behind a veth pair with tbf on both "
             "ends and a relay that delays each direction (so a round trip costs 2x the delay)."
             " Bytes and requests are counted at the relay.\n")
    L.append("![cold start](%s)\n" % png_name)
    L.append("| link | flow | ready s | cmd done s | fetched MB | requests | image layers MB "
             "| traditional / this (time) |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in res["coldstart"]:
        trad = next(t for t in res["coldstart"] if t["rate"] == r["rate"]
                    and t["delay_ms"] == r["delay_ms"] and t["flow"].startswith("traditional"))
        L.append("| %s, %g ms | %s | %.2f | %.2f | %.1f | %d | %.1f | %.1fx |"
                 % (r["rate"], r["delay_ms"], r["flow"], r["ready_s"], r["total_s"],
                    r["bytes"] / 1e6, r["requests"], r["layer_bytes"] / 1e6,
                    ratio(trad["total_s"], r["total_s"])))
    L.append("\n`ready` = the mount returned (lazyroot) or the tree is unpacked (traditional).\n")
    L.append("## 2. Reading the whole tree\n")
    L.append("`tar -cf - . | wc -c` and `find . -ls` over the whole tree; cold = after `echo 3 "
             "> /proc/sys/vm/drop_caches`, warm = right after; all trees are mounted at once and "
             "take turns, run by run, so a slow spell of the (shared) disk falls on all of them. "
             "lazyroot with a full cache "
             "(`lazyroot prewarm` first). squashfuse on `mksquashfs` of the tree (defaults, "
             "gzip); archivemount on an uncompressed tar of the tree.\n")
    L.append("| tree | mount s | tar cold s | tar warm s | find -ls cold s | find -ls warm s "
             "| tar bytes |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in res["warm"]:
        L.append("| %s | %s | %s | %s | %s | %s | %s |"
                 % (r["target"], fmt_s(r["mount_s"]), fmt_row(r, "tar_cold_s"),
                    fmt_row(r, "tar_warm_s"), fmt_row(r, "find_cold_s"),
                    fmt_row(r, "find_warm_s"), r.get("tar_out", "-")))
    L.append("\n`> N`: did not finish within --read-timeout (N s); the rest of that row was "
             "then skipped. The tar byte counts differ by how each file system reports hard links "
             "(tar stores a hard link once when st_nlink > 1).\n")
    if res["scale"]:
        L.append("\n## 3. Mount time and daemon memory by layer size\n")
        L.append("`tests/bench/million.py --entries N`: one gzip layer of N empty files from a "
                 "loopback registry. First mount = empty cache (download + index); second = "
                 "index already in the cache.\n")
        L.append("| files | first mount s | daemon VmHWM MiB | indexed mount s | daemon VmHWM "
                 "MiB | walk s |")
        L.append("|---:|---:|---:|---:|---:|---:|")
        for r in res["scale"]:
            L.append("| %d | %.2f | %.1f | %.2f | %.1f | %.2f |"
                     % (r["entries"], r["cold"]["mount_s"], r["cold"]["daemon_vmhwm_mib"],
                        r["indexed"]["mount_s"], r["indexed"]["daemon_vmhwm_mib"],
                        r["cold"]["walk_s"]))
    if res.get("scaling"):
        L.extend(scaling_markdown(res))
    L.append("\n## Ratios (same run)\n")
    L.append("Cold start: traditional / lazyroot (above 1 = lazyroot is faster / fetches less)."
             " Reading: lazyroot / the other tree (above 1 = lazyroot is slower).\n")
    L.append("```")
    L.extend(res["ratios"])
    L.append("```\n")
    return "\n".join(L)


# Sections written by hand after the generated ones start with this heading; a new run keeps them.
HAND_WRITTEN = "\n## Cold start, taken apart"


def hand_written(out):
    try:
        with open(out) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    i = text.find(HAND_WRITTEN)
    return text[i:] if i >= 0 else ""


def write_docs(res, out):
    res["ratios"] = ratios(res)
    png = os.path.splitext(out)[0] + "-coldstart.png"
    plot(res, png)
    # the hand-written sections (from "Cold start, taken apart" on) and seekindex.py's
    # section are not the suite's: a new run keeps them
    kept = hand_written(out)
    old = open(out).read() if os.path.exists(out) else ""
    if seekindex.SECTION in old and seekindex.SECTION not in kept:
        start = old.index(seekindex.SECTION)
        end = old.find("\n## ", start + len(seekindex.SECTION))
        kept = (old[start:end + 1] if end >= 0 else old[start:]) + "\n" + kept
    with open(out, "w") as f:
        f.write(markdown(res, os.path.basename(png)))
        f.write(kept)
    print("wrote %s and %s" % (out, png))


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description="lazyroot benchmark suite (root only)")
    ap.add_argument("--quick", action="store_true",
                    help="1 run, one link setting, 10,000 files in part 3")
    ap.add_argument("--lazyroot", default=os.path.join(ROOT, "build", "cli", "lazyroot"))
    ap.add_argument("--image-cache", default=debimage.DEFAULT_CACHE)
    ap.add_argument("--no-peers", action="store_true", help="part 2 without squashfuse and "
                    "archivemount (archivemount's tar alone takes minutes): for --baseline runs")
    ap.add_argument("--baseline", help="part 2 also reads each lazy format through this older "
                    "lazyroot binary, mounted from the same cache, and prints now/before ratios")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--settings", help="RATE:DELAY_MS,... (default 100mbit:10,20mbit:40; "
                    "quick: 100mbit:10)")
    ap.add_argument("--entries", help="part 3 sizes, comma-separated (0 = skip part 3)")
    ap.add_argument("--parts", default="1,2,3,4")
    ap.add_argument("--scales", default="1,2,4",
                    help="part 4's image sizes, comma-separated: 1 and/or debimage.VARIANTS "
                    "(x2, x4) as 2, 4")
    ap.add_argument("--read-timeout", type=float, default=300,
                    help="seconds one tar/find over a tree may take in part 2 (default 300)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--no-write", action="store_true", help="only print, write no docs")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--from-json", help="measure nothing: write the docs from a --json file")
    args = ap.parse_args(argv)
    if args.from_json:
        write_docs(json.load(open(args.from_json)), args.out)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, FUSE, nspawn, drop_caches)")
    args.runs = args.runs or (1 if args.quick else 3)
    args.settings = P.parse_settings(args.settings or
                                     ("100mbit:10" if args.quick else "100mbit:10,20mbit:40"))
    args.entries = [int(x) for x in (args.entries or ("10000" if args.quick else
                                                      "10000,100000")).split(",") if int(x)]
    parts = set(args.parts.split(","))
    args.scales = [int(x) for x in args.scales.split(",")]
    for x in args.scales:
        if x != 1 and "x%d" % x not in debimage.VARIANTS:
            raise SystemExit("--scales: no image for %d (have 1, %s)"
                             % (x, ", ".join(v[1:] for v in debimage.VARIANTS)))
    if not os.path.exists(args.lazyroot):
        raise SystemExit("missing %s (build first, or pass --lazyroot)" % args.lazyroot)

    t_start = time.monotonic()
    img = debimage.build(args.image_cache)
    imgs = {1: img}
    if "4" in parts:
        imgs.update({x: debimage.build_variant("x%d" % x, args.image_cache)
                     for x in args.scales if x != 1})
    print("image ready (%.0f s): %s" % (time.monotonic() - t_start, json.dumps(
        {f: l["layer_bytes"] for f, l in img["layouts"].items()})), flush=True)
    res = {"quick": args.quick, "runs": args.runs, "settings": args.settings, "image": img,
           "coldstart": [], "warm": [], "scale": [], "scaling": [],
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "host": platform.node(),
           "commit": subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                    stdout=subprocess.PIPE, text=True).stdout.strip()}
    res["warm_entries"] = C.sh(["sh", "-c", "find . | wc -l"], cwd=img["tree"]).stdout.strip()
    workdir = tempfile.mkdtemp(prefix="lazyroot-suite-", dir="/var/tmp")
    link = C.Link(args.settings[0][0])
    reg = relay = None
    try:
        link.up()
        reg = C.start_registry(link, workdir)
        direct = "%s:5000" % link.ns_ip
        if "1" in parts:
            opt = optimize.ensure(args.lazyroot, img, workdir, WORKLOAD)
            img["layouts"][OPTIMIZED] = {"layout": opt, "layer_bytes": debimage.layer_bytes(opt)}
        for x, im in imgs.items():
            for fmt, lay in im["layouts"].items():
                lay["repo"] = "bench/debian-%s%s" % ("" if x == 1 else "x%d-" % x,
                                                     fmt.replace(":", "-"))
                push.push_layout(direct, lay["layout"], lay["repo"], "latest")
        link.shape()
        relay = C.Relay(link.ns_ip, 5000, args.settings[0][1] / 1000.0).start()
        addr = "127.0.0.1:%d" % relay.port
        if "1" in parts:
            res["coldstart"] = coldstart(args, img, link, relay, addr, workdir)
        if "2" in parts:
            # the full-cache mounts still ask the registry for the manifest: no shaping here
            P.reshape(link, "10gbit", "32kbit")
            relay.delay = 0
            res["warm"] = warm_read(args, img, addr, workdir)
        if "4" in parts:
            res["scaling"] = scaling(args, imgs, link, relay, addr, workdir)
    finally:
        if relay:
            relay.stop()
        C.stop_proc(reg)
        link.down()
        shutil.rmtree(workdir, ignore_errors=True)
    if "3" in parts:
        res["scale"] = scale(args)

    res["ratios"] = ratios(res)
    res["elapsed_s"] = time.monotonic() - t_start
    print("\nratios (same run):")
    for line in res["ratios"]:
        print("  " + line)
    if res["scaling"]:
        print("growth with image size (part 4, same run):")
        for line in scaling_ratios(res):
            print("  " + line)
    print("suite took %.0f s" % res["elapsed_s"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if not args.no_write and res["coldstart"]:
        write_docs(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
