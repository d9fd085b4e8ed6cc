#!/usr/bin/python3
"""Writes the seed corpora of tests/fuzz/corpus/NAME/ from tests/fixtures (small files only):
the checked-in seeds are this script's output, kept so that a fuzzer run starts from real
documents and layers rather than from nothing.  Run it again when the fixtures change."""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
SMALL = 8 * 1024          # a seed is a blob of at most this many bytes
# the first byte of fuzz-manifest's input picks the Content-Type (see fuzz-manifest.c)
CONTENT_TYPE = {None: 0, "application/vnd.oci.image.manifest.v1+json": 1,
                "application/vnd.oci.image.index.v1+json": 2,
                "application/vnd.docker.distribution.manifest.v2+json": 3,
                "application/vnd.docker.distribution.manifest.list.v2+json": 4}


def blobs(fixture):
    d = FIXTURES / fixture / "blobs" / "sha256"
    return {"sha256:" + p.name: p for p in sorted(d.iterdir())}


def write(corpus, data):
    d = HERE / "corpus" / corpus
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)


def manifests(fixture):
    """(descriptor, parsed manifest) of every image manifest the fixture's index reaches."""
    b = blobs(fixture)
    todo = json.load(open(FIXTURES / fixture / "index.json"))["manifests"]
    while todo:
        desc = todo.pop(0)
        doc = json.loads(b[desc["digest"]].read_bytes())
        if "manifests" in doc:
            todo += doc["manifests"]
        else:
            yield desc, doc


def zstd_decompress(data):
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout


def estargz_toc(blob):
    """The TOC JSON of an eStargz blob: the footer's offset, then the tar in the gzip after it."""
    footer = blob[-51:]
    offset = int(footer[16:32], 16)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob[offset:-51]))) as t:
        return t.extractfile("stargz.index.json").read()


def main():
    shutil.rmtree(HERE / "corpus", ignore_errors=True)

    for ref in ["debian", "docker.io/library/debian:bookworm", "127.0.0.1:5000/fixtures/oci-gzip:edge",
                "[::1]:5000/a/b@sha256:" + "0" * 64, "localhost/x:1@sha256:" + "a" * 64,
                "docker://quay.io/podman/stable:latest", "oci:/var/lib/images/x:edge",
                "oci-archive:./image.tar", "docker-archive:/tmp/a.tar:docker.io/a/b:1",
                "docker-archive:/tmp/a.tar:@0"]:
        write("reference", ref.encode())

    for fixture in sorted(os.listdir(FIXTURES)):
        if not (FIXTURES / fixture / "index.json").exists():
            continue
        write("manifest", b"\0" + (FIXTURES / fixture / "index.json").read_bytes())
        b = blobs(fixture)
        for desc, m in manifests(fixture):
            write("manifest", bytes([CONTENT_TYPE.get(desc.get("mediaType"), 0)]) +
                  b[desc["digest"]].read_bytes())
            write("manifest", b"\0" + b[m["config"]["digest"]].read_bytes())
            for layer in m["layers"]:
                data = b[layer["digest"]].read_bytes()
                ann = layer.get("annotations", {})
                pos = (ann.get("io.github.containers.zstd-chunked.manifest-position") or
                       ann.get("io.containers.zstd-chunked.manifest-position"))
                if len(data) <= SMALL:
                    write("layer-tar", data)
                    # the plain tar too: mutating compressed bytes rarely reaches a tar header
                    if data[:2] == b"\x1f\x8b":
                        write("layer-tar", gzip.decompress(data))
                    elif data[:4] == b"\x28\xb5\x2f\xfd":
                        write("layer-tar", zstd_decompress(data))
                if layer["mediaType"].endswith("gzip") and \
                        "containerd.io/snapshot/stargz/toc.digest" in ann:
                    toc = estargz_toc(data)
                    if len(toc) <= 4 * SMALL:
                        write("estargz-toc", b"\1" + toc)       # wrapped by the harness
                    if len(data) <= SMALL:
                        write("estargz-toc", b"\0" + data)      # the blob as served
                elif pos:
                    off, clen, _, _ = map(int, pos.split(":"))
                    toc = zstd_decompress(data[off:off + clen])
                    if len(toc) <= 4 * SMALL:
                        write("zstdchunked-toc", b"\1" + toc)
                    if len(data) <= SMALL:
                        write("zstdchunked-toc", b"\0" + data)
    tree_seeds()
    elf_seeds()
    return 0


def tree_lines(blob):
    """A layer as fuzz-tree's lines (see fuzz-tree.c)."""
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    elif blob[:4] == b"\x28\xb5\x2f\xfd":
        blob = zstd_decompress(blob)
    kinds = {tarfile.REGTYPE: b"f", tarfile.DIRTYPE: b"d", tarfile.SYMTYPE: b"s",
             tarfile.LNKTYPE: b"h", tarfile.CHRTYPE: b"c", tarfile.BLKTYPE: b"b",
             tarfile.FIFOTYPE: b"p"}
    out = []
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        for m in t:
            line = kinds.get(m.type, b"f") + b" " + os.fsencode(m.name)
            if m.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                line += b"\t" + os.fsencode(m.linkname)
            out.append(line)
    return out


