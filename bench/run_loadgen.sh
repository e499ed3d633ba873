#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run_loadgen.sh [GATEWAY_BIN] [LOADGEN_BIN]: the gateway load benchmarks.
#
# Starts its own nats-server (a free port, in a temporary directory) and, for
# each scenario, a fresh mudbus-gateway on port 0 (so that its RSS before the
# clients connect is a clean baseline), runs bench/loadgen against it and
# prints loadgen's summary; at the end, one table of the figures. Both
# servers are stopped by pid on every exit path (trap), and the temporary
# directory is removed (kept, with the servers' logs, when a run failed).
#
# Scenarios:
#   1. 2,000 clients in 100 rooms, closed loop (--max): the most deliveries
#      a second the gateway carries, with latency at that load.
#   2. 2,000 clients in 100 rooms, 1,000 says/s (20,000 deliveries/s).
#   3. 10,000 idle clients in 1,000 rooms: gateway memory per connection.
# MB_BENCH_QUICK=1 runs a tiny version of each (50 clients, 5 rooms, 2 s)
# with --strict, so CI proves in under 20 s that the whole path works.
# Benchmarks print figures; they never assert a time. The exit status is
# non-zero only when a run measured nothing or (quick mode) a delivery or
# protocol check failed.
#
# Knobs (environment): MB_BENCH_QUICK; MB_LOADGEN_DURATION and
# MB_LOADGEN_WARMUP (seconds, default 10 and 3); MB_LOADGEN_INFLIGHT (says in
# flight in scenario 1, default 128); MB_LOADGEN_SCENARIOS (e.g. "1 3");
# MB_LOADGEN_JSON=FILE appends each run's JSON line to FILE; NATS_SERVER
# (default: nats-server on PATH, else /usr/sbin/nats-server).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
gw_bin=${1:-$root/build/mudbus-gateway}
lg_bin=${2:-$root/build/loadgen}
nats_bin=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
for b in "$gw_bin" "$lg_bin" "$nats_bin"; do
    if [[ ! -x $b ]]; then
        echo "run_loadgen.sh: $b: not an executable (usage: $0 [GATEWAY_BIN] [LOADGEN_BIN])" >&2
        exit 1
    fi
done

quick=0
if [[ -n ${MB_BENCH_QUICK:-} && ${MB_BENCH_QUICK} != 0 ]]; then
    quick=1
fi
duration=${MB_LOADGEN_DURATION:-10}
warmup=${MB_LOADGEN_WARMUP:-3}
inflight=${MB_LOADGEN_INFLIGHT:-128}
scenarios=${MB_LOADGEN_SCENARIOS:-1 2 3}
extra=()
if ((quick)); then
    duration=${MB_LOADGEN_DURATION:-2}
    warmup=${MB_LOADGEN_WARMUP:-0.5}
    extra=(--strict)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mb-loadgen.XXXXXX")
nats_pid=
gw_pid=
failed=0

