#!/usr/bin/python3
"""The benchmark image (not a test): a real Debian bookworm minbase root file system plus a
layer that installs python3, as OCI layouts in three layer formats. Built once and kept in a
cache directory (default /var/tmp/lazyroot-bench-images/), because debootstrap alone takes
minutes. See tests/bench/README.md, "suite.py".

What ends up in the cache directory:

  base/              debootstrap --variant=minbase bookworm (the first layer's tree)
  base.tar           that tree as a tar (without /dev's nodes: nspawn brings its own /dev)
  python.tar         the second layer: what `apt-get install python3` changed on top of base/,
                     taken from an overlayfs upper dir; its whiteouts (0/0 char devices) and
                     opaque dirs become OCI `.wh.` entries
  oci-gzip/          OCI layout, both layers plain gzip
  oci-estargz/       both layers eStargz (tests/tools/mkestargz.py)
  oci-zstdchunked/   `skopeo copy --dest-compress-format zstd:chunked` of oci-gzip
  tree/              the merged image extracted on local disk (umoci raw unpack of oci-gzip)
  tree.squashfs      mksquashfs of tree/ (for squashfuse)
  tree.tar           tar of tree/ (for archivemount; names without "./")
  py3min/            issue 17's image (`--python3-minimal`, build_python3_minimal): base/ plus
                     what `apt-get install --no-install-recommends python3-minimal` changed on
                     top of it (python3-minimal-upper/, python3-minimal.tar) as oci-gzip/,
                     oci-estargz/ and oci-zstdchunked/ (no tree, squashfs or tar)
  x2/, x4/           the bigger images of suite.py's part 4 (`--variants`): the same two layers
                     plus a third, what `apt-get install` of VARIANTS[name] changed on top of
                     base/ + python-upper/ (extra-upper/, extra.tar), as oci-gzip/,
                     oci-estargz/, oci-zstdchunked/ and tree/ (no squashfs or tar: part 4
                     reads only the tree on local disk and lazyroot mounts)

Every step writes to NAME.tmp and renames when done, so an interrupted build resumes at the
first missing piece. `--rebuild` throws the cache away.
"""

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import mkestargz as M  # noqa: E402

DEFAULT_CACHE = "/var/tmp/lazyroot-bench-images"
SUITE = "bookworm"
# The third layer of suite.py's part 4 images: real packages picked so that the merged tree
# grows to about 2x and 4x the base image's ~165 MB (picked from the Installed-Size sums of
# what apt adds, ~173 MB and ~500 MB; the files came out bigger: 346 MB = 2.1x and 728 MB =
# 4.4x in November 2026). build_variant() prints the sizes reached; the report's ratios use
# them, not the nominal 2 and 4.
VARIANTS = {"x2": ("gcc", "make"),
            "x4": ("make", "perl", "g++", "gfortran", "python3-numpy", "python3-pandas", "git",
                   "vim")}
# what the benchmark needs beyond tests/tools/packages.txt (installed by ensure_packages)
BENCH_PACKAGES = {"debootstrap": "debootstrap", "mksquashfs": "squashfs-tools",
                  "squashfuse": "squashfuse", "archivemount": "archivemount",
                  "gnuplot": "gnuplot-nox", "skopeo": "skopeo", "umoci": "umoci"}


def run(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (rc %d): %s" % (" ".join(argv[:3]), r.returncode,
                                                     r.stderr.strip()[-800:]))
    return r.stdout


def ensure_packages():
    """Bench-only install step: the tools above, from Debian, when missing."""
    missing = sorted({pkg for tool, pkg in BENCH_PACKAGES.items() if not shutil.which(tool)})
    if not missing:
        return
    print("installing (bench only): %s ..." % " ".join(missing), flush=True)
    run(["apt-get", "install", "-y", "--no-install-recommends", *missing])


