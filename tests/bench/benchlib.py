"""What the single-image benchmarks share (bomb.py, million.py, prewarm.py): a cache's disk
use, and a run with a work directory, a registry of its own holding one generated gzip layer,
and the environment of a cache of its own, all removed afterwards, also when the run fails."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import hostile  # noqa: E402
import mkdemo  # noqa: E402
import push  # noqa: E402
from registry import Registry  # noqa: E402

LAZYROOT = os.path.join(ROOT, "build", "cli", "lazyroot")


def disk_use(path):
    """Bytes the files below @path take on disk (du: allocated blocks, holes not counted);
    files removed while it walks are skipped."""
    n = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                n += os.lstat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return n


@contextlib.contextmanager
def one_layer_run(name, lazyroot, make_blob, res, dir=None):
    """Yields a namespace: work (the directory), mnt, cache, env (LAZYROOT_CACHE_DIR and
    LAZYROOT_RUNTIME_DIR in work) and ref, bench/NAME:latest in a registry of its own with
    make_blob()'s bytes as its one gzip layer.  Records layer_bytes and generate_s in @res.
    Afterwards @mnt is unmounted if it is mounted, the registry stopped, work removed."""
    work = tempfile.mkdtemp(prefix="lrbench-%s-" % name, dir=dir)
    run = types.SimpleNamespace(work=work, mnt=os.path.join(work, "mnt"),
                                cache=os.path.join(work, "cache"))
    run.env = dict(os.environ, LAZYROOT_CACHE_DIR=run.cache,
                   LAZYROOT_RUNTIME_DIR=os.path.join(work, "run"), LC_ALL="C.UTF-8")
    reg = Registry()
    try:
        os.mkdir(run.mnt)
        t0 = time.monotonic()
        blob = make_blob()
        res["layer_bytes"] = len(blob)
        res["generate_s"] = round(time.monotonic() - t0, 2)
        hostile.write_layout(os.path.join(work, "layout"), [(mkdemo.MT_LAYER_GZIP, blob)])
        del blob
        reg.start()
        run.ref = push.push_layout(reg.addr, os.path.join(work, "layout"), "bench/" + name,
                                   "latest")["ref"]
        yield run
    finally:
        if os.path.ismount(run.mnt):
            subprocess.run([lazyroot, "umount", run.mnt], env=run.env)
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
