"""Helpers for the lifecycle tests (test_overlay.py, test_kill.py, test_run.py): mount state,
daemon pids, systemd-nspawn on a mounted tree, cache snapshots, and small custom images built
from mkdemo.py's building blocks. Builds on conftest.py; starts no process on its own except
through the functions that say so.

  nspawn_host_flags()                   ["--register=no", "--keep-unit"] when systemd is not PID 1
  nspawn(directory, script, ...)        run /bin/sh -c SCRIPT in systemd-nspawn on directory
  state_dirs(test_dir) / state_infos()  runtime state of the mounts (LAZYROOT_RUNTIME_DIR=test_dir/run)
  daemon_pid(test_dir)                  pid= of the only mount's info file
  fuse_lower(test_dir)                  the fuse.lazyroot mount entry under test_dir/run
  assert_all_clean(test_dir, pid)       nothing mounted, no state, daemon gone
  pid_exited(pid) / wait_pid_gone(pid)  the daemon exited (gone, or a zombie not yet reaped)
  daemons_of(test_dir)                  live lazyroot processes started for this test_dir
                                        (helpers.daemons: the harness's one way to find them)
  cache_snapshot(cache)                 {blob path: sha256} + {table: row count}
  files_outside(test_dir, skip)         non-directories below test_dir, outside `skip` subdirs
  build_image(outdir, extra, config)    an OCI layout: mkdemo's layer 1 + an extra layer
  push_image(addr, layout, repo, tag)   push.push_layout()
"""

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import conftest
import helpers
import mkdemo
from helpers import pid_exited, proc_state  # noqa: F401 (used by the tests through lh)
import push

# ---------------------------------------------------------------------------------------------
# systemd-nspawn


def host_runs_systemd():
    # the same test as lazyroot's nspawn.c (and sd_booted())
    return os.path.exists("/run/systemd/system/")


def nspawn_host_flags():
    return [] if host_runs_systemd() else ["--register=no", "--keep-unit"]