# Hand-written merges: paths through symlinks (absolute, climbing, chained, dangling, loops)
# and whiteouts, valid and not.
TREE_CASES = [
    b"d usr/lib\nf usr/lib/old\ns lib\tusr/lib\nf lib/x\ns abs\t/usr/lib\ns usr/up\t../../..\n"
    b"L\nf abs/y\nf usr/up/z\nf lib/.wh.old\nh hl\tlib/x\nf lib/.wh..wh..opq\n",
    b"s a\tb\ns b\t/a\nf a/f\ns c\tc/c\nd c/d\ns e\t\nf e/f\n",
    b"s chain1\tchain2/\ns chain2\t./usr//\nf chain1/lib/w\ns dangling\t/opt/new\n"
    b"f dangling/deep/d\nL\nf .wh.dangling\nf opt/.wh.new\n",
    b"d d\nf d/.wh.\nf d/.wh.x/y\nd d/.wh..wh..opq\ns d/.wh.x\t/etc\nf .wh..wh.plnk/1\n",
]


def tree_seeds():
    fixture = FIXTURES / "oci-gzip"
    b = blobs("oci-gzip")
    for _, m in manifests("oci-gzip"):
        layers = [tree_lines(b[l["digest"]].read_bytes()) for l in m["layers"]]
        # a small piece of each layer keeps seeds short
        write("tree", b"\nL\n".join(b"\n".join(l[:60]) for l in layers))
    for case in TREE_CASES:
        write("tree", case)
    assert fixture.exists()


def elf_image(is_64, msb, interp=None, needed=(), runpath=None, rpath=None, dynamic=True,
              split=False):
    """A small ELF file: header, program headers (PT_LOAD of the file, PT_INTERP, PT_DYNAMIC),
    interpreter at 0x100, string table at 0x200, dynamic section at 0x400.  @split maps the
    string table through a second PT_LOAD whose address is not its offset."""
    import struct
    e = ">" if msb else "<"
    w = "Q" if is_64 else "I"
    size, base = 0x600, 0x10000
    strtab, names = b"\0", {}
    for name in list(needed) + [n for n in (runpath, rpath) if n]:
        names[name] = len(strtab)
        strtab += name.encode() + b"\0"
    dyn = [(1, names[n]) for n in needed]
    dyn += [(29, names[runpath])] if runpath else []
    dyn += [(15, names[rpath])] if rpath else []
    str_vaddr = (0x80000 if split else base) + 0x200
    dyn += [(5, str_vaddr), (10, len(strtab)), (0, 0)]
    dyn_bytes = b"".join(struct.pack(e + w + w, t, v) for t, v in dyn)
    # (type, offset, vaddr, size) of each program header
    ph = [(1, 0, base, size)]
    ph += [(1, 0x200, 0x80000 + 0x200, len(strtab))] if split else []
    ph += [(3, 0x100, base + 0x100, len(interp) + 1)] if interp else []
    ph += [(2, 0x400, base + 0x400, len(dyn_bytes))] if dynamic else []
    ehsize, phentsize = (64, 56) if is_64 else (52, 32)
    ident = b"\x7fELF" + bytes([2 if is_64 else 1, 2 if msb else 1, 1]) + bytes(9)
    machine = (62 if is_64 else 3) if not msb else (21 if is_64 else 20)
    hdr = ident + struct.pack(e + "HHI" + w * 3 + "IHHHHHH", 3 if interp else 2, machine, 1,
                              base, ehsize, 0, 0, ehsize, phentsize, len(ph), 0, 0, 0)
    for t, off, vaddr, sz in ph:
        if is_64:
            hdr += struct.pack(e + "IIQQQQQQ", t, 4, off, vaddr, vaddr, sz, sz, 0x1000)
        else:
            hdr += struct.pack(e + "IIIIIIII", t, off, vaddr, vaddr, sz, sz, 4, 0x1000)
    img = bytearray(size)
    img[:len(hdr)] = hdr
    if interp:
        img[0x100:0x100 + len(interp) + 1] = interp.encode() + b"\0"
    img[0x200:0x200 + len(strtab)] = strtab
    if dynamic:
        img[0x400:0x400 + len(dyn_bytes)] = dyn_bytes
    return bytes(img)


def elf_seeds():
    """Synthetic ELF files for fuzz-elf-deps: both classes and byte orders, dynamic and static."""
    write("elf-deps", elf_image(True, False, "/lib64/ld-linux-x86-64.so.2",
                                ["libm.so.6", "libc.so.6"], runpath="$ORIGIN/../lib"))
    write("elf-deps", elf_image(False, True, "/lib/ld.so.1", ["libz.so.1", "libc.so.6"],
                                rpath="/usr/local/lib:/opt/lib"))
    write("elf-deps", elf_image(True, False, dynamic=False))
    write("elf-deps", elf_image(False, False, "/lib/ld-linux.so.2", ["libc.so.6"], split=True))
    write("elf-deps", elf_image(True, True, "/lib64/ld64.so.1"))


if __name__ == "__main__":
    sys.exit(main())