# shellcheck disable=SC2317 # (called by the trap)
cleanup() {
    stop_pid "$gw_pid"
    gw_pid=
    stop_pid "$nats_pid"
    nats_pid=
    if ((failed)); then
        echo "run_loadgen.sh: logs kept in $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
# On Ctrl-C or SIGTERM: end the running loadgen (it stops its run and prints
# what it measured so far), then the EXIT trap stops the servers.
lg_pid=
lg_out=
# shellcheck disable=SC2317 # (called by the trap)
on_signal() {
    failed=1
    if [[ -n $lg_pid ]]; then
        kill -TERM "$lg_pid" 2>/dev/null || true
        wait "$lg_pid" 2>/dev/null || true
        [[ -n $lg_out && -f $lg_out ]] && cat "$lg_out"
    fi
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

# Every connection is a file descriptor in the gateway and in loadgen.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export MUDBUS_AUTH_JWT_SECRET=${MUDBUS_AUTH_JWT_SECRET:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}

# ---- nats-server on a free port ----
start_nats "$nats_bin" "$tmp" || true
if [[ -z $nats_port ]]; then
    echo "run_loadgen.sh: nats-server did not start:" >&2
    tail -5 "$tmp/nats.log" >&2
    failed=1
    exit 1
fi

start_gateway() { # name
    local portfile="$tmp/gw-$1.port"
    rm -f "$portfile"
    MUDBUS_STORE_SQLITE_PATH="$tmp/mutes-$1.db" setsid "$gw_bin" --listen 127.0.0.1:0 \
        --port-file "$portfile" --nats "nats://127.0.0.1:$nats_port" --no-rate-limits \
        >"$tmp/gw-$1.log" 2>&1 &
    gw_pid=$!
    wait_port_file "$portfile" "$gw_pid" || true
    if [[ -z $gw_port ]]; then
        echo "run_loadgen.sh: the gateway did not start:" >&2
        tail -5 "$tmp/gw-$1.log" >&2
        return 1
    fi
    sleep 0.3 # let it settle (NATS connection, subscriptions) before the RSS baseline
}

results=()
run() { # name title loadgen-args...
    local name=$1 title=$2
    shift 2
    echo
    echo "=== $title"
    if ! start_gateway "$name"; then
        failed=1
        return
    fi
    local rc=0
    lg_out="$tmp/$name.txt"
    # In the background, so that `wait` returns at once on a signal.
    "$lg_bin" --url "ws://127.0.0.1:$gw_port/ws" --gateway-pid "$gw_pid" \
        --nats-pid "$nats_pid" --duration "$duration" --warmup "$warmup" --json --quiet --metrics \
        "${extra[@]}" "$@" >"$tmp/$name.json" 2>"$lg_out" &
    lg_pid=$!
    wait "$lg_pid" || rc=$?
    lg_pid=
    cat "$lg_out"
    if ! kill -0 "$gw_pid" 2>/dev/null; then
        echo "run_loadgen.sh: the gateway died during $name; its log:" >&2
        tail -20 "$tmp/gw-$name.log" >&2
        failed=1
    fi
    stop_pid "$gw_pid"
    gw_pid=
    if ((rc != 0)); then
        echo "run_loadgen.sh: $name: loadgen exited with $rc" >&2
        failed=1
    fi
    if [[ -s $tmp/$name.json ]]; then
        results+=("$name $(cat "$tmp/$name.json")")
        if [[ -n ${MB_LOADGEN_JSON:-} ]]; then
            sed "s/^{/{\"scenario\":\"$name\",/" "$tmp/$name.json" >>"$MB_LOADGEN_JSON"
        fi
    fi
}

if ((quick)); then
    c_busy=50 r_busy=5 c_idle=50 r_idle=5 rate=50
else
    c_busy=2000 r_busy=100 c_idle=10000 r_idle=1000 rate=1000
fi
echo "run_loadgen.sh: gateway $gw_bin, loadgen $lg_bin, nats-server on port $nats_port," \
    "window ${duration}s after ${warmup}s warm-up$( ((quick)) && echo ' (quick mode)')"
for s in $scenarios; do
    case $s in
    1) run max "1. $c_busy clients / $r_busy rooms, max rate ($inflight says in flight)" \
        --clients "$c_busy" --rooms "$r_busy" --max --inflight "$inflight" ;;
    2) run rate "2. $c_busy clients / $r_busy rooms, $rate says/s" \
        --clients "$c_busy" --rooms "$r_busy" --rate "$rate" ;;
    3) run idle "3. $c_idle idle clients / $r_idle rooms (memory)" \
        --clients "$c_idle" --rooms "$r_idle" --rate 0 ;;
    *) echo "run_loadgen.sh: unknown scenario $s" >&2 ;;
    esac
done

# ---- summary table ----
field() { # json key
    sed -n "s/.*\"$2\":\\([^,}]*\\).*/\\1/p" <<<"$1"
}
echo
printf '%-5s %8s %8s %12s %10s %10s %10s %9s %9s %10s %8s\n' scen clients joined \
    deliveries/s p50_us p99_us p99.9_us gw_cpu% us/deliv bytes/conn missing
for line in "${results[@]}"; do
    name=${line%% *}
    js=${line#* }
    printf '%-5s %8s %8s %12s %10s %10s %10s %9s %9s %10s %8s\n' "$name" \
        "$(field "$js" clients)" "$(field "$js" joined)" "$(field "$js" deliveries_per_s)" \
        "$(field "$js" lat_p50_us)" "$(field "$js" lat_p99_us)" "$(field "$js" lat_p999_us)" \
        "$(field "$js" gw_cpu_pct)" "$(field "$js" gw_cpu_us_per_delivery)" \
        "$(field "$js" gw_bytes_per_conn)" "$(field "$js" missing)"
done
exit "$failed"
