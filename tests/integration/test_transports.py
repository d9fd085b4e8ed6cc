"""Local transports: images read in place from disk, no registry involved.

  (a) oci:FIXTURE:edge mounts every fixture (multiarch is an index) and matches its oracle
  (b) oci-archive: of a fixture (tar -C fixture -cf x.tar .) mounts and matches
  (c) docker-archive: written by skopeo (gzip and uncompressed fixtures), the legacy
      "<id>/layer.tar" layout and Docker 25's blobs/sha256/ layout mount and match; ":REF",
      ":@N" and no selector pick the entry
  (d) errors: missing path, unknown tag, not a layout, truncated archive, corrupted blob (exit 3,
      one line, nothing mounted or left behind)
  (e) `lazyroot images` lists the canonical oci: ref; relative paths name the same image;
      --pull=never reuses the cached resolution
  (f) nothing is copied: an eStargz layout mounted from an archive leaves the cache far below
      the archive's size until files are read, and no extracted copy appears anywhere
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import conftest
import mkestargz as M
from helpers import (assert_clean_failure, assert_no_daemon, compare_with_oracle,
                     lazyroot_mounts, new_lazyroot_mounts)

FIXTURES = sorted(p.name for p in conftest.FIXTURES.iterdir()
                  if (p / "index.json").exists())


def _host_is_amd64():
    return os.uname().machine in ("x86_64", "amd64")


def fixture(name):
    return conftest.FIXTURES / name


def mount_compare_umount(lazyroot, test_dir, mountpoint, ref, layout, *extra, cwd=None):
    before = lazyroot_mounts()
    r = lazyroot.run("mount", ref, str(mountpoint), "--cache-dir", str(lazyroot.cache_dir),
                     *extra, timeout=120, cwd=cwd)
    assert r.ok, str(r)
    assert conftest.is_mounted(mountpoint), "nothing mounted after:\n%s" % r
    diffs = compare_with_oracle(mountpoint, layout)
    assert not diffs, "tree of %s differs from the oracle:\n%s" % (ref, "\n".join(diffs))
    u = lazyroot.umount(mountpoint)
    assert u.ok, str(u)
    assert not conftest.mounts_under(test_dir)
    assert not new_lazyroot_mounts(before, related=(str(test_dir),))
    assert_no_daemon(mountpoint)


def images_refs(lazyroot):
    r = lazyroot.run("images", "--cache-dir", str(lazyroot.cache_dir))
    assert r.ok, str(r)
    return [ln.split()[0] for ln in r.stdout.splitlines()[1:] if ln.strip()]


def tar_layout(src, out):
    subprocess.run(["tar", "-C", str(src), "-cf", str(out), "."], check=True)
    return out


def skopeo_docker_archive(layout, out, ref="fixtures/x:edge"):
    skopeo = conftest.need_tool("skopeo", "skopeo")
    subprocess.run([skopeo, "copy", "--quiet", "oci:%s:edge" % layout,
                    "docker-archive:%s:%s" % (out, ref)], check=True, capture_output=True)
    return out


def archive_members(path):
    with tarfile.open(path) as t:
        return {m.name: (t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()}


def write_tar(path, members, symlinks=()):
    """members: [(name, bytes)]; symlinks: [(name, target)]."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        for name, target in symlinks:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            t.addfile(ti)
    return path


# ---------------------------------------------------------------------------------------------
# (a) oci:

@pytest.mark.parametrize("name", FIXTURES)
def test_oci_layout_matches_oracle(lazyroot, test_dir, mountpoint, name):
    if name == "multiarch" and not _host_is_amd64():
        pytest.skip("the default-platform oracle is linux/amd64")
    mount_compare_umount(lazyroot, test_dir, mountpoint, "oci:%s:edge" % fixture(name),
                         fixture(name))


def test_oci_layout_other_platform_of_index(lazyroot, test_dir, mountpoint):
    before = lazyroot_mounts()
    r = lazyroot.mount("oci:%s:edge" % fixture("multiarch"), None, "--platform", "linux/arm64/v8")
    assert r.ok, str(r)
    diffs = compare_with_oracle(mountpoint, fixture("multiarch"), ".linux-arm64")
    assert not diffs, "\n".join(diffs)
    assert lazyroot.umount().ok
    assert not new_lazyroot_mounts(before, related=(str(test_dir),))


