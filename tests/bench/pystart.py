#!/usr/bin/python3
"""Issue 17's own case (benchmark, not a test; root only): a Debian bookworm minbase +
python3-minimal image, cold start until `python3 -c "import os, re, collections, subprocess,
tempfile, hashlib"` exits in systemd-nspawn, lazy (eStargz, zstd:chunked, each with and without
a start profile an earlier start pushed) against pull-and-extract, every ratio from one run.
See tests/bench/README.md, "pystart.py".

The image: debimage.py's `--python3-minimal` variant (py3min/ in the image cache), eStargz
written by tests/tools/mkestargz.py (default settings; the reference ctr-remote is not
installable here), zstd:chunked by `skopeo copy --dest-compress-format zstd:chunked`, gzip for
the traditional flow.

The packet link (pktdelay: delay on the frames, so both kernels' TCP sees the round trip):

  host ns: lrp<P>c  10.215.N.1/24 (lazyroot, nspawn, curl)     tbf RATE on its egress
     ║ veth
  ns lrps-<P>-mid:  lrp<P>C ── build/tests/pktdelay lrp<P>C lrp<P>R DELAY ── lrp<P>R
     ║ veth                                        (no addresses: nothing answers here)
  ns lrps-<P>-reg:  lrp<P>r 10.215.N.2/24 docker-registry :5000  tbf RATE on its egress

lazyroot is given --tls-verify=false for this registry (not on loopback): the TLS probe, then
plain HTTP, as for a loopback registry. (A registries.conf `insecure = true` entry does not
reach `lazyroot profile --push`: cache/share's artifact code ignores it.)

The relay link is coldstart.py's (one veth pair, tbf, a TCP relay on 127.0.0.1 delaying the
bytes). Bytes are counted at the registry's side on both: the transmit bytes of the registry
namespace's interface (/proc/REGISTRY_PID/net/dev: frames with their Ethernet, IP and TCP
headers), read right after the command exits. Requests come from the lazyroot trace
($LAZYROOT_TRACE: each HTTP exchange that started before the command exited); the traditional
flow makes 2 + one per layer.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import coldstart as C  # noqa: E402
import debimage  # noqa: E402
import push  # noqa: E402
import seekindex  # noqa: E402
import trace as T  # noqa: E402

PKTDELAY = os.path.join(ROOT, "build", "tests", "pktdelay")
WORKLOAD = ["/usr/bin/python3", "-c", "import os, re, collections, subprocess, tempfile, hashlib"]
SECTION = "## Issue 17's case: python3-minimal"
FORMATS = ("estargz", "zstd:chunked")
TARGET_PLAIN, TARGET_PROFILE, TARGET_BYTES = 10.0, 15.0, 0.05


# ---------------------------------------------------------------------------------------------
# the packet-delay link


class PktLink:
    """Client (host ns) -> veth -> pktdelay in a middle namespace -> veth -> registry namespace;
    one subnet, tbf on the two ends that carry addresses. `set()` changes rate and delay."""

    def __init__(self, pktdelay=PKTDELAY):
        self.pktdelay = pktdelay
        p = os.getpid()
        n = p % 250 + 1
        self.ns, self.mid = "lrps-%d-reg" % p, "lrps-%d-mid" % p
        self.host_if, self.mid_c = "lrp%dc" % (p % 100000), "lrp%dC" % (p % 100000)
        self.ns_if, self.mid_r = "lrp%dr" % (p % 100000), "lrp%dR" % (p % 100000)
        self.host_ip, self.ns_ip = "10.215.%d.1" % n, "10.215.%d.2" % n
        self.delay = self.rate = None
        self.fwd = None
        self.created = []

    def _ns(self, ns, *argv):
        return C.sh(["ip", "netns", "exec", ns, *argv])

    def up(self):
        for ns in (self.ns, self.mid):
            C.sh(["ip", "netns", "add", ns])
            self.created.append(ns)
        C.sh(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.mid_c,
              "netns", self.mid])
        C.sh(["ip", "link", "add", self.mid_r, "netns", self.mid, "type", "veth", "peer", "name",
              self.ns_if, "netns", self.ns])
        self._ns(self.mid, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        for i in (self.mid_c, self.mid_r):
            self._ns(self.mid, "ip", "link", "set", i, "up")
        C.sh(["ip", "addr", "add", self.host_ip + "/24", "dev", self.host_if])
        C.sh(["ip", "link", "set", self.host_if, "up"])
        self._ns(self.ns, "ip", "addr", "add", self.ns_ip + "/24", "dev", self.ns_if)
        self._ns(self.ns, "ip", "link", "set", self.ns_if, "up")
        self._ns(self.ns, "ip", "link", "set", "lo", "up")
        self.set(None, 0)

    def set(self, rate, delay_ms):
        """tbf at @rate on both addressed ends (None: none), pktdelay at @delay_ms."""
        for argv in (["tc"], ["ip", "netns", "exec", self.ns, "tc"]):
            dev = self.host_if if len(argv) == 1 else self.ns_if
            C.sh(argv + ["qdisc", "del", "dev", dev, "root"], check=False)
            if rate:
                C.sh(argv + ["qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst",
                             "32kbit", "latency", "400ms"])
        C.stop_proc(self.fwd)
        self.fwd = subprocess.Popen(["ip", "netns", "exec", self.mid, self.pktdelay, self.mid_c,
                                     self.mid_r, str(delay_ms)], start_new_session=True,
                                    stdin=subprocess.DEVNULL)
        time.sleep(0.2)
        if self.fwd.poll() is not None:
            raise RuntimeError("pktdelay exited (rc %d)" % self.fwd.returncode)
        self.rate, self.delay = rate, delay_ms

    def down(self):
        C.stop_proc(self.fwd)
        C.sh(["ip", "link", "del", self.host_if], check=False)
        for ns in reversed(self.created):
            C.sh(["ip", "netns", "del", ns], check=False)
        self.created = []


def tx_bytes(pid, iface):
    """Bytes @iface sent, in the network namespace of process @pid."""
    with open("/proc/%d/net/dev" % pid) as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == iface:
                return int(rest.split()[8])
    raise RuntimeError("no interface %s in /proc/%d/net/dev" % (iface, pid))


# ---------------------------------------------------------------------------------------------
# one setting: a link, its registry, the images pushed, the profiles recorded


class Setting:
    """@flags: what lazyroot needs for this registry (the packet link's is not on loopback:
    --tls-verify=false, the TLS probe then plain HTTP, as for a loopback registry)."""

    def __init__(self, name, link, reg, addr, flags=()):
        self.name, self.link, self.reg, self.addr = name, link, reg, addr
        self.flags = list(flags)

    def sent(self):
        return tx_bytes(self.reg.pid, self.link.ns_if)


def push_images(addr, images):
    """Each format under bench/FMT, and the lazy ones again under bench/FMT-prof (the profile
    goes there: the plain repositories never have one, so their mounts pay the lookup as an
    image nobody profiled does)."""
    for fmt, im in images.items():
        push.push_layout(addr, im["layout"], "bench/" + fmt.replace(":", "-"), "latest")
        if fmt in FORMATS:
            push.push_layout(addr, im["layout"], "bench/%s-prof" % fmt.replace(":", "-"),
                             "latest")


def flows(setting, images, have_profile):
    out = [("traditional (gzip)", None, "bench/gzip")]
    for fmt in FORMATS:
        if fmt in images:
            out.append(("lazyroot " + fmt, fmt, "bench/" + fmt.replace(":", "-")))
    for fmt in FORMATS:
        if fmt in images and have_profile:
            out.append(("lazyroot %s +profile" % fmt, fmt,
                        "bench/%s-prof" % fmt.replace(":", "-")))
    return out


def mark(path, what):
    with open(path, "a") as f:
        f.write(json.dumps({"ev": "mark", "what": what, "t": int(time.monotonic() * 1e6)}) + "\n")


def lazy_start(lazyroot, ref, workdir, tag, setting, extra=(), after=None):
    """`lazyroot mount` into an empty cache, the workload in nspawn, traced; the registry's
    bytes counted when the command exited. @after(cache, env), if given, runs after the
    umount, before the cache is removed."""
    cache = tempfile.mkdtemp(prefix="cache-", dir=workdir)
    mnt = tempfile.mkdtemp(prefix="mnt-", dir=workdir)
    trace = os.path.join(workdir, "trace-%s.jsonl" % tag)
    env = dict(os.environ, LAZYROOT_RUNTIME_DIR=os.path.join(workdir, "run"),
               LAZYROOT_TRACE=trace)
    if os.path.exists(trace):
        os.unlink(trace)
    b0, t0 = setting.sent(), time.monotonic()
    try:
        r = C.sh([lazyroot, "mount", ref, mnt, "--cache-dir", cache, "--volatile",
                  "--prefetch=none", *setting.flags, *extra], check=False, env=env, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("lazyroot mount %s failed: %s" % (ref, r.stderr.strip()))
        ready = time.monotonic() - t0
        mark(trace, "cmd-start")
        n = C.nspawn(mnt, "lrps-%s-%d" % (tag, os.getpid()), WORKLOAD)
        total, sent = time.monotonic() - t0, setting.sent() - b0
        mark(trace, "cmd-end")
        if n.returncode != 0:
            raise RuntimeError("nspawn on %s: rc %d %s" % (ref, n.returncode, n.stderr[-500:]))
        C.sh([lazyroot, "umount", mnt], env=env, timeout=120)
        if after:
            after(cache, env)
    finally:
        C.sh([lazyroot, "umount", mnt], check=False, env=env, timeout=120)
        C.retire(cache, workdir)
        shutil.rmtree(mnt, ignore_errors=True)
    events = T.load(trace)
    tr = T.analyse(events)
    end = T.mark(events, "cmd-end", max)
    return {"mount_s": ready, "total_s": total, "bytes": sent, "trace_file": trace,
            "requests": sum(1 for e in events if e["ev"] == "http" and e["t0"] <= end),
            "daemon_cpu_s": tr["time"]["daemon_cpu_s"],
            "mount_cpu_s": tr["time"]["mount_command_cpu_s"],
            "http_bytes": sum(e["bytes"] for e in events if e["ev"] == "http"),
            "trace": tr}


def record_profile(args, setting, repo, tag):
    """A start with --record-profile (an empty cache, the workload), then `lazyroot profile
    --push`: later cold starts on other empty caches find the profile in the registry. Returns
    the start's numbers and the profile's chunk count."""
    ref = "%s/%s:latest" % (setting.addr, repo)
    got = {}

    def push_it(cache, env):
        for argv in (["--push"], []):
            r = C.sh([args.lazyroot, "profile", *argv, "--cache-dir", cache, *setting.flags, ref],
                     check=False, env=env, timeout=120)
            if r.returncode != 0:
                raise RuntimeError("lazyroot profile %s%s failed: %s" % (
                    " ".join(argv), ref, r.stderr.strip()))
        got["chunks"] = len(json.loads(r.stdout)["chunks"])

    r = lazy_start(args.lazyroot, ref, args.workdir, "rec-" + tag, setting,
                   ["--record-profile=30"], push_it)
    return r, got["chunks"]


def one_run(args, setting, images, flow, run_no):
    name, fmt, repo = flow
    tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    load = os.getloadavg()[0]
    if fmt is None:
        b0 = setting.sent()
        r = C.traditional_flow("http://" + setting.addr, repo, args.workdir, WORKLOAD)
        r.update(bytes=setting.sent() - b0, requests=2 + images["gzip"]["layers"])
    else:
        r = lazy_start(args.lazyroot, "%s/%s:latest" % (setting.addr, repo), args.workdir, tag,
                       setting)
        keep = os.path.join(args.traces or args.workdir, "%s-%s-run%d.jsonl" % (
            re.sub(r"[^a-z0-9]+", "-", setting.name.lower()), tag, run_no))
        shutil.copy(r.pop("trace_file"), keep)
        r["kept_trace"] = keep
    r["load"] = load
    return r


def measure(args, setting, images, record):
    """Every flow --runs times, taking turns run by run; medians. @record: first record and
    push the start profiles (once per registry: they stay there for the next settings)."""
    fl = flows(setting, images, not args.no_profile)
    if record and not args.no_profile:
        for name, fmt, repo in fl:
            if name.endswith("+profile"):
                r, n = record_profile(args, setting, repo, fmt.replace(":", "-"))
                print("  %-28s recording start: %.2f s done, %.2f MB; pushed: %d chunks" % (
                    name, r["total_s"], r["bytes"] / 1e6, n), flush=True)
    runs = {name: [] for name, _, _ in fl}
    for i in range(args.runs):
        for flow in fl:
            r = one_run(args, setting, images, flow, i + 1)
            runs[flow[0]].append(r)
            print("  %-28s run %d: %6.2f s ready, %6.2f s done, %6.2f MB, %3d requests, "
                  "load %.1f" % (flow[0], i + 1, r["mount_s"], r["total_s"], r["bytes"] / 1e6,
                                 r["requests"], r["load"]), flush=True)
    return {name: summarize(rs, images["gzip" if name.startswith("trad") else
                                       name.split()[1]]["layer_bytes"])
            for name, rs in runs.items()}


def summarize(rs, layer_bytes):
    med = lambda k: statistics.median(r[k] for r in rs)
    out = {"mount_s": med("mount_s"), "total_s": med("total_s"), "bytes": med("bytes"),
           "requests": med("requests"), "layer_bytes": layer_bytes,
           "load": [min(r["load"] for r in rs), max(r["load"] for r in rs)], "runs": rs}
    if "daemon_cpu_s" in rs[0]:
        cpu = [r["daemon_cpu_s"] / (r["http_bytes"] / 1e6) for r in rs
               if r["daemon_cpu_s"] is not None and r["http_bytes"]]
        out["daemon_cpu_s"] = med("daemon_cpu_s") if all(
            r["daemon_cpu_s"] is not None for r in rs) else None
        out["cpu_s_per_mb"] = statistics.median(cpu) if cpu else None
        # the run whose time is the median's, for the breakdown
        mid = sorted(rs, key=lambda r: r["total_s"])[len(rs) // 2]
        out["median_trace"], out["median_breakdown"] = mid["kept_trace"], mid["trace"]
    return out


# ---------------------------------------------------------------------------------------------
# the report


def ratio(a, b):
    return a / b if b else float("nan")


def verdict(name, r, trad):
    """The issue's targets for this flow: (time target or None, bytes target) as ok/MISS."""
    if name.startswith("trad"):
        return ""
    goal = TARGET_PROFILE if name.endswith("+profile") else TARGET_PLAIN
    x = ratio(trad["total_s"], r["total_s"])
    share = r["bytes"] / r["layer_bytes"]
    return "%s >=%gx, %s <=%g%%" % ("ok" if x >= goal else "MISS", goal,
                                    "ok" if share <= TARGET_BYTES else "MISS",
                                    TARGET_BYTES * 100)


