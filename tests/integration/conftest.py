"""pytest fixtures for lazyroot's integration tests. Only real components: Debian's
docker-registry on 127.0.0.1, the fixture layouts pushed byte for byte, the real lazyroot binary,
/dev/fuse, overlayfs and systemd-nspawn.

Session fixtures
  repo_root       Path of the repository
  fixtures_dir    Path of tests/fixtures
  registry        a RegistryInfo: ONE docker-registry for the whole session with every layout of
                  tests/fixtures pushed as fixtures/<dirname>:edge and the demo image (mkdemo.py)
                  as demo:latest.  .addr "127.0.0.1:PORT", .url, .ref("oci-gzip") ->
                  "127.0.0.1:PORT/fixtures/oci-gzip:edge", .ref("demo") -> "…/demo:latest",
                  .digest(name), .layout(name) (layout dir, demo included: it has expected-*.tsv
                  too), .pushed (name -> push_layout() result), .log() (registry log tail)
  lazyroot_bin    path of the lazyroot binary ($LAZYROOT, default build/cli/lazyroot); skips when
                  missing or when tests/run reported a failed build (LAZYROOT_BUILD_FAILED=1)
  fuse_available  skips unless root and /dev/fuse exists

Per-test fixtures
  test_dir        a fresh temporary dir; at teardown anything still mounted below it is unmounted
                  (umount -l, deepest / most recent first; FUSE connections aborted) and any process
                  started with lazyroot.spawn() is killed. Leftover mounts are reported as a warning.
  cache_dir       test_dir/cache (created)
  mountpoint      test_dir/mnt (created, empty)
  lazyroot        a Lazyroot runner bound to the binary and cache_dir (requires fuse_available):
                    .run(*args, timeout=60, input=None, env=None) -> Result
                    .mount(ref, mnt=None, *extra, timeout=120) -> Result   (adds --cache-dir)
                    .umount(mnt=None, timeout=60) -> Result
                    .spawn(*args) -> Popen (own session, killed at teardown)
                  Result: .returncode .stdout .stderr .timed_out .duration .args, .ok,
                  str(result) = command + rc + output (for assertion messages), .check()

Helpers (import from conftest): need_tool(tool, package), wait_until(get, timeout), mounts_under(path), is_mounted(path),
wait_mounted(path, timeout), unmount_all_under(path), run_cmd(argv, timeout, ...), FIXTURE_NAMES.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / "tests" / "tools"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
sys.path.insert(0, str(TOOLS))

import mkdemo  # noqa: E402
import push  # noqa: E402
import registry as registry_mod  # noqa: E402
import sanitizer_reports  # noqa: E402
import suite_shape  # noqa: E402

FIXTURE_NAMES = ["oci-gzip", "docker-v2s2-gzip", "oci-zstd", "oci-uncompressed", "estargz",
                 "zstdchunked", "zstdchunked-skopeo", "multiarch"]
FIXTURE_TAG = "edge"
DEMO_REPO, DEMO_TAG = "demo", "latest"


# ---------------------------------------------------------------------------------------------
# running commands

class Result:
    def __init__(self, args, returncode, stdout, stderr, duration, timed_out):
        self.args = [str(a) for a in args]
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.duration = duration
        self.timed_out = timed_out

    @property
    def ok(self):
        return self.returncode == 0 and not self.timed_out

    def __str__(self):
        status = "TIMED OUT after %.1fs" % self.duration if self.timed_out else "rc=%s" % self.returncode
        return "$ %s\n%s (%.2fs)\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            " ".join(self.args), status, self.duration, self.stdout[-4000:], self.stderr[-4000:])

    __repr__ = __str__

    def check(self):
        if not self.ok:
            raise AssertionError("command failed:\n%s" % self)
        return self


def run_cmd(argv, timeout=60, input=None, env=None, cwd=None):
    """Run argv in its own session with a timeout; stdout/stderr go through temp files (not
    pipes), so a daemonized child that keeps them open cannot make us wait. On timeout the
    whole process group is SIGKILLed. Returns a Result."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err,
                             stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             env=env, cwd=cwd, start_new_session=True)
        timed_out = False
        try:
            if input is not None:
                p.communicate(input.encode() if isinstance(input, str) else input, timeout=timeout)
            else:
                p.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        dur = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        return Result(argv, p.returncode, out.read().decode("utf-8", "replace"),
                      err.read().decode("utf-8", "replace"), dur, timed_out)


# ---------------------------------------------------------------------------------------------
# tools the tests need

PACKAGES_TXT = TOOLS / "packages.txt"


def promised_packages():
    """The Debian packages tests/tools/packages.txt lists (what CI and tests/run install)."""
    return {ln.split("#", 1)[0].strip() for ln in PACKAGES_TXT.read_text().splitlines()} - {""}


