#!/bin/sh
# SPDX-License-Identifier: MIT
#
# run.sh [GATEWAY_BIN] - the mudbus-gateway integration tests (real gateway, real nats-server,
# real WebSocket clients). Exits non-zero on any failure. Needs Debian's /usr/bin/python3 with
# python3-websockets, and nats-server (MB_NATS_SERVER to override).
#
# Environment: MB_GATEWAY_BIN (when no argument; default <repo>/build/mudbus-gateway),
# MB_TIMEOUT_SCALE (slow or sanitizer builds), MB_TEST_PATTERN (unittest -k filter),
# MB_TEST_TMP (scratch directory; kept on failure either way, with the logs).
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin=${1:-${MB_GATEWAY_BIN:-$repo/build/mudbus-gateway}}
case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac
if [ ! -x "$bin" ]; then
    echo "run.sh: gateway binary $bin is missing or not executable" >&2
    exit 1
fi
py=/usr/bin/python3
if ! $py -c 'import websockets' 2>/dev/null; then
    echo "run.sh: $py cannot import websockets (apt-get install python3-websockets)" >&2
    exit 1
fi
user_tmp=${MB_TEST_TMP:-}
tmp=${MB_TEST_TMP:-$(mktemp -d "${TMPDIR:-/tmp}/mb-gw-it.XXXXXX")}
mkdir -p "$tmp"
export MB_GATEWAY_BIN="$bin" MB_TEST_TMP="$tmp" PYTHONDONTWRITEBYTECODE=1
set -- -v
if [ -n "${MB_TEST_PATTERN:-}" ]; then set -- "$@" -k "$MB_TEST_PATTERN"; fi
cd "$here" || exit 1
# Every test module; MB_GW_EXCLUDE="test_mutes ..." leaves modules out, loudly.
main_mods="test_channels test_errors test_http_auth test_limits test_cluster test_nats_inbound test_mutes"
res_mods="test_resilience test_mutes_pg"
for x in ${MB_GW_EXCLUDE:-}; do
    main_mods=$(echo " $main_mods " | sed "s/ $x / /")
    res_mods=$(echo " $res_mods " | sed "s/ $x / /")
    echo "run.sh: NOT RUN: $x (excluded by MB_GW_EXCLUDE)" >&2
done
# Two processes in parallel (each with its own shared nats-server): the resilience cases (own
# gateways and nats-servers) alongside everything else keep the run well under a minute.
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null; done; exit 143' INT TERM
rc_res=0
if [ -n "$(echo $res_mods)" ]; then
    $py -m unittest "$@" $res_mods >"$tmp/resilience.out" 2>&1 &
    pid_res=$!
    pids="$pids $pid_res"
else
    : >"$tmp/resilience.out"
fi
$py -m unittest "$@" $main_mods >"$tmp/main.out" 2>&1 &
pid_main=$!
pids="$pids $pid_main"
wait $pid_main
rc_main=$?
if [ -n "${pid_res:-}" ]; then
    wait $pid_res
    rc_res=$?
fi
cat "$tmp/main.out" "$tmp/resilience.out"
if [ $rc_main -ne 0 ] || [ $rc_res -ne 0 ]; then
    echo "run.sh: FAILED (logs kept in $tmp)" >&2
    grep -E '^(FAIL|ERROR):' "$tmp/main.out" "$tmp/resilience.out" | sed 's/^[^:]*://' >&2
    echo "run.sh: gateway logs: $(ls "$tmp"/*/gateway.log 2>/dev/null | tr '\n' ' ')" >&2
    exit 1
fi
[ -z "$user_tmp" ] && rm -rf "$tmp"
echo "run.sh: all gateway integration tests passed"
exit 0
