"""Shared helpers for lazyroot's integration tests (test_conformance, test_errors, test_verify,
test_offline). Builds on conftest.py; nothing here starts processes on its own.

  compare_with_oracle(root, layout, suffix="")   tree/hardlinks/mtimes differences, with the
                                                  documented oracle override applied
  lazyroot_mounts()                               {mount_id: entry} of every fuse.lazyroot mount
  new_lazyroot_mounts(before, ...)                those that appeared since `before`
  daemons(path=, test_dir=)                       live lazyroot processes naming path / of test_dir
  wait_no_daemons(path=, test_dir=, timeout)      ... until there are none
  pid_exited(pid)                                 the process is gone (or a finished zombie)
  assert_no_daemon(path)                          none naming path left (short grace period)
  assert_one_line(result)                         stderr is exactly one non-empty line
  assert_clean_failure(result, rc, words, ...)    the usual checks for a failed command
  blob_files(cache)                               set of blob file names in cache/blobs
  sqlite(db, sql)                                 rows of a query (sqlite3 module, read-only)
  layout_layers(layout)                           layer descriptors of a fixture layout
  layer_contents(layout)                          {sha256: size} of its tar layers' file contents
  cache_problems(cache, trees) / assert_cache_consistent(...)
                                                  blobs, index rows and mounted trees checked
                                                  without lazyroot (its fsck judges itself)
"""

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import sqlite3
import subprocess
import tarfile
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


