"""Shared helpers for lazyroot's integration tests (test_conformance, test_errors, test_verify,
test_offline). Builds on conftest.py; nothing here starts processes on its own.

  compare_with_oracle(root, layout, suffix="")   tree/hardlinks/mtimes differences, with the
                                                  documented oracle override applied
  lazyroot_mounts()                               {mount_id: entry} of every fuse.lazyroot mount
  new_lazyroot_mounts(before, ...)                those that appeared since `before`
  daemons_for(path)                               pids whose command line names path
  assert_no_daemon(path)                          ... and none of them left (short grace period)
  assert_one_line(result)                         stderr is exactly one non-empty line
  assert_clean_failure(result, rc, words, ...)    the usual checks for a failed command
  blob_files(cache)                               set of blob file names in cache/blobs
  sqlite(db, sql)                                 rows of a query (sqlite3 module, read-only)
  layout_layers(layout)                           layer descriptors of a fixture layout
"""

import json
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import conftest
import treewalk

# ---------------------------------------------------------------------------------------------
# the oracle, with its one documented error corrected

# ORACLE OVERRIDE. Every expected-mtimes.tsv of the single-arch fixtures says
# "/times/2300-01-01 -2147483648", but the tar header of that entry holds 10413792000 (year 2300,
# stored in a PAX "mtime" record; tests/fixtures/README.md, "The image", /times/). The oracle is
# what umoci unpack left on the generating machine's ext4 scratch dir, and that value is the
# 32-bit-clamped time ext4 (without large timestamps / 128-byte inodes) stored there, not the
# image's. A FUSE tree reports 64-bit st_mtime, so the right answer is the header's value.
# Only this line is overridden; every other line of every oracle file is compared exactly.
MTIME_OVERRIDES = {"/times/2300-01-01": ("-2147483648", "10413792000")}


def oracle_lines(layout, name, suffix=""):
    """The lines of layout/expected-NAME{suffix}.tsv, with MTIME_OVERRIDES applied to the mtimes
    file (each override applies only where the oracle has exactly the known wrong value)."""
    lines = treewalk.read_lines(os.path.join(str(layout), "expected-%s%s.tsv" % (name, suffix)))
    if name != "mtimes":
        return lines
    out = []
    for ln in lines:
        path, _, val = ln.partition("\t")
        if path in MTIME_OVERRIDES and val == MTIME_OVERRIDES[path][0]:
            ln = "%s\t%s" % (path, MTIME_OVERRIDES[path][1])
        out.append(ln)
    return out


def compare_with_oracle(root, layout, suffix="", max_lines=30, which=("tree", "hardlinks", "mtimes")):
    """Walk root and compare with the layout's oracle files (override applied). Returns a list
    of readable differences; empty means identical. Unreadable files are reported too."""
    errors = []
    entries = treewalk.walk(str(root), with_content="tree" in which, errors=errors)
    makers = {"tree": (treewalk.tree_lines, treewalk.TREE_COLUMNS),
              "hardlinks": (treewalk.hardlink_lines, None),
              "mtimes": (treewalk.mtime_lines, treewalk.MTIMES_HEADER.split("\t"))}
    out = ["read error: %s" % e for e in errors]
    for name in which:
        fn, cols = makers[name]
        out += treewalk.diff_lines(fn(entries), oracle_lines(layout, name, suffix),
                                   max_lines=max_lines, columns=cols,
                                   label="expected-%s%s.tsv" % (name, suffix))
    return out


# ---------------------------------------------------------------------------------------------
# mounts and daemons

def mountinfo_options(path):
    """(per-mount options, fstype, source, super options) of the topmost mount at path, or None."""
    p = os.path.realpath(str(path))
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a, b = left.split(), right.split()
            if conftest._unescape_mountinfo(a[4]) == p:
                found = (a[5].split(","), b[0], conftest._unescape_mountinfo(b[1]) if len(b) > 1 else "",
                         b[2].split(",") if len(b) > 2 else [])
    return found


def lazyroot_mounts():
    """{mount_id: mountinfo entry} of every fuse.lazyroot mount in this namespace."""
    return {m["mount_id"]: m for m in conftest.read_mountinfo() if m["fstype"] == "fuse.lazyroot"}


