"""Checks that the test tools themselves work (registry.py, push.py, treewalk.py, mkdemo.py and
the conftest helpers), against the real docker-registry. No lazyroot binary needed."""

import gzip
import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import conftest
import mkdemo
import push
import registry as registry_mod
import treewalk

TOOLS = conftest.TOOLS
PY = sys.executable

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def http_get(addr, path, method="GET", accept=ACCEPT):
    c = http.client.HTTPConnection(*addr.rsplit(":", 1), timeout=30)
    try:
        c.request(method, path, headers={"Accept": accept})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def blob(layout, digest):
    return (Path(layout) / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def top_entry(layout):
    return json.loads((Path(layout) / "index.json").read_bytes())["manifests"][0]


def port_open(addr):
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# registry.py

def test_registry_cli_start_stop(tmp_path):
    d = tmp_path / "reg"
    r = subprocess.run([PY, TOOLS / "registry.py", "start", "--dir", d], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    addr = r.stdout.strip()
    try:
        assert addr.startswith("127.0.0.1:")
        pid = int((d / "pid").read_text())
        assert os.path.exists("/proc/%d" % pid)
        with urllib.request.urlopen("http://%s/v2/" % addr, timeout=5) as resp:
            assert resp.status == 200
        cfg = (d / "config.yml").read_text()
        assert "level: warn" in cfg and "enabled: true" in cfg and "127.0.0.1:" in cfg
    finally:
        s = subprocess.run([PY, TOOLS / "registry.py", "stop", "--dir", d], capture_output=True,
                           text=True, timeout=60)
    assert s.returncode == 0, s.stderr
    assert not d.exists()
    assert not port_open(addr)
    st = Path("/proc/%d/stat" % pid)
    assert not st.exists() or st.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_registry_cli_fixed_port(tmp_path):
    port = registry_mod.free_port()
    d = tmp_path / "reg"
    r = subprocess.run([PY, TOOLS / "registry.py", "start", "--dir", d, "--port", str(port)],
                       capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "127.0.0.1:%d" % port
    finally:
        subprocess.run([PY, TOOLS / "registry.py", "stop", "--dir", d], timeout=60)
    assert not port_open("127.0.0.1:%d" % port)


def test_registry_context_manager():
    with registry_mod.Registry() as reg:
        addr, d, proc = reg.addr, reg.dir, reg.proc
        assert port_open(addr)
        assert os.path.isdir(os.path.join(d, "storage"))
    assert proc.poll() is not None
    assert not os.path.exists(d)
    assert not port_open(addr)


# ---------------------------------------------------------------------------------------------
# push.py, through the session registry (which pushed every fixture and the demo)

def check_node(addr, repo, layout, desc):
    """GET what desc points at by digest and compare bytes; recurse; blobs via HEAD + GET."""
    st, hdr, body = http_get(addr, "/v2/%s/manifests/%s" % (repo, desc["digest"]))
    assert st == 200, (desc, body[:300])
    assert body == blob(layout, desc["digest"])
    assert hdr["Content-Type"] == desc["mediaType"]
    assert hdr["Docker-Content-Digest"] == desc["digest"]
    doc = json.loads(body)
    if desc["mediaType"] in push.INDEX_TYPES:
        assert doc["manifests"]
        for child in doc["manifests"]:
            check_node(addr, repo, layout, child)
        return
    for b in [doc["config"]] + doc["layers"]:
        st, hdr, _ = http_get(addr, "/v2/%s/blobs/%s" % (repo, b["digest"]), method="HEAD")
        assert st == 200, b
        assert int(hdr["Content-Length"]) == b["size"]
        assert hdr["Docker-Content-Digest"] == b["digest"]
    # the config is small: compare its bytes
    st, _, cfg = http_get(addr, "/v2/%s/blobs/%s" % (repo, doc["config"]["digest"]))
    assert st == 200 and cfg == blob(layout, doc["config"]["digest"])


@pytest.mark.parametrize("name", conftest.FIXTURE_NAMES + ["demo"])
def test_pushed_byte_for_byte(registry, name):
    layout = registry.layout(name)
    entry = top_entry(layout)
    repo = registry.pushed[name]["repo"]
    tag = registry.pushed[name]["tag"]
    assert tag == ("latest" if name == "demo" else "edge")
    # by tag
    st, hdr, body = http_get(registry.addr, "/v2/%s/manifests/%s" % (repo, tag))
    assert st == 200, body[:300]
    assert body == blob(layout, entry["digest"])
    assert hdr["Content-Type"] == entry["mediaType"]
    assert hdr["Docker-Content-Digest"] == entry["digest"] == registry.digest(name)
    # by digest, recursively
    check_node(registry.addr, repo, layout, entry)
    assert registry.ref(name) == "%s/%s:%s" % (registry.addr, repo, tag)
    assert registry.ref(name, digest=True) == "%s/%s@%s" % (registry.addr, repo, entry["digest"])


def test_oci_gzip_layers_byte_for_byte(registry):
    layout = registry.layout("oci-gzip")
    man = json.loads(blob(layout, top_entry(layout)["digest"]))
    for layer in man["layers"]:
        st, _, body = http_get(registry.addr, "/v2/fixtures/oci-gzip/blobs/%s" % layer["digest"])
        assert st == 200
        assert "sha256:" + hashlib.sha256(body).hexdigest() == layer["digest"]
        assert body == blob(layout, layer["digest"])


def test_multiarch_nested_index(registry):
    layout = registry.layout("multiarch")
    entry = top_entry(layout)
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    st, _, body = http_get(registry.addr, "/v2/fixtures/multiarch/manifests/edge")
    idx = json.loads(body)
    plats = sorted((m["platform"]["os"], m["platform"]["architecture"]) for m in idx["manifests"])
    assert plats == [("linux", "amd64"), ("linux", "arm64")]
    for m in idx["manifests"]:
        # umoci's manifests have no mediaType field: pushed with the descriptor's type
        st, hdr, body = http_get(registry.addr, "/v2/fixtures/multiarch/manifests/%s" % m["digest"])
        assert st == 200 and body == blob(layout, m["digest"])
        assert hdr["Content-Type"] == m["mediaType"]


def test_push_cli_other_tag_and_repush(registry):
    layout = registry.layout("multiarch")
    for _ in range(2):  # the second push finds every blob present
        r = subprocess.run([PY, TOOLS / "push.py", registry.addr, layout, "tools-test/multi",
                            "--tag", "t1"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "%s/tools-test/multi:t1@%s" % (registry.addr, registry.digest("multiarch"))
    st, _, body = http_get(registry.addr, "/v2/tools-test/multi/manifests/t1")
    assert st == 200 and body == blob(layout, registry.digest("multiarch"))


def test_push_detects_corrupt_blob(registry, tmp_path):
    layout = tmp_path / "layout"
    shutil.copytree(registry.layout("multiarch"), layout)
    man = json.loads(blob(layout, json.loads(blob(layout, top_entry(layout)["digest"]))["manifests"][0]["digest"]))
    p = layout / "blobs" / "sha256" / man["layers"][-1]["digest"].split(":", 1)[1]
    p.write_bytes(p.read_bytes() + b"x")
    with pytest.raises(push.PushError):
        push.push_layout(registry.addr, str(layout), "tools-test/corrupt", "x")


def test_add_query():
    assert push._add_query("/v2/r/blobs/uploads/u?_state=abc", "digest=sha256:1") == \
        "/v2/r/blobs/uploads/u?_state=abc&digest=sha256:1"
    assert push._add_query("http://h:1/v2/r/blobs/uploads/u", "digest=sha256:1") == \
        "http://h:1/v2/r/blobs/uploads/u?digest=sha256:1"


# ---------------------------------------------------------------------------------------------
# mkdemo.py

def test_mkdemo_deterministic_and_valid(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = subprocess.run([PY, TOOLS / "mkdemo.py", a], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    mkdemo.build_demo(str(b))
    for f in sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    entry = top_entry(a)
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    man = json.loads(blob(a, entry["digest"]))
    assert man["mediaType"] == entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    cfg = json.loads(blob(a, man["config"]["digest"]))
    assert cfg["config"]["Cmd"] == ["/bin/sh", "-c", "for i in 1 2 3; do date; sleep 5; done"]
    assert cfg["config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert cfg["config"]["WorkingDir"] == "/"
    assert cfg["os"] == "linux" and cfg["architecture"] == mkdemo.goarch()
    assert len(man["layers"]) == 2 == len(cfg["rootfs"]["diff_ids"])
    names = []
    for layer, diff_id in zip(man["layers"], cfg["rootfs"]["diff_ids"]):
        gz = blob(a, layer["digest"])
        assert len(gz) == layer["size"]
        tar = gzip.decompress(gz)
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
        with tarfile.open(fileobj=__import__("io").BytesIO(tar)) as tf:
            for ti in tf:
                assert ti.uid == 0 and ti.gid == 0
                names.append(ti.name)
    for want in ["bin/busybox", "bin/sh", "bin/hostname", "etc/os-release", "etc/passwd",
                 "tmp", "root", "usr", "etc/motd", "usr/local/bin/hello"]:
        assert want in names
    tree = (a / "expected-tree.tsv").read_text()
    assert "/tmp\td\t1777\t" in tree and "/root\td\t0700\t" in tree


# ---------------------------------------------------------------------------------------------
# treewalk.py

def test_escape():
    e = treewalk.escape
    assert e(b"/a b/\xc3\xbc\xe6\x97\xa5") == "/a b/\u00fc\u65e5"
    assert e(b"a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert e(b"x\x01y\x7f") == "x\\x01y\\x7f"
    assert e(b"bad\xff\xc3") == "bad\\xff\\xc3"


def test_treewalk_small_tree(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "d").mkdir(mode=0o700)
    os.chmod(root / "d", 0o2750)
    (root / "d" / "f").write_bytes(b"hello")
    os.link(root / "d" / "f", root / "h")
    os.symlink("d/f", root / "l")
    os.mkfifo(root / "p")
    weird = os.fsencode(str(root)) + b"/tab\there\xff"
    open(weird, "wb").close()
    (root / "a b").write_bytes(b"")
    for p in [root, root / "d", root / "d" / "f", root / "a b"]:
        os.utime(p, (1, 1700000000))
    os.utime(root / "l", (1, 86400), follow_symlinks=False)
    try:
        os.setxattr(root / "a b", "user.z", b"2")
        os.setxattr(root / "a b", "user.a", b"\x00\x01")
        have_xattr = True
    except OSError:
        have_xattr = False
    ents = treewalk.walk(str(root))
    lines = treewalk.tree_lines(ents)
    assert lines[0] == treewalk.TREE_HEADER
    assert lines[0] == (conftest.FIXTURES / "oci-gzip" / "expected-tree.tsv").read_text().split("\n")[0]
    paths = [ln.split("\t")[0] for ln in lines[1:]]
    assert paths == ["/", "/a b", "/d", "/d/f", "/h", "/l", "/p", "/tab\\there\\xff"]
    by = {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}
    assert by["/d"][1:3] == ["d", "2750"]
    assert by["/d/f"][1:7] == ["f", "0644", "0", "0", "5", hashlib.sha256(b"hello").hexdigest()]
    assert by["/l"][1:] == ["l", "0777", "0", "0", "3", "-", "d/f", "-", "-"]
    assert by["/p"][1] == "p" and by["/p"][5:] == ["-", "-", "-", "-", "-"]
    if have_xattr:
        assert by["/a b"][9] == "user.a=0001,user.z=32"
    assert treewalk.hardlink_lines(ents) == [treewalk.HARDLINKS_HEADER, "/d/f\t/h"]
    mt = dict(ln.split("\t") for ln in treewalk.mtime_lines(ents)[1:])
    assert mt["/"] == mt["/d"] == "1700000000" and mt["/l"] == "86400"
    # CLI writes the same thing
    out = tmp_path / "t.tsv"
    subprocess.run([PY, TOOLS / "treewalk.py", root, "--tree", out], check=True, timeout=60)
    assert out.read_text(encoding="utf-8", errors="surrogateescape").split("\n")[:-1] == lines


def test_treewalk_diff_is_readable():
    exp = [treewalk.TREE_HEADER, "/\td\t0755\t0\t0\t-\t-\t-\t-\t-", "/a\tf\t0644\t0\t0\t1\tx\t-\t-\t-"]
    act = [treewalk.TREE_HEADER, "/\td\t0755\t0\t0\t-\t-\t-\t-\t-", "/a\tf\t0600\t0\t0\t1\tx\t-\t-\t-",
           "/b\td\t0755\t0\t0\t-\t-\t-\t-\t-"]
    d = treewalk.diff_lines(act, exp, columns=treewalk.TREE_COLUMNS)
    assert d == ["/a: mode expected 0644 got 0600", "unexpected: /b\td\t0755\t0\t0\t-\t-\t-\t-\t-"]
    assert treewalk.diff_lines(exp, exp) == []
    many = [treewalk.TREE_HEADER] + ["/%d\tf" % i for i in range(50)]
    d = treewalk.diff_lines(many, [treewalk.TREE_HEADER], max_lines=5)
    assert len(d) == 6 and d[-1] == "... 50 differences in all"


@pytest.mark.skipif(os.geteuid() != 0, reason="umoci unpack needs root to restore owners")
@pytest.mark.parametrize("name", ["oci-gzip", "oci-uncompressed"])
def test_treewalk_reproduces_oracle_with_umoci(tmp_path, name):
    """The oracle files were made with umoci unpack (tests/fixtures/README.md): the walker
    that compares lazyroot's trees with them must read umoci's own unpack the same way."""
    umoci = conftest.need_tool("umoci", "umoci")
    out = tmp_path / "unpacked"
    subprocess.run([umoci, "unpack", "--image", "%s:edge" % (conftest.FIXTURES / name), out],
                   check=True, capture_output=True, timeout=300)
    diffs = treewalk.compare_to_expected(str(out / "rootfs"), str(conftest.FIXTURES / name))
    assert diffs == [], "\n".join(diffs)


# ---------------------------------------------------------------------------------------------
# conftest helpers

def test_run_cmd_does_not_wait_for_daemonized_children():
    r = conftest.run_cmd(["sh", "-c", "(sleep 3 >/dev/null 2>&1 &) ; sleep 3 & echo out; echo err >&2"],
                         timeout=20)
    assert r.ok and r.stdout == "out\n" and r.stderr == "err\n"
    assert r.duration < 2.5


def test_run_cmd_timeout_kills_group():
    t0 = time.monotonic()
    r = conftest.run_cmd(["sh", "-c", "sleep 100 & sleep 100"], timeout=1)
    assert r.timed_out and not r.ok and time.monotonic() - t0 < 10
    assert "TIMED OUT" in str(r)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_unmount_all_under(tmp_path):
    a = tmp_path / "a b"
    (a / "inner").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", a], check=True)
    try:
        (a / "inner").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", a / "inner"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", a / "inner"], check=True)  # stacked
        assert conftest.is_mounted(a) and len(conftest.mounts_under(tmp_path)) == 3
        left = conftest.unmount_all_under(tmp_path)
        assert len(left) == 3
        assert conftest.mounts_under(tmp_path) == []
    finally:
        conftest.unmount_all_under(tmp_path)