def table(res):
    """The results of one setting as text lines."""
    trad = res["traditional (gzip)"]
    L = ["%-30s %7s %7s %8s %7s %5s %7s %7s %8s  %s" % (
        "flow (median)", "ready s", "done s", "MB", "% img", "req", "ready x", "done x",
        "CPU s/MB", "targets")]
    for name, r in res.items():
        cpu = r.get("cpu_s_per_mb")
        L.append("%-30s %7.2f %7.2f %8.2f %6.1f%% %5d %7.1f %7.1f %8s  %s" % (
            name, r["mount_s"], r["total_s"], r["bytes"] / 1e6,
            100.0 * r["bytes"] / r["layer_bytes"], r["requests"],
            ratio(trad["mount_s"], r["mount_s"]), ratio(trad["total_s"], r["total_s"]),
            "-" if cpu is None else "%.3f" % cpu, verdict(name, r, trad)))
    return L


def breakdown(res):
    """trace.py's summary of the median eStargz start (no profile) of a setting."""
    r = res.get("lazyroot estargz")
    if not r:
        return []
    t = r["median_breakdown"]
    m, d, tm = t["mount"], t["demand"], t["time"]
    return ["eStargz, median start (trace.py): ready %.2f s after %d requests (%d sequential "
            "round trips, %.2f MB); then %d reads (%d waited), %d requests (%d sequential), "
            "%.2f MB, %.2f MB fetched but never read; link busy %.2f s, reads waiting %.2f s, "
            "command %.2f s, mount command CPU %.2f s, daemon CPU %.2f s" % (
                t["ready_s"] or 0, m["requests"], m["sequential_round_trips"], m["bytes"] / 1e6,
                d["reads"], d["reads_waiting"], d["requests"], d["sequential_round_trips"],
                d["bytes"] / 1e6, d["bytes_never_read"] / 1e6, tm["link_busy_s"],
                tm["reads_waiting_s"], tm.get("command_s", 0), tm["mount_command_cpu_s"] or 0,
                tm["daemon_cpu_s"] or 0)]


