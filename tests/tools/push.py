#!/usr/bin/python3
"""Push an OCI image layout directory to a registry byte for byte, through the registry API.

Every blob is uploaded monolithically (POST /v2/NAME/blobs/uploads/, then PUT <Location>&digest=…
with the whole body); every manifest / index is PUT with Content-Type = the media type of the
descriptor that points at it (umoci writes manifests without a mediaType field, so the body is
not consulted). Children of an index (recursively; multiarch has index.json -> index -> 2 manifests)
are pushed first, by digest; then the top one by tag. Nothing is re-encoded, so every digest in
the layout is the digest in the registry.

Module:  push_layout(registry_addr, layout_dir, repo, tag=None, ref_name=None) -> dict
CLI:     push.py REGISTRY_ADDR LAYOUT_DIR REPO [--tag TAG] [--ref-name NAME]
         (prints "REGISTRY_ADDR/REPO:TAG@sha256:…")

The tag defaults to the index.json entry's org.opencontainers.image.ref.name annotation.
Plain HTTP only (127.0.0.1 test registries).
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import urllib.parse

REF_NAME = "org.opencontainers.image.ref.name"

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}


class PushError(RuntimeError):
    pass


class _Client:
    """Tiny HTTP/1.1 client for one registry (keep-alive connection, reconnect on demand)."""

    def __init__(self, addr, timeout=60):
        self.addr = addr
        self.timeout = timeout
        self.conn = None

    def _connect(self):
        host, _, port = self.addr.rpartition(":")
        if not host:
            host, port = self.addr, "80"
        self.conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=self.timeout)

    def request(self, method, url, body=None, headers=None):
        """url: path (+query) or absolute http URL on this registry. Returns (status, headers, body)."""
        u = urllib.parse.urlsplit(url)
        if u.scheme:
            if u.netloc != self.addr:
                raise PushError("registry redirected to another host: %s" % url)
            url = urllib.parse.urlunsplit(("", "", u.path, u.query, ""))
        for attempt in (0, 1):
            if self.conn is None:
                self._connect()
            try:
                if hasattr(body, "seek"):
                    body.seek(0)
                self.conn.request(method, url, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, r.headers, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _blob_path(layout, digest):
    algo, _, hexd = digest.partition(":")
    if not hexd or "/" in hexd or "/" in algo:
        raise PushError("bad digest %r" % digest)
    return os.path.join(layout, "blobs", algo, hexd)


def _check_digest(path, digest, size=None):
    algo, _, hexd = digest.partition(":")
    h = hashlib.new(algo)
    n = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    if h.hexdigest() != hexd:
        raise PushError("%s: content does not match its digest %s" % (path, digest))
    if size is not None and n != size:
        raise PushError("%s: size %d, descriptor says %d" % (path, n, size))
    return n


def _add_query(location, extra):
    u = urllib.parse.urlsplit(location)
    q = u.query + ("&" if u.query else "") + extra
    return urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, q, u.fragment))


class _Pusher:
    def __init__(self, addr, layout, repo):
        self.addr = addr
        self.layout = layout
        self.repo = repo
        self.c = _Client(addr)
        self.blobs_done = set()
        self.manifests_done = set()
        self.stats = {"blobs_uploaded": 0, "blobs_present": 0, "manifests": 0}

    def blob(self, desc):
        digest = desc["digest"]
        if digest in self.blobs_done:
            return
        path = _blob_path(self.layout, digest)
        size = _check_digest(path, digest, desc.get("size"))
        st, _, _ = self.c.request("HEAD", "/v2/%s/blobs/%s" % (self.repo, digest))
        if st == 200:
            self.stats["blobs_present"] += 1
            self.blobs_done.add(digest)
            return
        st, hdr, body = self.c.request("POST", "/v2/%s/blobs/uploads/" % self.repo,
                                       headers={"Content-Length": "0"})
        if st != 202 or not hdr.get("Location"):
            raise PushError("POST blobs/uploads/ for %s: HTTP %d %s" % (digest, st, body[:300]))
        loc = hdr["Location"]
        if not urllib.parse.urlsplit(loc).scheme and not loc.startswith("/"):
            loc = "/v2/%s/blobs/uploads/%s" % (self.repo, loc)
        url = _add_query(loc, "digest=" + urllib.parse.quote(digest, safe=":"))
        with open(path, "rb") as f:
            st, hdr, body = self.c.request("PUT", url, body=f, headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size)})
        if st != 201:
            raise PushError("PUT blob %s: HTTP %d %s" % (digest, st, body[:300]))
        got = hdr.get("Docker-Content-Digest")
        if got and got != digest:
            raise PushError("registry stored blob %s as %s" % (digest, got))
        self.stats["blobs_uploaded"] += 1
        self.blobs_done.add(digest)

    def put_manifest(self, desc, data, ref):
        mt = desc.get("mediaType")
        if not mt:
            raise PushError("descriptor %s has no mediaType" % desc["digest"])
        st, hdr, body = self.c.request("PUT", "/v2/%s/manifests/%s" % (self.repo, ref), body=data,
                                       headers={"Content-Type": mt,
                                                "Content-Length": str(len(data))})
        if st != 201:
            raise PushError("PUT manifest %s (%s) as %s: HTTP %d %s"
                            % (desc["digest"], mt, ref, st, body[:500]))
        got = hdr.get("Docker-Content-Digest")
        if got and got != desc["digest"]:
            raise PushError("registry stored manifest %s as %s" % (desc["digest"], got))
        self.stats["manifests"] += 1

    def node(self, desc, ref=None):
        """Push whatever desc points at (manifest or index), its children first; then PUT it
        by digest, and by ref too if given."""
        digest = desc["digest"]
        mt = desc.get("mediaType")
        path = _blob_path(self.layout, digest)
        _check_digest(path, digest, desc.get("size"))
        with open(path, "rb") as f:
            data = f.read()
        if digest not in self.manifests_done:
            doc = json.loads(data)
            if mt in INDEX_TYPES:
                for child in doc.get("manifests", []):
                    self.node(child)
            elif mt in MANIFEST_TYPES:
                self.blob(doc["config"])
                for layer in doc.get("layers", []):
                    if layer.get("urls"):
                        continue  # foreign layer: not ours to upload
                    self.blob(layer)
            else:
                raise PushError("%s: unsupported manifest media type %r" % (digest, mt))
            self.put_manifest(desc, data, digest)
            self.manifests_done.add(digest)
        if ref is not None:
            self.put_manifest(desc, data, ref)


def read_index(layout_dir):
    with open(os.path.join(layout_dir, "index.json"), "rb") as f:
        return json.load(f)


def select_entry(index, ref_name=None):
    """The index.json entry to push: the one annotated ref_name, or the only one."""
    entries = index.get("manifests", [])
    if ref_name is not None:
        hits = [e for e in entries if e.get("annotations", {}).get(REF_NAME) == ref_name]
        if len(hits) != 1:
            raise PushError("%d index.json entries with %s=%s" % (len(hits), REF_NAME, ref_name))
        return hits[0]
    if len(entries) != 1:
        raise PushError("index.json has %d entries; say which (ref_name)" % len(entries))
    return entries[0]


def push_layout(registry_addr, layout_dir, repo, tag=None, ref_name=None):
    """Push the image of OCI layout layout_dir to registry_addr ("127.0.0.1:5000") as repo:tag.

    tag defaults to the entry's org.opencontainers.image.ref.name. Returns a dict:
    {"ref": "ADDR/REPO:TAG", "digest": top digest, "mediaType": top media type, "size": ...,
     "tag": TAG, "repo": REPO, "stats": {...}}.
    """
    entry = select_entry(read_index(layout_dir), ref_name)
    if tag is None:
        tag = entry.get("annotations", {}).get(REF_NAME)
        if not tag:
            raise PushError("no tag given and the index.json entry has no %s" % REF_NAME)
    p = _Pusher(registry_addr, layout_dir, repo)
    try:
        p.node(entry, ref=tag)
    finally:
        p.c.close()
    return {"ref": "%s/%s:%s" % (registry_addr, repo, tag), "digest": entry["digest"],
            "mediaType": entry.get("mediaType"), "size": entry.get("size"),
            "tag": tag, "repo": repo, "stats": p.stats}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Push an OCI image layout byte for byte to a registry.")
    ap.add_argument("registry", help="host:port, e.g. 127.0.0.1:5000")
    ap.add_argument("layout", help="OCI image layout directory")
    ap.add_argument("repo", help="repository name, e.g. fixtures/oci-gzip")
    ap.add_argument("--tag", help="tag (default: the index.json entry's ref.name annotation)")
    ap.add_argument("--ref-name", help="which index.json entry (by ref.name) if it has several")
    args = ap.parse_args(argv)
    try:
        r = push_layout(args.registry, args.layout, args.repo, args.tag, args.ref_name)
    except (PushError, OSError, ValueError, KeyError) as e:
        print("push.py: %s" % e, file=sys.stderr)
        return 1
    print("%s@%s" % (r["ref"], r["digest"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