def nspawn(directory, script, machine=None, extra=(), timeout=120):
    """systemd-nspawn --directory DIRECTORY ... /bin/sh -c SCRIPT, stdio passed through as
    pipes. The machine name is unique per call so that concurrent containers never collide."""
    machine = machine or "lrtest-%d-%d" % (os.getpid() % 100000, int(time.monotonic() * 1000) % 1000000)
    argv = ["systemd-nspawn", "--directory", str(directory), *nspawn_host_flags(), "--quiet",
            "--console=pipe", "--machine", machine, *extra, "--", "/bin/sh", "-c", script]
    return conftest.run_cmd(argv, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# runtime state and daemons


def state_dirs(test_dir):
    d = Path(test_dir) / "run" / "mounts"
    return sorted(p for p in d.iterdir()) if d.is_dir() else []


def read_info(path):
    info = {}
    for line in Path(path).read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep:
            info[k] = v
    return info


def state_infos(test_dir):
    return [read_info(p / "info") for p in state_dirs(test_dir) if (p / "info").is_file()]


def daemon_pid(test_dir):
    infos = state_infos(test_dir)
    assert len(infos) == 1, "expected exactly one mount state under %s/run/mounts, found %r" % (
        test_dir, infos)
    assert "pid" in infos[0], "no pid= in the info file: %r" % infos[0]
    return int(infos[0]["pid"])


def fuse_lower(test_dir, below="run"):
    """The (only) fuse.lazyroot mount at or below test_dir/BELOW (BELOW="" for anywhere under
    test_dir), as a mountinfo entry."""
    where = Path(test_dir) / below if below else Path(test_dir)
    ms = [m for m in conftest.mounts_under(where) if m["fstype"] == "fuse.lazyroot"]
    assert len(ms) == 1, "expected one fuse.lazyroot mount under %s, found %r" % (where, ms)
    return ms[0]


def assert_all_clean(test_dir, pid=None):
    """Nothing mounted under test_dir, no mount state left, and (if given) the daemon gone."""
    left = conftest.mounts_under(test_dir)
    assert left == [], "still mounted under %s: %r" % (test_dir, left)
    assert state_dirs(test_dir) == [], "mount state left behind: %r" % state_dirs(test_dir)
    if pid is not None:
        assert wait_pid_gone(pid), "daemon %d still running (state %s)" % (pid, proc_state(pid))


def wait_pid_gone(pid, timeout=15.0):
    return conftest.wait_until(lambda: pid_exited(pid), timeout)


def daemons_of(test_dir):
    """Live lazyroot processes started for this test_dir (helpers.daemons)."""
    return helpers.daemons(test_dir=test_dir)


def wait_no_daemons(test_dir, timeout=15.0):
    return helpers.wait_no_daemons(test_dir=test_dir, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# the cache


def cache_snapshot(cache):
    """({relative blob path: sha256 of its content}, {table: row count}) of a cache dir."""
    cache = Path(cache)
    blobs = {}
    for root, dirs, files in os.walk(cache / "blobs"):
        for name in files:
            p = Path(root) / name
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            blobs[str(p.relative_to(cache))] = h.hexdigest()
    counts = {}
    db = cache / "index.db"
    if db.exists():
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
        try:
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            for t in tables:
                counts[t] = con.execute('SELECT count(*) FROM "%s"' % t.replace('"', '""')).fetchone()[0]
        finally:
            con.close()
    return blobs, counts


def files_outside(test_dir, skip=("cache",)):
    """Every non-directory below test_dir (not crossing mounts), except below the top-level
    entries named in skip. Relative paths, sorted."""
    test_dir = Path(test_dir)
    dev = os.lstat(test_dir).st_dev
    out = []
    for root, dirs, files in os.walk(test_dir):
        rel = Path(root).relative_to(test_dir)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
        keep = []
        for d in dirs:
            try:
                if os.lstat(os.path.join(root, d)).st_dev == dev:
                    keep.append(d)
            except OSError:
                pass
        dirs[:] = keep
        for name in files:
            if rel == Path(".") and name in skip:
                continue
            out.append(str(rel / name))
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# custom images


def build_image(outdir, extra_entries=(), config=None, tag="latest", busybox="/bin/busybox",
                passwd=None):
    """An OCI image layout at outdir: mkdemo's layer 1 (busybox, /etc, mount points), with
    /etc/passwd replaced by `passwd` if given, plus one layer of extra_entries (mkdemo entry
    tuples: (path, "d"|"f"|"l", mode, payload, mtime)). `config` is the image config's
    "config" object (Entrypoint, Cmd, Env, WorkingDir, User...), used as is.
    Returns the manifest digest."""
    with open(busybox, "rb") as f:
        bb = f.read()
    outdir = Path(outdir)
    blobdir = outdir / "blobs" / "sha256"
    blobdir.mkdir(parents=True)

    def put(data):
        d = mkdemo.sha256(data)
        (blobdir / d.split(":", 1)[1]).write_bytes(data)
        return d

    l1 = mkdemo.layer1_entries(bb)
    if passwd is not None:
        l1 = [e if e[0] != "etc/passwd" else (e[0], e[1], e[2], passwd, e[4]) for e in l1]
    layer_entries = [l1] + ([list(extra_entries)] if extra_entries else [])
    layers, diff_ids = [], []
    for entries in layer_entries:
        tar = mkdemo.make_tar(entries)
        gz = mkdemo.gzip_bytes(tar)
        diff_ids.append(mkdemo.sha256(tar))
        layers.append({"mediaType": mkdemo.MT_LAYER_GZIP, "digest": put(gz), "size": len(gz)})
    arch = mkdemo.goarch()
    cfg = mkdemo.canon({"created": mkdemo.CREATED, "architecture": arch, "os": "linux",
                        "config": dict(config or {}),
                        "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    manifest = mkdemo.canon({"schemaVersion": 2, "mediaType": mkdemo.MT_MANIFEST,
                             "config": {"mediaType": mkdemo.MT_CONFIG, "digest": put(cfg),
                                        "size": len(cfg)},
                             "layers": layers})
    man_digest = put(manifest)
    index = {"schemaVersion": 2, "mediaType": mkdemo.MT_INDEX,
             "manifests": [{"mediaType": mkdemo.MT_MANIFEST, "digest": man_digest,
                            "size": len(manifest), "platform": {"architecture": arch, "os": "linux"},
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (outdir / "index.json").write_bytes(mkdemo.canon(index))
    (outdir / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    return man_digest


def push_image(addr, layout, repo, tag="latest"):
    """Pushes the layout; returns the reference ADDR/REPO:TAG."""
    return push.push_layout(addr, str(layout), repo, tag)["ref"]
