#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run_storm.sh [GATEWAY_BIN] [LOADGEN_BIN]: the mute store benchmarks (issue 6,
# "Tests and speed"), for SQLite and for PostgreSQL.
#
# Starts its own nats-server (free port) and, for PostgreSQL, its own
# PostgreSQL 15 (initdb + pg_ctl as the postgres user when run as root, in a
# temporary directory owned by it, a free port, listening on 127.0.0.1 only);
# every run gets a fresh mudbus-gateway on port 0. Everything is stopped by
# pid (pg_ctl for PostgreSQL) on every exit path; the temporary directories
# are removed (kept, with the logs, when a run failed).
#
# Parts (MB_STORM_PARTS, default "storm filter"), each for every backend of
# MB_STORM_BACKENDS (default "sqlite postgres"; "none" is the control: the
# gateway with mutes off, [store] backend = none, nothing seeded):
#   storm   Reconnect storm. The store holds 50,000 personal mutes (10 for
#           each of the 5,000 storm players, seeded once the gateway has
#           created the schema). A first loadgen (the chat group: 200 players
#           in 20 rooms) connects and says 100 messages/s (1,000
#           deliveries/s) throughout. Once it is warmed up, its measured
#           window is opened (SIGUSR1) and a second loadgen (the storm)
#           connects the 5,000 storm players at 5,000 a second with no bound
#           on connections in setup, each joining one of 500 rooms; when the
#           last is joined the chat window is closed (SIGUSR2). So the chat's
#           publish-to-receipt latency is that of the storm only, measured by
#           a process that does not also read the storm's frames. Figures:
#           first storm connect to last join ack (the welcome, hence the
#           join, waits for the player's mutes), connect to welcome, store
#           statements and mute loads during the window (deltas of
#           /metrics), chat latency. Goals: <= 2 s, <= 100 statements,
#           p99 < 20 ms.
#   filter  Cost of filtering: 2,000 clients in 100 rooms, 1,000 says/s
#           (20,000 deliveries/s, run_loadgen.sh scenario 2). A: every
#           receiver holds 10 personal mutes of players who never chat
#           (nothing is filtered; each delivery checks all 10). B: no mutes.
#           A and B alternate MB_STORM_REPS times (default 3) on fresh
#           gateways; the figure is the gateway's CPU time per delivered
#           frame, medians and A/B ratio. Goal: <= 1.1.
# MB_BENCH_QUICK=1 runs a tiny version (storm: 200 players, 2,000 mutes;
# filter: 50 clients, 1 rep) in well under 30 s, so CI proves the path works.
# Benchmarks print figures; they never assert a time. The exit status is
# non-zero only when something could not be run or measured (a server did
# not start, loadgen measured nothing, the gateway died).
#
# Every figure is printed with the 1-minute load average at its end
# (uptime): the machine may be shared.
#
# Knobs (environment): MB_BENCH_QUICK, MB_STORM_PARTS, MB_STORM_BACKENDS,
# MB_STORM_REPS, MB_STORM_PLAYERS (storm size, default 5000),
# MB_STORM_MUTES (mutes per storm player, default 10), MB_STORM_CHAT_RATE
# (says/s of the chat group, default 100), MB_STORM_DURATION (filter window,
# default 10 s), MB_STORM_JSON=FILE (appends each run's JSON line),
# MB_STORM_NICE=N (run the storm's loadgen at nice N, as if its clients were
# remote: it then competes less with the gateway for this machine's CPUs),
# NATS_SERVER, PG_BINDIR (default /usr/lib/postgresql/15/bin).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
gw_bin=${1:-$root/build/mudbus-gateway}
lg_bin=${2:-$root/build/loadgen}
nats_bin=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
pg_bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
for b in "$gw_bin" "$lg_bin" "$nats_bin"; do
    if [[ ! -x $b ]]; then
        echo "run_storm.sh: $b: not an executable (usage: $0 [GATEWAY_BIN] [LOADGEN_BIN])" >&2
        exit 1
    fi
done
if ! command -v sqlite3 >/dev/null; then
    echo "run_storm.sh: needs the sqlite3 command-line shell to seed (apt-get install sqlite3)" >&2
    exit 1
fi

quick=0
if [[ -n ${MB_BENCH_QUICK:-} && ${MB_BENCH_QUICK} != 0 ]]; then
    quick=1
