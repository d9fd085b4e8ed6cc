#!/usr/bin/python3
"""Write eStargz layers (and OCI layouts mixing them with plain gzip layers) from entry lists,
byte for byte in the layout stargz-snapshotter's ctr-remote writes (tests/fixtures/README.md,
"eStargz"):

  * a new gzip member starts where each regular file's payload starts and at every chunk
    boundary (chunk_size, default 4 MiB) inside a big file; the tar padding and the tar
    headers of the following entries ride at the end of the previous member; the very first
    member holds only the first entry's header;
  * TOC entry `offset` = start (in the blob) of the member whose first byte is the payload's
    first byte; "reg" entries carry size/digest (sha256 of the whole file) and the first
    chunk's chunkSize/chunkDigest, every further chunk is a "chunk" entry with
    offset/chunkOffset/chunkSize/chunkDigest; JSON fields are omitted when empty/zero as Go's
    `omitempty` does, so (like ctr-remote) a file smaller than one chunk and the last short
    chunk of a file have no chunkSize -- always_chunk_size=True writes it everywhere;
  * the landmark: `.prefetch.landmark` (1 byte, 0x0f) after the entries named in `prefetch`
    (and their parent directories), or `.no.prefetch.landmark` first when there are none
    (landmark=False: no landmark entry at all);
  * then ONE member with the tar header of `stargz.index.json`, the TOC JSON (tab-indented),
    its padding and the tar end-of-archive blocks; then the 51-byte footer: an empty gzip
    member with FEXTRA subfield "SG" = TOC offset as %016x + "STARGZ";
  * members: gzip MTIME 0, XFL 2 at level 9 (0 otherwise, as Go writes it), OS 0xff.

TOC digest = sha256 of the TOC JSON -> annotation containerd.io/snapshot/stargz/toc.digest;
io.containers.estargz.uncompressed-size = length of the whole uncompressed tar; diff_id =
sha256 of that tar.

Entries are mkdemo.py's tuples (path, type, mode, payload, mtime) with path relative ("." =
root) and type "d" (payload None), "f" (payload bytes), "l" (payload = target str), plus
  "h" hard link (payload = target path, relative), "c"/"b" device (payload = (major, minor)),
  "p" FIFO (payload None);
an optional 6th element is a dict with "uid", "gid", "xattrs" ({name: bytes}).
A whiteout is just an "f" entry named ".wh.NAME" (empty payload), as in any OCI layer.
entries_from_tar(tar_bytes) turns an existing tar into such a list.

Module:
  make_estargz(entries, chunk_size=4 MiB, prefetch=None, level=9, landmark=True,
               always_chunk_size=False, mode_type_bits=False) -> EStargz (.blob .toc .toc_json .toc_digest
               .diff_id .uncompressed_size .annotations() .descriptor() .members .chunks)
  parse_estargz(blob) -> (toc dict, toc_offset, toc_json)  a small independent reader
  member_map(blob) -> what each gzip member starts with (tar header / payload of a file at
               an offset / footer): the fixture cross-check compares ctr-remote's and ours
  verify_estargz(blob, toc_digest=None) -> list of problems (empty = OK): footer, TOC digest,
               every chunk decompresses from its member start and matches chunkDigest,
               every file's digest, gunzip of the whole blob is a tar listing every TOC name
  corrupt_chunk(blob, offset) -> same-size blob whose member at `offset` decodes to different
               bytes (stored-deflate members: valid gzip with a fixed CRC; otherwise a flipped
               deflate byte)
  build_layout(outdir, layers, config=None, tag="latest") -> dict: an OCI layout; layers is a
               list of ("gzip", entries) / ("estargz", entries[, make_estargz kwargs])
  large_entries(total_bytes, n_files, seed) -> entries of incompressible random files
  build_large_image(outdir, fmt="estargz", total_bytes=40 MB, n_files=400, seed=1, ...)
               busybox + /etc/os-release layer (mkdemo) + a layer of random files
  expected_files(layers) -> {"/path": bytes} of the merged tree's regular files (whiteouts
               applied) for content checks

CLI:   mkestargz.py layer  OUT.blob  --from-tar T.tar [--chunk-size N] [--prefetch PATH...]
       mkestargz.py large  OUTDIR [--format estargz|gzip] [--total-mb 40] [--files 400] [--seed 1]
       mkestargz.py verify BLOB [--toc-digest sha256:…]
"""