def test_oci_layout_without_tag_and_relative_path(lazyroot, test_dir, mountpoint):
    """The only manifest is used without a tag; a relative path resolves against the working
    directory and names the same image as the absolute one."""
    layout = test_dir / "layout"
    shutil.copytree(fixture("oci-gzip"), layout)
    mount_compare_umount(lazyroot, test_dir, mountpoint, "oci:layout", layout, cwd=test_dir)
    mount_compare_umount(lazyroot, test_dir, mountpoint, "oci:./layout:edge", layout,
                         cwd=test_dir)
    refs = images_refs(lazyroot)
    assert "oci:%s" % layout.resolve() in refs, refs
    assert "oci:%s:edge" % layout.resolve() in refs, refs


# ---------------------------------------------------------------------------------------------
# (b) oci-archive:

@pytest.mark.parametrize("name", ["oci-gzip", "multiarch", "zstdchunked"])
def test_oci_archive_matches_oracle(lazyroot, test_dir, mountpoint, name):
    if name == "multiarch" and not _host_is_amd64():
        pytest.skip("the default-platform oracle is linux/amd64")
    archive = tar_layout(fixture(name), test_dir / "x.tar")
    mount_compare_umount(lazyroot, test_dir, mountpoint, "oci-archive:%s:edge" % archive,
                         fixture(name))


# ---------------------------------------------------------------------------------------------
# (c) docker-archive:

@pytest.mark.parametrize("name", ["oci-gzip", "oci-uncompressed"])
def test_docker_archive_from_skopeo(lazyroot, test_dir, mountpoint, name):
    archive = skopeo_docker_archive(fixture(name), test_dir / "d.tar")
    mount_compare_umount(lazyroot, test_dir, mountpoint,
                         "docker-archive:%s:fixtures/x:edge" % archive, fixture(name))
    # without a selector: the only image; by index: the first
    mount_compare_umount(lazyroot, test_dir, mountpoint, "docker-archive:%s" % archive,
                         fixture(name))
    mount_compare_umount(lazyroot, test_dir, mountpoint, "docker-archive:%s:@0" % archive,
                         fixture(name))
    refs = images_refs(lazyroot)
    assert "docker-archive:%s:docker.io/fixtures/x:edge" % archive in refs, refs
    assert "docker-archive:%s:@0" % archive in refs, refs


