"""Hostile tar layers, as raw bytes, and OCI layouts that carry them.

Each case is a function returning the uncompressed tar bytes of one layer.  Python's tarfile
writes what a well-behaved tool would; the cases that no such tool writes (declared sizes
larger than the data, PAX records with absurd lengths, names that are not UTF-8) are put
together from raw 512-byte ustar headers here.

    hostile.py OUTDIR CASE     writes an OCI layout with that one layer (gzip), tag "latest"
"""

import io
import json
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import mkdemo

BLOCK = 512
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def header(name, size=0, typ=b"0", linkname=b"", mode=0o644):
    """One ustar header block (name and linkname raw bytes, at most 100 of them)."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(linkname, str):
        linkname = linkname.encode()
    assert len(name) <= 100 and len(linkname) <= 100
    h = bytearray(BLOCK)
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    if size < 8 << 30:
        h[124:136] = b"%011o\0" % size
    else:   # GNU's base-256 form: the octal field holds 11 digits
        h[124:136] = b"\x80" + size.to_bytes(11, "big")
    h[136:148] = b"00000000000\0"
    h[156:157] = typ
    h[157:157 + len(linkname)] = linkname
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pad(data):
    return data + b"\0" * (-len(data) % BLOCK)


def member(name, data=b"", typ=b"0", linkname=b"", mode=0o644):
    return header(name, len(data), typ, linkname, mode) + pad(data)


def end():
    return b"\0" * (2 * BLOCK)


def many_files_tar_gz(n, per_dir=1000):
    """A gzip layer of n empty files in directories of per_dir, compressed as it is generated
    (level 1: the tar is ~n * 512 bytes)."""
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + 15)
    out = []
    for d in range((n + per_dir - 1) // per_dir):
        out.append(z.compress(header("d%04d/" % d, typ=b"5", mode=0o755)))
        out.append(z.compress(b"".join(header("d%04d/f%07d" % (d, i))
                                       for i in range(d * per_dir, min(n, (d + 1) * per_dir)))))
    out.append(z.compress(end()))
    out.append(z.flush())
    return b"".join(out)


def pax(records):
    """A PAX extended header member holding these (key, value) records."""
    body = b""
    for k, v in records:
        rec = b" " + k + b"=" + v + b"\n"
        digits = 1
        while len(str(len(rec) + digits)) != digits:   # the length counts its own digits
            digits += 1
        body += str(len(rec) + digits).encode() + rec
    return member(b"PaxHeader", body, typ=b"x")


def tarfile_bytes(entries):
    """(name, kind, payload) with kind f(ile), d(ir), l(symlink), h(ardlink) via tarfile."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            if kind == "d":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind in "lh":
                ti.type = tarfile.SYMTYPE if kind == "l" else tarfile.LNKTYPE
                ti.linkname = payload
                tf.addfile(ti)
            else:
                ti.mode, ti.size = 0o644, len(payload)
                tf.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


# ---- cases that must give a defined tree ----------------------------------------------------

def absolute_paths():
    return (member("/abs/one", b"one\n") + member("//x//y/./z", b"z\n") +
            member("./dot/./slash/", typ=b"5", mode=0o755) + end())


def same_path_twice():
    return tarfile_bytes([("f", "f", b"first\n"), ("f", "f", b"second\n")])


def dir_then_file():
    """d/ with a child, then d as a file: the child goes, d is the file."""
    return tarfile_bytes([("d", "d", None), ("d/child", "f", b"gone\n"), ("d", "f", b"file now\n")])


def file_then_dir():
    return tarfile_bytes([("g", "f", b"was a file\n"), ("g", "d", None), ("g/inner", "f", b"in\n")])


def non_utf8_names():
    return member(b"bad-\xff\xfe", b"ff fe\n") + member(b"lat-\xe9.txt", b"latin-1\n") + end()


def hardlink_chain():
    """c -> b -> a: every link resolves to the first file's inode."""
    return tarfile_bytes([("a", "f", b"shared\n"), ("b", "h", "a"), ("c", "h", "b")])


# ---- cases that must be refused -------------------------------------------------------------

def whiteout_dotdot():
    return tarfile_bytes([("dir", "d", None), ("dir/.wh...", "f", b"")])


def whiteout_dot():
    return tarfile_bytes([("dir", "d", None), ("dir/.wh..", "f", b"")])


def whiteout_escape():
    return tarfile_bytes([("a", "d", None), ("a/../.wh.etc", "f", b"")])


