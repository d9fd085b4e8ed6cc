#!/usr/bin/python3
"""A logging reverse proxy for a test registry, on 127.0.0.1 (threaded, HTTP/1.1 keep-alive).

Every request is forwarded as it came (method, path + query, headers including Host, Range and
Authorization, body) to the upstream registry over a keep-alive connection of its own, and the
response comes back as it was (status, headers, body streamed). Each request is recorded:

    {"method", "path", "range", "status", "bytes" (response body bytes sent to the client),
     "time", "duration", "conn" (client connection number), "fault" (what a hook did or None)}

A TLS ClientHello arriving on a connection (lazyroot tries HTTPS first on loopback) is
answered like Go's net/http answers it -- "HTTP/1.0 400 Bad Request" + close, which is what
makes a TLS client report "wrong version number" and fall back to HTTP -- or, with
tls_hello="close", the connection is just closed. Either way it is counted in .tls_hellos.

    from proxy import Proxy
    with Proxy(registry.addr) as p:          # p.addr = "127.0.0.1:PORT"
        ... lazyroot mount p.addr + "/repo:tag" ...
        p.requests                           # list of dicts (a copy)
        p.bytes_for("/v2/repo/blobs/")       # response body bytes of requests under a prefix
        p.blob_requests(digest=None)         # GETs of blobs (optionally of one digest)
        p.reset()                            # forget what was recorded
        p.set_fault(hook) / p.offline = True # fault injection / refuse everything
        p.release()                          # end every Fault.stall() in progress
        p.down() / p.up()                    # refuse connections (ECONNREFUSED), until up():
                                             # the same port listens again
    # stop(): closes the listener AND every client connection (a daemon's keep-alive
    # connection included), so nothing more can come through

Fault hooks: hook(req) with req = {"method", "path", "range", "headers"} returns None (pass) or
a Fault:
    Fault.drop()                 close the client connection without answering
    Fault.status(code, headers=None)  answer code with an empty body instead of forwarding
                                 (headers: extra response headers, e.g. {"Retry-After": "2"})
    Fault.redirect(location, code=307)  answer with a redirect instead of forwarding
    Fault.ignore_range()         forward without the Range header, as a server or cache that
                                 ignores Range does: the client gets 200 and the whole body
    Fault.header(name, fn)       forward, with response header name's value replaced by
                                 fn(value) (value None when absent; fn returning None drops it)
    Fault.corrupt(fn)            forward, buffer the body, send fn(body) (keep its length to
                                 stay HTTP-correct; Content-Length is set to the new length)
    Fault.truncate(n)            send the headers and only the first n body bytes, then close
    Fault.short(keep)            a well-framed but short answer: the body cut to its first `keep`
                                 bytes (keep < 1: that fraction of it) and Content-Length set to
                                 the cut length, other headers (Content-Range) as they came
    Fault.delay(seconds)         sleep, then forward normally
    Fault.pace(rate, latency=0)  sleep `latency` s, then forward with the body paced to `rate`
                                 bytes per second (4 KiB at a time): a slow link
    first_answers(n, fault_fn, match=None)  a hook: fault_fn(req) for the first n requests of
                                 each blob digest (GETs of /blobs/, those match(req) accepts),
                                 then pass: wrong bytes n times, then the right ones
    Fault.stall(seconds=None, after=None)  hold the connection open without sending anything
                                 (after=n: forward the headers and the first n body bytes
                                 first) until p.release(), p.down(), p.stop() or `seconds`
                                 passed, then close it without another byte
Black hole: p.black_hole = True swallows every request from then on, on new connections and on
kept-alive ones alike (a TLS hello too): read, recorded with fault "black hole", never answered,
the connection held open until p.black_hole = False, p.release() or p.stop() closes it.
Parsing helpers: parse_range("bytes=a-b") -> (a, b) or None.

Forward proxy: Proxy(upstream, forward=True[, proxy_auth=("user", "password")]) is an HTTP
proxy as HTTP_PROXY/HTTPS_PROXY name it. It takes absolute-URI requests ("GET http://host:port/…")
and CONNECT host:port tunnels, and sends both to 127.0.0.1 at the port asked for, whatever the
host name (so names like "registry.test" reach the test servers); `upstream` is unused. Records
get "target" (the host:port asked for); with proxy_auth a request without the right
Proxy-Authorization gets 407. A CONNECT tunnel is recorded once, with method "CONNECT".

CLI: proxy.py UPSTREAM_ADDR [--port N]   (runs until interrupted, logs one line per request)
"""