def new_lazyroot_mounts(before, related=()):
    """fuse.lazyroot mounts that were not in `before` (a lazyroot_mounts() snapshot). Other test
    sessions may share this machine, so with `related` given (strings: a test dir, a registry
    address, a reference) only mounts whose mountpoint or source contains one of them count."""
    now = lazyroot_mounts()
    new = [m for mid, m in now.items() if mid not in before]
    if related:
        rel = [str(r) for r in related if r]
        new = [m for m in new if any(r in m["mountpoint"] or r in m["source"] for r in rel)]
    return new


def daemons_for(path):
    """pids of processes whose command line contains path (pgrep -f, pattern escaped)."""
    r = subprocess.run(["pgrep", "-f", "--", re.escape(str(path))], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, timeout=10)
    own = os.getpid()
    return [int(x) for x in r.stdout.split() if int(x) != own]


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "?"


def assert_no_daemon(path, grace=3.0):
    """No process naming path may be left; a daemon gets `grace` seconds to finish exiting."""
    deadline = time.monotonic() + grace
    pids = daemons_for(path)
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = daemons_for(path)
    assert not pids, "processes left for %s: %s" % (
        path, "; ".join("%d: %s" % (p, _cmdline(p)) for p in pids))


# ---------------------------------------------------------------------------------------------
# failed commands

def stderr_lines(result):
    return [ln for ln in result.stderr.split("\n") if ln.strip()]


def assert_one_line(result):
    lines = stderr_lines(result)
    assert len(lines) == 1, "expected exactly one line on stderr, got %d:\n%s" % (len(lines), result)
    return lines[0]


def assert_clean_failure(result, rc, words, test_dir, before, related=(), mnt=None):
    """result failed with exit status rc (an int or a set of accepted ints), one stderr line
    containing every word of words (case-insensitive), nothing mounted under test_dir, no new
    fuse.lazyroot mount anywhere (related: see new_lazyroot_mounts), no daemon left for mnt."""
    assert not result.timed_out, str(result)
    ok = rc if isinstance(rc, (set, frozenset, tuple, list)) else {rc}
    assert result.returncode in ok, "expected exit status %s:\n%s" % (sorted(ok), result)
    line = assert_one_line(result)
    for w in words:
        assert w.lower() in line.lower(), "%r not in the error line %r" % (w, line)
    assert not conftest.mounts_under(test_dir), "left mounted: %s\n%s" % (
        conftest.mounts_under(test_dir), result)
    new = new_lazyroot_mounts(before, related=(str(test_dir),) + tuple(related))
    assert not new, "new fuse.lazyroot mounts: %s\n%s" % (new, result)
    if mnt is not None:
        assert_no_daemon(mnt)
    return line


# ---------------------------------------------------------------------------------------------
# the cache and the fixture layouts

def blob_files(cache):
    """Names (relative paths) of every file below cache/blobs."""
    root = Path(cache) / "blobs"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def tmp_files(cache):
    root = Path(cache) / "tmp"
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def sqlite(db, sql, args=()):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def layout_blob(layout, digest):
    return Path(layout) / "blobs" / "sha256" / digest.split(":", 1)[1]


def layout_layers(layout):
    """Layer descriptors (dicts, bottom first) of the single-manifest image in an OCI layout."""
    idx = json.loads((Path(layout) / "index.json").read_bytes())
    doc = json.loads(layout_blob(layout, idx["manifests"][0]["digest"]).read_bytes())
    assert "layers" in doc, "%s: not a single-manifest layout" % layout
    return doc["layers"]


def settled(get, timeout=30.0, interval=0.3):
    """get()'s answer once it stops changing (two answers `interval` apart agree): for
    `lazyroot stats` after a read, which returns as soon as its own chunks are in while what
    its request carries along (fetch-ahead, read-around) may still stream and be counted."""
    deadline = time.monotonic() + timeout
    v = get()
    while time.monotonic() < deadline:
        time.sleep(interval)
        v2 = get()
        if v2 == v:
            return v
        v = v2
    raise AssertionError("still changing after %gs: %s" % (timeout, v))
