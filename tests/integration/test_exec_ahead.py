"""A program's interpreter and libraries fetched ahead of the loader (fs/exec_ahead.c).

The image: one eStargz layer holding a dynamic program of this host (/bin/ls), its program
interpreter and every library `ldd` names, at the paths the loader looks in, as a Debian image
has them, plus a library nothing needs, an ELF file without the executable bit and an
executable shell script. The mount serves with --prefetch=none, so nothing is fetched before
a read asks.

  (a) the first read of the program (64 bytes at offset 0, as execve() reads it) makes the
      mount read the program's ELF headers and those of its interpreter and libraries, and
      fetch those whole (not the program: the kernel and the loader read it already):
      reading every one of them afterwards sends no request, and gives the host's bytes;
      the library nothing needs is not fetched
  (b) reading an ELF file without the executable bit, or an executable script, starts nothing;
      a thread that reads the start of many programs (a walk: tar) stops starting anything
  (c) an unmount while the libraries' requests are held at a proxy: the daemon exits cleanly
"""

import json
import os
import random
import subprocess

import pytest

import conftest
import mkestargz as M
import push
import registry as registry_mod
from helpers import lazyroot_mounts, new_lazyroot_mounts, settled, wait_no_daemons
from proxy import Fault, Proxy

PROGRAM = "/bin/ls"
WALKED = 40
LOADER_PROGRAMS_MAX = 24   # fs/exec_ahead.c EA_READER_PROGRAMS_MAX
UNUSED_LIB = "usr/lib/x86_64-linux-gnu/libunused.so.1"