import argparse
import base64
import http.client
import select
import urllib.parse
import re
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade"}
GO_TLS_REPLY = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*$")


def parse_range(value):
    """(first, last) of a single "bytes=a-b" range (last None when open-ended), or None."""
    if not value:
        return None
    m = _RANGE.match(value)
    if not m:
        return None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)


class Fault:
    def __init__(self, kind, arg=None):
        self.kind, self.arg = kind, arg

    @classmethod
    def drop(cls):
        return cls("drop")

    @classmethod
    def status(cls, code, headers=None):
        f = cls("status", code)
        f.headers = dict(headers or {})
        return f

    @classmethod
    def redirect(cls, location, code=307):
        f = cls("status", code)
        f.headers = {"Location": location}
        return f

    @classmethod
    def ignore_range(cls):
        return cls("ignore_range")

    @classmethod
    def header(cls, name, fn):
        f = cls("header", fn)
        f.name = name
        return f

    @classmethod
    def corrupt(cls, fn):
        return cls("corrupt", fn)

    @classmethod
    def truncate(cls, n):
        return cls("truncate", n)

    @classmethod
    def short(cls, keep):
        def cut(b):
            n = int(len(b) * keep) if keep < 1 else int(keep)
            return b[:min(n, max(len(b) - 1, 0))]
        f = cls("corrupt", cut)
        f.short = keep
        return f

    @classmethod
    def delay(cls, seconds):
        return cls("delay", seconds)

    @classmethod
    def pace(cls, rate, latency=0.0):
        f = cls("pace", rate)
        f.latency = latency
        return f

    @classmethod
    def stall(cls, seconds=None, after=None):
        f = cls("stall", seconds)
        f.after = after
        return f

    def __repr__(self):
        return "Fault.%s(%r)" % (self.kind, self.arg if not callable(self.arg) else "fn")


