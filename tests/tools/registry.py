#!/usr/bin/python3
"""Start and stop a throw-away Docker registry (Debian's docker-registry, distribution v2.8)
on 127.0.0.1 for the tests.

Module use:

    from registry import Registry
    with Registry() as reg:          # temporary dir, free port
        print(reg.addr)              # "127.0.0.1:41234"
        ...                          # registry stopped and its dir removed on exit

CLI use (leaves the registry running in the background):

    registry.py start --dir D [--port N]   # prints host:port; pid in D/pid, log in D/registry.log
    registry.py stop --dir D               # terminate, wait, remove what start created in D

Only 127.0.0.1 is ever used.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REGISTRY_BIN = os.environ.get("DOCKER_REGISTRY", "/usr/bin/docker-registry")
HOST = "127.0.0.1"

CONFIG_TEMPLATE = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {host}:{port}
  headers:
    X-Content-Type-Options: [nosniff]
"""

# files/dirs that `start` creates inside --dir (and `stop` removes)
_CREATED = ("storage", "config.yml", "registry.log", "pid", "addr")


class RegistryError(RuntimeError):
    pass


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _ping(addr, timeout=1.0):
    """True when GET /v2/ answers (200 or 401) on addr."""
    try:
        with urllib.request.urlopen("http://%s/v2/" % addr, timeout=timeout) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (OSError, ValueError):
        return False


def _write_config(d, port):
    storage = os.path.join(d, "storage")
    os.makedirs(storage, exist_ok=True)
    cfg = os.path.join(d, "config.yml")
    with open(cfg, "w") as f:
        f.write(CONFIG_TEMPLATE.format(storage=storage, host=HOST, port=port))
    return cfg


def _spawn(d, port, detach):
    """Start docker-registry for dir d on port; return the Popen."""
    if not os.path.exists(REGISTRY_BIN):
        raise RegistryError("%s not found (apt-get install docker-registry)" % REGISTRY_BIN)
    cfg = _write_config(d, port)
    log = open(os.path.join(d, "registry.log"), "ab")
    try:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", cfg],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=d, start_new_session=detach,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": d},
        )
    finally:
        log.close()
    return proc


def _wait_ready(proc, addr, d, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _ping(addr, timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _log_tail(d, n=20):
    try:
        with open(os.path.join(d, "registry.log"), "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return ""


def _start_in(d, port=None, detach=False, timeout=30.0):
    """Start a registry in dir d; returns (proc, addr). Retries on a port race if no port given."""
    attempts = 1 if port else 5
    last = ""
    for _ in range(attempts):
        p = port or free_port()
        addr = "%s:%d" % (HOST, p)
        proc = _spawn(d, p, detach)
        if _wait_ready(proc, addr, d, timeout):
            return proc, addr
        last = _log_tail(d)
        _terminate(proc)
    raise RegistryError("docker-registry did not come up in %s:\n%s" % (d, last))


def _terminate(proc, timeout=10.0):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Registry:
    """A docker-registry on 127.0.0.1 with its own temporary storage dir.

    Attributes: addr ("127.0.0.1:PORT"), port, dir, url ("http://127.0.0.1:PORT"), proc.
    """

    def __init__(self, port=None, dir=None, timeout=30.0):
        self.port = port
        self._given_dir = dir
        self.dir = None
        self.addr = None
        self.proc = None
        self.timeout = timeout

    @property
    def url(self):
        return "http://%s" % self.addr

    def start(self):
        if self.proc is not None:
            return self
        if self._given_dir:
            os.makedirs(self._given_dir, exist_ok=True)
            self.dir = self._given_dir
        else:
            self.dir = tempfile.mkdtemp(prefix="lazyroot-registry-")
        try:
            self.proc, self.addr = _start_in(self.dir, self.port, detach=False, timeout=self.timeout)
        except BaseException:
            self._remove_dir()
            raise
        self.port = int(self.addr.rsplit(":", 1)[1])
        return self

    def log(self):
        return _log_tail(self.dir, 200) if self.dir else ""

    def stop(self):
        if self.proc is not None:
            _terminate(self.proc)
            self.proc = None
        self._remove_dir()

    def _remove_dir(self):
        if self.dir is None:
            return
        if self._given_dir:
            _remove_created(self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def __del__(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        except Exception:
            pass


def _remove_created(d):
    for name in _CREATED:
        p = os.path.join(d, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(d)  # only if now empty
    except OSError:
        pass


def _pid_is_registry(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and os.path.basename(argv[0]) == os.path.basename(REGISTRY_BIN).encode()


def _pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def cli_start(args):
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    pidfile = os.path.join(d, "pid")
    if os.path.exists(pidfile):
        try:
            pid = int(open(pidfile).read().strip())
        except ValueError:
            pid = 0
        if pid and _pid_is_registry(pid) and _pid_alive(pid):
            print("registry already running in %s (pid %d)" % (d, pid), file=sys.stderr)
            return 1
    proc, addr = _start_in(d, args.port, detach=True, timeout=args.timeout)
    with open(pidfile, "w") as f:
        f.write("%d\n" % proc.pid)
    with open(os.path.join(d, "addr"), "w") as f:
        f.write(addr + "\n")
    # do not let Popen.__del__ bookkeeping matter: we leave it running on purpose
    proc.returncode = 0
    print(addr)
    return 0


def cli_stop(args):
    d = os.path.abspath(args.dir)
    pidfile = os.path.join(d, "pid")
    rc = 0
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        print("no pid file in %s" % d, file=sys.stderr)
        pid = 0
        rc = 1
    if pid and _pid_is_registry(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
    elif pid:
        print("pid %d is not a running docker-registry; only cleaning %s" % (pid, d), file=sys.stderr)
    _remove_created(d)
    return rc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start a registry in the background, print host:port")
    s.add_argument("--dir", required=True, help="state dir (storage, config, log, pid)")
    s.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    s.add_argument("--timeout", type=float, default=30.0)
    t = sub.add_parser("stop", help="stop the registry started with --dir D and clean D")
    t.add_argument("--dir", required=True)
    t.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    try:
        return cli_start(args) if args.cmd == "start" else cli_stop(args)
    except RegistryError as e:
        print("registry.py: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
