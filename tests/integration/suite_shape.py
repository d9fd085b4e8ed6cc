"""How the suite is cut and timed, for CI's budget (tests/run, .ci/run).

- LAZYROOT_TEST_TIMES=FILE (tests/run sets it to BUILD/test-times.tsv): every test appends one
  line "SECONDS<TAB>NODEID" (setup + call + teardown), so the next change to the sanitizer subset
  is chosen from measured times, not guesses: `sort -rn BUILD-asan/test-times.tsv | head`.
- LAZYROOT_SANITIZE_SUBSET=1 (.ci/run's sanitizer stage): the tests matched by a pattern in
  sanitize-subset.txt are deselected. The sanitizers look for memory and UB errors in lazyroot's
  own processes; these tests spend their time on something else (booting machines in nspawn,
  waiting out timeouts) while the code they drive is run under the sanitizers by the tests kept.
  A plain `SANITIZE=1 tests/run` runs everything.
"""

import os
import re
from pathlib import Path

SUBSET_FILE = Path(__file__).with_name("sanitize-subset.txt")


def subset_patterns(path=SUBSET_FILE):
    """The patterns of sanitize-subset.txt: node ids where "*" stands for any text (brackets are
    literal, as in parametrized ids); "#" starts a comment."""
    patterns = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            patterns.append(line)
    return patterns


def deselect_for_sanitizers(config, items):
    """Drops the items sanitize-subset.txt names when LAZYROOT_SANITIZE_SUBSET=1; a pattern that
    matches nothing is an error, so that a renamed test does not silently come back or vanish."""
    if os.environ.get("LAZYROOT_SANITIZE_SUBSET") != "1":
        return
    patterns = subset_patterns()
    drop, keep, used = [], [], set()
    for item in items:
        hits = [p for p in patterns if _matches(p, item.nodeid)]
        used.update(hits)
        (drop if hits else keep).append(item)
    unused = [p for p in patterns if p not in used]
    # Only a run over the whole suite can tell that a pattern matches nothing.
    if unused and len(items) > 300:
        raise ValueError("sanitize-subset.txt: no test matches %s" % ", ".join(unused))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _matches(pattern, nodeid):
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), nodeid) is not None


_durations = {}


def record_time(report):
    """Adds the phase's duration; writes the test's line after its teardown."""
    path = os.environ.get("LAZYROOT_TEST_TIMES")
    if not path:
        return
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.when == "teardown":
        with open(path, "a") as f:
            f.write("%.2f\t%s\n" % (_durations.pop(report.nodeid), report.nodeid))
