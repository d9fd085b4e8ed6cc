#!/usr/bin/python3
"""A small Docker token server (like auth.docker.io) on 127.0.0.1 for the tests.

    GET /token?service=S&scope=repository:NAME:pull[&scope=…]
    -> 200 {"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": "…Z"}

Anonymous requests get pull access to the repositories in `anonymous` (a name, or "*" for
all); requests with Basic credentials from `users` ({"name": "password"}) get pull access to
`user_repos` (default: every repository) as well. Any other requested repository is left out of
the token's "access" claim, as Docker Hub does, so the registry answers 401 for it. Wrong Basic
credentials get 401; a service other than ours gets 400. Users in `pushers` also get push access
to those repositories when they ask for it ("repository:NAME:pull,push"); nobody else ever does.

The JWT is RS256 (RSASSA-PKCS1-v1_5 with SHA-256), signed by `openssl dgst -sha256 -sign`
with a throw-away self-signed certificate (tls.make_self_signed); its header carries that
certificate in "x5c", and the same certificate is the registry's auth.token.rootcertbundle
(distribution 2.8 verifies the x5c chain against it). Claims: iss, sub, aud (= service), exp,
nbf, iat, jti, access.

Module:
    with TokenServer(dir, anonymous=["fixtures/oci-gzip"]) as ts:
        ts.realm                  # "http://127.0.0.1:PORT/token"
        ts.registry_auth()        # dict for registry.Registry(token_auth=…)
        ts.count                  # tokens issued so far
        ts.requests               # list of dicts: scopes, service, user, granted, status
        ts.tokens                 # every token issued (to check they never leak)
CLI:
    tokenserver.py DIR [--anonymous REPO]... [--user NAME:PASSWORD]...   (serves until ^C;
    prints the realm and the registry's auth.token settings)
"""

import argparse
import base64
import binascii
import datetime
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tls  # noqa: E402

HOST = "127.0.0.1"
SERVICE = "lazyroot-test-registry"
ISSUER = "lazyroot-test-tokens"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _der_of_pem(path):
    with open(path) as f:
        pem = f.read()
    body = pem.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
    return base64.b64decode("".join(body.split()))


class TokenServer:
    def __init__(self, dir=None, anonymous=(), users=None, user_repos=None, service=SERVICE,
                 issuer=ISSUER, expires_in=300, pushers=()):
        self._given_dir = dir
        self.dir = None
        self.anonymous = [anonymous] if isinstance(anonymous, str) else list(anonymous)
        self.users = dict(users or {})
        self.pushers = set(pushers)
        self.user_repos = None if user_repos is None else list(user_repos)
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.requests = []
        self.tokens = []
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self.cert = self.key = None
        self.port = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self):
        if self._httpd:
            return self
        self.dir = self._given_dir or tempfile.mkdtemp(prefix="lazyroot-tokens-")
        os.makedirs(self.dir, exist_ok=True)
        try:
            pair = tls.make_self_signed(self.dir, "token-signer", "lazyroot test token signer")
            self.cert, self.key = pair.cert, pair.key
            self._x5c = base64.b64encode(_der_of_pem(self.cert)).decode()
            server = self

            class Handler(_Handler):
                ts = server

            self._httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
            self._httpd.daemon_threads = True
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.1}, daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread:
            self._thread.join(10)
            self._thread = None
        if self.dir and not self._given_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- info -----------------------------------------------------------------------------

    @property
    def realm(self):
        return "http://%s:%d/token" % (HOST, self.port)

    def registry_auth(self):
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": self.cert}

    @property
    def count(self):
        """Tokens issued so far."""
        with self._lock:
            return len(self.tokens)

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.tokens.clear()

    # -- tokens ---------------------------------------------------------------------------

    def _allowed(self, repo, user):
        if "*" in self.anonymous or repo in self.anonymous:
            return True
        if user is not None:
            return self.user_repos is None or repo in self.user_repos
        return False

    def sign(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        p = subprocess.run([tls.OPENSSL, "dgst", "-sha256", "-sign", self.key],
                           input=signing_input.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        if p.returncode != 0:
            raise RuntimeError("openssl dgst -sign failed: %s" % p.stderr.decode(errors="replace"))
        return signing_input + "." + b64url(p.stdout)

    def issue(self, scopes, user):
        """Returns (token, access list)."""
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
            if "pull" in actions and self._allowed(name, user):
                granted = ["pull"]
                if "push" in actions and user in self.pushers:
                    granted.append("push")
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service,
                  "exp": now + self.expires_in, "nbf": now - 1, "iat": now,
                  "jti": secrets.token_hex(16), "access": access}
        return self.sign(claims), access

    def _record(self, **kw):
        with self._lock:
            self.requests.append(kw)


class _Handler(http.server.BaseHTTPRequestHandler):
    ts = None  # set by the subclass TokenServer.start() makes
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _user(self):
        """(user or None, ok)."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None, True
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        ts = self.ts
        if user in ts.users and secrets.compare_digest(ts.users[user], password):
            return user, True
        return None, False

    def do_GET(self):
        ts = self.ts
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
        service = q.get("service", [None])[0]
        if u.path != "/token":
            ts._record(path=u.path, status=404, scopes=scopes, service=service, user=None,
                       granted=[])
            return self._reply(404, {"details": "not found"})
        user, ok = self._user()
        if not ok:
            ts._record(path=u.path, status=401, scopes=scopes, service=service, user=None,
                       granted=[])
            return self._reply(401, {"details": "incorrect username or password"},
                               [("WWW-Authenticate", 'Basic realm="%s"' % ts.realm)])
        if service != ts.service:
            ts._record(path=u.path, status=400, scopes=scopes, service=service, user=user,
                       granted=[])
            return self._reply(400, {"details": "unknown service"})
        token, access = ts.issue(scopes, user)
        with ts._lock:
            ts.tokens.append(token)
        ts._record(path=u.path, status=200, scopes=scopes, service=service, user=user,
                   granted=[a["name"] for a in access])
        issued = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._reply(200, {"token": token, "access_token": token, "expires_in": ts.expires_in,
                          "issued_at": issued})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="where the signing certificate and key go")
    ap.add_argument("--anonymous", action="append", default=[], help="repository anyone may pull")
    ap.add_argument("--user", action="append", default=[], help="NAME:PASSWORD")
    args = ap.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user)
    with TokenServer(os.path.abspath(args.dir), anonymous=args.anonymous, users=users) as ts:
        print(json.dumps(ts.registry_auth()), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