import argparse
import base64
import datetime
import gzip
import hashlib
import io
import json
import os
import random
import struct
import sys
import tarfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkdemo  # noqa: E402

TOC_NAME = "stargz.index.json"
PREFETCH_LANDMARK = ".prefetch.landmark"
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
LANDMARK_CONTENT = b"\x0f"
FOOTER_SIZE = 51
DEFAULT_CHUNK = 4 << 20

ANN_TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
ANN_UNCOMPRESSED = "io.containers.estargz.uncompressed-size"
BOOKKEEPING = {TOC_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK}


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# gzip members


def gzip_member(data, level=9):
    """One gzip member as Go's compress/gzip writes it in estargz: MTIME 0, XFL 2 at level 9
    (BestCompression), 4 at level 1, else 0; OS 0xff."""
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 0xff]) + body
            + struct.pack("<II", zlib.crc32(data) & 0xffffffff, len(data) & 0xffffffff))


def footer(toc_offset):
    """The 51-byte eStargz footer."""
    sub = b"%016xSTARGZ" % toc_offset
    extra = b"SG" + struct.pack("<H", len(sub)) + sub
    f = (b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + struct.pack("<H", len(extra)) + extra
         + b"\x01\x00\x00\xff\xff" + b"\x00" * 8)
    assert len(f) == FOOTER_SIZE, len(f)
    return f


def parse_footer(tail):
    """TOC offset from the last 51 bytes, or raise ValueError."""
    f = tail[-FOOTER_SIZE:]
    if len(f) != FOOTER_SIZE or f[:4] != b"\x1f\x8b\x08\x04" or f[10:12] != b"\x1a\x00" \
            or f[12:14] != b"SG" or f[14:16] != b"\x16\x00" or f[32:38] != b"STARGZ":
        raise ValueError("not an eStargz footer: %s" % f.hex())
    return int(f[16:32], 16)


# ---------------------------------------------------------------------------------------------
# entries and tar headers


def _norm(e):
    """(path, type, mode, payload, mtime, extra dict)."""
    if len(e) == 5:
        return tuple(e) + ({},)
    return tuple(e[:5]) + (dict(e[5] or {}),)


def _tar_name(path, typ):
    if path in (".", "./", ""):
        return "./"
    return path + "/" if typ == "d" else path


def _toc_name(path, typ):
    if path in (".", "./", ""):
        return "."
    return path + "/" if typ == "d" else path


def _tarinfo(path, typ, mode, payload, mtime, extra):
    ti = tarfile.TarInfo(_tar_name(path, typ))
    ti.mode = mode & 0o7777
    ti.uid, ti.gid = extra.get("uid", 0), extra.get("gid", 0)
    ti.uname = ti.gname = ""
    ti.mtime = mtime
    if typ == "d":
        ti.type = tarfile.DIRTYPE
    elif typ == "l":
        ti.type, ti.linkname = tarfile.SYMTYPE, payload
    elif typ == "h":
        ti.type, ti.linkname = tarfile.LNKTYPE, payload
    elif typ in ("c", "b"):
        ti.type = tarfile.CHRTYPE if typ == "c" else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = payload
    elif typ == "p":
        ti.type = tarfile.FIFOTYPE
    elif typ == "f":
        ti.type, ti.size = tarfile.REGTYPE, len(payload)
    else:
        raise ValueError("unknown entry type %r for %s" % (typ, path))
    xattrs = extra.get("xattrs") or {}
    if xattrs:
        ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                          if isinstance(v, bytes) else v for k, v in sorted(xattrs.items())}
    return ti


def _header(ti):
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _rfc3339(mtime):
    return datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# key order of estargz's TOCEntry struct (encoding/json keeps the struct's order)
TOC_KEY_ORDER = ["name", "type", "size", "modtime", "linkName", "mode", "uid", "gid", "uname",
                 "gname", "offset", "devMajor", "devMinor", "xattrs", "digest", "chunkOffset",
                 "chunkSize", "chunkDigest"]


def _ordered(te):
    return {k: te[k] for k in sorted(te, key=lambda k: TOC_KEY_ORDER.index(k)
                                     if k in TOC_KEY_ORDER else len(TOC_KEY_ORDER))}