def report(all_res, meta):
    L = ["image: Debian %s minbase + python3-minimal; layers: %s" % (
        debimage.SUITE, ", ".join("%s %.1f MB" % (f, meta["images"][f]["layer_bytes"] / 1e6)
                                  for f in ("gzip", "estargz", "zstd:chunked")
                                  if f in meta["images"]))]
    L.append("load average (1 min) during the runs: %.1f-%.1f; %d runs per cell, medians" % (
        meta["load"][0], meta["load"][1], meta["runs"]))
    for name, res in all_res.items():
        L += ["", "link %s" % name] + table(res) + breakdown(res)
    L += ["", "MB / % img: bytes the registry's interface sent until the command exited (with "
          "headers) / the format's layer bytes; x = traditional / this flow; CPU s/MB = the "
          "daemon's CPU (trace exit mark) per MB it and the mount fetched; targets (issue 17, "
          "100mbit/10ms): >= 10x without profile, >= 15x with, <= 5% bytes before exit"]
    return L


def write_section(path, text):
    """Replaces this tool's section of @path (up to the next "## " heading); a new one goes
    before seekindex.py's section (after "Cold start, taken apart (issue 17)"), or at the end."""
    old = open(path).read() if os.path.exists(path) else ""
    start = old.find(SECTION)
    if start >= 0:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[end + 1:] if end >= 0 else "")
    elif seekindex.SECTION in old:
        i = old.index(seekindex.SECTION)
        new = old[:i] + text + "\n" + old[i:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(new)


def section(lines, meta):
    intro = ("Written by tests/bench/pystart.py --write (%s, lazyroot %s; a new run replaces "
             "this section; what the numbers say is in \"Cold start, taken apart (issue 17)\", "
             "\"The issue's case, measured\"). Reproduce: `/usr/bin/python3 "
             "tests/bench/pystart.py --runs %d`." % (meta["date"], meta["commit"], meta["runs"]))
    return "\n".join([SECTION, "", *textwrap.wrap(intro, 96), "", "```", *lines, "```", ""])


def output(args, all_res, meta):
    lines = report(all_res, meta)
    print()
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": all_res}, f, indent=1)
    if args.write:
        write_section(args.out, section(lines, meta))
        print("wrote %s (section %r)" % (args.out, SECTION))
    return 0


# ---------------------------------------------------------------------------------------------
# setup


def load_images(cache):
    info = debimage.build_python3_minimal(cache)
    images = {}
    for fmt, im in info["layouts"].items():
        idx = json.load(open(os.path.join(im["layout"], "index.json")))
        man = json.load(open(os.path.join(im["layout"], "blobs", "sha256",
                                          idx["manifests"][0]["digest"].split(":", 1)[1])))
        images[fmt] = dict(im, layers=len(man["layers"]))
    return images


def parse_settings(text):
    out = []
    for s in text.split(","):
        rate, _, delay = s.partition(":")
        out.append((rate, float(delay)))
    return out


def run_packet_link(args, images, cleanup, all_res):
    link = PktLink(args.pktdelay)
    cleanup.append(link.down)
    link.up()
    d = os.path.join(args.workdir, "pkt")
    os.makedirs(d)
    reg = C.start_registry(link, d)
    cleanup.append(lambda: C.stop_proc(reg))
    addr = "%s:5000" % link.ns_ip
    print("pushing the images to %s ..." % addr, flush=True)
    push_images(addr, images)
    first = True
    for rate, delay in parse_settings(args.settings):
        link.set(rate, delay)
        name = "%s/%gms pktdelay" % (rate, delay)
        print("link %s (tbf both ways, %g ms on every frame each way)" % (name, delay),
              flush=True)
        all_res[name] = measure(args, Setting(name, link, reg, addr, ["--tls-verify=false"]),
                                images, record=first)
        first = False


def run_relay_link(args, images, cleanup, all_res):
    rate, delay = parse_settings(args.relay)[0]
    link = C.Link(rate)
    cleanup.append(link.down)
    link.up()
    d = os.path.join(args.workdir, "relay")
    os.makedirs(d)
    reg = C.start_registry(link, d)
    cleanup.append(lambda: C.stop_proc(reg))
    push_images("%s:5000" % link.ns_ip, images)
    link.shape()
    relay = C.Relay(link.ns_ip, 5000, delay / 1000.0).start()
    cleanup.append(relay.stop)
    name = "%s/%gms relay" % (rate, delay)
    print("link %s (coldstart.py's: tbf + TCP relay on 127.0.0.1:%d)" % (name, relay.port),
          flush=True)
    all_res[name] = measure(args, Setting(name, link, reg, "127.0.0.1:%d" % relay.port),
                            images, record=True)


# ---------------------------------------------------------------------------------------------
# --self-test: the packet link alone, in seconds

ECHO = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000))
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    d = c.recv(64)
    c.sendall(b"y" if d == b"x" else b"\0" * int(d[3:]))
    c.close()