def apt_mirror():
    """The Debian mirror apt already uses (deb822 or one-line sources)."""
    paths = ["/etc/apt/sources.list"]
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        paths += [os.path.join(d, n) for n in sorted(os.listdir(d))]
    for p in paths:
        try:
            text = open(p).read()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if line.startswith("URIs:") and "/debian" in line and "security" not in line:
                return words[1]
            if len(words) > 2 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return "http://deb.debian.org/debian"


def _done(path):
    return os.path.exists(path)


def _fresh(tmp):
    if os.path.lexists(tmp):
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            subprocess.run(["umount", "-R", tmp], stderr=subprocess.DEVNULL)
            shutil.rmtree(tmp)
        else:
            os.unlink(tmp)
    return tmp


def build_base(cache):
    out = os.path.join(cache, "base")
    if _done(out):
        return out
    tmp = _fresh(out + ".tmp")
    mirror = apt_mirror()
    print("debootstrap --variant=minbase %s from %s (a few minutes) ..." % (SUITE, mirror),
          flush=True)
    run(["debootstrap", "--variant=minbase", SUITE, tmp, mirror])
    run(["chroot", tmp, "apt-get", "clean"])
    os.rename(tmp, out)
    return out


def tar_base(cache, base):
    out = os.path.join(cache, "base.tar")
    if _done(out):
        return out
    tmp = _fresh(out + ".tmp")
    run(["tar", "-C", base, "--format=pax", "--sort=name", "--numeric-owner",
         "--exclude=./dev/*", "-cf", tmp, "."])
    os.rename(tmp, out)
    return out


def _mount_overlay(lowers, work):
    """An overlay of `lowers` (top first) with a fresh upper dir under `work`."""
    upper, wdir, merged = (os.path.join(work, n) for n in ("upper", "work", "merged"))
    for d in (upper, wdir, merged):
        os.makedirs(d)
    run(["mount", "-t", "overlay", "overlay", "-o",
         "lowerdir=%s,upperdir=%s,workdir=%s" % (":".join(lowers), upper, wdir), merged])
    return upper, merged


def apt_layer(out, lowers, packages):
    """apt-get install `packages` in a chroot on an overlay over `lowers` (top first); the upper
    dir, renamed to OUT/layer, is the layer. Lower layers that are upper dirs themselves keep
    their whiteouts and opaque dirs: overlayfs reads them as such."""
    if _done(out):
        return out
    tmp = _fresh(out + ".tmp")
    os.makedirs(tmp)
    upper, merged = _mount_overlay(lowers, tmp)
    mounted = [merged]
    try:
        for fs, d in (("proc", "proc"), ("sysfs", "sys")):
            run(["mount", "-t", fs, fs, os.path.join(merged, d)])
            mounted.append(os.path.join(merged, d))
        run(["mount", "--bind", "/dev", os.path.join(merged, "dev")])
        mounted.append(os.path.join(merged, "dev"))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        print("chroot apt-get install %s ..." % " ".join(packages), flush=True)
        run(["chroot", merged, "apt-get", "update"], env=env)
        run(["chroot", merged, "apt-get", "install", "-y", "--no-install-recommends",
             *packages], env=env)
        run(["chroot", merged, "apt-get", "clean"], env=env)
        # the lists are what `apt-get update` left, not part of installing the packages
        run(["chroot", merged, "sh", "-c", "rm -rf /var/lib/apt/lists/*"], env=env)
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", m])
    os.rename(upper, os.path.join(tmp, "layer"))
    os.rename(tmp, out)
    return out


def install_python(cache, base):
    """The second layer: python3 on top of base/."""
    return apt_layer(os.path.join(cache, "python-upper"), [base], ["python3"])


