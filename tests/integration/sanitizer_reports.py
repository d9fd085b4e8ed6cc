"""Sanitizer reports of a SANITIZE=1 run, charged to the test that caused them.

tests/run (SANITIZE=1) points ASAN_OPTIONS/UBSAN_OPTIONS log_path at $LAZYROOT_SANITIZER_LOGS,
so every lazyroot process -- the CLI and the forked FUSE daemon, whose stderr nobody reads --
writes its report to a file asan.PID / ubsan.PID there. After each test (and after its mounts
are gone, so that a daemon's exit-time leak report is written) the fixture in conftest.py calls
take_new() and fails the test with what it finds; the files move to reported/ so that tests/run
counts only what no test claimed (reports written outside any test).
"""

import os
from pathlib import Path


def log_dir():
    d = os.environ.get("LAZYROOT_SANITIZER_LOGS")
    return Path(d) if d else None


def _live_binaries(binary):
    """PIDs of live, non-zombie processes running @binary (the sanitized lazyroot)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/exe" % name) != str(binary):
                continue
            with open("/proc/%s/stat" % name) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            pids.append(int(name))
    return pids


def live_lazyroot(binary):
    """The processes of @binary alive now: at a test's start, those of longer-lived fixtures
    (a module's mount), which the test's end must not wait for."""
    return set(_live_binaries(binary))


def wait_lazyroot_exit(binary, timeout=20.0, before=frozenset()):
    """A daemon writes its leak report when it exits, after its mount is gone: wait for the
    processes of @binary the test started to end (tests run one at a time); those alive
    before it (@before) belong to a fixture that outlives it and report when it ends."""
    import conftest  # here, not at the top: conftest imports this module
    conftest.wait_until(lambda: not set(_live_binaries(binary)) - set(before), timeout)


def take_new():
    """Returns [(file name, text)] of the reports not yet claimed and moves them to reported/."""
    d = log_dir()
    if d is None or not d.is_dir():
        return []
    found = []
    done = d / "reported"
    done.mkdir(exist_ok=True)
    for p in sorted(d.iterdir()):
        if not p.is_file() or not p.name.startswith(("asan.", "ubsan.")):
            continue
        text = p.read_text(errors="replace")
        p.rename(done / p.name)
        found.append((p.name, text))
    return found
