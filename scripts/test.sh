#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test.sh: the second command of the README and the whole of CI (.ci/run).
#
#   1. deps       scripts/deps.sh test
#      format     clang-format --dry-run --Werror on every tracked .c/.h file
#   2. gcc        build-test/: warnings as errors, then ctest
#   3. asan       build-asan/: AddressSanitizer + UBSan (leaks detected,
#                 any report aborts), then ctest
#   4. fuzz       build-fuzz/: clang, libFuzzer + ASan/UBSan; every fuzz_*
#                 target runs MB_FUZZ_SECONDS (default 30) from a copy of
#                 fuzz/corpus/<name> in a temp dir (the repository is never
#                 written), failing on any crash, leak or timeout
#   5. bench      every bench_* of build-test/, bench/run_loadgen.sh and
#                 bench/run_storm.sh with MB_BENCH_QUICK=1, to prove they run
#                 (timings are printed, never asserted)
#
# Usage: scripts/test.sh   (from any directory; run as root on Debian 12)
# Environment: MB_FUZZ_SECONDS (default 30) per fuzz target.
# Exits non-zero at the first failing step. The last line is a summary
# `test.sh: N passed, M failed` counting ctest tests, fuzz runs and benchmarks.
# A few minutes on 2 cores (the four fuzz targets take 2 minutes of it).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
JOBS=$(nproc 2>/dev/null || echo 2)
FUZZ_SECONDS=${MB_FUZZ_SECONDS:-30}
START=$(date +%s)

passed=0
failed=0
step="setup"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mudbus-test.XXXXXX")

finish() {
    local rc=$?
    rm -rf "$WORK"
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
    fi
    echo
    if [ "$rc" -eq 0 ]; then
        echo "==== all steps passed in $(($(date +%s) - START)) s ===="
    else
        echo "==== FAILED in step: $step (exit status $rc) ===="
    fi
    echo "test.sh: $passed passed, $failed failed"
    exit "$rc"
}
trap finish EXIT

section() {
    step=$1
    printf '\n==== %s ====\n' "$*"
}

# Run ctest in a build directory and add its counts to the totals.
run_ctest() {
    local dir=$1 log
    log=$WORK/ctest-$(basename "$dir").log
    local rc=0
    (cd "$dir" && ctest --output-on-failure -j"$JOBS") 2>&1 | tee "$log" || rc=$?
    local line total nfail
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 ||
        true)
    if [ -z "$line" ]; then
        echo "test.sh: ctest in $dir ran no test" >&2
        return 1
    fi
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
    nfail=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
    passed=$((passed + total - nfail))
    failed=$((failed + nfail))
    return "$rc"
}

section "deps" "(scripts/deps.sh test)"
scripts/deps.sh test

section "format" "(clang-format --dry-run --Werror on every C file)"
mapfile -t cfiles < <(git ls-files '*.c' '*.h' 2>/dev/null || find include src tests bench fuzz -name '*.[ch]')
if clang-format --dry-run --Werror "${cfiles[@]}"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    echo "test.sh: run clang-format -i on the files above" >&2
    exit 1
fi

section "gcc" "(build-test: -DMB_WERROR=ON)"
cmake -S . -B build-test -DCMAKE_C_COMPILER=gcc -DMB_WERROR=ON
cmake --build build-test -j"$JOBS"
run_ctest build-test

section "asan" "(build-asan: -DMB_SANITIZE=address,undefined -DMB_WERROR=ON)"
cmake -S . -B build-asan -DCMAKE_C_COMPILER=gcc -DMB_SANITIZE=address,undefined -DMB_WERROR=ON
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest build-asan

section "fuzz" "(build-fuzz: clang, libFuzzer, ASan/UBSan; ${FUZZ_SECONDS} s per target)"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DMB_FUZZ=ON \
    -DMB_SANITIZE=address,undefined -DMB_BUILD_TESTS=ON
cmake --build build-fuzz -j"$JOBS"
fuzzers=()
for f in build-fuzz/fuzz_*; do
    case "$f" in *_replay) continue ;; esac
    [ -f "$f" ] && [ -x "$f" ] && fuzzers+=("$f")
done
if [ ${#fuzzers[@]} -eq 0 ]; then
    echo "test.sh: no fuzz_* libFuzzer binary in build-fuzz" >&2
    exit 1
fi
ARTIFACTS=$ROOT/build-fuzz/fuzz-artifacts
mkdir -p "$ARTIFACTS"
for f in "${fuzzers[@]}"; do
    name=$(basename "$f")
    name=${name#fuzz_}
    corpus=$WORK/corpus-$name
    mkdir -p "$corpus"
    if [ -d "fuzz/corpus/$name" ]; then
        cp -R "fuzz/corpus/$name/." "$corpus/"
    else
        echo "test.sh: warning: no seed corpus fuzz/corpus/$name; starting empty" >&2
    fi
    echo "-- fuzz_$name: $(find "$corpus" -type f | wc -l) seeds, ${FUZZ_SECONDS} s"
    if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$f" -max_total_time="$FUZZ_SECONDS" -max_len=4096 -timeout=25 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$name-" "$corpus" \
        >"$WORK/fuzz-$name.log" 2>&1; then
        tail -n 12 "$WORK/fuzz-$name.log"
        passed=$((passed + 1))
    else
        tail -n 60 "$WORK/fuzz-$name.log"
        failed=$((failed + 1))
        echo "test.sh: fuzz_$name failed; the input is kept in $ARTIFACTS" >&2
        exit 1
    fi
done

section "bench" "(build-test, MB_BENCH_QUICK=1: proves they run; timings not asserted)"
benches=()
for b in build-test/bench_*; do
    [ -f "$b" ] && [ -x "$b" ] && benches+=("$b")
done
if [ ${#benches[@]} -eq 0 ]; then
    echo "test.sh: no bench_* program in build-test" >&2
    exit 1
fi
for b in "${benches[@]}"; do
    echo "-- $b"
    if MB_BENCH_QUICK=1 "$b"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "test.sh: $b failed" >&2
        exit 1
    fi
done
echo "-- bench/run_loadgen.sh (the gateway under load, quick)"
if MB_BENCH_QUICK=1 bench/run_loadgen.sh build-test/mudbus-gateway build-test/loadgen; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    echo "test.sh: bench/run_loadgen.sh failed" >&2
    exit 1
fi
echo "-- bench/run_storm.sh (mute loading in a reconnect storm, filter cost; quick)"
if MB_BENCH_QUICK=1 bench/run_storm.sh build-test/mudbus-gateway build-test/loadgen; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    echo "test.sh: bench/run_storm.sh failed" >&2
    exit 1
fi
step="done"