def first_answers(n, fault_fn, match=None):
    """A fault hook: fault_fn(req) for the first n GETs of each blob digest (that match(req)
    accepts, if given), None (pass) after."""
    seen = {}
    lock = threading.Lock()

    def hook(req):
        if req["method"] != "GET" or "/blobs/" not in req["path"]:
            return None
        if match is not None and not match(req):
            return None
        digest = req["path"].split("?")[0].rsplit("/", 1)[-1]
        with lock:
            k = seen.get(digest, 0)
            seen[digest] = k + 1
        return fault_fn(req) if k < n else None
    return hook


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a client or the proxy's stop() closed the connection
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lazyroot-test-proxy"

    def log_message(self, fmt, *args):  # quiet; the proxy keeps its own records
        if self.server.proxy.verbose:
            sys.stderr.write("proxy: " + (fmt % args) + "\n")

    # -- connection level ---------------------------------------------------------------------
    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK (40 ms per small response).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.proxy = self.server.proxy
        self.conn_no = self.proxy._register(self.connection)
        self.upstream = None
        self.upstream_target = None

    def finish(self):
        try:
            super().finish()
        finally:
            if self.upstream is not None:
                self.upstream.close()
            self.proxy._unregister(self.connection)

    def handle(self):
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if not first:
            return
        if first[0] == 0x16:  # TLS handshake record: a ClientHello
            with self.proxy._lock:
                self.proxy.tls_hellos += 1
            if self.proxy.black_hole:
                self._swallow(None)
                return
            if self.proxy.tls_hello != "close":
                try:
                    self.connection.settimeout(1.0)
                    self.connection.recv(65536)   # read the hello, as Go does, then answer
                    self.connection.sendall(GO_TLS_REPLY)
                except OSError:
                    pass
            self.close_connection = True
            return
        super().handle()

    # -- requests -------------------------------------------------------------------------------
    def _upstream(self):
        if self.upstream is None:
            if self.proxy.forward:
                host, port = "127.0.0.1", self.upstream_target.rpartition(":")[2] or "80"
            else:
                host, _, port = self.proxy.upstream.rpartition(":")
            self.upstream = http.client.HTTPConnection(host, int(port), timeout=self.proxy.timeout)
        return self.upstream

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = bytearray()
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out.extend(self.rfile.read(n))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else None

    def _proxy_auth_ok(self):
        want = self.proxy.proxy_auth
        if want is None:
            return True
        expected = "Basic " + base64.b64encode(("%s:%s" % want).encode()).decode()
        return self.headers.get("Proxy-Authorization") == expected

    def _deny_proxy_auth(self, rec):
        rec["status"] = 407
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="test proxy"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_CONNECT(self):
        p = self.proxy
        rec = {"method": "CONNECT", "path": self.path, "target": self.path, "range": None,
               "status": None, "bytes": 0, "time": time.time(), "duration": None,
               "conn": self.conn_no, "fault": None}
        p._record(rec)
        self.close_connection = True
        if not p.forward or p.offline:
            rec["status"] = 405
            self.send_error(405)
            return
        if not self._proxy_auth_ok():
            return self._deny_proxy_auth(rec)
        _, _, port = self.path.rpartition(":")
        try:
            up = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        except (OSError, ValueError) as e:
            rec["status"] = 502
            self.send_error(502, "upstream: %s" % e)
            return
        rec["status"] = 200
        self.send_response_only(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        socks = [self.connection, up]
        try:
            while not p.offline:
                ready, _, _ = select.select(socks, [], [], 0.5)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (up if s is self.connection else self.connection).sendall(data)
        except OSError:
            pass
        finally:
            up.close()

    def _forward(self):
        p = self.proxy
        t0 = time.monotonic()
        target = None
        if p.forward:
            u = urllib.parse.urlsplit(self.path)
            if u.scheme in ("http", "https") and u.netloc:
                target = u.netloc
                self.path = u.path + ("?" + u.query if u.query else "")
        rec = {"method": self.command, "path": self.path, "range": self.headers.get("Range"),
               "status": None, "bytes": 0, "time": time.time(), "duration": None,
               "conn": self.conn_no, "fault": None, "target": target}
        body = self._read_body()
        p._record(rec)  # listed at once; status/bytes are filled in as they happen
        if p.black_hole:
            rec["fault"] = "black hole"
            self._swallow(rec)
            return
        if p.offline:
            rec["fault"] = "offline"
            self.close_connection = True
            return
        if p.forward:
            if target is None:
                rec["status"] = 400
                self.send_error(400, "a forward proxy needs an absolute URI")
                return
            if not self._proxy_auth_ok():
                return self._deny_proxy_auth(rec)
            if self.upstream is not None and self.upstream_target != target:
                self.upstream.close()
                self.upstream = None
            self.upstream_target = target
        fault = None
        hook = p.fault
        if hook is not None:
            fault = hook({"method": self.command, "path": self.path,
                          "range": self.headers.get("Range"), "headers": dict(self.headers)})
        if fault is not None:
            rec["fault"] = repr(fault)
            if fault.kind == "delay":
                time.sleep(fault.arg)
            elif fault.kind == "pace":
                time.sleep(fault.latency)
            elif fault.kind == "stall" and fault.after is None:
                self._stall(fault, rec)
                return
            elif fault.kind == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            elif fault.kind == "status":
                self.send_response(fault.arg)
                for k, v in getattr(fault, "headers", {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
                rec["status"] = fault.arg
                return
        headers = {}
        for k, v in self.headers.items():
            if k.lower() in HOP_BY_HOP or k.lower() in ("content-length", "proxy-authorization"):
                continue
            if k.lower() == "range" and fault is not None and fault.kind == "ignore_range":
                continue
            headers[k] = v
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            resp = self._request(self.command, self.path, body, headers)
        except OSError as e:
            rec["status"] = 502
            rec["fault"] = (rec["fault"] or "") + " upstream error: %s" % e
            self.send_error(502, "upstream: %s" % e)
            return
        rec["status"] = resp.status
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        chunked = length is None and self.command != "HEAD" and resp.status not in (204, 304)
        corrupt = fault is not None and fault.kind == "corrupt"
        truncate = fault is not None and fault.kind == "truncate"
        stall = fault is not None and fault.kind == "stall"
        data = None
        if corrupt:
            data = fault.arg(resp.read())
            length, chunked = str(len(data)), False
        rewrite = fault if fault is not None and fault.kind == "header" else None
        out_headers = list(resp.getheaders())
        if rewrite is not None:
            old = resp.getheader(rewrite.name)
            out_headers = [(k, v) for k, v in out_headers if k.lower() != rewrite.name.lower()]
            new = rewrite.arg(old)
            if new is not None:
                out_headers.append((rewrite.name, new))
        for k, v in out_headers:
            kl = k.lower()
            if kl in HOP_BY_HOP or kl == "content-length":
                continue
            if kl == "location" and not p.forward:
                v = v.replace("//" + p.upstream + "/", "//" + p.addr + "/")
            self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        try:
            if self.command == "HEAD":
                resp.read()
            elif data is not None:
                sent = len(data)
                with p._lock:
                    rec["bytes"] = sent
                self.wfile.write(data)
            else:
                limit = fault.arg if truncate else fault.after if stall else None
                while True:
                    buf = resp.read(65536)
                    if not buf:
                        break
                    if limit is not None:
                        buf = buf[:max(0, limit - sent)]
                    sent += len(buf)
                    with p._lock:  # counted before the client can see the bytes
                        rec["bytes"] = sent
                    if chunked:
                        self.wfile.write(b"%x\r\n" % len(buf) + buf + b"\r\n")
                    elif fault is not None and fault.kind == "pace":
                        for k in range(0, len(buf), 4096):
                            self.wfile.write(buf[k:k + 4096])
                            self.wfile.flush()
                            time.sleep(len(buf[k:k + 4096]) / fault.arg)
                    else:
                        self.wfile.write(buf)
                    if limit is not None and sent >= limit:
                        break
                if stall:
                    self.wfile.flush()
                    self._stall(fault, rec)
                if truncate or stall:
                    resp.close()
                    self.upstream.close()
                    self.upstream = None
                    self.close_connection = True
                elif chunked:
                    self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError as e:  # the client went away
            rec["fault"] = (rec["fault"] or "") + " client error: %s" % e
            self.close_connection = True
        finally:
            with p._lock:
                rec["bytes"] = sent
                rec["duration"] = time.monotonic() - t0
            p._log(rec)
        if resp.getheader("Connection", "").lower() == "close" or resp.will_close:
            if self.upstream is not None:
                self.upstream.close()
                self.upstream = None

    def _stall(self, fault, rec):
        """Send nothing until released or fault.arg seconds passed; then close."""
        t0 = time.monotonic()
        self._hold(rec, lambda p: fault.arg is not None and time.monotonic() - t0 >= fault.arg)

    def _swallow(self, rec):
        """A black hole: answer nothing until p.black_hole is cleared (or released, or the
        proxy stops), then close the connection."""
        self._hold(rec, lambda p: not p.black_hole)

    def _hold(self, rec, done):
        """Hold the connection without a byte until done(proxy) (called with the proxy's lock
        held), p.release(), or the proxy goes down; then record how long (rec["stalled"],
        if rec) and close it."""
        p = self.proxy
        t0 = time.monotonic()
        with p._lock:
            gen = p._stall_gen
        while True:
            with p._lock:
                if done(p) or p._stall_gen != gen or p.offline:
                    break
            time.sleep(0.02)
        if rec is not None:
            with p._lock:
                rec["stalled"] = time.monotonic() - t0
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _request(self, method, path, body, headers):
        for attempt in (0, 1):
            c = self._upstream()
            try:
                c.request(method, path, body=body, headers=headers)
                return c.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                c.close()
                self.upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward


class Proxy:
    def __init__(self, upstream_addr=None, port=0, tls_hello="answer", fault=None, timeout=60,
                 verbose=False, forward=False, proxy_auth=None):
        self.upstream = upstream_addr
        self.forward = forward
        self.proxy_auth = proxy_auth
        self.port = port
        self.tls_hello = tls_hello
        self.fault = fault
        self.timeout = timeout
        self.verbose = verbose
        self.offline = False
        self.black_hole = False
        self.tls_hellos = 0
        self._stall_gen = 0
        self._lock = threading.Lock()
        self._records = []
        self._conns = {}
        self._conn_counter = 0
        self._server = None
        self._thread = None
        self.addr = None

    # -- life -----------------------------------------------------------------------------------
    def start(self):
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self.addr = "127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop listening and close every client connection."""
        if self._server is None:
            return
        self.offline = True
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        self._thread.join(10)
        self._server = None

    def release(self):
        """End every Fault.stall() in progress (each closes its connection)."""
        with self._lock:
            self._stall_gen += 1

    def down(self):
        """Stop listening and close every connection: connecting is refused until up()."""
        self.stop()

    def up(self):
        """Listen again on the same port, after down()."""
        if self._server is None:
            self.offline = False
            self.start()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- records --------------------------------------------------------------------------------
    def _register(self, sock):
        with self._lock:
            self._conn_counter += 1
            self._conns[self._conn_counter] = sock
            return self._conn_counter

    def _unregister(self, sock):
        with self._lock:
            for k, v in list(self._conns.items()):
                if v is sock:
                    del self._conns[k]

    def _record(self, rec):
        with self._lock:
            self._records.append(rec)

    def _log(self, rec):
        if self.verbose:
            sys.stderr.write("proxy: %s %s range=%s -> %s, %d bytes%s\n" % (
                rec["method"], rec["path"], rec["range"], rec["status"], rec["bytes"],
                " [%s]" % rec["fault"] if rec["fault"] else ""))

    @property
    def requests(self):
        """Copies of the records, in arrival order. A request is listed as soon as it arrives;
        its "bytes" count is updated before each piece of the body goes out, so once a client
        has read a response, its bytes are all counted."""
        with self._lock:
            return [dict(r) for r in self._records]

    def reset(self):
        with self._lock:
            self._records = []
            self.tls_hellos = 0

    def set_fault(self, hook):
        self.fault = hook

    def bytes_for(self, path_prefix="", method=None, ranged=None):
        """Response body bytes of the recorded requests whose path starts with path_prefix
        (optionally only one method; ranged=True/False: only requests with/without Range)."""
        return sum(r["bytes"] for r in self.requests if self._match(r, path_prefix, method, ranged))

    def count(self, path_prefix="", method=None, ranged=None):
        return len([r for r in self.requests if self._match(r, path_prefix, method, ranged)])

    @staticmethod
    def _match(r, prefix, method, ranged):
        return (r["path"].startswith(prefix) and (method is None or r["method"] == method)
                and (ranged is None or bool(r["range"]) == ranged))

    def blob_requests(self, digest=None):
        """Recorded GETs of /v2/…/blobs/… (of one digest if given)."""
        out = []
        for r in self.requests:
            if r["method"] != "GET" or "/blobs/" not in r["path"] or "/uploads" in r["path"]:
                continue
            if digest and not r["path"].split("?")[0].endswith("/blobs/" + digest):
                continue
            out.append(r)
        return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Logging reverse proxy for a test registry.")
    ap.add_argument("upstream", help="host:port of the registry")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    p = Proxy(args.upstream, port=args.port, verbose=True).start()
    print(p.addr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