"""


def rtt_and_fetch(ip, size=0):
    """Seconds of a TCP connect (one round trip) and of a 1-byte echo on it (another), or of
    fetching @size bytes."""
    import socket
    t0 = time.monotonic()
    s = socket.create_connection((ip, 7000), timeout=20)
    t1 = time.monotonic()
    s.sendall(b"x" if not size else b"big%d" % size)
    got = 0
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        got += len(b)
    s.close()
    return t1 - t0, time.monotonic() - t1, got


def self_test(pktdelay):
    """The packet link with pktdelay at 50 ms: a TCP connect and an echo each take about one
    round trip of 100 ms (bounds 90 ms .. 2 s); tbf at 10mbit moves 2 MB in >= 1.3 s; the
    registry side's counter sees those bytes. Exit 0 when all hold."""
    link, echo, fails = PktLink(pktdelay), None, []
    try:
        link.up()
        link.set(None, 50)
        echo = subprocess.Popen(["ip", "netns", "exec", link.ns, sys.executable, "-c", ECHO,
                                 link.ns_ip], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        if echo.stdout.readline().strip() != "ready":
            raise RuntimeError("echo server did not start")
        rtt_and_fetch(link.ns_ip)   # the first one also waits for ARP (delayed as well)
        conn, echo_s, _ = rtt_and_fetch(link.ns_ip)
        print("pktdelay 50 ms: connect %.1f ms, echo %.1f ms" % (conn * 1e3, echo_s * 1e3))
        for what, v in (("connect", conn), ("echo", echo_s)):
            if not 0.090 <= v <= 2.0:
                fails.append("%s took %.3f s, not about 2 x 50 ms" % (what, v))
        link.set("10mbit", 5)
        b0 = tx_bytes(echo.pid, link.ns_if)
        _, took, got = rtt_and_fetch(link.ns_ip, 2000000)
        sent = tx_bytes(echo.pid, link.ns_if) - b0
        print("tbf 10mbit + 5 ms: 2 MB in %.2f s; registry side sent %d bytes" % (took, sent))
        if got != 2000000 or not 1.3 <= took <= 30:
            fails.append("2 MB over 10mbit: %d bytes in %.2f s" % (got, took))
        if not 2000000 <= sent <= 2400000:
            fails.append("the registry side's counter says %d bytes" % sent)
    finally:
        C.stop_proc(echo)
        link.down()
    for f in fails:
        print("FAIL: " + f)
    print("self-test: %s" % ("ok" if not fails else "FAILED"))
    return 1 if fails else 0


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description="issue 17's cold start benchmark (root only)")
    ap.add_argument("--lazyroot", default=os.path.join(ROOT, "build", "cli", "lazyroot"))
    ap.add_argument("--image-cache", default=debimage.DEFAULT_CACHE)
    ap.add_argument("--pktdelay", default=PKTDELAY, help="the tests/tools/pktdelay.c binary")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settings", default="100mbit:10,20mbit:40,1gbit:1",
                    help="packet link settings RATE:DELAY_MS (delay each way)")
    ap.add_argument("--relay", default="100mbit:10",
                    help="coldstart.py's relay link, RATE:DELAY_MS ('' for none)")
    ap.add_argument("--no-profile", action="store_true", help="skip the +profile flows")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--traces", help="keep every lazy start's trace in this directory "
                    "(tests/bench/trace.py reads them)")
    ap.add_argument("--write", action="store_true",
                    help="write the section %r of --out" % SECTION)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--from-json", help="print (and --write) the results a --json run saved")
    ap.add_argument("--self-test", action="store_true",
                    help="only check the packet link (about 10 s)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0 and not args.from_json:
        raise SystemExit("run as root (network namespaces, FUSE, nspawn)")
    need = ["ip", "tc", args.pktdelay] + ([] if args.self_test else
                                     ["systemd-nspawn", C.REGISTRY_BIN, args.lazyroot])
    for tool in need if not args.from_json else []:
        if not shutil.which(tool) and not os.path.exists(tool):
            raise SystemExit("missing: %s" % tool)
    if args.self_test:
        return self_test(args.pktdelay)
    if args.from_json:
        saved = json.load(open(args.from_json))
        return output(args, saved["results"], saved["meta"])

    images = load_images(args.image_cache)
    args.workdir = tempfile.mkdtemp(prefix="lazyroot-pystart-")
    if args.traces:
        os.makedirs(args.traces, exist_ok=True)
    cleanup, all_res = [], {}
    try:
        if args.settings:
            run_packet_link(args, images, cleanup, all_res)
        if args.relay:
            run_relay_link(args, images, cleanup, all_res)
    finally:
        for f in reversed(cleanup):
            f()
        shutil.rmtree(args.workdir, ignore_errors=True)
    loads = [r["load"] for res in all_res.values() for f in res.values() for r in f["runs"]]
    meta = {"images": images, "runs": args.runs, "load": [min(loads), max(loads)],
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "commit": C.sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                           check=False).stdout.strip() or "?"}
    return output(args, all_res, meta)


if __name__ == "__main__":
    sys.exit(main())
