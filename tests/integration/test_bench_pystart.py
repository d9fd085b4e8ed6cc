"""tests/bench/pystart.py's pieces without a benchmark run: the packet-delay link it builds
(two veth pairs, build/tests/pktdelay in a namespace between them, tbf) delays a TCP round trip
by about twice the delay and is rate-limited, and its section of docs/benchmarks.md lands
between issue 17's hand-written section and seekindex.py's, where suite.py and seekindex.py
keep it when they rewrite the page. Runs no lazyroot."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import conftest

BENCH = conftest.REPO_ROOT / "tests" / "bench"
sys.path.insert(0, str(BENCH))


def pktdelay_bin():
    lr = os.environ.get("LAZYROOT")
    build = Path(lr).resolve().parents[1] if lr else conftest.REPO_ROOT / "build"
    return build / "tests" / "pktdelay"


def test_packet_link_delays_round_trips_and_limits_the_rate():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, raw sockets)")
    missing = [t for t in ("ip", "tc") if not shutil.which(t)]
    if missing:
        pytest.skip("missing: %s" % " ".join(missing))
    if not pktdelay_bin().exists():
        pytest.skip("no %s (ninja -C build)" % pktdelay_bin())
    r = subprocess.run(["/usr/bin/python3", str(BENCH / "pystart.py"), "--self-test",
                        "--pktdelay", str(pktdelay_bin())],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0 and "self-test: ok" in r.stdout, r.stdout
    left = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout
    assert "lrps-" not in left, left


PAGE = """# Benchmarks

## 1. Cold start

generated

## Cold start, taken apart (issue 17)

by hand

## Lazy gzip (issue 16)

seekindex's

## trace.py and the rest

by hand too
"""


def test_section_goes_before_lazy_gzip_and_survives_the_other_writers(tmp_path):
    import pystart
    import seekindex
    import suite

    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    pystart.write_section(str(page), pystart.SECTION + "\n\nfirst\n")
    text = page.read_text()
    assert text.index("by hand\n") < text.index(pystart.SECTION) < text.index(seekindex.SECTION)

    pystart.write_section(str(page), pystart.SECTION + "\n\nsecond\n")
    text = page.read_text()
    assert "first" not in text and text.count(pystart.SECTION) == 1 and "second" in text
    assert "seekindex's" in text and "by hand too" in text

    seekindex.write_section(str(page), seekindex.SECTION + "\n\nnew index numbers\n")
    assert "second" in page.read_text()
    assert pystart.SECTION + "\n\nsecond" in suite.hand_written(str(page))