def _toc_entry(path, typ, mode, payload, mtime, extra, mode_type_bits=False):
    """The TOC entry for an entry (without offset/digest fields). mode_type_bits=True writes
    the mode with the S_IF* bits as Go's tar.FileInfoHeader does (buildah's layers; readers
    must mask them)."""
    te = {"name": _toc_name(path, typ),
          "type": {"d": "dir", "f": "reg", "l": "symlink", "h": "hardlink", "c": "char",
                   "b": "block", "p": "fifo"}[typ]}
    if typ == "f" and len(payload):
        te["size"] = len(payload)
    if mtime:
        te["modtime"] = _rfc3339(mtime)
    if typ in ("l", "h"):
        te["linkName"] = payload
    m = mode & 0o7777
    if mode_type_bits:
        m |= {"d": 0o040000, "f": 0o100000, "l": 0o120000, "h": 0o100000, "c": 0o020000,
              "b": 0o060000, "p": 0o010000}[typ]
    if m:
        te["mode"] = m
    if extra.get("uid"):
        te["uid"] = extra["uid"]
    if extra.get("gid"):
        te["gid"] = extra["gid"]
    if typ in ("c", "b"):
        if payload[0]:
            te["devMajor"] = payload[0]
        if payload[1]:
            te["devMinor"] = payload[1]
    xattrs = extra.get("xattrs") or {}
    if xattrs:
        te["xattrs"] = {k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode()
                        for k, v in sorted(xattrs.items())}
    return te