def proc_state(pid):
    """The state letter of /proc/PID/status, or None when there is no such process."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def pid_exited(pid):
    """True once the process has exited: /proc/PID is gone, or it is a zombie (the daemon's
    parent is PID 1 of this machine, which reaps when it pleases) whose threads have all
    exited too -- a thread group leader shows "Z" while its other threads are still exiting,
    and only the last one releases the open files (the /dev/fuse connection)."""
    st = proc_state(pid)
    if st is None:
        return True
    if st not in ("Z", "X"):
        return False
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return True
    return all(t == str(pid) for t in tasks)


def _proc_strings(pid, what):
    with open("/proc/%d/%s" % (pid, what), "rb") as f:
        return [x.decode("utf-8", "surrogateescape") for x in f.read().split(b"\0") if x]


def daemons(path=None, test_dir=None):
    """Live lazyroot processes (a mount's daemon, or a command still running) of this test:
    with `path`, those with path among their arguments (a mount's daemon keeps the argv of
    the `lazyroot mount` it was forked from); with `test_dir`, those whose environment names
    test_dir/run as LAZYROOT_RUNTIME_DIR (every process the `lazyroot` fixture starts
    inherits it). The one way the harness finds a mount's daemon."""
    # normpath, not realpath: no lstat, which a hung FUSE mount at path would not answer
    want_arg = os.path.normpath(str(path)) if path is not None else None
    want_env = "LAZYROOT_RUNTIME_DIR=%s/run" % test_dir if test_dir is not None else None
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() != "lazyroot":
                    continue
            args = _proc_strings(pid, "cmdline")
            env = _proc_strings(pid, "environ") if want_env else []
        except OSError:
            continue
        if want_arg is not None and want_arg not in (os.path.normpath(a) for a in args[1:]):
            continue
        if want_env is not None and want_env not in env:
            continue
        if not pid_exited(pid):
            found.append(pid)
    return sorted(found)


def wait_no_daemons(path=None, test_dir=None, timeout=15.0):
    """[] once daemons(path, test_dir) finds none, else those left after `timeout` seconds."""
    if conftest.wait_until(lambda: not daemons(path, test_dir), timeout):
        return []
    return daemons(path, test_dir)


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "?"


def assert_no_daemon(path, grace=3.0):
    """No lazyroot process naming path may be left; a daemon gets `grace` seconds to finish
    exiting."""
    pids = wait_no_daemons(path=path, timeout=grace)
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


def assert_nothing_recorded(lazyroot, cache_dir, layers=0):
    """A refused pull left no image and no tag in the index, no more than @layers layers (those
    of the image that were whole and verified before the refusal, which gc takes), no blob of
    a refused layer, no temporary: `images` lists nothing and `fsck` finds the cache clean."""
    db = Path(cache_dir) / "index.db"
    for table, most in (("images", 0), ("refs", 0), ("layers", layers)):
        n = sqlite(db, "SELECT COUNT(*) FROM " + table)[0][0] if db.exists() else 0
        assert n <= most, "%d rows in %s after a refused pull" % (n, table)
    if not layers:
        assert not blob_files(cache_dir), "blobs kept: %s" % blob_files(cache_dir)
    assert not tmp_files(cache_dir), "temporaries kept: %s" % tmp_files(cache_dir)
    r = lazyroot.run("images", "--json")
    assert r.ok and json.loads(r.stdout) == [], str(r)
    r = lazyroot.run("fsck")
    assert r.ok, str(r)


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
    its request carries along (fetch-ahead, read-around) may still stream and be counted.
    A stats answer with a request still on the wire (requests_running) is never settled:
    requests are counted when answered, so two answers can agree while a slow one streams."""
    last = [get()]

    def quiet(v):
        return not (isinstance(v, dict) and v.get("requests_running"))

    def same():
        time.sleep(interval)   # each answer `interval` after the one before
        v = get()
        agree, last[0] = v == last[0] and quiet(v), v
        return agree
    if not conftest.wait_until(same, timeout, 0):
        raise AssertionError("still changing after %gs: %s" % (timeout, last[0]))
    return last[0]


# ---------------------------------------------------------------------------------------------
# the cache judged without lazyroot: blob files, index rows, mounted trees

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_file(path):
    """The sha256 of a file's content, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def blob_problems(cache):
    """Every file below cache/blobs must be blobs/sha256/XX/NAME, NAME 64 lower-case hex
    starting with XX, its content hashing to NAME. Returns ({NAME}, [problems])."""
    root = Path(cache) / "blobs"
    names, bad = set(), []
    for p in sorted(root.rglob("*")) if root.exists() else ():
        if p.is_dir():
            continue
        rel = p.relative_to(root)
        if len(rel.parts) != 3 or rel.parts[0] != "sha256" or not HEX64.match(p.name) or \
                rel.parts[1] != p.name[:2] or not p.is_file():
            bad.append("unexpected file blobs/%s" % rel)
        elif sha256_file(p) != p.name:
            bad.append("blobs/%s does not hash to its name" % rel)
        else:
            names.add(p.name)
    return names, bad


def index_problems(cache, blobs):
    """The rows of cache/index.db (read-only, sqlite3 module) against the blob names `blobs`:
    every file content a tar layer's entry names is a blob (a lazy layer's entries and chunks
    may be missing: fetched when read), every seek index and start profile the index names is a
    blob, and every blob is named by some entry, chunk, seek index or start profile."""
    db = Path(cache) / "index.db"
    if not db.exists():
        return ["no index.db"] if blobs else []
    named = sqlite(db, "SELECT l.format, e.path, e.digest FROM entries e JOIN layers l"
                       " ON l.id = e.layer_id WHERE e.digest IS NOT NULL")
    chunks = sqlite(db, "SELECT digest FROM chunks WHERE digest IS NOT NULL")
    bad, referenced = [], set()
    for fmt, path, digest in named:
        hexd = digest.split(":", 1)[-1]
        referenced.add(hexd)
        if fmt == "tar" and hexd not in blobs:
            bad.append("entry %s of a tar layer names %s, which is not in the store" % (path, digest))
    referenced |= {d.split(":", 1)[-1] for (d,) in chunks}
    # blobs the cache keeps beside the trees: seek indexes (per layer), start profiles (per image)
    tables = {t for (t,) in sqlite(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, what in (("seek_indexes", "seek index"), ("start_profiles", "start profile")):
        if table not in tables:
            continue
        for (digest,) in sqlite(db, "SELECT digest FROM %s" % table):
            hexd = digest.split(":", 1)[-1]
            referenced.add(hexd)
            if hexd not in blobs:
                bad.append("%s %s is not in the store" % (what, digest))
    bad += ["blob %s: nothing in the index names it" % b for b in sorted(blobs - referenced)]
    return bad


def cache_problems(cache, trees=None):
    """What is wrong with a cache, found without lazyroot's own fsck: blob_problems,
    index_problems, and for each mountpoint of `trees` ({mountpoint: fixture layout}) the
    differences between the mounted tree and the layout's oracle (expected-tree.tsv, and the
    hard links and mtimes files)."""
    blobs, bad = blob_problems(cache)
    bad += index_problems(cache, blobs)
    for mnt, layout in (trees or {}).items():
        bad += ["%s: %s" % (mnt, d) for d in compare_with_oracle(mnt, layout)]
    return bad


def assert_cache_consistent(cache, trees=None, what=""):
    bad = cache_problems(cache, trees)
    assert not bad, "cache %s inconsistent %s:\n%s" % (cache, what, "\n".join(bad[:40]))


def layer_contents(layout):
    """{sha256 hex: size} of the contents of every regular file in the tar layers (gzip or
    uncompressed) of a single-manifest layout, read with Python's tarfile: what a cache that
    pulled the image holds as blobs, computed without lazyroot."""
    out = {}
    for layer in layout_layers(layout):
        with tarfile.open(layout_blob(layout, layer["digest"]), "r:*") as tar:
            for m in tar:
                if m.isreg():
                    data = tar.extractfile(m).read()
                    out[hashlib.sha256(data).hexdigest()] = len(data)
    return out


def index_then_forget_layers(lazyroot, ref, *extra):
    """Index the image, then forget its layers: the image and the seek indexes stay, as when a
    mount has the indexes of layers it never imported (an index found elsewhere).  (rm would
    take the indexes with the image, which was their layers' last user.)"""
    r = lazyroot.run("index", "--cache-dir", str(lazyroot.cache_dir), ref, *extra, timeout=120)
    assert r.ok, str(r)
    assert "gzip-index" in r.stdout, r.stdout
    db = str(lazyroot.cache_dir / "index.db")
    con = sqlite3.connect(db, timeout=10)
    with con:
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("DELETE FROM layers")
    con.close()
    r = lazyroot.run("gc", "--cache-dir", str(lazyroot.cache_dir))   # the layers' file blobs
    assert r.ok, str(r)
    assert sqlite(db, "SELECT count(*) FROM layers")[0][0] == 0
    assert sqlite(db, "SELECT count(*) FROM seek_indexes WHERE trusted = 1")[0][0] > 0


def untrust_seek_indexes(cache_dir):
    """Marks every seek index of the cache untrusted, as one fetched from a registry is kept."""
    con = sqlite3.connect(str(cache_dir / "index.db"), timeout=10)
    with con:
        con.execute("UPDATE seek_indexes SET trusted = 0")
    con.close()


def _addresses():
    out = subprocess.run(["ip", "-4", "-o", "addr"], stdout=subprocess.PIPE, text=True,
                         check=True).stdout
    return {ln.split()[3].split("/")[0] for ln in out.splitlines()}


@contextlib.contextmanager
def outside_address(network, link):
    """An address on this machine that is not loopback for lazyroot (not 127/8 nor ::1): the
    first free x.x.x.1 of @network, on a dummy link @link made for it (or on lo, when dummy
    links cannot be made), removed again at the end.  Needs root."""
    taken = _addresses()
    addr = next(str(a) for a in ipaddress.ip_network(network).hosts()
                if str(a).endswith(".1") and str(a) not in taken)
    made_link = subprocess.run(["ip", "link", "add", link, "type", "dummy"],
                               stderr=subprocess.DEVNULL).returncode == 0
    dev = link if made_link else "lo"
    try:
        subprocess.run(["ip", "addr", "add", addr + "/32", "dev", dev], check=True)
        if made_link:
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        yield addr
    finally:
        if made_link:
            subprocess.run(["ip", "link", "del", link], stderr=subprocess.DEVNULL)
        else:
            subprocess.run(["ip", "addr", "del", addr + "/32", "dev", "lo"],
                           stderr=subprocess.DEVNULL)


def module_registry(request):
    """A docker-registry for a test module (its `reg` fixture), stopped at the module's end."""
    import registry as registry_mod
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    r = registry_mod.Registry()
    request.addfinalizer(r.stop)
    return r.start()


def token_registry(request, tmp_path_factory, layout, repo, user, password, name):
    """A registry with token authentication (anyone pulls, @user pushes) holding @layout in
    @repo:edge, pushed before; returns (registry, token server), both stopped at the end."""
    import push
    import registry as registry_mod
    import tokenserver
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    storage = tmp_path_factory.mktemp(name + "-storage") / "storage"
    with registry_mod.Registry(storage=str(storage)) as r:
        push.push_layout(r.addr, str(layout), repo, "edge")
    ts = tokenserver.TokenServer(str(tmp_path_factory.mktemp(name + "-tokens")), anonymous=["*"],
                                 users={user: password}, pushers=[user])
    request.addfinalizer(ts.stop)
    ts.start()
    r = registry_mod.Registry(storage=str(storage), token_auth=ts.registry_auth())
    request.addfinalizer(r.stop)
    r.start()
    return r, ts
