#!/usr/bin/python3
"""Cold-start benchmark (not a test): time from `lazyroot mount` to the first command exiting
inside systemd-nspawn, and bytes fetched, for one image as eStargz, zstd:chunked and plain
gzip, against the traditional flow (download every layer whole, gunzip | tar -x, nspawn),
all over the same shaped link. See tests/bench/README.md.

Topology (all created here, all removed in `finally`):

  lazyroot / curl ──► 127.0.0.1:RELAY  (asyncio relay in this process: +10 ms per direction,
                         │               order kept, bytes counted)
                         ▼
   host veth 10.213.N.1/30 ══ tbf 100mbit both ways ══ 10.213.N.2/30 in netns lrbench-PID
                                                        └─ docker-registry :5000

lazyroot talks plain HTTP to 127.0.0.1 (loopback = insecure registry), and every byte crosses
the veth pair and the delay of the relay.
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import re
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import mkestargz as M  # noqa: E402
import push  # noqa: E402

REGISTRY_BIN = "/usr/bin/docker-registry"
WORKLOAD = "cat /etc/os-release >/dev/null; true"
REQUEST_LINE = re.compile(rb"(?:GET|HEAD) /v2/[^ \r\n]* HTTP/1\.1\r\n")


def sh(argv, check=True, **kw):
    return subprocess.run(argv, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw)


@contextlib.contextmanager
def scratch_fs(prefix, where="/var/tmp", size="64G"):
    """A fresh ext4 file system (with a journal, as a host's /var has one) on a sparse file in
    @where, mounted on a new directory, which it yields; unmounted and its file deleted at the
    end. Benches put their caches, trees and registry storage there, so that no flow pays for
    what the machine's own file system went through before (see retire()): these VMs' root
    file system is ext4 without a journal, where creating a file took 550 us minutes after a
    bench deleted its trees, against 25-30 us here right after deleting as many."""
    image = tempfile.mktemp(prefix=prefix, suffix=".ext4", dir=where)
    mnt = tempfile.mkdtemp(prefix=prefix, dir=where)
    mounted = False
    try:
        sh(["truncate", "-s", size, image])
        sh(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", image])
        sh(["mount", "-o", "loop", image, mnt])
        mounted = True
        yield mnt
    finally:
        if mounted:
            sh(["umount", "-l", mnt], check=False)
        os.rmdir(mnt)
        if os.path.exists(image):
            os.unlink(image)


def retire(path, workdir):
    """Moves @path (a run's cache or tree) into WORKDIR/retired/, which goes when the bench
    ends, instead of deleting it now. ext4 without a journal (the root file system of the VMs
    these benches run on) does not reuse an inode freed in the last 5 s, nor one freed in the
    last 300 s while its inode table block is dirty, and scans past every such inode on each
    allocation: a flow that creates thousands of files after the run before it deleted
    thousands paid seconds of system time for that deletion (d)'s tar read of seekindex.py:
    69-71% of the link after a deletion, 84-87% without one)."""
    if not os.path.exists(path):
        return
    graveyard = os.path.join(workdir, "retired")
    os.makedirs(graveyard, exist_ok=True)
    os.rename(path, tempfile.mkdtemp(prefix=os.path.basename(path) + "-", dir=graveyard))


# ---------------------------------------------------------------------------------------------
# the delaying relay


class Relay:
    """TCP relay 127.0.0.1:port -> upstream; every piece of data is forwarded `delay` seconds
    after it arrived, in order, in both directions. Counts bytes upstream->client (down) and
    client->upstream (up), and HTTP/1.1 requests (request lines seen client->upstream; the
    clients talk plain HTTP to it, so the request line is visible)."""

    def __init__(self, upstream_host, upstream_port, delay=0.010):
        self.uh, self.up, self.delay = upstream_host, upstream_port, delay
        self.down = self.upb = self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = None

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _pipe(self, reader, writer, down):
        q = asyncio.Queue()
        loop = asyncio.get_running_loop()
        tail = b""  # a request line may straddle two reads

        async def rd():
            while True:
                try:
                    data = await reader.read(1 << 16)
                except (ConnectionError, OSError):
                    data = b""
                q.put_nowait((loop.time() + self.delay, data))
                if not data:
                    return

        async def wr():
            nonlocal tail
            while True:
                t, data = await q.get()
                wait = t - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    if not data:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    writer.write(data)
                    if down:
                        self.down += len(data)
                    else:
                        self.upb += len(data)
                        seen = tail + data
                        self.requests += len(REQUEST_LINE.findall(seen)) - \
                            len(REQUEST_LINE.findall(tail))
                        tail = seen[-512:]
                    await writer.drain()
                except (ConnectionError, OSError):
                    return
        await asyncio.gather(rd(), wr())

    async def _conn(self, creader, cwriter):
        try:
            ureader, uwriter = await asyncio.open_connection(self.uh, self.up)
        except OSError:
            cwriter.close()
            return
        try:
            await asyncio.gather(self._pipe(creader, uwriter, False),
                                 self._pipe(ureader, cwriter, True))
        finally:
            for w in (cwriter, uwriter):
                try:
                    w.close()
                except Exception:
                    pass

    def reset(self):
        self.down = self.upb = self.requests = 0

    def stop(self):
        def _stop():
            self.server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(_stop)
        self.thread.join(5)


# ---------------------------------------------------------------------------------------------
# the shaped link


class Link:
    def __init__(self, rate="100mbit"):
        n = os.getpid() % 250 + 1
        self.ns = "lrbench-%d" % os.getpid()
        self.host_if = "lrb%dh" % (os.getpid() % 100000)
        self.ns_if = "lrb%dn" % (os.getpid() % 100000)
        self.host_ip, self.ns_ip = "10.213.%d.1" % n, "10.213.%d.2" % n
        self.rate = rate
        self.created = False

    def up(self):
        sh(["ip", "netns", "add", self.ns])
        self.created = True
        sh(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        sh(["ip", "link", "set", self.ns_if, "netns", self.ns])
        sh(["ip", "addr", "add", self.host_ip + "/30", "dev", self.host_if])
        sh(["ip", "link", "set", self.host_if, "up"])
        nse = ["ip", "netns", "exec", self.ns]
        sh(nse + ["ip", "addr", "add", self.ns_ip + "/30", "dev", self.ns_if])
        sh(nse + ["ip", "link", "set", self.ns_if, "up"])
        sh(nse + ["ip", "link", "set", "lo", "up"])

    def shape(self):
        tbf = ["root", "tbf", "rate", self.rate, "burst", "32kbit", "latency", "400ms"]
        sh(["tc", "qdisc", "add", "dev", self.host_if] + tbf)
        sh(["ip", "netns", "exec", self.ns, "tc", "qdisc", "add", "dev", self.ns_if] + tbf)

    def down(self):
        if not self.created:
            return
        sh(["ip", "link", "del", self.host_if], check=False)
        sh(["ip", "netns", "del", self.ns], check=False)
        self.created = False


def start_registry(link, workdir):
    storage = os.path.join(workdir, "registry-storage")
    os.makedirs(storage, exist_ok=True)
    cfg = os.path.join(workdir, "registry.yml")
    with open(cfg, "w") as f:
        f.write("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                "storage:\n  filesystem:\n    rootdirectory: \"%s\"\n"
                "http:\n  addr: %s:5000\n" % (storage, link.ns_ip))
    log = open(os.path.join(workdir, "registry.log"), "ab")
    p = subprocess.Popen(["ip", "netns", "exec", link.ns, REGISTRY_BIN, "serve", cfg],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://%s:5000/v2/" % link.ns_ip, timeout=1) as r:
                if r.status == 200:
                    return p
        except OSError:
            time.sleep(0.1)
    raise SystemExit("registry in %s did not come up" % link.ns)


def stop_proc(p):
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


# ---------------------------------------------------------------------------------------------
# images


def ensure_skopeo():
    if shutil.which("skopeo"):
        return True
    print("installing skopeo (bench only) ...", flush=True)
    r = subprocess.run(["apt-get", "install", "-y", "skopeo"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print("skopeo not available: %s" % r.stderr[-300:])
    return shutil.which("skopeo") is not None


def build_images(workdir, total_mb, n_files, seed, want_zstd):
    out = {}
    for fmt in ("estargz", "gzip"):
        d = os.path.join(workdir, "img-" + fmt)
        info = M.build_large_image(d, fmt, total_bytes=int(total_mb * 1e6), n_files=n_files,
                                   seed=seed)
        out[fmt] = {"layout": d, "layer_bytes": sum(l["size"] for l in info["layers"])}
    if want_zstd and ensure_skopeo():
        d = os.path.join(workdir, "img-zstdchunked")
        r = subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet",
                            "--dest-compress-format", "zstd:chunked",
                            "oci:%s:latest" % out["gzip"]["layout"], "oci:%s:latest" % d],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode == 0:
            idx = json.load(open(os.path.join(d, "index.json")))
            man = json.load(open(os.path.join(d, "blobs", "sha256",
                                              idx["manifests"][0]["digest"].split(":")[1])))
            out["zstd:chunked"] = {"layout": d, "layer_bytes": sum(l["size"] for l in man["layers"])}
            anns = [sorted(l.get("annotations", {})) for l in man["layers"]]
            print("zstd:chunked layers annotations: %s" % anns, flush=True)
        else:
            print("skopeo copy to zstd:chunked failed: %s" % r.stderr[-500:], flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# flows


def nspawn_flags():
    return [] if os.path.exists("/run/systemd/system/") else ["--register=no", "--keep-unit"]


def nspawn(directory, machine, argv=None):
    argv = argv or ["/bin/busybox", "sh", "-c", WORKLOAD]
    return sh(["systemd-nspawn", "--directory", directory, *nspawn_flags(), "--quiet",
               "--console=pipe", "--machine", machine, "--", *argv],
              check=False, timeout=300)


def lazyroot_flow(lazyroot, ref, workdir, tag, prefetch, argv=None):
    cache = tempfile.mkdtemp(prefix="cache-", dir=workdir)
    mnt = tempfile.mkdtemp(prefix="mnt-", dir=workdir)
    env = dict(os.environ, LAZYROOT_RUNTIME_DIR=os.path.join(workdir, "run"))
    t0 = time.monotonic()
    r = sh([lazyroot, "mount", ref, mnt, "--cache-dir", cache, "--volatile",
            "--prefetch=" + prefetch], check=False, env=env, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("lazyroot mount %s failed: %s" % (ref, r.stderr.strip()))
    t_mount = time.monotonic() - t0
    try:
        n = nspawn(mnt, "lrbench-%s-%d" % (tag, os.getpid()), argv)
        t_total = time.monotonic() - t0
        if n.returncode != 0:
            raise RuntimeError("nspawn on %s: rc %d %s" % (ref, n.returncode, n.stderr[-500:]))
        st = sh([lazyroot, "stats", "--json", mnt], check=False, env=env)
        stats = json.loads(st.stdout) if st.returncode == 0 else {}
    finally:
        sh([lazyroot, "umount", mnt], check=False, env=env, timeout=120)
        retire(cache, workdir)
        shutil.rmtree(mnt, ignore_errors=True)
    return {"mount_s": t_mount, "total_s": t_total, "stats": stats}


def record_profile(lazyroot, ref, workdir, tag, argv=None):
    """One start with --record-profile on an empty cache, then `lazyroot profile --push`: the
    profile later cold starts (other empty caches) fetch at mount."""
    cache = tempfile.mkdtemp(prefix="cache-rec-", dir=workdir)
    mnt = tempfile.mkdtemp(prefix="mnt-rec-", dir=workdir)
    env = dict(os.environ, LAZYROOT_RUNTIME_DIR=os.path.join(workdir, "run"))
    try:
        sh([lazyroot, "mount", ref, mnt, "--cache-dir", cache, "--volatile", "--prefetch=none",
            "--record-profile=30"], env=env, timeout=600)
        nspawn(mnt, "lrbench-rec-%s-%d" % (tag, os.getpid()), argv)
        sh([lazyroot, "umount", mnt], env=env, timeout=120)   # keeps the recording
        sh([lazyroot, "profile", "--push", "--cache-dir", cache, ref], env=env, timeout=120)
        prof = json.loads(sh([lazyroot, "profile", "--cache-dir", cache, ref], env=env).stdout)
        return len(prof["chunks"])
    finally:
        retire(cache, workdir)
        shutil.rmtree(mnt, ignore_errors=True)


def traditional_flow(base_url, repo, workdir, argv=None):
    root = tempfile.mkdtemp(prefix="rootfs-", dir=workdir)
    t0 = time.monotonic()
    accept = ",".join(["application/vnd.oci.image.manifest.v1+json",
                       "application/vnd.docker.distribution.manifest.v2+json"])
    req = urllib.request.Request("%s/v2/%s/manifests/latest" % (base_url, repo),
                                 headers={"Accept": accept})
    man = json.loads(urllib.request.urlopen(req, timeout=120).read())
    urllib.request.urlopen("%s/v2/%s/blobs/%s" % (base_url, repo, man["config"]["digest"]),
                           timeout=120).read()
    for layer in man["layers"]:
        path = os.path.join(workdir, "layer.tmp")
        h = hashlib.sha256()
        with urllib.request.urlopen("%s/v2/%s/blobs/%s" % (base_url, repo, layer["digest"]),
                                    timeout=600) as r, open(path, "wb") as f:
            for buf in iter(lambda: r.read(1 << 20), b""):
                h.update(buf)
                f.write(buf)
        if "sha256:" + h.hexdigest() != layer["digest"]:
            raise RuntimeError("layer digest mismatch")
        dec = "zstd -dc" if layer["mediaType"].endswith("zstd") else "gzip -dc"
        subprocess.run("%s %s | tar -x -C %s" % (dec, path, root), shell=True, check=True)
        os.unlink(path)
    t_extract = time.monotonic() - t0
    n = nspawn(root, "lrbench-trad-%d" % os.getpid(), argv)
    t_total = time.monotonic() - t0
    retire(root, workdir)
    if n.returncode != 0:
        raise RuntimeError("nspawn traditional: rc %d %s" % (n.returncode, n.stderr[-500:]))
    return {"mount_s": t_extract, "total_s": t_total}


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description="lazyroot cold-start benchmark (root only)")
    ap.add_argument("--lazyroot", default=os.path.join(ROOT, "build", "cli", "lazyroot"))
    ap.add_argument("--total-mb", type=float, default=50)
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--prefetch", default="none", choices=["none", "landmark", "all"],
                    help="lazyroot's --prefetch for the lazy runs (default none)")
    ap.add_argument("--no-zstd", action="store_true", help="skip the zstd:chunked variant")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--with-profile", action="store_true",
                    help="also each lazy format with a start profile an earlier start pushed")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, FUSE, nspawn)")
    for tool in ("ip", "tc", "systemd-nspawn", REGISTRY_BIN, args.lazyroot):
        if not shutil.which(tool) and not os.path.exists(tool):
            raise SystemExit("missing: %s" % tool)

    workdir = tempfile.mkdtemp(prefix="lazyroot-bench-")
    link = Link(args.rate)
    reg = relay = None
    results = {}
    try:
        print("building images (%.0f MB, %d files) ..." % (args.total_mb, args.files), flush=True)
        images = build_images(workdir, args.total_mb, args.files, args.seed, not args.no_zstd)
        link.up()
        reg = start_registry(link, workdir)
        direct = "%s:5000" % link.ns_ip
        for fmt, im in images.items():
            im["repo"] = "bench/" + fmt.replace(":", "-")
            push.push_layout(direct, im["layout"], im["repo"], "latest")
        link.shape()
        relay = Relay(link.ns_ip, 5000, args.delay_ms / 1000.0).start()
        addr = "127.0.0.1:%d" % relay.port
        print("link: %s tbf + %.0f ms one-way delay (relay %s -> %s); runs: %d"
              % (args.rate, args.delay_ms, addr, direct, args.runs), flush=True)
        flows = [("lazyroot " + fmt, fmt) for fmt in ("estargz", "zstd:chunked", "gzip")
                 if fmt in images] + [("traditional (gzip)", "trad")]
        if args.with_profile:
            flows += [("lazyroot %s +profile" % fmt, fmt) for fmt in ("estargz", "zstd:chunked")
                      if fmt in images]
        for name, fmt in flows:
            runs = []
            if name.endswith("+profile"):
                n = record_profile(args.lazyroot, "%s/%s:latest" % (addr, images[fmt]["repo"]),
                                   workdir, fmt.replace(":", "-"))
                print("  %-24s recorded and pushed: %d chunks" % (name, n), flush=True)
            for i in range(args.runs):
                relay.reset()
                if fmt == "trad":
                    r = traditional_flow("http://" + addr, images["gzip"]["repo"], workdir)
                else:
                    r = lazyroot_flow(args.lazyroot, "%s/%s:latest" % (addr, images[fmt]["repo"]),
                                      workdir, fmt.replace(":", "-"), args.prefetch)
                r["bytes"] = relay.down
                runs.append(r)
                print("  %-24s run %d: %.2fs total (%.2fs to ready), %.1f MB"
                      % (name, i + 1, r["total_s"], r["mount_s"], r["bytes"] / 1e6), flush=True)
            results[name] = {
                "total_s": statistics.median(r["total_s"] for r in runs),
                "mount_s": statistics.median(r["mount_s"] for r in runs),
                "bytes": statistics.median(r["bytes"] for r in runs),
                "layer_bytes": images["gzip" if fmt == "trad" else fmt]["layer_bytes"],
                "stats": runs[-1].get("stats"), "runs": runs}
    finally:
        if relay:
            relay.stop()
        stop_proc(reg)
        link.down()
        shutil.rmtree(workdir, ignore_errors=True)

    trad = results.get("traditional (gzip)")
    print()
    print("%-24s %10s %10s %12s %12s %10s %10s" % ("flow (median)", "ready s", "cmd done s",
                                                  "fetched MB", "layers MB", "time x", "bytes x"))
    for name, r in results.items():
        tx = trad["total_s"] / r["total_s"] if trad else float("nan")
        bx = trad["bytes"] / r["bytes"] if trad and r["bytes"] else float("nan")
        print("%-24s %10.2f %10.2f %12.2f %12.2f %10.1f %10.1f" % (
            name, r["mount_s"], r["total_s"], r["bytes"] / 1e6, r["layer_bytes"] / 1e6, tx, bx))
    print("(time x / bytes x = traditional / this flow; 'ready' = mount returned, or layers "
          "downloaded and extracted)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
