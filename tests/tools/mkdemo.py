#!/usr/bin/python3
"""Build a small, deterministic demo image as an OCI image layout, from files on this machine.

  layer 1: /bin/busybox (from Debian's busybox-static) + applet symlinks, /etc/os-release
           (ID=lazyroot-demo), /etc/passwd, /etc/group, /etc/hostname, /tmp 1777, /root 0700,
           /var, /var/tmp, /usr, /usr/bin, /dev, /proc, /sys, /run (mount points for nspawn)
  layer 2: /etc/motd and /usr/local/bin/hello (shows that layers merge)

Layers are PAX tars (uid/gid 0, fixed mtimes) gzip-compressed with gzip mtime 0, so the same
busybox binary always gives the same digests. Config: Cmd runs `date` 3 times 5 s apart,
Env PATH, WorkingDir /, os linux, architecture = this machine's GOARCH.
index.json: one entry, annotation org.opencontainers.image.ref.name=latest (or --tag).

Besides the layout it writes oracle files in the fixtures' formats (see treewalk.py):
expected-tree.tsv, expected-hardlinks.tsv, expected-mtimes.tsv of the merged rootfs.

CLI:    mkdemo.py OUTDIR [--tag TAG] [--busybox PATH]
Module: build_demo(outdir, tag="latest", busybox="/bin/busybox") -> dict with the digests
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import stat
import struct
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import treewalk  # noqa: E402

T1 = 1700000000
T2 = 1700086400
CREATED = "2023-11-14T22:13:20Z"

APPLETS = ["sh", "ls", "cat", "date", "echo", "sleep", "true", "env", "id", "mkdir", "rm",
           "uname", "hostname"]
CMD = ["/bin/sh", "-c", "for i in 1 2 3; do date; sleep 5; done"]
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

OS_RELEASE = b"""\
PRETTY_NAME="lazyroot demo (busybox)"
NAME="lazyroot demo"
ID=lazyroot-demo
VERSION_ID=1
HOME_URL="https://example.invalid/lazyroot"
"""
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"
HOSTNAME = b"lazyroot-demo\n"
MOTD = b"Welcome to the lazyroot demo image (this file comes from layer 2).\n"
HELLO = b"#!/bin/sh\necho \"hello from layer 2 ($(uname -m), $(cat /etc/hostname))\"\n"


def goarch():
    m = platform.machine()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
            "mips64": "mips64le", "loongarch64": "loong64"}.get(m, m)


def is_static_elf(data):
    """True if data is an ELF file without a PT_INTERP program header."""
    if data[:4] != b"\x7fELF":
        return False
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        phoff, = struct.unpack_from(end + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(end + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
    for i in range(phnum):
        ptype, = struct.unpack_from(end + "I", data, phoff + i * phentsize)
        if ptype == 3:  # PT_INTERP
            return False
    return True


# entry: (path without leading slash, type, mode, payload, mtime); type d/f/l;
# payload = bytes for f, target str for l
def layer1_entries(busybox_bytes):
    e = [(".", "d", 0o755, None, T1)]
    for d, mode in [("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o555),
                    ("root", 0o700), ("run", 0o755), ("sys", 0o555), ("tmp", 0o1777),
                    ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                    ("var", 0o755), ("var/tmp", 0o1777)]:
        e.append((d, "d", mode, None, T1))
    e.append(("bin/busybox", "f", 0o755, busybox_bytes, T1))
    for a in APPLETS:
        e.append(("bin/" + a, "l", 0o777, "busybox", T1))
    e += [("etc/os-release", "f", 0o644, OS_RELEASE, T1),
          ("etc/passwd", "f", 0o644, PASSWD, T1),
          ("etc/group", "f", 0o644, GROUP, T1),
          ("etc/hostname", "f", 0o644, HOSTNAME, T1)]
    return e


def layer2_entries():
    return [("etc", "d", 0o755, None, T2),
            ("etc/motd", "f", 0o644, MOTD, T2),
            ("usr", "d", 0o755, None, T2),
            ("usr/local", "d", 0o755, None, T2),
            ("usr/local/bin", "d", 0o755, None, T2),
            ("usr/local/bin/hello", "f", 0o755, HELLO, T2)]


def make_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, typ, mode, payload, mtime in entries:
            name = "./" if path == "." else path
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mtime = mtime
            if typ == "d":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif typ == "l":
                ti.type = tarfile.SYMTYPE
                ti.linkname = payload
                tf.addfile(ti)
            else:
                ti.type = tarfile.REGTYPE
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as g:
        g.write(data)
    return buf.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canon(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class _St:
    """Just enough of os.stat_result for treewalk's line formatters."""

    def __init__(self, mode, size, mtime):
        self.st_mode, self.st_size = mode, size
        self.st_uid = self.st_gid = 0
        self.st_nlink, self.st_dev, self.st_ino, self.st_rdev = 1, 0, 0, 0
        self.st_mtime_ns = mtime * 1_000_000_000