def entries_from_tar(tar_bytes):
    """The entry tuples (6 elements) of a tar, in archive order."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*") as tf:
        for m in tf:
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            name = name.rstrip("/") or "."
            extra = {"uid": m.uid, "gid": m.gid}
            xa = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                  for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            if xa:
                extra["xattrs"] = xa
            mt = int(m.mtime)
            if m.isdir():
                out.append((name, "d", m.mode, None, mt, extra))
            elif m.issym():
                out.append((name, "l", m.mode, m.linkname, mt, extra))
            elif m.islnk():
                out.append((name, "h", m.mode, m.linkname.lstrip("./") if m.linkname.startswith("./")
                            else m.linkname, mt, extra))
            elif m.ischr() or m.isblk():
                out.append((name, "c" if m.ischr() else "b", m.mode, (m.devmajor, m.devminor), mt, extra))
            elif m.isfifo():
                out.append((name, "p", m.mode, None, mt, extra))
            elif m.isreg():
                out.append((name, "f", m.mode, tf.extractfile(m).read(), mt, extra))
    return out


# ---------------------------------------------------------------------------------------------
# the writer


class EStargz:
    """A written eStargz layer.

    blob               the layer bytes
    toc, toc_json      the TOC (dict) and its exact JSON bytes
    toc_digest         sha256 of toc_json ("sha256:…")
    toc_offset         where the TOC member starts
    digest, size       of the blob
    diff_id            sha256 of the uncompressed tar
    uncompressed_size  its length
    members            [(start, end)] of every gzip member before the TOC member
    chunks             [{"name", "offset", "end", "chunkOffset", "chunkSize", "chunkDigest"}]
                       one per stored chunk: [offset, end) is the compressed member in the blob
    files              {name: bytes} of the regular files (TOC names, bookkeeping excluded)
    """

    def annotations(self):
        return {ANN_TOC_DIGEST: self.toc_digest, ANN_UNCOMPRESSED: str(self.uncompressed_size)}

    def descriptor(self):
        return {"mediaType": mkdemo.MT_LAYER_GZIP, "digest": self.digest, "size": self.size,
                "annotations": self.annotations()}

    def chunks_of(self, name):
        return [c for c in self.chunks if c["name"] == name]


def _order(entries, prefetch, landmark, prefetch_in_given_order=False):
    """Entries with the prefetch ones (and their parent dirs, in original order) first, then the
    landmark entry; or the no-prefetch landmark first.  prefetch_in_given_order: the parent
    dirs first, then the prefetch entries in the order of `prefetch` (an access record's
    order, as ctr-remote optimize writes the files a workload read first)."""
    entries = [_norm(e) for e in entries]
    def lm(name):  # mode 0, mtime 0, as ctr-remote writes it
        return (name, "f", 0, LANDMARK_CONTENT, 0, {})
    if not landmark:
        return entries
    if not prefetch:
        return [lm(NO_PREFETCH_LANDMARK)] + entries
    want = set(p.strip("/") for p in prefetch)
    parents = set()
    for p in want:
        parts = p.split("/")
        for i in range(1, len(parts)):
            parents.add("/".join(parts[:i]))
    first = [e for e in entries if e[0] in want or e[0] in parents or e[0] == "."]
    if prefetch_in_given_order:
        rank = {p.strip("/"): i for i, p in reversed(list(enumerate(prefetch)))}
        dirs = [e for e in first if e[0] not in want]
        files = sorted((e for e in first if e[0] in want), key=lambda e: rank[e[0]])
        first = dirs + files
    missing = want - {e[0] for e in first}
    if missing:
        raise ValueError("prefetch names not among the entries: %s" % sorted(missing))
    rest = [e for e in entries if not (e[0] in want or e[0] in parents or e[0] == ".")]
    return first + [lm(PREFETCH_LANDMARK)] + rest


def make_estargz(entries, chunk_size=DEFAULT_CHUNK, prefetch=None, level=9, landmark=True,
                 always_chunk_size=False, mode_type_bits=False, prefetch_in_given_order=False):
    """Write an eStargz layer of entries (see the module doc). Returns an EStargz."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be > 0")
    ordered = _order(entries, prefetch, landmark, prefetch_in_given_order)
    blob = bytearray()
    members = []
    cur = bytearray()
    tar_len = 0
    diff = hashlib.sha256()
    toc_entries, chunks, files = [], [], {}

    def flush():
        nonlocal cur
        if cur:
            start = len(blob)
            blob.extend(gzip_member(bytes(cur), level))
            members.append((start, len(blob)))
            cur = bytearray()

    def add_tar(data):
        nonlocal tar_len
        cur.extend(data)
        diff.update(data)
        tar_len += len(data)

    for path, typ, mode, payload, mtime, extra in ordered:
        add_tar(_header(_tarinfo(path, typ, mode, payload, mtime, extra)))
        te = _toc_entry(path, typ, mode, payload, mtime, extra, mode_type_bits)
        if typ != "f":
            toc_entries.append(te)
            continue
        size = len(payload)
        te["digest"] = sha256(payload)
        if te["name"] not in BOOKKEEPING:
            files[te["name"]] = payload
        if size == 0:
            toc_entries.append(te)
            continue
        pos = 0
        while pos < size:
            n = min(chunk_size, size - pos)
            flush()
            data = payload[pos:pos + n]
            ce = te if pos == 0 else {"name": te["name"], "type": "chunk"}
            ce["offset"] = len(blob)
            if pos:
                ce["chunkOffset"] = pos
            if n == chunk_size or always_chunk_size:
                ce["chunkSize"] = n
            ce["chunkDigest"] = sha256(data)
            toc_entries.append(ce)
            chunks.append({"name": te["name"], "offset": len(blob), "chunkOffset": pos,
                           "chunkSize": n, "chunkDigest": ce["chunkDigest"]})
            add_tar(data)
            pos += n
        pad = (-size) % 512
        if pad:
            add_tar(b"\0" * pad)
    flush()
    toc = {"version": 1, "entries": [_ordered(te) for te in toc_entries]}
    toc_json = json.dumps(toc, indent="\t").encode()
    toc_offset = len(blob)
    ti = tarfile.TarInfo(TOC_NAME)
    ti.size, ti.mode, ti.mtime, ti.uname, ti.gname = len(toc_json), 0, 0, "", ""
    tail = ti.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + toc_json \
        + b"\0" * ((-len(toc_json)) % 512) + b"\0" * 1024
    diff.update(tail)
    tar_len += len(tail)
    blob.extend(gzip_member(tail, level))
    blob.extend(footer(toc_offset))
    # each chunk's compressed extent: up to the next member start of a chunk, or the TOC
    starts = sorted({c["offset"] for c in chunks})
    nxt = {s: e for s, e in zip(starts, starts[1:] + [toc_offset])}
    for c in chunks:
        c["end"] = nxt[c["offset"]]
    r = EStargz()
    r.blob = bytes(blob)
    r.toc, r.toc_json = toc, toc_json
    r.toc_digest = sha256(toc_json)
    r.toc_offset = toc_offset
    r.digest, r.size = sha256(r.blob), len(r.blob)
    r.diff_id = "sha256:" + diff.hexdigest()
    r.uncompressed_size = tar_len
    r.members = members
    r.chunks = chunks
    r.files = files
    return r


# ---------------------------------------------------------------------------------------------
# an independent reader, for checking a blob (ours or the fixture's)