fi
parts=${MB_STORM_PARTS:-storm filter}
backends=${MB_STORM_BACKENDS:-sqlite postgres}
if ((quick)); then
    reps=${MB_STORM_REPS:-1}
    storm_n=${MB_STORM_PLAYERS:-200} storm_rooms=20
    chat_n=20 chat_rooms=4 chat_rate=${MB_STORM_CHAT_RATE:-20} chat_warmup=0.3
    f_clients=50 f_rooms=5 f_rate=50 f_duration=${MB_STORM_DURATION:-1} f_warmup=0.5
else
    reps=${MB_STORM_REPS:-3}
    storm_n=${MB_STORM_PLAYERS:-5000} storm_rooms=500
    chat_n=200 chat_rooms=20 chat_rate=${MB_STORM_CHAT_RATE:-100} chat_warmup=1
    f_clients=2000 f_rooms=100 f_rate=1000 f_duration=${MB_STORM_DURATION:-10} f_warmup=3
fi
mutes_per=${MB_STORM_MUTES:-10}

for be in $backends; do
    case $be in
    sqlite | none) ;;
    postgres)
        for b in "$pg_bindir/initdb" "$pg_bindir/pg_ctl"; do
            if [[ ! -x $b ]]; then
                echo "run_storm.sh: $b missing (PostgreSQL 15; or MB_STORM_BACKENDS=sqlite)" >&2
                exit 1
            fi
        done
        command -v psql >/dev/null || {
            echo "run_storm.sh: psql missing" >&2
            exit 1
        }
        ;;
    *)
        echo "run_storm.sh: unknown backend $be" >&2
        exit 1
        ;;
    esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mb-storm.XXXXXX")
pgdir=
nats_pid=
gw_pid=
lg_pid=
lg2_pid=
pg_port=
failed=0