def _whiteout_info(path):
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path):
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def tar_upper(out, upper_root):
    """The overlay upper dir as an OCI layer tar at `out`: whiteouts -> .wh.NAME, opaque ->
    .wh..wh..opq; the overlay's own xattrs are dropped."""
    if _done(out):
        return out
    upper = os.path.join(upper_root, "layer")
    tmp = _fresh(out + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirs, files in os.walk(upper):
            dirs.sort()
            rel = os.path.relpath(dirpath, upper)
            arc = "." if rel == "." else "./" + rel
            # a directory's own entry was written by its parent's loop (below)
            if _opaque(dirpath):
                ti = tarfile.TarInfo(arc + "/.wh..wh..opq")
                ti.mode, ti.mtime = 0o644, 0
                tf.addfile(ti)
            for name in sorted(files) + sorted(d for d in dirs):
                p = os.path.join(dirpath, name)
                a = arc + "/" + name
                if _whiteout_info(p):
                    ti = tarfile.TarInfo(arc + "/.wh." + name)
                    ti.mode, ti.mtime = 0o644, 0
                    tf.addfile(ti)
                    continue
                ti = tf.gettarinfo(p, a)
                ti.uname = ti.gname = ""
                ti.pax_headers = {}
                if ti.isreg():
                    with open(p, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
    os.rename(tmp, out)
    return out


def layouts(cache, tars):
    """oci-gzip and oci-estargz from the layer tars (mkestargz.build_layout), oci-zstdchunked by
    skopeo."""
    entries = None
    for kind in ("gzip", "estargz"):
        out = os.path.join(cache, "oci-" + kind)
        if _done(out):
            continue
        if entries is None:
            entries = []
            for t in tars:
                with open(t, "rb") as f:
                    entries.append(M.entries_from_tar(f.read()))
        print("writing %s layout ..." % kind, flush=True)
        tmp = _fresh(out + ".tmp")
        M.build_layout(tmp, [(kind, e) for e in entries],
                       config={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                       "/sbin:/bin"], "Cmd": ["/usr/bin/python3"]})
        os.rename(tmp, out)
    out = os.path.join(cache, "oci-zstdchunked")
    if not _done(out):
        print("skopeo copy -> zstd:chunked ...", flush=True)
        tmp = _fresh(out + ".tmp")
        run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-compress-format",
             "zstd:chunked", "oci:%s:latest" % os.path.join(cache, "oci-gzip"),
             "oci:%s:latest" % tmp])
        os.rename(tmp, out)


def unpack_tree(cache):
    """tree/: the merged image on local disk (umoci raw unpack of oci-gzip)."""
    tree = os.path.join(cache, "tree")
    if not _done(tree):
        tmp = _fresh(tree + ".tmp")
        run(["umoci", "raw", "unpack", "--image", os.path.join(cache, "oci-gzip") + ":latest",
             tmp])
        os.rename(tmp, tree)
    return tree


def local_copies(cache):
    """tree/, tree.squashfs and tree.tar for the warm-read comparison."""
    tree = unpack_tree(cache)
    sq = os.path.join(cache, "tree.squashfs")
    if not _done(sq):
        tmp = _fresh(sq + ".tmp")
        run(["mksquashfs", tree, tmp, "-noappend", "-quiet", "-no-progress"])
        os.rename(tmp, sq)
    tt = os.path.join(cache, "tree.tar")
    if not _done(tt):
        tmp = _fresh(tt + ".tmp")
        # member names without a leading "./": archivemount 0.8.7 hangs (0% CPU, FUSE request
        # never answered) listing /usr of an archive whose names start with "./"
        run(["tar", "-C", tree, "--sort=name", "--numeric-owner", "-cf", tmp,
             *sorted(os.listdir(tree))])
        os.rename(tmp, tt)
    return tree, sq, tt


def layer_bytes(layout):
    idx = json.load(open(os.path.join(layout, "index.json")))
    man = json.load(open(os.path.join(layout, "blobs", "sha256",
                                      idx["manifests"][0]["digest"].split(":", 1)[1])))
    return sum(layer["size"] for layer in man["layers"])


