#!/bin/bash
# Builds the libFuzzer targets (clang, -Dfuzzing=true, in $FUZZ_BUILD_DIR, default build-fuzz)
# and runs each for SECONDS (default 30), starting from its seeds in tests/fuzz/corpus/NAME and
# the inputs that once crashed it (tests/fuzz/regressions/NAME).
#
#   tests/fuzz/run.sh [SECONDS] [NAME...]       e.g. tests/fuzz/run.sh 600 layer-tar
#
# A crash, leak, timeout or out-of-memory is copied to tests/fuzz/regressions/NAME/ (commit it
# with the fix: every tests/run replays that directory) and fails the run.  Inputs the fuzzer
# found interesting stay in $FUZZ_BUILD_DIR/fuzz-corpus/NAME, out of the source tree.
# Ends with one line "N passed, N failed" (one point per target); exit status 1 on a failure.
set -u -o pipefail

ROOT=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
cd "$ROOT"
SECONDS_EACH=${1:-30}
shift $(($# > 0 ? 1 : 0))
TARGETS=("$@")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=(reference manifest layer-tar tree estargz-toc zstdchunked-toc seek-index elf-deps)
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac

passed=0 failed=0
if [ ! -f "$BUILD/build.ninja" ]; then
	CC=clang meson setup "$BUILD" -Dfuzzing=true || { echo "0 passed, 1 failed"; exit 1; }
fi
if ! ninja -C "$BUILD" "${TARGETS[@]/#/tests/fuzz/fuzz-}"; then
	echo "BUILD FAILED"
	echo "0 passed, 1 failed"
	exit 1
fi

# libFuzzer's own defaults for the sanitizers (leaks found, reports on stderr), whatever a
# SANITIZE=1 tests/run in the same CI job exported
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

for name in "${TARGETS[@]}"; do
	printf '\n===== fuzz-%s (%s s) =====\n' "$name" "$SECONDS_EACH"
	work="$BUILD/fuzz-corpus/$name" artifacts="$BUILD/fuzz-artifacts/$name"
	seeds="tests/fuzz/corpus/$name" regressions="tests/fuzz/regressions/$name"
	rm -rf "$artifacts"
	mkdir -p "$work" "$artifacts"
	dirs=("$work" "$seeds")
	[ -d "$regressions" ] && dirs+=("$regressions")
	# -timeout: an input that takes 10 s is a hang (quadratic parse); -rss_limit_mb: a
	# memory blow-up is a bug too; -max_len: lazy TOCs and layers need room
	"$BUILD/tests/fuzz/fuzz-$name" -max_total_time="$SECONDS_EACH" -timeout=10 \
		-rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
		-artifact_prefix="$artifacts/" "${dirs[@]}" 2>&1 | tail -n 60
	rc=${PIPESTATUS[0]}
	found=("$artifacts"/*)
	if [ "$rc" = 0 ] && [ ! -e "${found[0]}" ]; then
		echo "fuzz-$name: ok"
		passed=$((passed + 1))
		continue
	fi
	echo "fuzz-$name: FAILED (exit status $rc)"
	mkdir -p "$regressions"
	for f in "${found[@]}"; do
		[ -e "$f" ] || continue
		cp "$f" "$regressions/"
		echo "  new regression input: $regressions/$(basename "$f")"
	done
	failed=$((failed + 1))
done

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