def loader_deps(program):
    """{path in the image: host file} for @program's interpreter and libraries, as ldd
    resolves them on this host; skips the test when the host's ldd cannot tell."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True)
    deps = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            deps[parts[0]] = parts[2]
        elif parts and parts[0].startswith("/"):
            deps["interp"] = parts[0]
    if out.returncode != 0 or "interp" not in deps or len(deps) < 2:
        pytest.skip("%s is not a dynamic program here: %s" % (program, out.stderr.strip()))
    return deps


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    conftest.need_tool(registry_mod.REGISTRY_BIN, "docker-registry")
    if os.uname().machine != "x86_64":
        pytest.skip("the image's library paths are x86_64 Debian's")
    deps = loader_deps(PROGRAM)
    files = {PROGRAM.lstrip("/"): PROGRAM}
    for name, host in deps.items():
        # the interpreter at the path the program names; the libraries where merged-/usr
        # Debian keeps them, found by the loader through the /lib symlink
        files[host.lstrip("/") if name == "interp" else
              "usr/lib/x86_64-linux-gnu/" + name] = os.path.realpath(host)
    entries = [("bin", "d", 0o755, None, 0), ("usr", "d", 0o755, None, 0),
               ("usr/lib", "d", 0o755, None, 0), ("usr/lib/x86_64-linux-gnu", "d", 0o755, None, 0),
               ("lib64", "d", 0o755, None, 0), ("lib", "l", 0o777, "usr/lib", 0),
               ("data", "d", 0o755, None, 0)]
    content = {}
    for path, host in sorted(files.items()):
        with open(host, "rb") as f:
            content[path] = f.read()
        entries.append((path, "f", 0o755 if path == PROGRAM.lstrip("/") else 0o644,
                        content[path], 0))
    # bytes no other file has: a fetch of them shows in the counters (no chunk to share)
    content[UNUSED_LIB] = b"\x7fELF" + random.Random(17).randbytes(300 << 10)
    entries.append((UNUSED_LIB, "f", 0o644, content[UNUSED_LIB], 0))
    entries.append(("data/plain.elf", "f", 0o644, content[PROGRAM.lstrip("/")], 0))
    # programs for a walker to read (the same bytes: their chunks are shared)
    entries.append(("data/progs", "d", 0o755, None, 0))
    for i in range(WALKED):
        entries.append(("data/progs/p%02d" % i, "f", 0o755, content[PROGRAM.lstrip("/")], 0))
    entries.append(("data/script", "f", 0o755, b"#!/bin/sh\necho hi\n" + b"#" * 8192, 0))
    work = tmp_path_factory.mktemp("exec-ahead")
    reg = registry_mod.Registry()
    reg.start()
    try:
        M.build_layout(str(work / "img"), [("estargz", entries, {"chunk_size": 256 << 10})])
        push.push_layout(reg.addr, str(work / "img"), "exec/ls", "latest")
        yield {"addr": reg.addr, "files": files, "content": content}
    finally:
        reg.stop()


def stats(lazyroot):
    r = lazyroot.run("stats", "--json", str(lazyroot.mountpoint), timeout=30)
    assert r.ok, str(r)
    return json.loads(r.stdout)


def read_head(lazyroot, path, n=64):
    with open(str(lazyroot.mountpoint) + "/" + path, "rb") as f:
        return f.read(n)


def test_program_read_fetches_its_libraries(lazyroot, image):
    assert lazyroot.mount("%s/exec/ls:latest" % image["addr"], None, "--prefetch=none").ok
    prog = PROGRAM.lstrip("/")
    assert read_head(lazyroot, prog) == image["content"][prog][:64]
    deps = [p for p in image["files"] if p != prog]
    done = settled(lambda: stats(lazyroot))
    assert done["exec_ahead"]["parsed"] >= 1 + len(deps), done
    assert done["exec_ahead"]["fetched"] >= len(deps), done
    requests = done["requests"]
    for path in deps:
        with open(str(lazyroot.mountpoint) + "/" + path, "rb") as f:
            assert f.read() == image["content"][path], path
    after = settled(lambda: stats(lazyroot))
    assert after["requests"] == requests, "reads after exec-ahead still fetched: %s" % after
    before_unused = after["bytes_fetched"]
    assert read_head(lazyroot, UNUSED_LIB) == image["content"][UNUSED_LIB][:64]
    assert settled(lambda: stats(lazyroot))["bytes_fetched"] > before_unused, \
        "a library nothing needs was fetched ahead"
    assert lazyroot.umount().ok


def test_non_programs_start_nothing(lazyroot, image):
    assert lazyroot.mount("%s/exec/ls:latest" % image["addr"], None, "--prefetch=none").ok
    assert read_head(lazyroot, "data/plain.elf") == image["content"][PROGRAM.lstrip("/")][:64]
    assert read_head(lazyroot, "data/script", 9) == b"#!/bin/sh"
    done = settled(lambda: stats(lazyroot))
    assert done["exec_ahead"] == {"parsed": 0, "fetched": 0}, done
    for i in range(WALKED):   # one thread, as tar reads them
        read_head(lazyroot, "data/progs/p%02d" % i)
    done = settled(lambda: stats(lazyroot))
    deps = len(image["files"]) - 1
    assert done["exec_ahead"]["parsed"] <= LOADER_PROGRAMS_MAX + deps, done
    assert lazyroot.umount().ok


def test_umount_while_libraries_are_on_their_way(lazyroot, image):
    """(c) The workers' fetches are interrupted at unmount: the daemon stops them before it
    frees the fetcher, exits, and leaves nothing mounted, while library requests are still
    held at the proxy."""
    held = []
    before = lazyroot_mounts()

    def hook(req):
        if "/blobs/" not in req["path"] or not held:
            return None
        held.append(req["path"])
        return Fault.delay(3.0)
    with Proxy(image["addr"], fault=hook) as p:
        assert lazyroot.mount("%s/exec/ls:latest" % p.addr, None, "--prefetch=none").ok
        held.append("armed")   # from here on every blob request is held 3 s
        with open(str(lazyroot.mountpoint) + PROGRAM, "rb") as f:
            assert f.read(64) == image["content"][PROGRAM.lstrip("/")][:64]
        assert conftest.wait_until(lambda: len(held) > 2, 10), held
        res = lazyroot.umount()
        assert res.ok, str(res)
    assert not wait_no_daemons(str(lazyroot.mountpoint))
    assert not new_lazyroot_mounts(before, related=(str(lazyroot.mountpoint),))
