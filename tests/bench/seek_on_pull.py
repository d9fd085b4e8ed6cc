#!/usr/bin/python3
"""What keeping the seek index costs a full pull (not a test): an eager `lazyroot mount` of an
unindexed one-layer gzip image into an empty cache, with `seek-index-on-pull = no` and `= yes`
alternately, N runs each; prints wall time and CPU time (user + system of the mount command,
which pulls before it forks its daemon) per run and their medians, the index's size and the
layer's.  The layer is a tar of real files (the host's /usr/lib and /usr/share, sorted, up to
--tar-mb of them) compressed with gzip -6, about 40% of the tar: what images hold.  The
registry is on loopback, so the pull is CPU-bound: the worst case for the relative cost.
See tests/bench/README.md, "seek_on_pull.py"."""

import argparse
import gzip
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402


def make_blob(tar_mb, roots=("/usr/lib", "/usr/share")):
    limit = tar_mb << 20
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for root in roots:
            for d, dirs, files in os.walk(root):
                dirs.sort()
                for f in sorted(files):
                    p = os.path.join(d, f)
                    if not os.path.isfile(p) or os.path.islink(p) or raw.tell() > limit:
                        continue
                    try:
                        t.add(p, arcname=p.lstrip("/"), recursive=False)
                    except OSError:
                        pass
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def one_mount(run, on):
    conf = os.path.join(run.work, "lazyroot.conf")
    with open(conf, "w") as f:
        f.write("seek-index-on-pull = %s\n" % ("yes" if on else "no"))
    shutil.rmtree(run.cache, ignore_errors=True)
    env = dict(run.env, LAZYROOT_CONFIG=conf)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run([benchlib.LAZYROOT, "mount", run.ref, run.mnt], env=env, check=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([benchlib.LAZYROOT, "umount", run.mnt], env=env, check=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    index = 0
    if on:
        out = subprocess.run(["sqlite3", os.path.join(run.cache, "index.db"),
                              "SELECT digest FROM seek_indexes"], capture_output=True,
                             text=True, check=True).stdout.split()
        index = sum(os.path.getsize(os.path.join(run.cache, "blobs", "sha256", d[7:9], d[7:]))
                    for d in out)
    return wall, cpu, index


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tar-mb", type=int, default=120)
    ap.add_argument("--json")
    a = ap.parse_args()
    res = {}
    with benchlib.one_layer_run("seekpull", benchlib.LAZYROOT,
                                lambda: make_blob(a.tar_mb), res) as run:
        times = {False: [], True: []}
        for i in range(a.runs):
            for on in (False, True) if i % 2 == 0 else (True, False):
                wall, cpu, index = one_mount(run, on)
                times[on].append((wall, cpu))
                if on:
                    res["index_bytes"] = index
                print("run %d seek-index-on-pull=%-3s wall %.2f s cpu %.2f s" %
                      (i + 1, "yes" if on else "no", wall, cpu), flush=True)
    for on in (False, True):
        key = "yes" if on else "no"
        res[key] = {"wall_s": round(statistics.median(w for w, _ in times[on]), 3),
                    "cpu_s": round(statistics.median(c for _, c in times[on]), 3)}
    print("layer %.1f MB gzip, index %.2f MB (%.2f%%)" %
          (res["layer_bytes"] / 1e6, res["index_bytes"] / 1e6,
           100.0 * res["index_bytes"] / res["layer_bytes"]))
    print("median   no: wall %.2f s cpu %.2f s   yes: wall %.2f s cpu %.2f s   "
          "(+%.1f%% wall, +%.1f%% cpu)" %
          (res["no"]["wall_s"], res["no"]["cpu_s"], res["yes"]["wall_s"], res["yes"]["cpu_s"],
           100.0 * (res["yes"]["wall_s"] / res["no"]["wall_s"] - 1),
           100.0 * (res["yes"]["cpu_s"] / res["no"]["cpu_s"] - 1)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