def _fixture_image(name):
    layout = fixture(name)
    idx = json.loads((layout / "index.json").read_bytes())
    blob = lambda d: (layout / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()
    man = json.loads(blob(idx["manifests"][0]["digest"]))
    return blob(man["config"]["digest"]), [blob(l["digest"]) for l in man["layers"]]


def test_docker_archive_legacy_layout_with_symlinked_layers(lazyroot, test_dir, mountpoint):
    """docker save before Docker 25: "<id>/layer.tar" (here uncompressed, one a symbolic link
    to another directory's layer.tar), "<id>.json" config, RepoTags as docker writes them."""
    config, layers = _fixture_image("oci-gzip")
    members, links, names = [], [], []
    for i, blob in enumerate(layers):
        raw = gzip.decompress(blob)
        lid = hashlib.sha256(b"id%d" % i).hexdigest()
        if i == 1:  # stored once under another id, linked as docker does for shared layers
            other = hashlib.sha256(b"other").hexdigest()
            members.append(("%s/layer.tar" % other, raw))
            links.append(("%s/layer.tar" % lid, "../%s/layer.tar" % other))
        else:
            members.append(("%s/layer.tar" % lid, raw))
        members.append(("%s/VERSION" % lid, b"1.0"))
        names.append("%s/layer.tar" % lid)
    cid = hashlib.sha256(config).hexdigest()
    members.append(("%s.json" % cid, config))
    other_image = [{"Config": "%s.json" % cid, "RepoTags": ["other:1"], "Layers": names[:1]}]
    manifest = other_image + [{"Config": "%s.json" % cid, "RepoTags": ["fixtures/legacy:edge"],
                               "Layers": names}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    archive = write_tar(test_dir / "legacy.tar", members, links)
    mount_compare_umount(lazyroot, test_dir, mountpoint,
                         "docker-archive:%s:fixtures/legacy:edge" % archive, fixture("oci-gzip"))
    mount_compare_umount(lazyroot, test_dir, mountpoint, "docker-archive:%s:@1" % archive,
                         fixture("oci-gzip"))
    # two images and no selector: a clear error naming the choice
    before = lazyroot_mounts()
    r = lazyroot.mount("docker-archive:%s" % archive)
    assert_clean_failure(r, 3, ["holds 2 images"], test_dir, before, mnt=mountpoint)
    r = lazyroot.mount("docker-archive:%s:@2" % archive)
    assert_clean_failure(r, 3, ["no @2"], test_dir, before, mnt=mountpoint)
    r = lazyroot.mount("docker-archive:%s:fixtures/nope:edge" % archive)
    assert_clean_failure(r, 3, ["no image tagged", "docker.io/fixtures/nope:edge"], test_dir,
                         before, mnt=mountpoint)


def test_docker_archive_docker25_layout_gzip_layers(lazyroot, test_dir, mountpoint):
    """Docker 25's layout names members blobs/sha256/<hex>; gzip layers are recognised by their
    magic and served as tar+gzip."""
    config, layers = _fixture_image("oci-gzip")
    members, names = [], []
    for blob in layers + [config]:
        name = "blobs/sha256/%s" % hashlib.sha256(blob).hexdigest()
        members.append((name, blob))
        names.append(name)
    manifest = [{"Config": names[-1], "RepoTags": ["docker.io/fixtures/new:edge"],
                 "Layers": names[:-1]}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    members.append(("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'))
    archive = write_tar(test_dir / "d25.tar", members)
    mount_compare_umount(lazyroot, test_dir, mountpoint,
                         "docker-archive:%s:fixtures/new:edge" % archive, fixture("oci-gzip"))
    r = lazyroot.run("inspect", "docker-archive:%s:fixtures/new:edge" % archive, "--cache-dir",
                     str(lazyroot.cache_dir))
    assert r.ok, str(r)
    assert "tar+gzip" in r.stdout, r.stdout


# ---------------------------------------------------------------------------------------------
# (d) errors

def test_missing_paths_and_unknown_tag(lazyroot, test_dir, mountpoint):
    before = lazyroot_mounts()
    missing = test_dir / "nowhere"
    for ref, words in [("oci:%s:edge" % missing, ["cannot open", str(missing)]),
                       ("oci-archive:%s" % missing, ["cannot open", str(missing)]),
                       ("docker-archive:%s" % missing, ["cannot open", str(missing)]),
                       ("oci:%s:nope" % fixture("oci-gzip"), ["tag 'nope' not found", "edge"])]:
        r = lazyroot.mount(ref)
        assert_clean_failure(r, 3, words, test_dir, before, mnt=mountpoint)
    r = lazyroot.mount("oci:%s:bad!tag" % fixture("oci-gzip"))
    assert_clean_failure(r, 2, ["invalid tag format"], test_dir, before, mnt=mountpoint)


def test_not_a_layout_and_truncated_archive(lazyroot, test_dir, mountpoint):
    before = lazyroot_mounts()
    empty = test_dir / "empty"
    empty.mkdir()
    r = lazyroot.mount("oci:%s" % empty)
    assert_clean_failure(r, 3, ["not an oci image layout"], test_dir, before, mnt=mountpoint)
    junk = test_dir / "junk.tar"
    junk.write_bytes(b"this is not a tar archive\n" * 100)
    r = lazyroot.mount("oci-archive:%s" % junk)
    assert_clean_failure(r, 3, ["not a tar archive"], test_dir, before, mnt=mountpoint)
    r = lazyroot.mount("oci-archive:%s" % fixture("oci-gzip"))
    assert_clean_failure(r, 3, ["is a directory"], test_dir, before, mnt=mountpoint)
    whole = tar_layout(fixture("oci-gzip"), test_dir / "whole.tar").read_bytes()
    cut = test_dir / "cut.tar"
    cut.write_bytes(whole[:len(whole) // 2])
    r = lazyroot.mount("oci-archive:%s:edge" % cut)
    assert_clean_failure(r, 3, ["truncated"], test_dir, before, mnt=mountpoint)
    assert not list(Path(lazyroot.cache_dir).glob("blobs/**/*.tmp*"))


@pytest.mark.parametrize("what", ["layer", "config"])
def test_corrupted_blob_is_a_verification_error(lazyroot, test_dir, mountpoint, what):
    layout = test_dir / "layout"
    shutil.copytree(fixture("oci-uncompressed"), layout)
    idx = json.loads((layout / "index.json").read_bytes())
    man_path = layout / "blobs" / "sha256" / idx["manifests"][0]["digest"].split(":", 1)[1]
    man = json.loads(man_path.read_bytes())
    digest = man["layers"][-1]["digest"] if what == "layer" else man["config"]["digest"]
    victim = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, different bytes
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    before = lazyroot_mounts()
    r = lazyroot.mount("oci:%s:edge" % layout)
    assert_clean_failure(r, 3, [digest], test_dir, before, mnt=mountpoint)
    assert "verification" in r.stderr or "does not match" in r.stderr, str(r)
    assert os.listdir(mountpoint) == []


# ---------------------------------------------------------------------------------------------
# (e) the cache's view

def test_images_lists_oci_ref_and_pull_never_reuses_it(lazyroot, test_dir, mountpoint):
    layout = fixture("oci-zstd")
    ref = "oci:%s:edge" % layout
    mount_compare_umount(lazyroot, test_dir, mountpoint, ref, layout)
    assert ref in images_refs(lazyroot)
    # the canonical ref resolves from the cache: the layout is not even opened
    mount_compare_umount(lazyroot, test_dir, mountpoint, ref, layout, "--pull=never")
    rel = os.path.relpath(layout, test_dir)
    mount_compare_umount(lazyroot, test_dir, mountpoint, "oci:%s:edge" % rel, layout,
                         "--pull=never", cwd=test_dir)
    assert images_refs(lazyroot).count(ref) == 1


# ---------------------------------------------------------------------------------------------
# (f) read in place

def _tree_bytes(root):
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def test_estargz_archive_is_read_in_place(lazyroot, test_dir, mountpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("big")
    info = M.build_large_image(str(work / "big"), "estargz", total_bytes=20 * 10**6,
                               n_files=200, seed=5, tag="edge")
    archive = tar_layout(work / "big", test_dir / "big.tar")
    size = archive.stat().st_size
    tmp_before = set(os.listdir("/tmp")) | set(os.listdir("/var/tmp"))
    r = lazyroot.mount("oci-archive:%s:edge" % archive, None, "--prefetch=none")
    assert r.ok, str(r)
    cached = _tree_bytes(lazyroot.cache_dir)
    assert cached < 0.1 * size, "cache holds %d bytes of a %d-byte archive at mount" % (cached, size)
    files = info["files"]
    name = sorted(p for p in files if p.startswith("/data/") and 2000 < len(files[p]) < 20000)[0]
    assert (Path(str(mountpoint) + name)).read_bytes() == files[name]
    cached = _tree_bytes(lazyroot.cache_dir)
    assert cached < 0.1 * size, "one small file brought the cache to %d of %d bytes" % (cached, size)
    s = lazyroot.run("stats", str(mountpoint), "--json")
    assert s.ok, str(s)
    # no copy of the archive or its blobs was made anywhere
    new_tmp = (set(os.listdir("/tmp")) | set(os.listdir("/var/tmp"))) - tmp_before
    big = [n for n in new_tmp for base in ("/tmp", "/var/tmp")
           if os.path.isfile(os.path.join(base, n)) and os.path.getsize(os.path.join(base, n)) > 10**6]
    assert not big, big
    grown = [p for p in test_dir.iterdir() if p.is_file() and p != archive]
    assert not grown, grown
    # every file still reads right, by offset from the archive
    bad = [p for p in sorted(files)[:50] if Path(str(mountpoint) + p).read_bytes() != files[p]]
    assert not bad, bad
    assert lazyroot.umount().ok
