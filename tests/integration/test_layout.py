"""The source tree's layout (docs/architecture.md): which part may include which.

Calls go down only: cli/ -> fs/ -> cache/share/ -> cache/'s pipelines -> cache/registry/ ->
cache/format/ -> cache/store/ -> cache/base/.  A part may include its own headers and those of any part below
it, never one above: that keeps the folders a picture of the architecture and rules out
circles.  The test reads the #include lines, so it fails on the commit that adds an upward one.
"""
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# lowest first
ORDER = ["cache/base", "cache/store", "cache/format", "cache/registry", "cache", "cache/share", "fs",
         "cli"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def sources():
    for top in ("cache", "fs", "cli"):
        for dirpath, _, names in os.walk(ROOT / top):
            for name in names:
                if name.endswith((".c", ".h")):
                    yield Path(dirpath) / name


def part_of(path):
    rel = os.path.relpath(path, ROOT)
    return os.path.dirname(rel)


def test_every_source_folder_has_a_rank():
    folders = {part_of(p) for p in sources()}
    assert folders <= set(ORDER), "folders without a place in ORDER: %s" % (folders - set(ORDER))


def test_includes_only_go_down():
    upward = []
    for path in sources():
        own = part_of(path)
        for name in INCLUDE.findall(path.read_text()):
            target = (path.parent / name) if "/" not in name else (ROOT / name)
            if not target.exists():
                upward.append("%s: %s does not exist" % (os.path.relpath(path, ROOT), name))
                continue
            other = part_of(target)
            if ORDER.index(other) > ORDER.index(own):
                upward.append("%s includes %s (%s is above %s)"
                              % (os.path.relpath(path, ROOT), name, other, own))
    assert not upward, "\n".join(upward)


def test_cache_top_holds_only_the_pipelines():
    top = sorted(p.name for p in (ROOT / "cache").glob("*.c"))
    # 9: seek_verify.c (prewarm reading a layer whole to settle a fetched seek index) joined them
    assert len(top) <= 9, top
