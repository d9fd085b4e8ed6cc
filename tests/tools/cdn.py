#!/usr/bin/python3
"""A blob "CDN" on 127.0.0.1 for the tests: what Docker Hub's and ghcr.io's blob redirects
point at (an object store behind signed, expiring URLs).

It serves the blobs of a docker-registry storage directory straight from disk
(STORAGE/docker/registry/v2/blobs/sha256/XX/HEX/data) at signed URLs:

    cdn.sign_url("sha256:…", ttl=60) -> "http://127.0.0.1:PORT/blobs/sha256/HEX?expires=T&sig=S"

GET and HEAD, with one byte range ("Range: bytes=a-b" / "a-") -> 206 + Content-Range, else
200. A URL whose signature is wrong -> 403; one whose expiry passed -> 403 "Request has
expired", as S3 and CloudFront answer. `fail_next = N` makes the next N requests 403 as if
their URL had expired.

The CDN is another host: a client must never send it the registry's token. A request that
carries an Authorization header is answered 400 and recorded in .violations; tests assert
that list stays empty.

    with BlobCDN(registry.storage) as cdn:
        cdn.requests      # list of {"path", "range", "status", "authorization"}
        cdn.violations    # requests that carried Authorization
"""

import hashlib
import hmac
import http.server
import os
import re
import secrets
import socket
import threading
import time
import urllib.parse

HOST = "127.0.0.1"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*$")


class BlobCDN:
    def __init__(self, storage):
        self.storage = str(storage)
        self.key = secrets.token_bytes(16)
        self.fail_next = 0
        self.requests = []
        self.violations = []
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self.port = None

    def start(self):
        cdn = self

        class Handler(_Handler):
            owner = cdn

        self._httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread:
            self._thread.join(10)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    def _sig(self, path, expires):
        return hmac.new(self.key, ("%s\n%d" % (path, expires)).encode(), hashlib.sha256).hexdigest()

    def sign_url(self, digest, ttl=60):
        algo, _, hexd = digest.partition(":")
        path = "/blobs/%s/%s" % (algo, hexd)
        expires = int(time.time()) + ttl
        return "http://%s%s?expires=%d&sig=%s" % (self.addr, path, expires,
                                                   self._sig(path, expires))

    def blob_path(self, algo, hexd):
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", algo, hexd[:2],
                            hexd, "data")

    def _record(self, rec):
        with self._lock:
            self.requests.append(rec)
            if rec["authorization"]:
                self.violations.append(rec)


class _Handler(http.server.BaseHTTPRequestHandler):
    owner = None
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # headers and body are separate writes: keep Nagle from delaying the body
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet
        pass

    def _status(self, code, text=b""):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)
        return code

    def _serve(self):
        cdn = self.owner
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        if self.headers.get("Authorization"):
            return self._status(400, b"Authorization sent to the CDN\n")
        m = re.match(r"^/blobs/(sha256)/([0-9a-f]{64})$", u.path)
        if not m:
            return self._status(404)
        try:
            expires = int(q.get("expires", ["0"])[0])
        except ValueError:
            expires = 0
        if not hmac.compare_digest(q.get("sig", [""])[0], cdn._sig(u.path, expires)):
            return self._status(403, b"SignatureDoesNotMatch\n")
        with cdn._lock:
            expired = cdn.fail_next > 0
            if expired:
                cdn.fail_next -= 1
        if expired or time.time() > expires:
            return self._status(403, b"Request has expired\n")
        path = cdn.blob_path(m.group(1), m.group(2))
        try:
            size = os.path.getsize(path)
        except OSError:
            return self._status(404)
        start, end, code = 0, size - 1, 200
        rm = _RANGE.match(self.headers.get("Range") or "")
        if rm:
            start = int(rm.group(1))
            end = min(int(rm.group(2)), size - 1) if rm.group(2) else size - 1
            if start >= size or end < start:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 416
            code = 206
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if code == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.command == "HEAD":
            return code
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                buf = f.read(min(left, 65536))
                if not buf:
                    break
                self.wfile.write(buf)
                left -= len(buf)
        return code

    def _handle(self):
        rec = {"method": self.command, "path": self.path, "range": self.headers.get("Range"),
               "authorization": self.headers.get("Authorization") is not None, "status": None}
        try:
            rec["status"] = self._serve()
        finally:
            self.owner._record(rec)

    do_GET = do_HEAD = _handle
