"""CI's sanitizer subset (suite_shape.py, sanitize-subset.txt) stays in step with the suite."""

import os
import re
import subprocess
import sys

import suite_shape
from conftest import REPO_ROOT


def test_every_subset_pattern_names_a_test():
    """A renamed test must not silently come back into (or a pattern fall out of) the subset:
    collection with the subset on fails on a pattern that matches nothing."""
    env = dict(os.environ, LAZYROOT_SANITIZE_SUBSET="1")
    env.pop("LAZYROOT_TEST_TIMES", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                          "--collect-only", "-q", "tests/integration"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    m = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", out.stdout)
    assert m, out.stdout[-2000:]
    kept, total, dropped = map(int, m.groups())
    assert dropped > 0 and kept + dropped == total
    # the sanitizers must still see most of the suite
    assert kept >= 0.75 * total, m.group(0)


def test_patterns_take_brackets_literally():
    assert suite_shape._matches("a.py::t[x-*", "a.py::t[x-y]")
    assert not suite_shape._matches("a.py::t[xy]", "a.py::tx")
    assert suite_shape._matches("a.py::t*", "a.py::t_long[p]")
    assert not suite_shape._matches("a.py::t", "a.py::t_long")
