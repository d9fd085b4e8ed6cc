#!/usr/bin/python3
"""The referrers API of distribution-spec 1.1, in front of a registry that lacks it (Debian's
docker-registry 2.8), for the tests. On 127.0.0.1; threaded; HTTP/1.1.

Every request goes to the upstream registry as it came (method, path and query, headers, body)
and its answer comes back as it was, except:

  PUT /v2/NAME/manifests/REF whose JSON body has a "subject": forwarded; when the registry
      stored it (201), its descriptor (mediaType from Content-Type, digest and size of the bytes,
      artifactType -- else the config's mediaType -- and annotations, as the spec says) is
      recorded under (NAME, subject digest), and the answer gets "OCI-Subject: <subject digest>".
  GET /v2/NAME/referrers/DIGEST[?artifactType=T]: 200 with an image index of the descriptors
      recorded for it (none: an empty index, as the spec wants for an unknown digest), filtered
      by T with "OCI-Filters-Applied: artifactType" unless ignore_filter; page_size descriptors
      per page, the next page named by "Link: <…>; rel="next"".

State is in memory: what was pushed through this front since it started.

    with ReferrersFront(registry.addr, page_size=2) as f:
        f.addr                 # "127.0.0.1:PORT", use it as the registry
        f.requests             # [(method, path)] of every request
"""

import hashlib
import http.client
import http.server
import json
import threading
import urllib.parse

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade"}


class ReferrersFront:
    def __init__(self, upstream, page_size=100, ignore_filter=False):
        self.upstream = upstream
        self.page_size = page_size
        self.ignore_filter = ignore_filter
        self.referrers = {}     # (name, subject digest) -> [descriptor]
        self.requests = []
        self._lock = threading.Lock()
        self._httpd = None
        self.addr = None

    def start(self):
        front = self

        class Handler(_Handler):
            f = front

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.addr = "127.0.0.1:%d" % self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def record(self, name, body, media_type):
        doc = json.loads(body)
        subject = doc["subject"]["digest"]
        desc = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                "size": len(body),
                "artifactType": doc.get("artifactType") or doc.get("config", {}).get("mediaType")}
        if doc.get("annotations"):
            desc["annotations"] = doc["annotations"]
        with self._lock:
            lst = self.referrers.setdefault((name, subject), [])
            if all(d["digest"] != desc["digest"] for d in lst):
                lst.append(desc)
        return subject

    def listing(self, name, digest, query):
        with self._lock:
            lst = list(self.referrers.get((name, digest), []))
        headers = {}
        want = query.get("artifactType", [None])[0]
        if want and not self.ignore_filter:
            lst = [d for d in lst if d.get("artifactType") == want]
            headers["OCI-Filters-Applied"] = "artifactType"
        page = int(query.get("page", ["0"])[0])
        chunk = lst[page * self.page_size:(page + 1) * self.page_size]
        if (page + 1) * self.page_size < len(lst):
            q = dict((k, v[0]) for k, v in query.items())
            q["page"] = str(page + 1)
            headers["Link"] = '</v2/%s/referrers/%s?%s>; rel="next"' % (
                name, digest, urllib.parse.urlencode(q))
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": chunk}).encode()
        return body, headers


class _Handler(http.server.BaseHTTPRequestHandler):
    f = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body):
        conn = http.client.HTTPConnection(self.f.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _handle(self):
        u = urllib.parse.urlsplit(self.path)
        with self.f._lock:
            self.f.requests.append((self.command, u.path))
        parts = u.path.split("/")
        if self.command == "GET" and len(parts) > 4 and parts[-2] == "referrers":
            body, headers = self.f.listing("/".join(parts[2:-2]), parts[-1],
                                           urllib.parse.parse_qs(u.query))
            return self._reply(200, [("Content-Type", OCI_INDEX)] + list(headers.items()), body)
        body = self._body()
        status, headers, resp_body = self._forward(body)
        if (self.command == "PUT" and status == 201 and len(parts) > 4 and
                parts[-2] == "manifests" and b'"subject"' in body):
            subject = self.f.record("/".join(parts[2:-2]), body,
                                    self.headers.get("Content-Type", ""))
            headers = list(headers) + [("OCI-Subject", subject)]
        self._reply(status, headers, resp_body)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle
