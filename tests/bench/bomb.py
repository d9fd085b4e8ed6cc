#!/usr/bin/python3
"""Decompression bomb benchmark (not a test): one gzip layer of one file of N GiB of zeros
(default 16 GiB in ~16 MB, made without inflating it, see hostile.gzip_zeros) pushed to a local
docker-registry, then `lazyroot mount` into an empty cache with the default limits.  Reports the
mount's wall time and CPU time, the cache's disk use (du: allocated blocks) sampled every 0.1 s
during the mount (peak) and after it, and the time a refusal takes under a 1 GiB
layer-max-expanded.  Cleans up its registry, mount and directory, also when it fails.

    /usr/bin/python3 tests/bench/bomb.py [--gib N] [--dir /var/tmp] [--lazyroot PATH]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LAZYROOT, disk_use, hostile, one_layer_run  # noqa: E402


def timed_mount(lazyroot, env, ref, mnt, cache):
    """Runs `lazyroot mount`, sampling du of @cache meanwhile; returns (rc, stderr, wall s,
    cpu s, peak bytes)."""
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], disk_use(cache))

    t = threading.Thread(target=sample)
    t.start()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run([lazyroot, "mount", ref, mnt], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=3600)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    done.set()
    t.join()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return p.returncode, p.stderr.strip(), wall, cpu, max(peak[0], disk_use(cache))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=16)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--lazyroot", default=LAZYROOT)
    args = ap.parse_args()

    res = {"zeros_gib": args.gib}
    with one_layer_run("bomb", args.lazyroot, lambda: hostile.gzip_zeros(args.gib << 30), res,
                       dir=args.dir) as run:
        conf = os.path.join(run.work, "lazyroot.conf")
        env = dict(run.env, LAZYROOT_CONFIG=conf)
        with open(conf, "w") as f:
            f.write("layer-max-expanded = 1G\n")
        rc, err, wall, cpu, peak = timed_mount(args.lazyroot, env, run.ref, run.mnt, run.cache)
        res["refused_at_1g"] = {"exit": rc, "line": err, "wall_s": round(wall, 2),
                                "cpu_s": round(cpu, 2), "cache_peak_bytes": peak}

        os.unlink(conf)
        rc, err, wall, cpu, peak = timed_mount(args.lazyroot, env, run.ref, run.mnt, run.cache)
        if rc != 0:
            raise SystemExit("mount failed (%d): %s" % (rc, err))
        res["default"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                          "cache_peak_bytes": peak, "cache_after_bytes": disk_use(run.cache),
                          "file_size": os.stat(os.path.join(run.mnt, "zeros")).st_size}

    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
