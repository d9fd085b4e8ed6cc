#!/usr/bin/python3
"""An optimized eStargz of the benchmark image (not a test, root only): what `ctr-remote image
optimize` / `nerdctl image convert --estargz --estargz-record-in` make for stargz-snapshotter.
The workload runs once on a lazy mount; the files it read, in the order it first read them,
go to the front of their layer, before `.prefetch.landmark`, so `lazyroot mount
--prefetch=landmark` (the default) fetches them in one stream while the container starts.

  record(lazyroot, layout, workdir, argv)  -> [(layer index, path)] in first-read order
  build(cache, tars, record)                -> CACHE/oci-estargz-optimized (kept, like
                                               debimage.py's other layouts)

How the record is taken: a loopback registry serves the plain eStargz layout, lazyroot mounts
it with --prefetch=none into an empty cache, systemd-nspawn runs the workload, and then the
cache says what was fetched: every chunk in the blob store was fetched for a read, index.db
maps it to its layer and path, and the blob's mtime orders the files.  That is what was read
plus its neighbours: a read fetches the chunks it needs, the rest of the same file (fetch-ahead)
and, by read-around (fs/read_around.c), the chunks that follow the file in its layer up to
what the link moves in one round trip (at most 128 KiB past its end).  So the record also
names files the workload never read, ordered with the file they came along with; they cost
at most those 128 KiB each in front of `.prefetch.landmark`.

    /usr/bin/python3 tests/bench/optimize.py [--cache DIR]   # record + build, print the record
"""

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import coldstart as C  # noqa: E402
import debimage  # noqa: E402
import mkestargz as M  # noqa: E402
import push  # noqa: E402
from registry import Registry  # noqa: E402

LAYOUT = "oci-estargz-optimized"
RECORD = "access-record.json"


def _layer_digests(layout):
    idx = json.load(open(os.path.join(layout, "index.json")))
    man = json.load(open(os.path.join(layout, "blobs", "sha256",
                                      idx["manifests"][0]["digest"].split(":", 1)[1])))
    return [layer["digest"] for layer in man["layers"]]


def _read_files(cache, layer_digests):
    """[(layer index, path)] of the files whose chunks the blob store holds, by first fetch."""
    blobs = os.path.join(cache, "blobs", "sha256")
    first_seen = {}
    for sub in os.listdir(blobs):
        for name in os.listdir(os.path.join(blobs, sub)):
            if len(name) == 64:
                first_seen["sha256:" + name] = os.stat(os.path.join(blobs, sub, name)).st_mtime_ns
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(cache, "index.db"), uri=True)
    try:
        rows = db.execute("SELECT l.digest, e.path, c.digest FROM chunks c "
                          "JOIN layers l ON l.id = c.layer_id "
                          "JOIN entries e ON e.layer_id = c.layer_id AND e.seq = c.seq "
                          "WHERE c.digest IS NOT NULL").fetchall()
    finally:
        db.close()
    when = {}
    for layer, path, digest in rows:
        if digest in first_seen and layer in layer_digests:
            key = (layer_digests.index(layer), path.lstrip("/"))
            when[key] = min(when.get(key, first_seen[digest]), first_seen[digest])
    return [key for key, _ in sorted(when.items(), key=lambda kv: kv[1])]


def record(lazyroot, layout, workdir, argv):
    """Runs argv in nspawn on a lazy mount of layout; returns what it read (see the doc)."""
    work = tempfile.mkdtemp(prefix="record-", dir=workdir)
    cache, mnt = os.path.join(work, "cache"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    env = dict(os.environ, LAZYROOT_RUNTIME_DIR=os.path.join(work, "run"))
    try:
        with Registry() as reg:
            ref = push.push_layout(reg.addr, layout, "bench/record", "latest")["ref"]
            C.sh([lazyroot, "mount", ref, mnt, "--cache-dir", cache, "--volatile",
                  "--prefetch=none"], env=env, timeout=600)
            try:
                n = C.nspawn(mnt, "lrbench-record-%d" % os.getpid(), argv)
                if n.returncode != 0:
                    raise RuntimeError("the workload failed while recording: rc %d %s"
                                       % (n.returncode, n.stderr[-500:]))
            finally:
                C.sh([lazyroot, "umount", mnt], check=False, env=env, timeout=120)
        return _read_files(cache, _layer_digests(layout))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(cache, tars, rec):
    """CACHE/oci-estargz-optimized: the layer tars as eStargz, each with the recorded files of
    that layer first, in recorded order, then the landmark."""
    out = os.path.join(cache, LAYOUT)
    if os.path.isdir(out):
        return out
    layers = []
    for i, t in enumerate(tars):
        with open(t, "rb") as f:
            entries = M.entries_from_tar(f.read())
        want = [p for li, p in rec if li == i]
        layers.append(("estargz", entries, {"prefetch": want or None,
                                            "prefetch_in_given_order": True}))
    print("writing %s layout (%d recorded files) ..." % (LAYOUT, len(rec)), flush=True)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    M.build_layout(tmp, layers, config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:"
                                                "/usr/sbin:/usr/bin:/sbin:/bin"],
                                        "Cmd": ["/usr/bin/python3"]})
    with open(os.path.join(tmp, RECORD), "w") as f:
        json.dump(rec, f, indent=1)
    os.rename(tmp, out)
    return out


def ensure(lazyroot, img, workdir, argv):
    """The optimized layout for debimage's image `img` (debimage.build()), made once."""
    out = os.path.join(img["cache"], LAYOUT)
    if not os.path.isdir(out):
        rec = record(lazyroot, img["layouts"]["estargz"]["layout"], workdir, argv)
        if not rec:
            raise RuntimeError("the recording run read no file of the image")
        build(img["cache"], img["layer_tars"], rec)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="optimized eStargz of the benchmark image")
    ap.add_argument("--cache", default=debimage.DEFAULT_CACHE)
    ap.add_argument("--lazyroot", default=os.path.join(ROOT, "build", "cli", "lazyroot"))
    args = ap.parse_args(argv)
    img = debimage.build(args.cache)
    with tempfile.TemporaryDirectory(prefix="lrbench-opt-") as work:
        out = ensure(args.lazyroot, img, work, ["/usr/bin/python3", "-c", "import json"])
    rec = json.load(open(os.path.join(out, RECORD)))
    for li, p in rec:
        print(li, p)
    print("%d files; layout %s (%.1f MB of layers)" % (len(rec), out,
                                                     debimage.layer_bytes(out) / 1e6))


if __name__ == "__main__":
    main()