def _describe(cache, tree=None):
    info = {"cache": cache, "layouts": {}}
    if tree:
        info.update(tree=tree, tree_bytes=int(run(["du", "-sb", tree]).split()[0]))
    for fmt, d in (("gzip", "oci-gzip"), ("estargz", "oci-estargz"),
                   ("zstd:chunked", "oci-zstdchunked")):
        p = os.path.join(cache, d)
        info["layouts"][fmt] = {"layout": p, "layer_bytes": layer_bytes(p)}
    return info


def _base(cache):
    base = build_base(cache)
    tars = [tar_base(cache, base),
            tar_upper(os.path.join(cache, "python.tar"), install_python(cache, base))]
    return base, tars


def build(cache=DEFAULT_CACHE, rebuild=False):
    """Everything above but the variants; returns a dict of paths and sizes."""
    if rebuild and os.path.isdir(cache):
        shutil.rmtree(cache)
    os.makedirs(cache, exist_ok=True)
    ensure_packages()
    base, tars = _base(cache)
    layouts(cache, tars)
    tree, sq, tt = local_copies(cache)
    info = _describe(cache, tree)
    info.update({"squashfs": sq, "flat_tar": tt, "layer_tars": tars})
    return info


def build_variant(name, cache=DEFAULT_CACHE):
    """The bigger image `name` (a VARIANTS key) in CACHE/NAME/, on the base image's two layers
    (built first when missing); returns a dict like build()'s, without squashfs and flat tar."""
    os.makedirs(cache, exist_ok=True)
    ensure_packages()
    base, tars = _base(cache)
    vdir = os.path.join(cache, name)
    os.makedirs(vdir, exist_ok=True)
    upper = apt_layer(os.path.join(vdir, "extra-upper"),
                      [os.path.join(cache, "python-upper", "layer"), base], VARIANTS[name])
    tars = tars + [tar_upper(os.path.join(vdir, "extra.tar"), upper)]
    layouts(vdir, tars)
    info = _describe(vdir, unpack_tree(vdir))
    info.update({"variant": name, "packages": list(VARIANTS[name]), "layer_tars": tars})
    print("image %s: %.1f MB on disk; layers gzip %.1f MB, eStargz %.1f MB, zstd:chunked "
          "%.1f MB" % (name, info["tree_bytes"] / 1e6,
                       *(info["layouts"][f]["layer_bytes"] / 1e6
                         for f in ("gzip", "estargz", "zstd:chunked"))), flush=True)
    return info


PY3MIN = "py3min"


def build_python3_minimal(cache=DEFAULT_CACHE):
    """Issue 17's image in CACHE/py3min/: base/ (the one the cache holds, built when missing)
    and a second layer from `apt-get install --no-install-recommends python3-minimal` on top
    of it, in the three layouts; returns a dict like build_variant()'s."""
    os.makedirs(cache, exist_ok=True)
    ensure_packages()
    base = build_base(cache)
    vdir = os.path.join(cache, PY3MIN)
    os.makedirs(vdir, exist_ok=True)
    upper = apt_layer(os.path.join(vdir, "python3-minimal-upper"), [base], ["python3-minimal"])
    tars = [tar_base(cache, base), tar_upper(os.path.join(vdir, "python3-minimal.tar"), upper)]
    layouts(vdir, tars)
    info = _describe(vdir)
    info["layer_tars"] = tars
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description="build the benchmark's Debian image (root only)")
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--variants", default="",
                    help="also build these bigger images, comma-separated (%s)"
                    % ",".join(VARIANTS))
    ap.add_argument("--python3-minimal", action="store_true",
                    help="build only issue 17's image (py3min/: base + python3-minimal)")
    args = ap.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            raise SystemExit("unknown variant %s (known: %s)" % (v, ", ".join(VARIANTS)))
    if os.geteuid() != 0:
        raise SystemExit("run as root (debootstrap, chroot, overlayfs)")
    if args.python3_minimal:
        print(json.dumps(build_python3_minimal(args.cache), indent=1))
        return 0
    info = build(args.cache, args.rebuild)
    info["variants"] = {v: build_variant(v, args.cache) for v in names}
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
