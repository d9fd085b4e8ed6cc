"""Network faults between a lazy mount and its registry (issue 6, "Network faults").

A root filesystem that hangs, crashes or serves wrong bytes takes its container down with it.
The estargz and zstdchunked fixtures are pushed to a registry of this module and mounted
through tests/tools/proxy.py with --prefetch=none, so every first read of a file is a Range
request the proxy can break.  Faults are applied only to ranged blob GETs (the lazy reads;
the mount itself went through untouched).  For every fault:

  - a read either returns exactly the fixture's bytes (sha256 of expected-tree.tsv) or fails
    with EIO, within --timeout plus some slack; it never hangs and never returns wrong bytes;
  - nothing that failed verification is stored: every blob of the cache hashes to its name;
  - once the fault is gone, the same read succeeds on the same mount (no remount, no sticky
    failure), as do reads of a sample of other files (the whole tree is compared with the
    fixture's oracle, byte for byte, in the dead-registry test: one lazy request per file
    through the proxy would take minutes per test);
  - a reader blocked on a stalled fetch that gets a signal exits at once (FUSE interrupts),
    while another reader of the same bytes goes on waiting and then gets them;
  - with the registry dead, files already fetched read without a single request to it.
Nothing stays mounted after a test.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import conftest
import helpers
import push
import registry as registry_mod
import treewalk
from proxy import Fault, Proxy, first_answers

FIXTURES = ["estargz", "zstdchunked"]
REPO = "faults/%s"
TAG = "edge"
SHORT = 3          # --timeout of the tests that wait for it to pass
SLACK = 4.0        # seconds on top of a timeout: process start, FUSE, scheduling
LONG = 60          # --timeout of the tests that must not wait for it


# ---------------------------------------------------------------------------------------------
# the module's registry and the fixtures' expected contents


@pytest.fixture(scope="module")
def fault_registry():
    """A registry of this module with the lazy fixtures as faults/NAME:edge."""
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    reg = registry_mod.Registry()
    reg.start()
    try:
        for name in FIXTURES:
            push.push_layout(reg.addr, str(conftest.FIXTURES / name), REPO % name, TAG)
        yield reg
    finally:
        reg.stop()


def expected_files(name):
    """{"/path": (size, sha256 hex)} of the regular files of a fixture's oracle."""
    lines = treewalk.read_lines(str(conftest.FIXTURES / name / "expected-tree.tsv"))
    cols = lines[0].split("\t")
    out = {}
    for ln in lines[1:]:
        row = dict(zip(cols, ln.split("\t")))
        if row["type"] == "f":
            out[row["path"]] = (int(row["size"]), row["sha256"])
    return out


def victims(name, n=1):
    """The n largest regular files (each of several chunks, so every read is a lazy fetch)."""
    files = expected_files(name)
    return sorted(files, key=lambda p: (-files[p][0], p))[:n]


def is_lazy_read(req):
    return req["method"] == "GET" and "/blobs/" in req["path"] and bool(req["range"])


def bad_blobs(cache):
    """Blobs of the cache whose contents do not hash to their names."""
    bad = []
    for rel in sorted(helpers.blob_files(cache)):
        p = Path(cache) / "blobs" / rel
        if p.name.startswith(".") or "tmp" in p.parts:
            continue
        if hashlib.sha256(p.read_bytes()).hexdigest() != p.name:
            bad.append(rel)
    return bad


# ---------------------------------------------------------------------------------------------
# a mount behind a fault-injecting proxy


