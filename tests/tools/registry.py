#!/usr/bin/python3
"""Start and stop a throw-away Docker registry (Debian's docker-registry, distribution v2.8)
on 127.0.0.1 for the tests.

Module use:

    from registry import Registry
    with Registry() as reg:          # temporary dir, free port
        print(reg.addr)              # "127.0.0.1:41234"
        ...                          # registry stopped and its dir removed on exit

    Optional, all off by default:
      Registry(tls=(cert, key))                      HTTPS only (http.tls.certificate / key);
               tls=(cert, key, clientcas)            ... and require a client certificate
                                                     signed by one of the CA files clientcas
      Registry(token_auth={"realm": …, "service": …, "issuer": …, "rootcertbundle": …})
                                                     auth.token (see tokenserver.py)
      Registry(storage=DIR)                          serve (and keep) an existing storage dir,
                                                     e.g. one pushed to by a plain registry
      Registry(htpasswd={"user": "password"})        auth.htpasswd: HTTP Basic authentication
                                                     (bcrypt entries from `htpasswd -B`)
      Registry(host=ADDR)                            listen on another local address than
                                                     127.0.0.1 (one a test added, to be
                                                     "not loopback" for lazyroot)

CLI use (leaves the registry running in the background):

    registry.py start --dir D [--port N]   # prints host:port; pid in D/pid, log in D/registry.log
                      [--tls-cert F --tls-key F [--tls-clientca F]]
                      [--token-realm URL --token-service S --token-issuer I --token-rootcertbundle F]
                      [--storage DIR] [--htpasswd FILE]
    registry.py stop --dir D               # terminate, wait, remove what start created in D

Only 127.0.0.1 is used, unless a test passes host= with an address it made itself.
"""

import argparse
import os
import shutil
import signal
import socket
import ssl
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

TLS_TEMPLATE = """\
  tls:
    certificate: {cert}
    key: {key}
"""

TOKEN_TEMPLATE = """\
auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {rootcertbundle}
"""

HTPASSWD_TEMPLATE = """\
auth:
  htpasswd:
    realm: lazyroot-test
    path: {path}
"""

HTPASSWD_BIN = "/usr/bin/htpasswd"

# files/dirs that `start` creates inside --dir (and `stop` removes)
_CREATED = ("storage", "config.yml", "registry.log", "pid", "addr", "htpasswd")


class RegistryError(RuntimeError):
    pass


