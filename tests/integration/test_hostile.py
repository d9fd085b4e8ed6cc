"""Hostile layers (docs/security.md, "Hostile layers"): each image is pushed with a correct
digest and size, so only what is inside the layer can be wrong.  A case either mounts with a
defined tree or fails with exit status 3 and one error line, nothing mounted, nothing of the
layer kept, nothing written outside the cache.  test_verify.py covers wrong bytes for a digest
and the plain '../' path; the generator is tests/tools/hostile.py."""

import os
import re
import subprocess

import pytest

import hostile
import mkdemo
import push
from helpers import (assert_clean_failure, assert_nothing_recorded, blob_files, lazyroot_mounts,
                     sqlite)
from lifecycle_helpers import daemon_pid


def push_case(registry, test_dir, name, layers):
    hostile.write_layout(test_dir / ("layout-" + name), layers)
    return push.push_layout(registry.addr, str(test_dir / ("layout-" + name)),
                            "hostile/" + name, "latest")["ref"]


def gz(tar):
    return (mkdemo.MT_LAYER_GZIP, mkdemo.gzip_bytes(tar))


def indexed_layers(cache_dir):
    db = cache_dir / "index.db"
    return sqlite(db, "SELECT COUNT(*) FROM layers")[0][0] if db.exists() else 0


def assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref, words, env=None):
    before = lazyroot_mounts()
    r = lazyroot.mount(ref, mountpoint, env=env)
    line = assert_clean_failure(r, 3, words, test_dir, before, related=(registry.addr, ref),
                                mnt=mountpoint)
    assert os.listdir(mountpoint) == []
    return line


@pytest.mark.parametrize("case", sorted(hostile.REFUSED))
def test_refused_at_import(lazyroot, registry, test_dir, cache_dir, mountpoint, case):
    ref = push_case(registry, test_dir, case, [gz(hostile.REFUSED[case]())])
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref,
                          ["not a valid tar archive"])
    print("%s: %s" % (case, line))
    if case in hostile.BAD_WHITEOUTS:
        assert line.endswith(": entry '%s' is not a valid whiteout" % hostile.BAD_WHITEOUTS[case]), line
    assert_nothing_recorded(lazyroot, cache_dir)
    for p in (test_dir / "escape", test_dir.parent / "pax-escape", test_dir / "pax-escape"):
        assert not p.exists()


@pytest.mark.parametrize("case", sorted(hostile.MOUNT_REFUSED))
def test_bad_hardlinks_refuse_the_mount(lazyroot, registry, test_dir, cache_dir, mountpoint,
                                        case):
    """A hard link is resolved when the tree is built, against what the layers below and the
    entries before it made: a target that is missing, comes later, or is itself an unresolved
    link (a cycle) leaves nothing to link to.  The layer is whole and stays indexed (another
    image may stack it on a layer that has the target); this image does not mount."""
    ref = push_case(registry, test_dir, case, [gz(hostile.MOUNT_REFUSED[case]())])
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref,
                          ["cannot apply layer"])
    print("%s: %s" % (case, line))


def test_symlink_loop_names_the_entry(lazyroot, registry, test_dir, cache_dir, mountpoint):
    ref = push_case(registry, test_dir, "loop", [gz(hostile.symlink_loop())])
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref, [])
    assert line.endswith("(entry 'loop1/f'): Too many levels of symbolic links"), line