def whiteout_empty():
    """'.wh.' with nothing after it: it whites out nothing."""
    return tarfile_bytes([("d", "d", None), ("d/.wh.", "f", b"")])


def whiteout_below():
    """An entry below a whiteout name, as if the whiteout were a directory."""
    return tarfile_bytes([("d", "d", None), ("d/.wh.x/y", "f", b"y\n")])


def opaque_as_dir():
    return tarfile_bytes([("d", "d", None), ("d/.wh..wh..opq", "d", None)])


def whiteout_symlink():
    return tarfile_bytes([("d", "d", None), ("d/.wh.x", "l", "/etc")])


def symlink_loop():
    """loop1 -> loop2 -> /loop1, then an entry below loop1."""
    return tarfile_bytes([("loop1", "l", "loop2"), ("loop2", "l", "/loop1"),
                          ("loop1/f", "f", b"f\n")])


def symlink_paths_lower(host_dir="/nonexistent-host-dir"):
    """Symlinks that later entries and layers write through: relative, absolute, climbing
    out of the root, chained, dangling, and one that names a host directory."""
    return tarfile_bytes([("usr", "d", None), ("usr/lib", "d", None),
                          ("usr/lib/old", "f", b"old\n"), ("usr/lib/keep", "f", b"keep\n"),
                          ("lib", "l", "usr/lib"), ("lib/same-layer", "f", b"same\n"),
                          ("abs", "l", "/usr/lib"), ("usr/up", "l", "../../../.."),
                          ("chain1", "l", "chain2/"), ("chain2", "l", "./usr"),
                          ("dangling", "l", "/opt/new"), ("host", "l", host_dir)])


def symlink_paths_upper():
    return tarfile_bytes([("abs/abs-file", "f", b"abs\n"), ("usr/up/climbed", "f", b"up\n"),
                          ("chain1/lib/chained", "f", b"chain\n"),
                          ("dangling/deep/d", "f", b"dangling\n"),
                          ("host/pwned", "f", b"not on the host\n"),
                          ("lib/.wh.old", "f", b""), ("hl", "h", "lib/same-layer")])


def hardlink_missing():
    return tarfile_bytes([("f", "f", b"x\n"), ("link", "h", "nowhere")])


def hardlink_later():
    return tarfile_bytes([("link", "h", "target"), ("target", "f", b"later\n")])


def hardlink_cycle():
    return tarfile_bytes([("a", "h", "b"), ("b", "h", "a")])


def long_component():
    return tarfile_bytes([("x" * 256, "f", b"too long\n")])


def size_beyond_data():
    """The header declares 1 MiB, 10 bytes follow, then the archive ends."""
    return header("big", 1 << 20) + pad(b"ten bytes!") + end()


def truncated_stream():
    return tarfile_bytes([("a", "f", b"a" * 5000), ("b", "f", b"b" * 5000)])[:BLOCK * 8]


def pax_huge_header():
    """A PAX header member that says its records are 8 GiB long."""
    return header(b"PaxHeader", (8 << 30) - 1, typ=b"x") + pad(b"30 path=whatever/it/claims\n") + end()


def pax_absurd_record():
    """One PAX record whose length field claims 99,999,999,999 bytes."""
    body = b"99999999999 path=x\n"
    return member(b"PaxHeader", body, typ=b"x") + member("victim", b"v\n") + end()


def pax_path_escape():
    """A harmless ustar name that a PAX 'path' record replaces with one climbing out."""
    return pax([(b"path", b"../../pax-escape")]) + member("harmless", b"x\n") + end()


def sparse_bomb(real_size=1 << 40):
    """A PAX 1.0 sparse file: one data byte at the end of a 1 TiB hole, in 3 KiB of tar."""
    records = [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
               (b"GNU.sparse.name", b"sparse"), (b"GNU.sparse.realsize", b"%d" % real_size)]
    sparse_map = pad(b"1\n%d\n1\n" % (real_size - 1))
    return (pax(records) + header("GNUSparseFile.0/sparse", len(sparse_map) + BLOCK) +
            sparse_map + pad(b"X") + end())