def free_port(host=HOST):
    """A TCP port on host (127.0.0.1) that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ping(addr, timeout=1.0, https=False):
    """True when GET /v2/ answers (200 or 401) on addr (over HTTPS, unverified, if https)."""
    ctx = None
    if https:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen("%s://%s/v2/" % ("https" if https else "http", addr),
                                    timeout=timeout, context=ctx) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (urllib.error.URLError, ssl.SSLError) as e:
        # a server that requires client certificates refuses the handshake: it is up
        err = e.reason if isinstance(e, urllib.error.URLError) else e
        return https and isinstance(err, ssl.SSLError) and "certificate" in str(err).lower()
    except (OSError, ValueError):
        return False


def _yaml_str(s):
    """A double-quoted YAML scalar (paths and URLs may contain ':' or '#')."""
    return '"%s"' % str(s).replace("\\", "\\\\").replace('"', '\\"')


def write_htpasswd(path, users):
    """An htpasswd file with bcrypt entries (the only kind distribution accepts) for
    {user: password}; passwords go to htpasswd on stdin, never on its command line."""
    if not os.path.exists(HTPASSWD_BIN):
        raise RegistryError("%s not found (apt-get install apache2-utils)" % HTPASSWD_BIN)
    lines = []
    for user, password in users.items():
        p = subprocess.run([HTPASSWD_BIN, "-Bin", user], input=password.encode() + b"\n",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if p.returncode != 0:
            raise RegistryError("htpasswd failed: %s" % p.stderr.decode(errors="replace"))
        lines.append(p.stdout.decode().strip())
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _write_config(d, port, opts=None):
    """opts: dict with optional tls=(cert, key[, clientcas]), token_auth={realm, service,
    issuer, rootcertbundle}, storage=DIR, htpasswd={user: password} or a file name."""
    opts = opts or {}
    storage = opts.get("storage") or os.path.join(d, "storage")
    os.makedirs(storage, exist_ok=True)
    text = CONFIG_TEMPLATE.format(storage=_yaml_str(storage), host=opts.get("host") or HOST,
                                  port=port)
    tls = opts.get("tls")
    if tls:
        text += TLS_TEMPLATE.format(cert=_yaml_str(os.path.abspath(tls[0])),
                                    key=_yaml_str(os.path.abspath(tls[1])))
        if len(tls) > 2 and tls[2]:
            cas = [tls[2]] if isinstance(tls[2], str) else list(tls[2])
            text += "    clientcas:\n" + "".join(
                "      - %s\n" % _yaml_str(os.path.abspath(c)) for c in cas)
    tok = opts.get("token_auth")
    if tok:
        missing = {"realm", "service", "issuer", "rootcertbundle"} - set(tok)
        if missing:
            raise RegistryError("token_auth lacks %s" % ", ".join(sorted(missing)))
        text += TOKEN_TEMPLATE.format(realm=_yaml_str(tok["realm"]), service=_yaml_str(tok["service"]),
                                      issuer=_yaml_str(tok["issuer"]),
                                      rootcertbundle=_yaml_str(os.path.abspath(tok["rootcertbundle"])))
    htpasswd = opts.get("htpasswd")
    if htpasswd and tok:
        raise RegistryError("token_auth and htpasswd exclude each other")
    if htpasswd:
        path = htpasswd if isinstance(htpasswd, str) else \
            write_htpasswd(os.path.join(d, "htpasswd"), htpasswd)
        text += HTPASSWD_TEMPLATE.format(path=_yaml_str(os.path.abspath(path)))
    cfg = os.path.join(d, "config.yml")
    with open(cfg, "w") as f:
        f.write(text)
    return cfg


def _spawn(d, port, detach, opts=None):
    """Start docker-registry for dir d on port; return the Popen."""
    if not os.path.exists(REGISTRY_BIN):
        raise RegistryError("%s not found (apt-get install docker-registry)" % REGISTRY_BIN)
    cfg = _write_config(d, port, opts)
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


def _wait_ready(proc, addr, d, timeout, https=False):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _ping(addr, timeout=0.5, https=https):
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


def _start_in(d, port=None, detach=False, timeout=30.0, opts=None):
    """Start a registry in dir d; returns (proc, addr). Retries on a port race if no port given."""
    attempts = 1 if port else 5
    last = ""
    for _ in range(attempts):
        host = (opts or {}).get("host") or HOST
        p = port or free_port(host)
        addr = "%s:%d" % (host, p)
        proc = _spawn(d, p, detach, opts)
        if _wait_ready(proc, addr, d, timeout, https=bool((opts or {}).get("tls"))):
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

    Attributes: addr ("127.0.0.1:PORT"), port, dir, url ("http://…" or "https://…"), proc,
    tls, token_auth, storage (the storage dir in use; an external one is never removed).
    """

    def __init__(self, port=None, dir=None, timeout=30.0, tls=None, token_auth=None,
                 storage=None, htpasswd=None, host=None):
        self.port = port
        self._given_dir = dir
        self.dir = None
        self.addr = None
        self.proc = None
        self.timeout = timeout
        self.tls = tuple(tls) if tls else None
        self.token_auth = dict(token_auth) if token_auth else None
        self._storage = os.path.abspath(storage) if storage else None
        self.htpasswd = dict(htpasswd) if isinstance(htpasswd, dict) else htpasswd
        self.host = host

    @property
    def url(self):
        return "%s://%s" % ("https" if self.tls else "http", self.addr)

    @property
    def storage(self):
        if self._storage:
            return self._storage
        return os.path.join(self.dir, "storage") if self.dir else None

    def _opts(self):
        return {"tls": self.tls, "token_auth": self.token_auth, "storage": self._storage,
                "htpasswd": self.htpasswd, "host": self.host}

    def start(self):
        if self.proc is not None:
            return self
        if self._given_dir:
            os.makedirs(self._given_dir, exist_ok=True)
            self.dir = self._given_dir
        else:
            self.dir = tempfile.mkdtemp(prefix="lazyroot-registry-")
        try:
            self.proc, self.addr = _start_in(self.dir, self.port, detach=False, timeout=self.timeout,
                                             opts=self._opts())
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
    opts = {"storage": args.storage, "htpasswd": args.htpasswd}
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise RegistryError("--tls-cert and --tls-key go together")
        opts["tls"] = (args.tls_cert, args.tls_key, args.tls_clientca)
    token = {k: getattr(args, "token_" + k) for k in ("realm", "service", "issuer", "rootcertbundle")}
    if any(token.values()):
        if not all(token.values()):
            raise RegistryError("--token-realm, --token-service, --token-issuer and "
                                "--token-rootcertbundle go together")
        opts["token_auth"] = token
    proc, addr = _start_in(d, args.port, detach=True, timeout=args.timeout, opts=opts)
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
    s.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    s.add_argument("--tls-key", help="... and this key")
    s.add_argument("--tls-clientca", help="require client certificates signed by this CA")
    s.add_argument("--token-realm", help="token auth: realm URL (see tokenserver.py)")
    s.add_argument("--token-service")
    s.add_argument("--token-issuer")
    s.add_argument("--token-rootcertbundle", help="PEM certificates that sign the tokens")
    s.add_argument("--storage", help="use this existing storage dir (kept by stop)")
    s.add_argument("--htpasswd", help="Basic authentication against this htpasswd file "
                   "(bcrypt entries: htpasswd -B)")
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