def test_paths_through_symlinks(lazyroot, registry, test_dir, mountpoint):
    """An entry whose directory is a symlink (of its own layer or a lower one) lands where the
    symlink points, resolved inside the image as containerd and umoci extract it: absolute
    targets from the image's root, '..' stopping there, chains followed, a dangling target's
    directories made.  Whiteouts and hard link targets resolve the same way.  Nothing is
    written on the host, even through a symlink that names a host directory."""
    host_dir = test_dir / "host-target"
    host_dir.mkdir()
    ref = push_case(registry, test_dir, "symlink-paths",
                    [gz(hostile.symlink_paths_lower(str(host_dir))),
                     gz(hostile.symlink_paths_upper())])
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        m = mountpoint
        for link, target in [("lib", "usr/lib"), ("abs", "/usr/lib"), ("usr/up", "../../../.."),
                             ("dangling", "/opt/new"), ("host", str(host_dir))]:
            assert os.readlink(m / link) == target, link
        assert (m / "usr/lib/same-layer").read_bytes() == b"same\n"
        assert (m / "usr/lib/abs-file").read_bytes() == b"abs\n"
        assert (m / "climbed").read_bytes() == b"up\n"
        assert (m / "usr/lib/chained").read_bytes() == b"chain\n"
        assert (m / "opt/new/deep/d").read_bytes() == b"dangling\n"
        assert (m / str(host_dir).lstrip("/") / "pwned").read_bytes() == b"not on the host\n"
        assert not (m / "usr/lib/old").exists() and (m / "usr/lib/keep").exists()
        assert os.stat(m / "hl").st_ino == os.stat(m / "usr/lib/same-layer").st_ino
        assert sorted(os.listdir(m / "usr/lib")) == ["abs-file", "chained", "keep", "same-layer"]
        assert sorted(os.listdir(m)) == sorted(["usr", "lib", "abs", "chain1", "chain2",
                                                "dangling", "host", "opt", "climbed", "hl",
                                                str(host_dir).lstrip("/").split("/")[0]])
        assert list(host_dir.iterdir()) == []
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_hardlink_to_a_lower_layer(lazyroot, registry, test_dir, mountpoint):
    """The same link entry mounts when a layer below provides the target."""
    lower = hostile.tarfile_bytes([("nowhere", "f", b"below\n")])
    ref = push_case(registry, test_dir, "hardlink-lower", [gz(lower), gz(hostile.hardlink_missing())])
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        a, b = os.stat(mountpoint / "nowhere"), os.stat(mountpoint / "link")
        assert a.st_ino == b.st_ino and a.st_nlink == 2
        assert (mountpoint / "link").read_bytes() == b"below\n"
    finally:
        assert lazyroot.umount(mountpoint).ok


def listing(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        rel = os.path.relpath(dirpath, os.fsencode(root))
        for n in dirnames:
            out[os.path.normpath(os.path.join(rel, n))] = "dir"
        for n in filenames:
            p = os.path.join(dirpath, n)
            out[os.path.normpath(os.path.join(rel, n))] = open(p, "rb").read()
    return out


DEFINED_TREES = {
    "absolute-paths": {b"abs": "dir", b"abs/one": b"one\n", b"x": "dir", b"x/y": "dir",
                       b"x/y/z": b"z\n", b"dot": "dir", b"dot/slash": "dir"},
    "same-path-twice": {b"f": b"second\n"},
    "dir-then-file": {b"d": b"file now\n"},
    "file-then-dir": {b"g": "dir", b"g/inner": b"in\n"},
    "non-utf8-names": {b"bad-\xff\xfe": b"ff fe\n", b"lat-\xe9.txt": b"latin-1\n"},
    "hardlink-chain": {b"a": b"shared\n", b"b": b"shared\n", b"c": b"shared\n"},
}


@pytest.mark.parametrize("case", sorted(hostile.DEFINED))
def test_defined_tree(lazyroot, registry, test_dir, mountpoint, case):
    ref = push_case(registry, test_dir, case, [gz(hostile.DEFINED[case]())])
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        assert listing(mountpoint) == DEFINED_TREES[case]
        if case == "hardlink-chain":
            inos = {os.stat(mountpoint / n).st_ino for n in "abc"}
            assert len(inos) == 1 and os.stat(mountpoint / "a").st_nlink == 3
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_zstd_bomb_is_refused(lazyroot, registry, test_dir, cache_dir, mountpoint):
    """300 MiB of zeros in a ~10 KiB zstd blob: past 256 MiB out, the layer may expand at most
    2048 times the compressed bytes read; this one is refused with its own line while the
    stream is still being read, and the partial blob is not kept."""
    blob = hostile.zstd_bytes(hostile.zero_file(300 << 20))
    assert len(blob) * 2048 < 256 << 20
    ref = push_case(registry, test_dir, "zstd-bomb", [(hostile.MT_LAYER_ZSTD, blob)])
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref,
                          ["refused", "2048 times its compressed size"])
    print(line)
    assert indexed_layers(cache_dir) == 0
    assert not blob_files(cache_dir)
    assert not list((cache_dir / "tmp").iterdir()) if (cache_dir / "tmp").exists() else True


def test_sparse_bomb_is_refused(lazyroot, registry, test_dir, cache_dir, mountpoint):
    """A sparse file's holes cost no input: 1 TiB of them in a 3 KiB tar counts against the
    same limit (the zeros would be written to the blob store)."""
    tar = hostile.sparse_bomb()
    assert len(tar) < 8192
    ref = push_case(registry, test_dir, "sparse-bomb", [gz(tar)])
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref,
                          ["refused", "2048 times its compressed size"])
    print(line)
    assert indexed_layers(cache_dir) == 0
    assert not blob_files(cache_dir)