as_pg() { # command...: as the postgres user when we are root
    if ((EUID == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# shellcheck disable=SC2317 # (called by cleanup)
stop_pg() {
    [[ -n $pgdir && -d $pgdir/data ]] || return 0
    if [[ -f $pgdir/data/postmaster.pid ]]; then
        local pid
        pid=$(head -n1 "$pgdir/data/postmaster.pid" 2>/dev/null || true)
        as_pg "$pg_bindir/pg_ctl" -D "$pgdir/data" -m fast -w -t 20 stop >>"$pgdir/tools.log" 2>&1 ||
            true
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}

# shellcheck disable=SC2317 # (called by the trap)
cleanup() {
    local rc=$?
    [[ -n $lg_pid ]] && stop_pid "$lg_pid"
    [[ -n $lg2_pid ]] && stop_pid "$lg2_pid"
    stop_pid "$gw_pid"
    gw_pid=
    stop_pid "$nats_pid"
    nats_pid=
    stop_pg
    if ((failed)); then
        echo "run_storm.sh: logs kept in $tmp${pgdir:+ and $pgdir}" >&2
    else
        rm -rf "$tmp"
        [[ -z $pgdir ]] || rm -rf "$pgdir"
    fi
    exit "$rc"
}
# shellcheck disable=SC2317 # (called by the trap)
on_signal() {
    failed=1
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export MUDBUS_AUTH_JWT_SECRET=${MUDBUS_AUTH_JWT_SECRET:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}

load1() { cut -d' ' -f1 /proc/loadavg; }

# ---- nats-server on a free port ----
start_nats "$nats_bin" "$tmp" || true
if [[ -z $nats_port ]]; then
    echo "run_storm.sh: nats-server did not start:" >&2
    tail -5 "$tmp/nats.log" >&2
    failed=1
    exit 1
fi

# ---- PostgreSQL 15 (only when asked for) ----
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
        2>/dev/null || echo $((20000 + RANDOM % 20000))
}

start_pg() {
    pgdir=$(mktemp -d "${TMPDIR:-/tmp}/mb-storm-pg.XXXXXX")
    chmod 755 "$pgdir"
    ((EUID == 0)) && chown postgres: "$pgdir"
    if ! as_pg "$pg_bindir/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 \
        --no-sync >"$pgdir/tools.log" 2>&1; then
        echo "run_storm.sh: initdb failed:" >&2
        tail -5 "$pgdir/tools.log" >&2
        return 1
    fi
    local try
    for try in 1 2 3; do
        pg_port=$(free_port)
        if as_pg "$pg_bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$pgdir" \
            start >>"$pgdir/tools.log" 2>&1; then
            return 0
        fi
        echo "run_storm.sh: pg_ctl start failed on port $pg_port (try $try)" >&2
    done
    tail -5 "$pgdir/server.log" >&2
    return 1
}

psql_q() { # db sql...
    local db=$1
    shift
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d "$db" "$@"
}

if [[ " $backends " == *" postgres "* ]]; then
    if ! start_pg; then
        failed=1
        exit 1
    fi
    for db in storm fmutes fnone; do
        psql_q postgres -c "CREATE DATABASE mb_$db" >/dev/null
    done
fi

# ---- a gateway ----
# start_gateway NAME BACKEND DB: DB is the SQLite file or the PostgreSQL
# database name. Sets gw_pid and gw_port.
start_gateway() {
    local name=$1 be=$2 db=$3 portfile="$tmp/gw-$1.port"
    rm -f "$portfile"
    local env=(MUDBUS_STORE_BACKEND="$be")
    if [[ $be == sqlite ]]; then
        env+=(MUDBUS_STORE_SQLITE_PATH="$db")
    elif [[ $be == postgres ]]; then
        env+=(MUDBUS_STORE_POSTGRES_URL="postgresql://postgres@127.0.0.1:$pg_port/$db")
    fi
    env "${env[@]}" setsid "$gw_bin" --listen 127.0.0.1:0 --port-file "$portfile" \
        --nats "nats://127.0.0.1:$nats_port" --no-rate-limits >"$tmp/gw-$name.log" 2>&1 &
    gw_pid=$!
    wait_port_file "$portfile" "$gw_pid" || true
    if [[ -z $gw_port ]]; then
        echo "run_storm.sh: the gateway did not start:" >&2
        tail -5 "$tmp/gw-$name.log" >&2
        return 1
    fi
    sleep 0.3 # NATS connection and subscriptions
}

# ---- seeding (after the gateway created the schema) ----
# seed BACKEND DB KIND: KIND storm = MB_STORM_MUTES personal mutes for each
# storm player storm<i> (of other storm players; every other one expiring in
# a day, the rest never); KIND filter = 10 personal mutes for each chat
# client lg<i> of players quiet<i>_<k> who never connect. The rows are
# those the gateway itself writes (store_sqlite.c / store_pg.c).
seed() {
    local be=$1 db=$2 kind=$3 n per muter target
    local now_ms=$(($(date +%s) * 1000))
    if [[ $kind == storm ]]; then
        n=$storm_n per=$mutes_per
    else
        n=$f_clients per=10
    fi
    if [[ $be == sqlite ]]; then
        if [[ $kind == storm ]]; then
            muter="'storm' || i"
            target="'storm' || ((i + k + 1) % $n)"
        else
            muter="'lg' || i"
            target="'quiet' || i || '_' || k"
        fi
        sqlite3 -bail "$db" >/dev/null <<SQL
PRAGMA busy_timeout = 10000;
BEGIN;
WITH RECURSIVE p(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM p WHERE i + 1 < $n),
               m(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM m WHERE k + 1 < $per)
INSERT INTO mutes_player (muter, target, created_ms, expires_ms, reason)
SELECT $muter, $target, $now_ms, CASE WHEN k % 2 = 1 THEN $now_ms + 86400000 ELSE NULL END,
       'bench' FROM p, m;
COMMIT;
SQL
        sqlite3 "$db" 'SELECT count(*) FROM mutes_player'
    else
        if [[ $kind == storm ]]; then
            muter="'storm' || i"
            target="'storm' || ((i + k + 1) % $n)"
        else
            muter="'lg' || i"
            target="'quiet' || i || '_' || k"
        fi
        psql_q "$db" -c "INSERT INTO mutes_player (muter, target, created_ms, expires_ms, reason)
            SELECT $muter, $target, $now_ms,
                   CASE WHEN k % 2 = 1 THEN $now_ms + 86400000 ELSE NULL END, 'bench'
            FROM generate_series(0, $n - 1) i, generate_series(0, $per - 1) k;
            ANALYZE mutes_player;" >/dev/null
        psql_q "$db" -tA -c 'SELECT count(*) FROM mutes_player'
    fi
}

db_of() { # backend kind
    if [[ $1 == sqlite ]]; then
        echo "$tmp/mutes-$2.db"
    else
        echo "mb_$2"
    fi
}

# ---- one loadgen run against a fresh gateway ----
# run NAME BACKEND DB SEEDKIND(or -) loadgen-args...; the JSON line goes to
# $tmp/NAME.json, the summary to the terminal.
run() {
    local name=$1 be=$2 db=$3 seedkind=$4
    shift 4
    if ! start_gateway "$name" "$be" "$db"; then
        failed=1
        return 1
    fi
    if ! seed_now "$be" "$db" "$seedkind"; then
        stop_pid "$gw_pid"
        gw_pid=
        return 1
    fi
    local rc=0
    "$lg_bin" --url "ws://127.0.0.1:$gw_port/ws" --gateway-pid "$gw_pid" \
        --nats-pid "$nats_pid" --json --quiet "$@" >"$tmp/$name.json" 2>"$tmp/$name.txt" &
    lg_pid=$!
    wait "$lg_pid" || rc=$?
    lg_pid=
    local load
    load=$(load1)
    finish_lg "$name" "$be" "$load" "$rc"
    end_gateway "$name"
    return 0
}

# finish_lg NAME BACKEND LOAD RC: print loadgen's summary, tag its JSON line.
finish_lg() {
    local name=$1 be=$2 load=$3 rc=$4
    sed 's/^/  /' "$tmp/$name.txt"
    echo "  load average (1 min) at the end: $load"
    if ((rc != 0)); then
        echo "run_storm.sh: $name: loadgen exited with $rc" >&2
        failed=1
    fi
    if [[ -s $tmp/$name.json ]]; then
        sed -i "s/^{/{\"run\":\"$name\",\"backend\":\"$be\",\"load1\":$load,/" "$tmp/$name.json"
        [[ -n ${MB_STORM_JSON:-} ]] && cat "$tmp/$name.json" >>"$MB_STORM_JSON"
    fi
    return 0
}

end_gateway() { # name
    if ! kill -0 "$gw_pid" 2>/dev/null; then
        echo "run_storm.sh: the gateway died during $1; its log:" >&2
        tail -20 "$tmp/gw-$1.log" >&2
        failed=1
    fi
    stop_pid "$gw_pid"
    gw_pid=
}

seed_now() { # backend db kind(or -)
    [[ $3 != - && $1 != none ]] || return 0
    local rows
    if ! rows=$(seed "$1" "$2" "$3"); then
        echo "run_storm.sh: seeding $2 failed" >&2
        failed=1
        return 1
    fi
    echo "  (seeded: mutes_player holds $rows rows)"
}

wait_phase() { # seconds file pid phase...: until the file names one of the phases
    local end=$((SECONDS + $1)) f=$2 pid=$3 ph
    shift 3
    while ((SECONDS < end)); do
        if [[ -s $f ]]; then
            ph=$(cat "$f")
            for want in "$@"; do
                [[ $ph == "$want" ]] && return 0
            done
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

# storm_run BACKEND: the storm part (see the top).
storm_run() {
    local be=$1 db name=storm-$1 rc=0 rc2=0
    db=$(db_of "$be" storm)
    if ! start_gateway "$name" "$be" "$db"; then
        failed=1
        return 1
    fi
    if ! seed_now "$be" "$db" storm; then
        stop_pid "$gw_pid"
        gw_pid=
        return 1
    fi
    local url="ws://127.0.0.1:$gw_port/ws" chat=$name-chat storm=$name-storm
    "$lg_bin" --url "$url" --gateway-pid "$gw_pid" --nats-pid "$nats_pid" --json --quiet \
        --clients "$chat_n" --rooms "$chat_rooms" --rate "$chat_rate" --id-prefix chat \
        --warmup "$chat_warmup" --duration 120 --window-signals --metrics \
        --phase-file "$tmp/$chat.phase" >"$tmp/$chat.json" 2>"$tmp/$chat.txt" &
    lg_pid=$!
    if ! wait_phase 60 "$tmp/$chat.phase" "$lg_pid" warm-up; then
        echo "run_storm.sh: the chat group did not connect" >&2
    fi
    sleep "$chat_warmup"
    kill -USR1 "$lg_pid" 2>/dev/null || true
    if wait_phase 10 "$tmp/$chat.phase" "$lg_pid" window; then
        ${MB_STORM_NICE:+nice -n "$MB_STORM_NICE"} "$lg_bin" --url "$url" --gateway-pid "$gw_pid" --json --quiet \
            --clients "$storm_n" --rooms "$storm_rooms" --id-prefix storm \
            --room-prefix bench_zone_storm_room --connect-rate "$storm_n" --max-setup 0 \
            --connect-timeout 80 --rate 0 --warmup 0 --duration 0.1 \
            --phase-file "$tmp/$storm.phase" >"$tmp/$storm.json" 2>"$tmp/$storm.txt" &
        lg2_pid=$!
        wait_phase 90 "$tmp/$storm.phase" "$lg2_pid" warm-up window drain close "done" || true
    else
        echo "run_storm.sh: the chat group's window did not start" >&2
    fi
    kill -USR2 "$lg_pid" 2>/dev/null || true
    local load
    load=$(load1)
    if [[ -n $lg2_pid ]]; then
        wait "$lg2_pid" || rc2=$?
        lg2_pid=
    fi
    wait "$lg_pid" || rc=$?
    lg_pid=
    echo "--- the storm (second loadgen; its connect phase is the storm)"
    finish_lg "$storm" "$be" "$load" "$rc2"
    echo "--- the chat group during the storm (its window is the storm)"
    finish_lg "$chat" "$be" "$load" "$rc"
    end_gateway "$name"
}

field() { # file key
    sed -n "s/.*\"$2\":\\([^,}]*\\).*/\\1/p" "$1" 2>/dev/null
}

median() { # numbers...
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

summary=()
echo "run_storm.sh: gateway $gw_bin, loadgen $lg_bin, nats-server on port $nats_port${pg_port:+, PostgreSQL on port $pg_port}$( ((quick)) && echo ' (quick mode)')"
echo "run_storm.sh: $(nproc) CPUs; $(uptime)"

for be in $backends; do
    for part in $parts; do
        case $part in
        storm)
            echo
            echo "=== [$be] storm: $storm_n players connect within 1 s; store holds" \
                "$((storm_n * mutes_per)) mutes; $chat_n chat players in $chat_rooms rooms say" \
                "$chat_rate/s"
            storm_run "$be" || continue
            j=$tmp/storm-$be-chat.json js=$tmp/storm-$be-storm.json
            summary+=("$(printf '%-8s storm   %5s/%-5s joined in %6s s (connects started over %s s; welcome p50/p99/max %s/%s/%s ms; gateway CPU %s s)  statements %4s  mute loads %5s  chat p50 %s us p99 %s us max %s us (%s deliveries)  load %s' \
                "$be" "$(field "$js" joined)" "$storm_n" "$(field "$js" connect_s)" \
                "$(field "$js" connects_started_s)" \
                "$(field "$js" welcome_p50_ms)" "$(field "$js" welcome_p99_ms)" \
                "$(field "$js" welcome_max_ms)" "$(field "$js" gw_cpu_connect_s)" \
                "$(field "$j" d_store_statements)" "$(field "$j" d_mute_loads_total)" \
                "$(field "$j" lat_p50_us)" "$(field "$j" lat_p99_us)" "$(field "$j" lat_max_us)" \
                "$(field "$j" deliveries)" "$(field "$j" load1)")")
            ;;
        filter)
            echo
            echo "=== [$be] filter: $f_clients clients / $f_rooms rooms, $f_rate says/s;" \
                "A = 10 mutes per receiver (none matching), B = no mutes; $reps x A/B"
            a=() b=() aloads=() bloads=()
            for ((i = 1; i <= reps; i++)); do
                for v in A B; do
                    name=filter-$be-$v$i
                    if [[ $v == A ]]; then
                        db=$(db_of "$be" fmutes)
                        # Seed once: the first A run (the gateway made the schema).
                        sk=-
                        ((i == 1)) && sk=filter
                    else
                        db=$(db_of "$be" fnone) sk=-
                    fi
                    echo "--- $name ($([[ $v == A ]] && echo '10 mutes each' || echo 'no mutes'))"
                    run "$name" "$be" "$db" "$sk" --clients "$f_clients" --rooms "$f_rooms" \
                        --rate "$f_rate" --duration "$f_duration" --warmup "$f_warmup" \
                        --metrics || continue
                    us=$(field "$tmp/$name.json" gw_cpu_us_per_delivery)
                    ld=$(field "$tmp/$name.json" load1)
                    [[ -n $us ]] || continue
                    if [[ $v == A ]]; then
                        a+=("$us") aloads+=("$ld")
                    else
                        b+=("$us") bloads+=("$ld")
                    fi
                done
            done
            ma=$(median "${a[@]}") mb=$(median "${b[@]}")
            ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')
            summary+=("$(printf '%-8s filter  us/delivery A (10 mutes) %s -> median %s; B (none) %s -> median %s; ratio %s  loads A %s B %s' \
                "$be" "${a[*]:-}" "$ma" "${b[*]:-}" "$mb" "$ratio" "${aloads[*]:-}" "${bloads[*]:-}")")
            ;;
        *) echo "run_storm.sh: unknown part $part" >&2 ;;
        esac
    done
done

echo
echo "=== summary (goals: storm <= 2 s, <= 100 statements, chat p99 < 20,000 us; filter ratio <= 1.1)"
for line in "${summary[@]}"; do
    echo "$line"
done
exit "$failed"
