#!/usr/bin/python3
"""Million-entry layer benchmark (not a test): one gzip layer of N empty files (default
1,000,000, in 1000 directories) pushed to a local docker-registry, then `lazyroot mount` into
an empty cache.  Reports the mount's wall time (import + tree + daemon start), the peak RSS
of the `lazyroot mount` process (which imports the layer and builds the tree before it forks;
getrusage of the child) and of the mount daemon (VmHWM in /proc/PID/status, read while it is
mounted, plus VmRSS after a full walk of the tree), and a second mount with the layer already
indexed.  Cleans up its registry, mounts and temporary directory, also when it fails.

    /usr/bin/python3 tests/bench/million.py [--entries N] [--lazyroot PATH] [--json FILE]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LAZYROOT, hostile, one_layer_run  # noqa: E402


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def mount(lazyroot, env, ref, mnt, workdir):
    """Runs `lazyroot mount` as a child; returns (seconds, its peak RSS in KiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    p = subprocess.run([lazyroot, "mount", ref, mnt], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=1800)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit("mount failed (%d): %s" % (p.returncode, p.stderr.strip()))
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest of any child so far: only a new maximum is this
    # mount's own; otherwise report "<= previous".
    return dt, after if after > before else None


def daemon_pid(workdir):
    mounts = os.path.join(workdir, "run", "mounts")
    for d in os.listdir(mounts):
        with open(os.path.join(mounts, d, "info")) as f:
            for line in f:
                if line.startswith("pid="):
                    return int(line[4:])
    raise SystemExit("no daemon pid under %s" % mounts)


def walk_count(root):
    n = 0
    for _, dirs, files in os.walk(root):
        n += len(dirs) + len(files)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1000000)
    ap.add_argument("--lazyroot", default=LAZYROOT)
    ap.add_argument("--json")
    args = ap.parse_args()

    res = {"entries": args.entries}
    with one_layer_run("million", args.lazyroot,
                       lambda: hostile.many_files_tar_gz(args.entries), res) as run:
        for phase in ("cold", "indexed"):
            dt, rss = mount(args.lazyroot, run.env, run.ref, run.mnt, run.work)
            pid = daemon_pid(run.work)
            res[phase] = {"mount_s": round(dt, 2), "mount_process_peak_rss_mib":
                          round(rss / 1024, 1) if rss else None,
                          "daemon_vmhwm_mib": round(status_kib(pid, "VmHWM") / 1024, 1)}
            if phase == "cold":
                t0 = time.monotonic()
                seen = walk_count(run.mnt)
                res[phase]["walk_s"] = round(time.monotonic() - t0, 2)
                res[phase]["walk_entries"] = seen
                res[phase]["daemon_vmhwm_after_walk_mib"] = round(
                    status_kib(pid, "VmHWM") / 1024, 1)
            subprocess.run([args.lazyroot, "umount", run.mnt], env=run.env, check=True)
        res["cache_index_db_mib"] = round(
            os.path.getsize(os.path.join(run.cache, "index.db")) / 2**20, 1)

    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