def gunzip_member(blob, pos, window=1 << 16):
    """(decompressed data, end offset) of the gzip member starting at pos; fed in windows so
    that a blob of thousands of members is not copied once per member."""
    d = zlib.decompressobj(31)
    mv = memoryview(blob)
    out = []
    p = pos
    while not d.eof:
        if p >= len(blob):
            raise ValueError("truncated gzip member at %d" % pos)
        piece = mv[p:p + window]
        out.append(d.decompress(piece))
        p += len(piece)
    return b"".join(out), p - len(d.unused_data)


def parse_estargz(blob):
    """(toc dict, toc_offset, toc_json bytes) of an eStargz blob (whole blob in memory)."""
    off = parse_footer(blob[-FOOTER_SIZE:])
    d = zlib.decompressobj(31)
    raw = d.decompress(blob[off:len(blob) - FOOTER_SIZE])
    if not d.eof:
        raise ValueError("TOC member does not end before the footer")
    if d.unused_data:
        raise ValueError("%d bytes between the TOC member and the footer" % len(d.unused_data))
    hdr = tarfile.TarInfo.frombuf(raw[:512], "utf-8", "surrogateescape")
    if hdr.name != TOC_NAME:
        raise ValueError("TOC member starts with %r" % hdr.name)
    toc_json = raw[512:512 + hdr.size]
    rest = raw[512 + hdr.size:]
    if rest.strip(b"\0") or len(rest) < 1024:
        raise ValueError("no end-of-archive after the TOC")
    return json.loads(toc_json), off, toc_json


def _member_data(blob, offset, size):
    """size bytes of decompressed data from the member chain starting at offset."""
    out = bytearray()
    pos = offset
    while len(out) < size and pos < len(blob):
        data, pos = gunzip_member(blob, pos)
        out.extend(data)
    if len(out) < size:
        raise ValueError("member chain at %d decodes to %d < %d bytes" % (offset, len(out), size))
    return bytes(out[:size])


def members(blob):
    """[(start, end, uncompressed_start, uncompressed_length)] of every gzip member (footer
    included)."""
    out, pos, upos = [], 0, 0
    while pos < len(blob):
        data, end = gunzip_member(blob, pos)
        out.append((pos, end, upos, len(data)))
        pos, upos = end, upos + len(data)
    return out