def gzip_zeros(size, name="zeros"):
    """A gzip layer of one file of @size zeros (a multiple of 1 MiB), made without inflating
    it: after a full flush deflate starts afresh, so every MiB of zeros compresses to the same
    bytes, which are repeated.  Only the CRC goes over all the data.  16 GiB take ~16 MB and
    a few seconds."""
    mib = 1 << 20
    assert size % mib == 0
    zeros = bytes(mib)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = header(name, size)
    body = [c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)]
    one = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == one
    body.append(one * (size // mib))
    body.append(c.compress(end()) + c.flush(zlib.Z_FINISH))
    crc = zlib.crc32(head)
    for _ in range(size // mib):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(end(), crc)
    total = len(head) + size + len(end())
    gz_head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return gz_head + b"".join(body) + crc.to_bytes(4, "little") + \
        (total & 0xffffffff).to_bytes(4, "little")


def zero_file(size):
    return header("zeros", size) + b"\0" * size + end()


REFUSED = {
    "whiteout-dotdot": whiteout_dotdot, "whiteout-dot": whiteout_dot,
    "whiteout-escape": whiteout_escape, "long-component": long_component,
    "size-beyond-data": size_beyond_data, "truncated-stream": truncated_stream,
    "pax-huge-header": pax_huge_header, "pax-absurd-record": pax_absurd_record,
    "pax-path-escape": pax_path_escape, "whiteout-empty": whiteout_empty,
    "whiteout-below": whiteout_below, "opaque-as-dir": opaque_as_dir,
    "whiteout-symlink": whiteout_symlink,
}
BAD_WHITEOUTS = {"whiteout-empty": "d/.wh.", "whiteout-below": "d/.wh.x/y",
                 "opaque-as-dir": "d/.wh..wh..opq", "whiteout-symlink": "d/.wh.x"}
MOUNT_REFUSED = {
    "hardlink-missing": hardlink_missing, "hardlink-later": hardlink_later,
    "hardlink-cycle": hardlink_cycle, "symlink-loop": symlink_loop,
}
DEFINED = {
    "absolute-paths": absolute_paths, "same-path-twice": same_path_twice,
    "dir-then-file": dir_then_file, "file-then-dir": file_then_dir,
    "non-utf8-names": non_utf8_names, "hardlink-chain": hardlink_chain,
}
CASES = {**REFUSED, **MOUNT_REFUSED, **DEFINED}


# ---- layouts --------------------------------------------------------------------------------

def zstd_bytes(data, level=19):
    return subprocess.run(["zstd", "-q", "-c", "-%d" % level], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


def uncompressed(blob):
    """A layer blob's tar stream, as lazyroot and containerd read it: gzip members one after
    another, zstd frames, or the bytes as they are."""
    if blob[:2] == b"\x1f\x8b":
        out = []
        while blob:
            d = zlib.decompressobj(16 + 15)
            out.append(d.decompress(blob))
            blob = d.unused_data
        return b"".join(out)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(["zstd", "-q", "-d", "-c"], input=blob, check=True,
                              stdout=subprocess.PIPE).stdout
    return blob


def write_layout(outdir, layers, tag="latest", diff_ids=None):
    """An OCI layout of one image whose layers are (media_type, blob bytes), bottom first; a
    third member, when there is one, is the size the descriptor declares instead of the blob's.
    The config's diff_ids are the sha256 of each layer's tar stream unless given."""
    outdir = Path(outdir)
    blobdir = outdir / "blobs" / "sha256"
    blobdir.mkdir(parents=True, exist_ok=True)

    def put(data):
        d = mkdemo.sha256(data)
        (blobdir / d.split(":", 1)[1]).write_bytes(data)
        return d

    descs = [{"mediaType": l[0], "digest": put(l[1]), "size": l[2] if len(l) > 2 else len(l[1])}
             for l in layers]
    if diff_ids is None:
        diff_ids = [mkdemo.sha256(uncompressed(l[1])) for l in layers]
    arch = mkdemo.goarch()
    cfg = mkdemo.canon({"architecture": arch, "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    manifest = mkdemo.canon({"schemaVersion": 2, "mediaType": mkdemo.MT_MANIFEST,
                             "config": {"mediaType": mkdemo.MT_CONFIG, "digest": put(cfg),
                                        "size": len(cfg)},
                             "layers": descs})
    digest = put(manifest)
    index = {"schemaVersion": 2, "mediaType": mkdemo.MT_INDEX,
             "manifests": [{"mediaType": mkdemo.MT_MANIFEST, "digest": digest,
                            "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (outdir / "index.json").write_bytes(mkdemo.canon(index))
    (outdir / "oci-layout").write_bytes(json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    return descs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[1] not in CASES:
        sys.exit("usage: hostile.py OUTDIR CASE (one of: %s)" % ", ".join(sorted(CASES)))
    write_layout(argv[0], [(mkdemo.MT_LAYER_GZIP, mkdemo.gzip_bytes(CASES[argv[1]]()))])


if __name__ == "__main__":
    main()
