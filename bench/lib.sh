# shellcheck shell=bash
# SPDX-License-Identifier: MIT
#
# bench/lib.sh: shell functions the gateway benchmarks share (sourced by
# run_loadgen.sh and run_storm.sh). Servers run in sessions of their own
# (setsid), so that a Ctrl-C at the terminal reaches only the script, which
# stops them by pid.

# stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# start_nats BIN DIR: nats-server (JetStream, data in DIR/js; the gateway
# needs it by default) on a free port of 127.0.0.1, its ports file
# and log (nats.log) in DIR. Sets nats_pid, and nats_port (empty if it did not
# start within 5 s).
start_nats() {
    local bin=$1 dir=$2 f
    # shellcheck disable=SC2034 # (nats_pid: read by the caller)
    setsid "$bin" -a 127.0.0.1 -p -1 --ports_file_dir "$dir" -js -sd "$dir/js" >"$dir/nats.log" 2>&1 &
    nats_pid=$!
    nats_port=
    for _ in $(seq 100); do
        f="$dir/nats-server_$nats_pid.ports"
        if [[ -s $f ]]; then
            nats_port=$(sed -n 's/.*"nats:\/\/127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$f")
            [[ -n $nats_port ]] && return 0
        fi
        kill -0 "$nats_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# shellcheck disable=SC2034 # (gw_port: read by the caller)
# wait_port_file FILE PID: the port a gateway (PID) writes to FILE once it
# listens (--port-file; complete when it ends with a newline). Sets gw_port,
# empty if PID exited or 10 s passed.
wait_port_file() {
    local file=$1 pid=$2
    gw_port=
    for _ in $(seq 200); do
        if [[ -s $file ]] && [[ $(tail -c1 "$file" | od -An -c) == *'\n'* ]]; then
            gw_port=$(head -n1 "$file")
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