def tar_layout(raw):
    """[(header_start, payload_start, size, name)] of every entry of an uncompressed tar
    (header_start = first block of its PAX/GNU extension headers, if any)."""
    out, pos = [], 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        for m in tf:
            out.append((pos, m.offset_data, m.size if m.isreg() else 0, m.name))
            pos = m.offset_data + ((m.size + 511) // 512 * 512 if m.isreg() else 0)
    return out


def member_map(blob, chunk_size=None):
    """What each gzip member starts with, in the uncompressed tar: ("payload", name,
    offset_in_file) or ("header", name) or ("eoa"/"footer", ""); with the blob offset first.
    The fixture cross-check compares these between ctr-remote's and our layers."""
    ms = members(blob)
    raw = b"".join(gunzip_member(blob, s)[0] for s, e, _, _ in ms)
    lay = tar_layout(raw)
    at_header = {h: n for h, p, sz, n in lay}
    out = []
    for s, e, us, ul in ms:
        if ul == 0:
            out.append((s, "footer", ""))
            continue
        if us in at_header:
            out.append((s, "header", at_header[us].lstrip("./") or "."))
            continue
        hit = None
        for h, p, sz, n in lay:
            if p <= us < p + sz:
                hit = (s, "payload", n.lstrip("./") or ".", us - p)
                break
        out.append(hit or (s, "eoa" if us >= (lay[-1][1] + lay[-1][2] if lay else 0) else "?", ""))
    return out


def is_member_start(blob, offset):
    return blob[offset:offset + 3] == b"\x1f\x8b\x08"


def verify_estargz(blob, toc_digest=None, uncompressed_size=None, check_tar=True):
    """Problems found (empty list = OK). Checks the footer, the TOC (digest if given), every
    chunk (a member starts at its offset, it decodes to data matching chunkDigest), every
    file's digest, and that gunzip of the whole blob is a tar naming every TOC entry."""
    probs = []
    try:
        toc, off, toc_json = parse_estargz(blob)
    except (ValueError, zlib.error, tarfile.TarError) as e:
        return ["TOC: %s" % e]
    if toc_digest and sha256(toc_json) != toc_digest:
        probs.append("TOC digest %s != %s" % (sha256(toc_json), toc_digest))
    if toc.get("version") != 1:
        probs.append("TOC version %r" % toc.get("version"))
    files = {}
    cur = None
    for e in toc["entries"]:
        t = e.get("type")
        if t == "reg":
            cur = e
            files[e["name"]] = {"size": e.get("size", 0), "digest": e.get("digest"), "parts": []}
        elif t != "chunk":
            cur = None
        if t in ("reg", "chunk") and e.get("size", 0 if t == "reg" else 1):
            if t == "chunk" and (cur is None or cur["name"] != e["name"]):
                probs.append("chunk entry %s without its reg entry" % e["name"])
                continue
            files[e["name"]]["parts"].append(e)
    for name, f in files.items():
        parts, size = f["parts"], f["size"]
        data = bytearray()
        for i, p in enumerate(parts):
            co = p.get("chunkOffset", 0)
            nxt = parts[i + 1].get("chunkOffset", 0) if i + 1 < len(parts) else size
            cs = p.get("chunkSize") or (nxt - co)
            if co != len(data):
                probs.append("%s: chunk at %d, expected %d" % (name, co, len(data)))
                break
            if not is_member_start(blob, p["offset"]):
                probs.append("%s: offset %d is not a gzip member start" % (name, p["offset"]))
                break
            try:
                cd = _member_data(blob, p["offset"], cs)
            except (ValueError, zlib.error) as e:
                probs.append("%s: chunk %d: %s" % (name, co, e))
                break
            if p.get("chunkDigest") and sha256(cd) != p["chunkDigest"]:
                probs.append("%s: chunk %d digest mismatch" % (name, co))
            data.extend(cd)
        if size and len(data) == size and f["digest"] and sha256(bytes(data)) != f["digest"]:
            probs.append("%s: file digest mismatch" % name)
    if check_tar:
        try:
            raw = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as e:
            probs.append("gunzip: %s" % e)
        else:
            if uncompressed_size is not None and len(raw) != int(uncompressed_size):
                probs.append("uncompressed size %d != %s" % (len(raw), uncompressed_size))
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
                names = set()
                for m in tf:
                    n = m.name
                    if n.startswith("./"):
                        n = n[2:]
                    names.add((n or ".") + ("/" if m.isdir() and n not in ("", ".") and not n.endswith("/") else ""))
            toc_names = {e["name"] for e in toc["entries"] if e["type"] != "chunk"}
            miss = toc_names - names - {"."}
            if miss:
                probs.append("TOC names missing from the tar: %s" % sorted(miss)[:5])
            if TOC_NAME not in names:
                probs.append("the tar has no %s" % TOC_NAME)
    return probs


def corrupt_chunk(blob, offset):
    """A copy of blob, same size, whose gzip member at `offset` decodes to different bytes.
    For a member made of stored deflate blocks (level 0) the result is a valid gzip member
    with a correct CRC: only the chunk digest can tell. Otherwise one byte of the deflate data
    is flipped (the member may then fail to decode at all)."""
    if not is_member_start(blob, offset):
        raise ValueError("no gzip member at %d" % offset)
    b = bytearray(blob)
    flags = b[offset + 3]
    if flags == 0 and b[offset + 10] & 0x06 == 0:  # first deflate block is stored
        p = offset + 10
        ln = struct.unpack_from("<H", b, p + 1)[0]
        if ln > 0:
            b[p + 5] ^= 0xff
            d = zlib.decompressobj(-15)   # raw deflate: the old CRC is not checked
            data = d.decompress(bytes(b[p:]))
            deflate_end = len(b) - len(d.unused_data)
            struct.pack_into("<I", b, deflate_end, zlib.crc32(data) & 0xffffffff)
            return bytes(b)
    b[offset + 10 + 20] ^= 0x55
    return bytes(b)


# ---------------------------------------------------------------------------------------------
# OCI layouts


def _put(blobdir, data):
    d = sha256(data)
    with open(os.path.join(blobdir, d.split(":", 1)[1]), "wb") as f:
        f.write(data)
    return d


def build_layout(outdir, layers, config=None, tag="latest"):
    """An OCI image layout at outdir from layers = [(kind, entries[, kwargs])], kind "gzip"
    (mkdemo's PAX tar + gzip) or "estargz" (make_estargz(entries, **kwargs)).
    Returns {"manifest": digest, "layers": [{"kind", "digest", "size", "estargz": EStargz|None,
    "entries"}], "config": digest}."""
    blobdir = os.path.join(outdir, "blobs", "sha256")
    os.makedirs(blobdir)
    descs, diff_ids, info = [], [], []
    for spec in layers:
        kind, entries = spec[0], spec[1]
        kw = spec[2] if len(spec) > 2 else {}
        if kind == "gzip":
            simple = [_norm(e) for e in entries]
            if any(e[1] not in ("d", "f", "l") or e[5] for e in simple):
                tar = _plain_tar(simple)
            else:
                tar = mkdemo.make_tar([e[:5] for e in simple])
            gz = mkdemo.gzip_bytes(tar) if kw.get("level", 9) == 9 else gzip.compress(tar, kw["level"], mtime=0)
            d = _put(blobdir, gz)
            descs.append({"mediaType": mkdemo.MT_LAYER_GZIP, "digest": d, "size": len(gz)})
            diff_ids.append(sha256(tar))
            info.append({"kind": kind, "digest": d, "size": len(gz), "estargz": None, "entries": entries})
        elif kind == "estargz":
            es = make_estargz(entries, **kw)
            _put(blobdir, es.blob)
            descs.append(es.descriptor())
            diff_ids.append(es.diff_id)
            info.append({"kind": kind, "digest": es.digest, "size": es.size, "estargz": es,
                         "entries": entries})
        else:
            raise ValueError("unknown layer kind %r" % kind)
    arch = mkdemo.goarch()
    cfg = mkdemo.canon({"created": mkdemo.CREATED, "architecture": arch, "os": "linux",
                        "config": dict(config or {"Env": mkdemo.ENV, "Cmd": ["/bin/sh"]}),
                        "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    cfg_d = _put(blobdir, cfg)
    man = mkdemo.canon({"schemaVersion": 2, "mediaType": mkdemo.MT_MANIFEST,
                        "config": {"mediaType": mkdemo.MT_CONFIG, "digest": cfg_d, "size": len(cfg)},
                        "layers": descs})
    man_d = _put(blobdir, man)
    index = {"schemaVersion": 2, "mediaType": mkdemo.MT_INDEX,
             "manifests": [{"mediaType": mkdemo.MT_MANIFEST, "digest": man_d, "size": len(man),
                            "platform": {"architecture": arch, "os": "linux"},
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(outdir, "index.json"), "wb") as f:
        f.write(mkdemo.canon(index))
    with open(os.path.join(outdir, "oci-layout"), "wb") as f:
        f.write(b'{"imageLayoutVersion":"1.0.0"}')
    return {"manifest": man_d, "config": cfg_d, "layers": info, "tag": tag}


def _plain_tar(entries):
    buf = io.BytesIO()
    for path, typ, mode, payload, mtime, extra in entries:
        buf.write(_header(_tarinfo(path, typ, mode, payload, mtime, extra)))
        if typ == "f" and payload:
            buf.write(payload + b"\0" * ((-len(payload)) % 512))
    buf.write(b"\0" * 1024)
    return buf.getvalue()


def expected_files(layers):
    """{"/path": bytes} of every regular file of the merged tree of layers (lists of entries,
    bottom first), with whiteouts (.wh.NAME, .wh..wh..opq) applied; hard links resolved."""
    files, dirs = {}, set()
    for entries in layers:
        for e in entries:
            path, typ, mode, payload, mtime, extra = _norm(e)
            d, _, base = path.rpartition("/")
            pre = "/" + d + "/" if d else "/"
            if base == ".wh..wh..opq":
                for k in [k for k in files if k.startswith(pre)]:
                    del files[k]
                continue
            if base.startswith(".wh."):
                victim = pre + base[4:]
                for k in [k for k in files if k == victim or k.startswith(victim + "/")]:
                    del files[k]
                continue
            p = "/" + path if path != "." else "/"
            files.pop(p, None)
            if typ == "f":
                files[p] = payload
            elif typ == "h":
                files[p] = files["/" + payload]
    return files


def size_plan(total_bytes, n_files, seed):
    """n_files sizes (log-uniform from 64 B to 2 MiB, plus 3 files of 5-6 MiB -- more than one
    4 MiB chunk -- when total_bytes >= 30 MB), scaled so that they add up to about
    total_bytes."""
    rnd = random.Random(seed)
    import math
    sizes = [int(math.exp(rnd.uniform(math.log(64), math.log(2 << 20)))) for _ in range(n_files)]
    # a handful of multi-chunk files, when the budget allows
    nbig = min(3, n_files) if total_bytes >= 30 * 10**6 else 0
    for i in range(nbig):
        sizes[i] = (5 << 20) + rnd.randrange(1 << 20)
    big = sum(sizes[:nbig])
    scale = max(total_bytes - big, n_files) / float(max(1, sum(sizes[nbig:])))
    return [max(1, int(s * scale)) if i >= nbig else s for i, s in enumerate(sizes)]


def large_entries(total_bytes=40 * 10**6, n_files=400, seed=1, mtime=mkdemo.T2, top="data"):
    """Entries of n_files incompressible random files (~total_bytes) in 20 directories below
    /TOP, seeded; names data/dNN/fNNNN.bin."""
    rnd = random.Random(seed ^ 0x5eed)
    sizes = size_plan(total_bytes, n_files, seed)
    out = [(top, "d", 0o755, None, mtime)]
    ndirs = 20
    for d in range(ndirs):
        out.append(("%s/d%02d" % (top, d), "d", 0o755, None, mtime))
    for i, s in enumerate(sizes):
        out.append(("%s/d%02d/f%04d.bin" % (top, i % ndirs, i), "f", 0o644, rnd.randbytes(s), mtime))
    return out


def base_entries(busybox="/bin/busybox"):
    with open(busybox, "rb") as f:
        return mkdemo.layer1_entries(f.read())


def build_large_image(outdir, fmt="estargz", total_bytes=40 * 10**6, n_files=400, seed=1,
                      tag="latest", chunk_size=DEFAULT_CHUNK, prefetch=None, level=1,
                      busybox="/bin/busybox", single_layer=False):
    """Layer 1: mkdemo's busybox + /etc (eStargz or gzip as fmt says), layer 2: the random
    files (level 1: they are incompressible anyway). single_layer=True puts everything in one
    layer. Returns build_layout()'s dict plus "files" (expected_files)."""
    l1 = base_entries(busybox)
    l2 = large_entries(total_bytes, n_files, seed)
    kw = {"chunk_size": chunk_size, "level": level}
    if single_layer:
        layers = [(fmt, l1 + l2, dict(kw, prefetch=prefetch) if fmt == "estargz" else {"level": level})]
    elif fmt == "estargz":
        layers = [("estargz", l1, {"chunk_size": chunk_size}),
                  ("estargz", l2, dict(kw, prefetch=prefetch))]
    else:
        layers = [("gzip", l1), ("gzip", l2, {"level": level})]
    info = build_layout(outdir, layers, tag=tag,
                        config={"Env": mkdemo.ENV, "Cmd": ["/bin/sh"], "WorkingDir": "/"})
    info["files"] = expected_files([spec[1] for spec in layers])
    return info


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write eStargz layers and images.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("layer")
    a.add_argument("out")
    a.add_argument("--from-tar", required=True)
    a.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    a.add_argument("--prefetch", nargs="*", default=None)
    b = sub.add_parser("large")
    b.add_argument("outdir")
    b.add_argument("--format", default="estargz", choices=["estargz", "gzip"])
    b.add_argument("--total-mb", type=float, default=40)
    b.add_argument("--files", type=int, default=400)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--tag", default="latest")
    v = sub.add_parser("verify")
    v.add_argument("blob")
    v.add_argument("--toc-digest")
    args = ap.parse_args(argv)
    if args.cmd == "layer":
        with open(args.from_tar, "rb") as f:
            es = make_estargz(entries_from_tar(f.read()), args.chunk_size, args.prefetch)
        with open(args.out, "wb") as f:
            f.write(es.blob)
        print(json.dumps(es.descriptor(), indent=1))
    elif args.cmd == "large":
        info = build_large_image(args.outdir, args.format, int(args.total_mb * 1e6), args.files,
                                 args.seed, args.tag)
        print("%s %s, layers %s" % (args.outdir, info["manifest"],
                                    ", ".join("%s %d" % (l["kind"], l["size"]) for l in info["layers"])))
    else:
        with open(args.blob, "rb") as f:
            probs = verify_estargz(f.read(), args.toc_digest)
        for p in probs:
            print(p)
        print("OK" if not probs else "%d problems" % len(probs))
        return 1 if probs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