def need_tool(tool, package):
    """The path of `tool` (a command name or an absolute path). When it is missing the test
    is skipped -- unless packages.txt lists `package`: the set-up promised the tool, so its
    absence is a broken set-up and the test fails rather than quietly not running."""
    found = shutil.which(str(tool))
    if found:
        return found
    if package in promised_packages():
        pytest.fail("%s missing although tests/tools/packages.txt lists %s (apt-get install %s)"
                    % (tool, package, package), pytrace=False)
    pytest.skip("%s missing (apt-get install %s)" % (tool, package))


# ---------------------------------------------------------------------------------------------
# polling


def wait_until(get, timeout, interval=0.05):
    """Calls get() every `interval` seconds until it returns something true, and returns that;
    after `timeout` seconds returns what the last call returned (false). The one polling loop
    of the harness: every "wait until ..." is this with its own get()."""
    deadline = time.monotonic() + timeout
    while True:
        v = get()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# mounts

def _unescape_mountinfo(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def read_mountinfo():
    """List of dicts (mount_id, dev, mountpoint, fstype, source) in /proc/self/mountinfo order."""
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a, b = left.split(), right.split()
            res.append({"mount_id": int(a[0]), "dev": a[2], "mountpoint": _unescape_mountinfo(a[4]),
                        "fstype": b[0] if b else "", "source": _unescape_mountinfo(b[1]) if len(b) > 1 else ""})
    return res


def mounts_under(path):
    """Mount entries at or below path (most recently mounted last)."""
    p = os.path.realpath(str(path)).rstrip("/") or "/"
    return [m for m in read_mountinfo()
            if m["mountpoint"] == p or m["mountpoint"].startswith(p + "/")]


def is_mounted(path):
    p = os.path.realpath(str(path))
    return any(m["mountpoint"] == p for m in read_mountinfo())


def wait_mounted(path, timeout=30, fstype_prefix=None):
    """Wait until something is mounted on path (optionally with fstype starting with prefix);
    its mountinfo entry, or None."""
    p = os.path.realpath(str(path))

    def entry():
        return next((m for m in read_mountinfo() if m["mountpoint"] == p and
                     (fstype_prefix is None or m["fstype"].startswith(fstype_prefix))), None)
    return wait_until(entry, timeout)


def _abort_fuse(dev):
    """Abort the FUSE connection of a mount (dev "0:NN") if fusectl is available."""
    try:
        minor = dev.split(":")[1]
        with open("/sys/fs/fuse/connections/%s/abort" % minor, "w") as f:
            f.write("1")
    except (OSError, IndexError):
        pass


def unmount_all_under(path):
    """Unmount (lazily) everything mounted at or below path, most recent first. Returns the list
    of mountpoints that were still mounted."""
    leftovers = []
    for _ in range(20):  # stacked mounts on one path need several rounds
        ms = mounts_under(path)
        if not ms:
            break
        for m in reversed(ms):
            leftovers.append("%s (%s %s)" % (m["mountpoint"], m["fstype"], m["source"]))
            if m["fstype"].startswith("fuse"):
                _abort_fuse(m["dev"])
            subprocess.run(["umount", "-l", m["mountpoint"]], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
    return leftovers


# ---------------------------------------------------------------------------------------------
# session fixtures

class RegistryInfo:
    def __init__(self, reg):
        self._reg = reg
        self.addr = reg.addr
        self.url = reg.url
        self.pushed = {}      # name -> push_layout() result
        self.layouts = {}     # name -> layout dir

    def ref(self, name, digest=False):
        """Image reference of a pushed image: "ADDR/fixtures/NAME:edge" or "ADDR/demo:latest";
        digest=True gives "ADDR/REPO@sha256:…"."""
        r = self.pushed[name]
        if digest:
            return "%s/%s@%s" % (self.addr, r["repo"], r["digest"])
        return r["ref"]

    def digest(self, name):
        return self.pushed[name]["digest"]

    def layout(self, name):
        return self.layouts[name]

    def log(self):
        return self._reg.log()


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    reg = registry_mod.Registry()
    reg.start()
    try:
        info = RegistryInfo(reg)
        for name in FIXTURE_NAMES:
            layout = FIXTURES / name
            info.pushed[name] = push.push_layout(reg.addr, str(layout), "fixtures/" + name, FIXTURE_TAG)
            info.layouts[name] = layout
        demo = tmp_path_factory.mktemp("demo-image") / "layout"
        mkdemo.build_demo(str(demo), tag=DEMO_TAG)
        info.pushed["demo"] = push.push_layout(reg.addr, str(demo), DEMO_REPO, DEMO_TAG)
        info.layouts["demo"] = demo
        yield info
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def lazyroot_bin():
    if os.environ.get("LAZYROOT_BUILD_FAILED") == "1":
        pytest.skip("the build failed (see tests/run output); not testing a stale lazyroot binary")
    p = Path(os.environ.get("LAZYROOT") or REPO_ROOT / "build" / "cli" / "lazyroot")
    if not p.is_absolute():
        p = REPO_ROOT / p
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.skip("lazyroot binary not found at %s (build it: ninja -C build; or set LAZYROOT=)" % p)
    return p


@pytest.fixture(scope="session")
def fuse_available():
    if os.geteuid() != 0:
        pytest.skip("needs root (FUSE mounts with allow_other, overlayfs, systemd-nspawn)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing (modprobe fuse / run the container with --device /dev/fuse)")
    return True


# ---------------------------------------------------------------------------------------------
# per-test fixtures

@pytest.fixture(autouse=True)
def _sanitizer_reports():
    """SANITIZE=1 runs: fail the test whose lazyroot processes wrote a sanitizer report.
    Autouse, so it is set up first and torn down last: after test_dir's unmounts."""
    binary = Path(os.environ.get("LAZYROOT") or REPO_ROOT / "build" / "cli" / "lazyroot")
    before = sanitizer_reports.live_lazyroot(binary.resolve()) \
        if sanitizer_reports.log_dir() is not None else set()
    yield
    if sanitizer_reports.log_dir() is None:
        return
    sanitizer_reports.wait_lazyroot_exit(binary.resolve(), before=before)
    found = sanitizer_reports.take_new()
    if found:
        pytest.fail("sanitizer report(s):\n" + "\n".join("--- %s ---\n%s" % (name, text[-6000:])
                                                          for name, text in found), pytrace=False)


@pytest.fixture
def _spawned():
    procs = []
    yield procs
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


@pytest.fixture
def test_dir(_spawned):
    d = Path(tempfile.mkdtemp(prefix="lazyroot-test-"))
    yield d
    # processes first (a foreground FUSE server keeps its mount alive), then mounts
    for p in _spawned:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    left = unmount_all_under(d)
    if left:
        warnings.warn("test left mounts behind (now unmounted): %s" % ", ".join(left))
    if not mounts_under(d):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cache_dir(test_dir):
    p = test_dir / "cache"
    p.mkdir()
    return p


@pytest.fixture
def mountpoint(test_dir):
    p = test_dir / "mnt"
    p.mkdir()
    return p


class Lazyroot:
    def __init__(self, binary, cache_dir, mountpoint, test_dir, spawned):
        self.binary = Path(binary)
        self.cache_dir = Path(cache_dir)
        self.mountpoint = Path(mountpoint)
        self.test_dir = Path(test_dir)
        self._spawned = spawned
        self.env = dict(os.environ)
        self.env.update({"LAZYROOT_CACHE_DIR": str(cache_dir),
                         "XDG_CACHE_HOME": str(self.test_dir / "xdg-cache"),
                         # mount state, FUSE lowers and `run` mountpoints stay under test_dir,
                         # where the teardown finds and unmounts whatever a test left
                         "LAZYROOT_RUNTIME_DIR": str(self.test_dir / "run"),
                         "LC_ALL": "C.UTF-8"})

    def _env(self, env):
        e = dict(self.env)
        if env:
            e.update(env)
        return e

    def run(self, *args, timeout=60, input=None, env=None, cwd=None):
        return run_cmd([self.binary, *args], timeout=timeout, input=input, env=self._env(env),
                       cwd=cwd)

    def mount(self, ref, mnt=None, *extra, timeout=120, env=None):
        mnt = self.mountpoint if mnt is None else mnt
        return self.run("mount", ref, str(mnt), "--cache-dir", str(self.cache_dir), *extra,
                        timeout=timeout, env=env)

    def umount(self, mnt=None, timeout=60, env=None):
        mnt = self.mountpoint if mnt is None else mnt
        return self.run("umount", str(mnt), timeout=timeout, env=env)

    def spawn(self, *args, env=None, stdout=None, stderr=None):
        """Start lazyroot in the background (own session); killed at teardown. stdout/stderr
        default to files test_dir/spawn-N.out / .err."""
        n = len(self._spawned)
        out = stdout or open(self.test_dir / ("spawn-%d.out" % n), "wb")
        err = stderr or open(self.test_dir / ("spawn-%d.err" % n), "wb")
        try:
            p = subprocess.Popen([str(self.binary), *map(str, args)], stdout=out, stderr=err,
                                 stdin=subprocess.DEVNULL, env=self._env(env),
                                 start_new_session=True)
        finally:
            if stdout is None:
                out.close()
            if stderr is None:
                err.close()
        self._spawned.append(p)
        return p


@pytest.fixture
def lazyroot(lazyroot_bin, fuse_available, cache_dir, mountpoint, test_dir, _spawned):
    return Lazyroot(lazyroot_bin, cache_dir, mountpoint, test_dir, _spawned)


# ---------------------------------------------------------------------------------------------
# the suite's shape: CI's sanitizer subset and per-test times (suite_shape.py)

def pytest_collection_modifyitems(config, items):
    suite_shape.deselect_for_sanitizers(config, items)


def pytest_runtest_logreport(report):
    suite_shape.record_time(report)