class Env:
    def __init__(self, lazyroot, proxy, name, mnt, cache):
        self.lazyroot, self.p, self.name, self.mnt, self.cache = lazyroot, proxy, name, mnt, cache
        self.files = expected_files(name)

    def mount(self, timeout, prefetch="none"):
        r = self.lazyroot.mount("%s/%s:%s" % (self.p.addr, REPO % self.name, TAG), None,
                                "--prefetch=" + prefetch, "--timeout=%d" % timeout, timeout=120)
        assert r.ok, "mount failed:\n%s" % r

    def wait_prefetched(self, timeout=120):
        def done():
            r = self.lazyroot.run("stats", "--json", str(self.mnt), timeout=30)
            assert r.ok, str(r)
            pf = json.loads(r.stdout)["prefetch"]
            return pf["total"] > 0 and pf["done"] == pf["total"] and not pf["running"]
        assert conftest.wait_until(done, timeout, 0.2), "prefetch not done after %ds" % timeout

    def fault_lazy(self, fault_for):
        """Apply fault_for(n) (n: 0, 1, ... per lazy read; None: pass) to lazy reads, and
        forget the requests recorded so far (the mount's own)."""
        self.p.reset()
        count = [0]
        lock = threading.Lock()

        def hook(req):
            if not is_lazy_read(req):
                return None
            with lock:
                n = count[0]
                count[0] += 1
            return fault_for(n)
        self.p.set_fault(hook)

    def clear(self):
        self.p.set_fault(None)
        self.p.release()

    def read(self, path):
        """(bytes or None, errno or None, seconds) of reading path from the mount."""
        t0 = time.monotonic()
        try:
            with open(str(self.mnt) + path, "rb") as f:
                data = f.read()
            return data, None, time.monotonic() - t0
        except OSError as e:
            return None, e.errno, time.monotonic() - t0

    def assert_right(self, path, data):
        size, sha = self.files[path]
        assert data is not None
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha, \
            "%s: wrong bytes (%d bytes, expected %d)" % (path, len(data), size)

    def read_ok(self, path):
        data, err, took = self.read(path)
        assert err is None, "%s: errno %s after %.1fs" % (path, err, took)
        self.assert_right(path, data)
        return took

    def read_eio(self, path, within):
        """The read fails with EIO (never returns bytes) within `within` seconds."""
        data, err, took = self.read(path)
        assert data is None, "%s: read returned %d bytes despite the fault" % (path, len(data))
        assert err == 5, "%s: errno %s, expected EIO" % (path, err)
        assert took < within, "%s: EIO only after %.1fs (limit %.1fs)" % (path, took, within)
        return took

    def faulted(self):
        return [r for r in self.p.requests if r["fault"] and r["range"]]

    def assert_alive_and_clean(self):
        """The mount still serves (its tree as the oracle has it, a sample of files with their
        right bytes once faults are gone) and the cache holds only blobs that hash to their
        names."""
        assert bad_blobs(self.cache) == []
        self.clear()
        diff = helpers.compare_with_oracle(self.mnt, conftest.FIXTURES / self.name,
                                           which=("hardlinks", "mtimes"))
        assert diff == [], "\n".join(diff)
        names = sorted(self.files)
        for path in victims(self.name, 3) + names[::len(names) // 12]:
            self.read_ok(path)
        assert bad_blobs(self.cache) == []


@pytest.fixture
def env(request, lazyroot, fault_registry, mountpoint, cache_dir, test_dir):
    name = request.param
    with Proxy(fault_registry.addr) as p:
        e = Env(lazyroot, p, name, mountpoint, cache_dir)
        try:
            yield e
        finally:
            # Stalled connections end first, so the daemon's fetches end and it can exit.
            p.set_fault(None)
            p.release()
            if p._server is None:
                p.up()
            if conftest.is_mounted(mountpoint):
                r = lazyroot.umount(timeout=60)
                assert r.ok, "umount failed:\n%s" % r
            assert not conftest.mounts_under(test_dir), conftest.mounts_under(test_dir)


lazy_envs = pytest.mark.parametrize("env", FIXTURES, indirect=True)


# ---------------------------------------------------------------------------------------------
# the proxy's new faults themselves


def test_proxy_stall_release_and_down_up(fault_registry):
    import http.client
    import socket

    with Proxy(fault_registry.addr) as p:
        p.set_fault(lambda req: Fault.stall() if req["path"] == "/v2/" else None)
        c = http.client.HTTPConnection(p.addr, timeout=0.5)
        c.request("GET", "/v2/")
        with pytest.raises(socket.timeout):
            c.getresponse()            # nothing comes while stalled
        p.release()
        time.sleep(0.2)
        c.close()
        p.set_fault(None)
        c = http.client.HTTPConnection(p.addr, timeout=5)
        c.request("GET", "/v2/")
        assert c.getresponse().status == 200
        c.close()
        port = p.port
        p.down()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        p.up()
        assert p.port == port
        c = http.client.HTTPConnection(p.addr, timeout=5)
        c.request("GET", "/v2/")
        assert c.getresponse().status == 200
        c.close()


# ---------------------------------------------------------------------------------------------
# broken transfers


@lazy_envs
def test_connection_closed_mid_body(env):
    """A connection closed in the middle of a body is retried: the read succeeds.  Closed every
    time: EIO within the timeout, then the same read succeeds once the registry behaves."""
    env.mount(timeout=10)
    first, second = victims(env.name, 2)
    env.fault_lazy(lambda n: Fault.truncate(1000) if n < 2 else None)
    env.read_ok(first)
    assert len(env.faulted()) >= 2, env.p.requests
    env.fault_lazy(lambda n: Fault.truncate(1000))
    env.read_eio(second, 10 + SLACK)
    env.clear()
    env.read_ok(second)
    env.assert_alive_and_clean()


@lazy_envs
def test_truncated_body(env):
    """A well-formed answer with only half the bytes asked for: EIO, nothing stored; fine
    after."""
    env.mount(timeout=10)
    path = victims(env.name)[0]
    before = helpers.blob_files(env.cache)
    env.fault_lazy(lambda n: Fault.corrupt(lambda b: b[:len(b) // 2]))
    env.read_eio(path, 10 + SLACK)
    assert helpers.blob_files(env.cache) == before, "blobs stored from a short answer"
    env.clear()
    env.read_ok(path)
    env.assert_alive_and_clean()


def _flip(b):
    if not b:
        return b
    i = len(b) // 2
    return b[:i] + bytes([b[i] ^ 0x55]) + b[i + 1:]


def _flip_end(b):
    """A byte near the end flipped: in the TOC or the eStargz footer, also when the read is a
    tail of the blob (footer and TOC in one request) whose middle is file data."""
    if not b:
        return b
    i = max(0, len(b) - 30)
    return b[:i] + bytes([b[i] ^ 0x55]) + b[i + 1:]


@lazy_envs
def test_flipped_bytes_are_never_served_or_cached(env):
    """Bytes that fail verification: EIO every time, no blob stored for them, every blob of the
    cache hashes to its name; the right bytes once the registry serves them."""
    env.mount(timeout=10)
    path = victims(env.name)[0]
    env.fault_lazy(lambda n: Fault.corrupt(_flip))
    for _ in range(2):
        env.read_eio(path, 10 + SLACK)
    assert env.faulted(), "no request was corrupted"
    assert bad_blobs(env.cache) == []
    env.clear()
    env.read_ok(path)
    env.assert_alive_and_clean()


# ---------------------------------------------------------------------------------------------
# slow and busy registries


@pytest.mark.parametrize("where", ["headers", "body"])
@lazy_envs
def test_stall_longer_than_timeout(env, where):
    """A registry that holds the connection open and sends nothing (before the headers, or in
    the middle of the body): EIO after about --timeout, the mount stays alive, and the same
    read succeeds later."""
    env.mount(timeout=SHORT)
    path = victims(env.name)[0]
    stall = Fault.stall() if where == "headers" else Fault.stall(after=4096)
    env.fault_lazy(lambda n: stall)
    took = env.read_eio(path, SHORT + SLACK)
    assert took >= SHORT - 1, "EIO after %.1fs: the stall was not waited for" % took
    assert env.faulted()
    env.clear()
    env.read_ok(path)
    env.assert_alive_and_clean()


@lazy_envs
def test_server_errors_then_ok(env):
    """500, then 503, then the bytes: the read succeeds (retried inside the timeout)."""
    env.mount(timeout=20)
    path = victims(env.name)[0]
    env.fault_lazy(lambda n: Fault.status([500, 503][n]) if n < 2 else None)
    env.read_ok(path)
    statuses = [r["status"] for r in env.p.requests if r["range"]]
    assert statuses[:2] == [500, 503], statuses
    env.assert_alive_and_clean()


@lazy_envs
def test_429_with_retry_after(env):
    """429 with Retry-After: 2: the read waits that long, then succeeds."""
    env.mount(timeout=20)
    path = victims(env.name)[0]
    env.fault_lazy(lambda n: Fault.status(429, {"Retry-After": "2"}) if n == 0 else None)
    took = env.read_ok(path)
    ranged = [r for r in env.p.requests if r["range"]]
    assert ranged[0]["status"] == 429, ranged
    assert ranged[1]["time"] - ranged[0]["time"] >= 1.9, "Retry-After was not honoured"
    assert took >= 1.9, took
    env.assert_alive_and_clean()


# ---------------------------------------------------------------------------------------------
# a registry that goes away


@lazy_envs
def test_registry_down_then_back(env):
    """Connections refused: EIO within the timeout; back up: the same read on the same mount
    succeeds (no failure is remembered)."""
    env.mount(timeout=SHORT)
    path = victims(env.name)[0]
    env.p.down()
    for _ in range(2):
        env.read_eio(path, SHORT + SLACK)
    env.p.up()
    env.read_ok(path)
    env.assert_alive_and_clean()


@lazy_envs
def test_dead_registry_does_not_slow_cached_reads(env):
    """Every file fetched (--prefetch=all) and the whole tree compared with the oracle, byte for
    byte; registry dead (every request is held unanswered); every file read again from the
    cache (page cache dropped first, so each read reaches lazyroot): right bytes, and not one
    request to the registry -- counted, not timed: a loaded machine reads slowly too."""
    env.mount(timeout=LONG, prefetch="all")
    env.wait_prefetched()
    diff = helpers.compare_with_oracle(env.mnt, conftest.FIXTURES / env.name)
    assert diff == [], "\n".join(diff)
    env.p.set_fault(lambda req: Fault.stall())
    env.p.reset()
    for path in sorted(env.files):
        fd = os.open(str(env.mnt) + path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            chunks = []
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(fd)
        env.assert_right(path, b"".join(chunks))
        assert env.p.requests == [], "reading the cached %s asked the registry: %s" % (
            path, env.p.requests)
    env.assert_alive_and_clean()


# ---------------------------------------------------------------------------------------------
# interrupts

# A read that blocks in the kernel on the FUSE request itself (a page fault of a mapping with
# no readahead), so only the filesystem's answer can end it; `cat` waits on the page lock of
# an asynchronous readahead instead, which a fatal signal ends without asking the filesystem.
FAULT_READER = """
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
m.madvise(mmap.MADV_RANDOM)
sys.stdout.write("%d\\n" % m[int(sys.argv[2])])
"""


def _wait_stalled(env, n, timeout=10):
    assert conftest.wait_until(lambda: len(env.faulted()) >= n, timeout), \
        "no stalled lazy read after %ds: %s" % (timeout, env.p.requests)


def _default_sigint():
    # A shell without job control starts background jobs with SIGINT ignored, and an ignored
    # disposition survives exec: a suite run from such a job (as CI may) would hand `cat` an
    # ignored SIGINT, and Ctrl-C would rightly do nothing to it.  Give it a terminal's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _exits_within(proc, seconds):
    t0 = time.monotonic()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the interrupted reader did not exit within %.0fs" % seconds)
    return time.monotonic() - t0


@lazy_envs
def test_interrupted_readers_exit_and_others_still_get_the_bytes(env):
    """Readers blocked on a stalled fetch (timeout far away): a page-faulting reader killed
    with SIGTERM and a `cat` killed with SIGINT (Ctrl-C) exit at once; a third reader of the
    same bytes keeps waiting and gets them once the registry answers; the mount works on."""
    env.mount(timeout=LONG)
    path = victims(env.name)[0]
    env.fault_lazy(lambda n: Fault.stall())
    target = str(env.mnt) + path
    faulter = subprocess.Popen([sys.executable, "-c", FAULT_READER, target, "100000"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _wait_stalled(env, 1)
    result = {}

    def patient():
        result["read"] = env.read(path)

    waiter = threading.Thread(target=patient)
    waiter.start()
    cat = subprocess.Popen(["cat", target], stdout=subprocess.DEVNULL,
                           preexec_fn=_default_sigint)
    time.sleep(1.0)
    assert faulter.poll() is None and cat.poll() is None, "the stall did not block the readers"

    faulter.send_signal(signal.SIGTERM)
    took = _exits_within(faulter, 3)
    assert faulter.returncode == -signal.SIGTERM, faulter.returncode
    cat.send_signal(signal.SIGINT)
    took = max(took, _exits_within(cat, 3))
    assert cat.returncode == -signal.SIGINT, cat.returncode
    assert took < 3

    time.sleep(0.5)
    assert waiter.is_alive(), "the other reader was disturbed: %r" % (result.get("read"),)
    env.clear()
    waiter.join(LONG + SLACK)
    assert not waiter.is_alive(), "the other reader never got its bytes"
    data, err, _ = result["read"]
    assert err is None, "the other reader failed with errno %s" % err
    env.assert_right(path, data)
    env.assert_alive_and_clean()


@lazy_envs
def test_umount_does_not_wait_for_abandoned_fetches(env):
    """A fetch whose reader was killed keeps running for the other readers it may get; once
    the mount is gone nobody can want it: `lazyroot umount` cancels it and the daemon exits
    at once, not after the read timeout (60 s here) or umount's own 10 s grace."""
    env.mount(timeout=LONG)
    path = victims(env.name)[0]
    env.fault_lazy(lambda n: Fault.stall())
    faulter = subprocess.Popen([sys.executable, "-c", FAULT_READER, str(env.mnt) + path, "100000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_stalled(env, 1)
    faulter.send_signal(signal.SIGTERM)
    _exits_within(faulter, 3)
    time.sleep(0.5)
    assert len(env.faulted()) >= 1

    t0 = time.monotonic()
    r = env.lazyroot.umount(timeout=60)
    took = time.monotonic() - t0
    assert r.ok, "umount failed:\n%s" % r
    assert took < 5, "umount took %.1fs: the daemon waited for the abandoned fetch" % took
    assert not conftest.is_mounted(env.mnt)
    assert bad_blobs(env.cache) == []


# ---------------------------------------------------------------------------------------------
# a black hole: connections accepted, requests read, nothing ever answered

BLACK_HOLE_TIMEOUT = 8


def _black_hole_read(env, timeout):
    """A file read once (so the daemon holds kept-alive connections), then the registry turns
    into a black hole: an uncached read gets EIO after about one --timeout, not two (the kernel
    retries the page of a failed read-ahead at once); back: the same read succeeds at once, on
    the same mount."""
    first, second = victims(env.name, 2)
    env.read_ok(first)
    assert env.p.requests, "the first read asked nothing"
    env.p.reset()
    env.p.black_hole = True
    took = env.read_eio(second, timeout + SLACK)
    assert took >= timeout - 1, "EIO after %.1fs: the black hole was not waited for" % took
    assert any(r["fault"] == "black hole" for r in env.p.requests), env.p.requests
    print("black hole, --timeout %d: EIO after %.1fs" % (timeout, took))
    env.p.black_hole = False
    env.read_ok(second)
    env.assert_alive_and_clean()
    return took


@pytest.mark.parametrize("env", ["estargz"], indirect=True)
def test_black_hole_eio_within_one_timeout(env):
    env.mount(timeout=BLACK_HOLE_TIMEOUT)
    _black_hole_read(env, BLACK_HOLE_TIMEOUT)


@pytest.mark.parametrize("env", ["estargz"], indirect=True)
def test_black_hole_one_page_file(env):
    """A file of one page: its read-ahead is that page, and the kernel asks for it again,
    whole, inside the same read(2) after the EIO. That retry fails at once as well (the
    thread has finished no read call since: /proc/TID/task/TID/io), so the read fails after
    one --timeout, not two; back: the same read succeeds at once."""
    files = expected_files(env.name)
    small = sorted(p for p in files if 0 < files[p][0] <= 4096)[0]
    env.mount(timeout=BLACK_HOLE_TIMEOUT)
    env.p.black_hole = True
    took = env.read_eio(small, BLACK_HOLE_TIMEOUT + SLACK)
    assert took >= BLACK_HOLE_TIMEOUT - 1, "EIO after %.1fs: no black hole waited for" % took
    env.p.black_hole = False
    env.read_ok(small)
    env.assert_alive_and_clean()


@pytest.mark.parametrize("env", ["zstdchunked"], indirect=True)
def test_black_hole_default_timeout(env):
    """The same with the default --timeout of 30 s (the one test here that waits that long:
    about 35 s)."""
    r = env.lazyroot.mount("%s/%s:%s" % (env.p.addr, REPO % env.name, TAG), None,
                           "--prefetch=none", timeout=120)
    assert r.ok, "mount failed:\n%s" % r
    _black_hole_read(env, 30)


# ---------------------------------------------------------------------------------------------
# transient corruption: wrong or short (but well-framed) bytes are fetched again

WHOLE = "oci-gzip"      # a whole-layer image: its config and layers are whole blob GETs
WRONG = {"short": lambda: Fault.short(0.5), "flip": lambda: Fault.corrupt(_flip)}


def _blob_gets(p):
    """{digest: number of GETs} of the whole blobs (no Range) the proxy saw."""
    out = {}
    for r in p.blob_requests():
        if not r["range"]:
            d = r["path"].split("?")[0].rsplit("/", 1)[-1]
            out[d] = out.get(d, 0) + 1
    return out


@pytest.mark.parametrize("kind", sorted(WRONG))
def test_whole_blobs_wrong_twice_are_fetched_again(lazyroot, registry, kind):
    """Config and layers answered wrong twice each (a proxy's accident): each is fetched a
    third time and the mount succeeds, with the right tree and only right blobs."""
    with Proxy(registry.addr) as p:
        p.set_fault(first_answers(2, lambda req: WRONG[kind](), lambda req: not req["range"]))
        r = lazyroot.mount("%s/fixtures/%s:edge" % (p.addr, WHOLE), None, "--verbose")
        assert r.ok, "mount failed:\n%s" % r
        try:
            diff = helpers.compare_with_oracle(lazyroot.mountpoint, conftest.FIXTURES / WHOLE)
            assert diff == [], "\n".join(diff)
        finally:
            assert lazyroot.umount().ok
        gets = _blob_gets(p)
    assert gets and all(n == 3 for n in gets.values()), gets
    assert bad_blobs(lazyroot.cache_dir) == []


def test_whole_blobs_always_wrong_fail_and_keep_nothing(lazyroot, registry):
    """Wrong every time: the mount fails after three tries of the first blob, saying it did
    not match its digest, and nothing is cached or mounted."""
    with Proxy(registry.addr) as p:
        p.set_fault(lambda req: Fault.short(0.5)
                    if req["method"] == "GET" and "/blobs/" in req["path"] else None)
        r = lazyroot.mount("%s/fixtures/%s:edge" % (p.addr, WHOLE))
        gets = _blob_gets(p)
    assert not r.ok and r.returncode == 3, str(r)
    assert "does not match its digest" in r.stderr, r.stderr
    assert list(gets.values()) == [3], gets
    assert helpers.blob_files(lazyroot.cache_dir) == set()
    assert not conftest.is_mounted(lazyroot.mountpoint)


@pytest.mark.parametrize("kind", sorted(WRONG))
@lazy_envs
def test_wrong_toc_reads_twice_are_fetched_again(env, kind):
    """The mount's own Range reads (the footer and TOC of the lazy layer) answered wrong twice
    each: they are fetched again like blobs and chunks, the mount succeeds and its tree is the
    fixture's."""
    env.fault_lazy(lambda n: None)
    env.p.set_fault(first_answers(2, lambda req: WRONG[kind](), lambda req: req["range"]))
    env.mount(timeout=10)
    assert len(env.faulted()) >= 2, env.p.requests
    env.assert_alive_and_clean()


@lazy_envs
def test_wrong_toc_reads_every_time_fail_the_mount(env):
    """A TOC read wrong every time: the mount fails after a bounded number of tries, at the
    registry (exit status 3), and no layer is indexed, no image recorded."""
    env.p.set_fault(lambda req: Fault.corrupt(_flip_end) if is_lazy_read(req) else None)
    r = env.lazyroot.mount("%s/%s:%s" % (env.p.addr, REPO % env.name, TAG), None,
                           "--prefetch=none", timeout=120)
    assert r.returncode == 3, str(r)
    print(helpers.assert_one_line(r))
    assert 3 <= len(env.faulted()) <= 12, env.p.requests
    helpers.assert_nothing_recorded(env.lazyroot, env.cache)
    assert not conftest.is_mounted(env.mnt)


@pytest.mark.parametrize("kind", sorted(WRONG))
@lazy_envs
def test_wrong_chunks_twice_are_fetched_again(env, kind):
    """The first two answers of lazy reads wrong (flipped, or short with a Content-Length that
    says so): the chunks are fetched again and the read gets the right bytes; the stats count
    the chunks fetched again."""
    env.mount(timeout=10)
    path = victims(env.name)[0]
    env.fault_lazy(lambda n: WRONG[kind]() if n < 2 else None)
    env.read_ok(path)
    assert len(env.faulted()) == 2, env.p.requests
    r = env.lazyroot.run("stats", "--json", str(env.mnt), timeout=30)
    assert r.ok, str(r)
    st = json.loads(r.stdout)
    assert st["chunks_refetched"] >= 1 and st["chunks_failed"] == 0, st
    env.assert_alive_and_clean()


@lazy_envs
def test_wrong_chunks_every_time_are_tried_a_bounded_number_of_times(env):
    """Wrong every time: EIO after three tries (not one, not until the timeout), nothing
    stored; fine once the registry serves the right bytes."""
    env.mount(timeout=LONG)
    path = victims(env.name)[0]
    before = helpers.blob_files(env.cache)
    env.fault_lazy(lambda n: Fault.corrupt(_flip))
    env.read_eio(path, 20)
    assert 3 <= len(env.faulted()) <= 12, env.p.requests
    assert helpers.blob_files(env.cache) == before, "blobs stored from wrong bytes"
    env.clear()
    env.read_ok(path)
    env.assert_alive_and_clean()