def merged_entries(layers):
    """The merged rootfs (no whiteouts in the demo: later layers override) as treewalk.Entry."""
    merged = {}
    for entries in layers:
        for path, typ, mode, payload, mtime in entries:
            merged[path] = (typ, mode, payload, mtime)
    out = []
    for path, (typ, mode, payload, mtime) in merged.items():
        raw = b"/" if path == "." else b"/" + path.encode()
        if typ == "d":
            st = _St(stat.S_IFDIR | mode, 0, mtime)
            out.append(treewalk.Entry(raw, st, "d"))
        elif typ == "l":
            st = _St(stat.S_IFLNK | 0o777, len(payload), mtime)
            out.append(treewalk.Entry(raw, st, "l", target=payload.encode()))
        else:
            st = _St(stat.S_IFREG | mode, len(payload), mtime)
            out.append(treewalk.Entry(raw, st, "f", sha256=hashlib.sha256(payload).hexdigest()))
    out.sort(key=lambda e: e.path)
    return out


def build_demo(outdir, tag="latest", busybox="/bin/busybox"):
    with open(busybox, "rb") as f:
        bb = f.read()
    if not is_static_elf(bb):
        raise SystemExit("%s is not a static ELF binary (install busybox-static)" % busybox)
    os.makedirs(outdir, exist_ok=True)
    if any(n in os.listdir(outdir) for n in ("index.json", "blobs", "oci-layout")):
        raise SystemExit("%s already holds an image layout" % outdir)
    blobdir = os.path.join(outdir, "blobs", "sha256")
    os.makedirs(blobdir)

    def put(data):
        d = sha256(data)
        with open(os.path.join(blobdir, d.split(":", 1)[1]), "wb") as f:
            f.write(data)
        return d

    l1, l2 = layer1_entries(bb), layer2_entries()
    layers, diff_ids = [], []
    for entries in (l1, l2):
        tar = make_tar(entries)
        gz = gzip_bytes(tar)
        diff_ids.append(sha256(tar))
        layers.append({"mediaType": MT_LAYER_GZIP, "digest": put(gz), "size": len(gz)})

    arch = goarch()
    config = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ENV, "Cmd": CMD, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": CREATED, "created_by": "mkdemo.py: busybox-static + base files"},
            {"created": CREATED, "created_by": "mkdemo.py: /etc/motd, /usr/local/bin/hello"},
        ],
    }
    cfg = canon(config)
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": put(cfg), "size": len(cfg)},
                "layers": layers}
    man = canon(manifest)
    man_digest = put(man)
    index = {"schemaVersion": 2, "mediaType": MT_INDEX,
             "manifests": [{"mediaType": MT_MANIFEST, "digest": man_digest, "size": len(man),
                            "platform": {"architecture": arch, "os": "linux"},
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(outdir, "index.json"), "wb") as f:
        f.write(canon(index))
    with open(os.path.join(outdir, "oci-layout"), "wb") as f:
        f.write(b'{"imageLayoutVersion":"1.0.0"}')

    merged = merged_entries([l1, l2])
    treewalk.write_files(None, entries=merged,
                         tree=os.path.join(outdir, "expected-tree.tsv"),
                         hardlinks=os.path.join(outdir, "expected-hardlinks.tsv"),
                         mtimes=os.path.join(outdir, "expected-mtimes.tsv"))
    return {"manifest": man_digest, "config": manifest["config"]["digest"],
            "layers": [l["digest"] for l in layers], "diff_ids": diff_ids,
            "architecture": arch, "tag": tag}


# What the demo's command reads first: marked for prefetch in the eStargz variant.
DEMO_PREFETCH = ["bin/busybox", "etc/os-release", "etc/passwd", "etc/group"]


def build_demo_estargz(outdir, tag="latest", busybox="/bin/busybox"):
    """The same image with eStargz layers (tests/tools/mkestargz.py), so that a mount fetches
    only the TOCs and the container's first reads fetch what they need."""
    import mkestargz  # imports this module: not at the top
    with open(busybox, "rb") as f:
        bb = f.read()
    if not is_static_elf(bb):
        raise SystemExit("%s is not a static ELF binary (install busybox-static)" % busybox)
    l1, l2 = layer1_entries(bb), layer2_entries()
    info = mkestargz.build_layout(outdir, [("estargz", l1, {"prefetch": DEMO_PREFETCH}),
                                           ("estargz", l2)],
                                  config={"Env": ENV, "Cmd": CMD, "WorkingDir": "/"}, tag=tag)
    return {"manifest": info["manifest"], "architecture": goarch(), "tag": tag}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build the lazyroot demo image as an OCI layout.")
    ap.add_argument("outdir")
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--estargz", action="store_true", help="eStargz layers instead of gzip")
    args = ap.parse_args(argv)
    build = build_demo_estargz if args.estargz else build_demo
    info = build(args.outdir, args.tag, args.busybox)
    print("%s %s (%s)" % (args.outdir, info["manifest"], info["architecture"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