def test_zstd_below_the_floor_mounts(lazyroot, registry, test_dir, mountpoint):
    """The same ratio under 256 MiB out is a file of zeros like any other (the limit counts
    from there, so small sparse-looking files in tiny layers stay legal)."""
    blob = hostile.zstd_bytes(hostile.zero_file(64 << 20))
    ref = push_case(registry, test_dir, "zstd-small", [(hostile.MT_LAYER_ZSTD, blob)])
    r = lazyroot.mount(ref, mountpoint)
    assert r.ok, str(r)
    try:
        assert os.stat(mountpoint / "zeros").st_size == 64 << 20
    finally:
        assert lazyroot.umount(mountpoint).ok


def test_many_entries_daemon_keeps_only_the_tree(lazyroot, registry, test_dir, mountpoint):
    """A layer of 200,000 entries mounts, and the daemon holds the tree, not the import: the
    command's freed import heap (SQLite, libarchive, the rows read) goes back to the kernel
    before the fork, so the daemon's peak RSS stays well under the command's own (it was 96%
    of it before; the tree alone is about half)."""
    if os.environ.get("SANITIZE") == "1":
        pytest.skip("AddressSanitizer's shadow memory and quarantine make RSS meaningless")
    n = 200000
    ref = push_case(registry, test_dir, "many", [gz_blob(hostile.many_files_tar_gz(n))])
    proc = subprocess.Popen([str(lazyroot.binary), "mount", ref, str(mountpoint), "--cache-dir",
                             str(lazyroot.cache_dir)], env=lazyroot.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err
    try:
        daemon_kib = status_kib(daemon_pid(test_dir), "VmHWM")
        command_kib = usage.ru_maxrss
        assert daemon_kib < 0.75 * command_kib, \
            "daemon peak %d KiB vs the importing command's %d KiB" % (daemon_kib, command_kib)
        names = sum(len(d) + len(f) for _, d, f in os.walk(mountpoint))
        assert names == n + n // 1000
    finally:
        assert lazyroot.umount(mountpoint).ok


def gz_blob(blob):
    return (mkdemo.MT_LAYER_GZIP, blob)


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (key, pid))


# ---------------------------------------------------------------------------------------------
# The exact line a user reads when a layer's descriptor is refused: the errno's class, then the
# object and the reason (lazyroot(1), DIAGNOSTICS).

MT_UNKNOWN = "application/vnd.example.layer.v1.tar+lz4"


def test_unknown_layer_media_type_is_named(lazyroot, registry, test_dir, cache_dir, mountpoint):
    blob = mkdemo.gzip_bytes(hostile.tarfile_bytes([("f", "f", b"x\n")]))
    ref = push_case(registry, test_dir, "unknown-media-type", [(MT_UNKNOWN, blob)])
    layer = mkdemo.sha256(blob)
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref, [])
    assert line.startswith("lazyroot: cannot pull '%s': Protocol error: manifest sha256:" % ref), line
    assert line.endswith(": layer %s: unsupported media type %s" % (layer, MT_UNKNOWN)), line
    assert_nothing_recorded(lazyroot, cache_dir)


@pytest.mark.parametrize("declared", ["shorter", "longer"])
def test_layer_size_mismatch_is_named(lazyroot, registry, test_dir, cache_dir, mountpoint,
                                      monkeypatch, declared):
    """The blob is what its digest says; only the descriptor's size is wrong (the registry
    takes such a manifest; our pusher, which refuses it, is told to trust the layout).  Both
    sizes and the digest are in the line, and nothing of the layer is kept."""
    monkeypatch.setattr(push, "_check_digest", lambda path, digest, size=None:
                        os.path.getsize(path))
    blob = mkdemo.gzip_bytes(hostile.tarfile_bytes([("f", "f", b"some bytes\n" * 100)]))
    size = len(blob) + 100 if declared == "shorter" else len(blob) - 100
    ref = push_case(registry, test_dir, "size-" + declared, [(mkdemo.MT_LAYER_GZIP, blob, size)])
    layer = mkdemo.sha256(blob)
    line = assert_refused(lazyroot, registry, test_dir, cache_dir, mountpoint, ref, [])
    prefix = "lazyroot: cannot pull '%s': Bad message: layer %s failed verification: " % (ref, layer)
    if declared == "shorter":
        want = prefix + "the blob is %d bytes, the manifest says %d: nothing of it was kept" % (
            len(blob), size)
        assert line == want, line
    else:
        # how many bytes arrived before the stream was cut depends on the reads' sizes
        assert re.fullmatch(re.escape(prefix) + r"the blob is larger than the manifest says "
                            r"\(%d bytes; (\d+) arrived\): nothing of it was kept" % size,
                            line), line
        assert size < int(re.search(r"(\d+) arrived", line).group(1)) <= len(blob), line
    assert_nothing_recorded(lazyroot, cache_dir)
