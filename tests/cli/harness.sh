# SPDX-License-Identifier: MIT
#
# harness.sh: the case runner shared by the CLI test scripts (sourced, not
# run). The sourcing script sets TMP (a scratch directory) first.
#
#   t DESCRIPTION WANT_RC STDOUT_REGEX STDERR_REGEX -- COMMAND...
#       runs COMMAND with stdin from $STDIN and checks the exit status,
#       stdout and stderr: successes exit 0 with nothing on stderr; refusals
#       exit WANT_RC with one `mudbus: ...` line on stderr and nothing on
#       stdout; any sanitizer report fails the case. Empty regexes are not
#       checked. Output stays in $TMP/out and $TMP/err for later checks.
#   check DESCRIPTION CONDITION...
#       a plain assertion on earlier output.
#   finish
#       prints `N passed, M failed` and returns non-zero if any failed.

pass=0
fail=0
STDIN=/dev/null

t() {
    local desc=$1 want=$2 out_re=$3 err_re=$4
    shift 5
    local rc=0 why=""
    "$@" <"$STDIN" >"$TMP/out" 2>"$TMP/err" || rc=$?
    if [ "$rc" -ne "$want" ]; then
        why="exit status $rc, want $want"
    elif grep -Eq 'Sanitizer|runtime error:' "$TMP/err"; then
        why="sanitizer report on stderr"
    elif [ -n "$out_re" ] && ! grep -Eq -- "$out_re" "$TMP/out"; then
        why="stdout does not match /$out_re/"
    elif [ -n "$err_re" ] && ! grep -Eq -- "$err_re" "$TMP/err"; then
        why="stderr does not match /$err_re/"
    elif [ "$want" -eq 0 ] && [ -s "$TMP/err" ]; then
        why="stderr not empty on success"
    elif [ "$want" -ne 0 ] && ! head -n 1 "$TMP/err" | grep -q '^mudbus: .'; then
        why="stderr does not start with 'mudbus: <reason>'"
    elif [ "$want" -ne 0 ] && [ -s "$TMP/out" ]; then
        why="stdout not empty on a refusal"
    fi
    if [ -z "$why" ]; then
        pass=$((pass + 1))
        echo "ok   - $desc"
    else
        fail=$((fail + 1))
        echo "FAIL - $desc: $why"
        echo "       command: $*"
        sed -n '1,8s/^/       stdout| /p' "$TMP/out"
        sed -n '1,8s/^/       stderr| /p' "$TMP/err"
    fi
}

check() {
    local desc=$1
    shift
    if "$@"; then
        pass=$((pass + 1))
        echo "ok   - $desc"
    else
        fail=$((fail + 1))
        echo "FAIL - $desc"
    fi
}

finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
