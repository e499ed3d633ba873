#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_cli_nats.sh: end-to-end tests of `mudbus pub|sub|req|health` and
# `mudbus dlq replay --server` against real nats-server processes.
#
# Usage: test_cli_nats.sh PATH-TO-MUDBUS-BINARY SOURCE-DIR
#
# Starts its own servers on free ports chosen by the server (`-p -1`, read
# back from --ports_file_dir): one with JetStream, one plain, one requiring
# user/password. Each is killed by its pid on exit, also when a case fails or
# the script is interrupted, and so is any background `mudbus sub`. Cases
# check the exit status, stdout and stderr the way tests/cli/test_cli.sh does
# (harness.sh); any sanitizer report fails a case. To know that a background
# `mudbus sub` has subscribed, the script polls the server's monitoring
# endpoint (/subsz). Messages that `mudbus pub` would refuse, and a
# responder for `mudbus req`, are spoken in the NATS text protocol over
# bash's /dev/tcp. Without nats-server the script prints why and exits 77
# (CTest: SKIP_RETURN_CODE 77). The last line printed is `N passed, M
# failed`; the exit status is non-zero if any failed.

set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 PATH-TO-MUDBUS-BINARY SOURCE-DIR" >&2
    exit 2
fi
M=$1
SRC=$2
if [ ! -x "$M" ]; then
    echo "test_cli_nats.sh: $M is not an executable" >&2
    exit 2
fi
if ! command -v nats-server >/dev/null; then
    echo "test_cli_nats.sh: nats-server not found: skipped"
    echo "0 passed, 0 failed"
    exit 77
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mudbus-cli-nats-test.XXXXXX") || exit 2
SERVERS=""
BG=""
cleanup() {
    local p
    for p in $BG; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for p in $SERVERS; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=tests/cli/harness.sh
. "$(dirname "$0")/harness.sh"

# The environment must not change what the cases mean.
unset MUDBUS_NATS_SERVERS MUDBUS_NATS_PASSWORD MUDBUS_NATS_USER MUDBUS_NATS_TOKEN

lines() { wc -l <"$1" | tr -d ' '; }

# start_server NAME [ARGS...]: start nats-server, wait for its ports file,
# set NAME_PORT, NAME_MON (monitoring port) and NAME_URL.
start_server() {
    local name=$1 dir=$TMP/srv-$1 pid f=""
    shift
    mkdir -p "$dir"
    nats-server -a 127.0.0.1 -p -1 -m -1 --ports_file_dir "$dir" "$@" >"$dir/log" 2>&1 &
    pid=$!
    SERVERS="$SERVERS $pid"
    for _ in $(seq 1 200); do
        f=$dir/nats-server_$pid.ports
        [ -s "$f" ] && grep -q monitoring "$f" && break
        sleep 0.05
    done
    if [ ! -s "$f" ]; then
        echo "test_cli_nats.sh: nats-server $name did not start:" >&2
        cat "$dir/log" >&2
        exit 2
    fi
    local port mon
    port=$(sed -n 's/.*"nats:\/\/127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$f")
    mon=$(sed -n 's/.*"http:\/\/127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$f")
    eval "${name}_PORT=$port ${name}_MON=$mon ${name}_URL=nats://127.0.0.1:$port"
}

# subs MONITORING_PORT: the server's number of subscriptions.
subs() {
    local body
    exec 7<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET /subsz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&7
    body=$(cat <&7)
    exec 7<&-
    printf '%s\n' "$body" | sed -n 's/.*"num_subscriptions": *\([0-9]*\).*/\1/p' | head -n 1
}

# wait_subs MONITORING_PORT N: wait (at most 10 s) for more than N subscriptions.
wait_subs() {
    local n
    for _ in $(seq 1 200); do
        n=$(subs "$1")
        [ -n "$n" ] && [ "$n" -gt "$2" ] && return 0
        sleep 0.05
    done
    return 1
}

# wait_exit PID: wait (at most 15 s) for a background command; its status.
wait_exit() {
    for _ in $(seq 1 300); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    local rc=0
    wait "$1" 2>/dev/null || rc=$?
    local p keep=""
    for p in $BG; do
        [ "$p" = "$1" ] || keep="$keep $p"
    done
    BG=$keep
    return "$rc"
}

# raw_pub PORT SUBJECT PAYLOAD: publish in the NATS text protocol, bypassing
# every mudbus check (ASCII payloads only).
raw_pub() {
    local line
    exec 9<>"/dev/tcp/127.0.0.1/$1" || return 1
    read -r -t 5 line <&9
    printf 'CONNECT {"verbose":false}\r\nPUB %s %d\r\n%s\r\nPING\r\n' "$2" "${#3}" "$3" >&9
    read -r -t 5 line <&9
    exec 9<&-
    [ "${line%$'\r'}" = PONG ]
}

# raw_responder PORT SUBJECT REPLY READY: answer one request on SUBJECT with
# REPLY (ASCII); touches READY once subscribed. Run in the background.
raw_responder() {
    local line reply_to
    exec 6<>"/dev/tcp/127.0.0.1/$1" || return 1
    read -r -t 5 line <&6
    printf 'CONNECT {"verbose":false}\r\nSUB %s 1\r\nPING\r\n' "$2" >&6
    read -r -t 5 line <&6
    touch "$4"
    while read -r -t 15 line <&6; do
        line=${line%$'\r'}
        case $line in
        PING) printf 'PONG\r\n' >&6 ;;
        MSG\ *)
            read -r -t 5 _ <&6 # the request's payload
            reply_to=$(echo "$line" | awk 'NF == 5 { print $4 }')
            printf 'PUB %s %d\r\n%s\r\nPING\r\n' "$reply_to" "${#3}" "$3" >&6
            read -r -t 5 line <&6
            break
            ;;
        esac
    done
    exec 6<&-
}

start_server JS -js -sd "$TMP/srv-JS/store"
start_server PLAIN
start_server AUTH --user operator --pass s3cret
DEAD=nats://127.0.0.1:1

CH() { # CH CONTENT: a valid chat message for chat.global
    printf '{"message_id":"m-%s","timestamp":"2026-01-13T10:00:00Z","sender_id":"p1","sender_name":"Armitage","channel":"global","content":"%s"}' "$1" "$1"
}
MSG1=$(CH one)
MSG2=$(CH two)

# ---------------------------------------------------------------- help and usage
t "--help lists the NATS commands" 0 '^  pub ' '' -- "$M" --help
for c in sub req health; do
    check "--help lists $c" grep -Eq "^  $c " "$TMP/out"
done
for c in pub sub req health; do
    t "$c --help" 0 "^Usage: mudbus $c " '' -- "$M" "$c" --help
    check "$c --help documents the connection options" grep -q -- '--tls-ca FILE' "$TMP/out"
    check "$c --help documents the exit statuses" grep -q '^  3 ' "$TMP/out"
    check "$c --help says what exit status 3 means here" grep -q 'no NATS' "$TMP/out"
    t "$c with an unknown option" 2 '' "unknown option '--bogus'" -- "$M" "$c" --bogus
    t "$c --password without --user" 2 '' 'needs --user' -- "$M" "$c" --password x
    t "$c --connect-timeout 0" 2 '' 'bad --connect-timeout' -- "$M" "$c" --connect-timeout 0
    t "$c --server ''" 2 '' 'empty URL' -- "$M" "$c" --server ''
    t "$c --server a,,b" 2 '' 'empty URL' -- "$M" "$c" --server a,,b
    t "$c --tls-cert without --tls-key" 2 '' 'go together' -- "$M" "$c" --tls-cert c.pem
    t "$c --nkey-seed without --nkey-public" 2 '' 'go together' -- "$M" "$c" --nkey-seed s
    t "$c --token without a value" 2 '' "needs a value" -- "$M" "$c" --token
done
t "dlq replay --password without --user" 2 '' 'needs --user' -- \
    "$M" dlq replay --dir "$TMP/d0" --server "$DEAD" --password x
t "pub without a subject" 2 '' 'missing SUBJECT' -- "$M" pub
t "pub with an extra argument" 2 '' "unexpected argument 'x'" -- "$M" pub a.b c x
t "sub without a pattern" 2 '' 'missing PATTERN' -- "$M" sub
t "sub --count x" 2 '' "bad --count 'x'" -- "$M" sub chat.global --count x
t "sub --timeout 0" 2 '' "bad --timeout '0'" -- "$M" sub chat.global --timeout 0
t "req without data" 2 '' 'missing DATA' -- "$M" req chat.global
t "req --timeout -1" 2 '' "bad --timeout '-1'" -- "$M" req chat.global x --timeout -1
t "health with an argument" 2 '' "unexpected argument 'x'" -- "$M" health x
t "dlq replay --help documents --server" 0 '--server URL' '' -- "$M" dlq replay --help

# ---------------------------------------------------------------- pub
t "pub a valid message" 0 "^published to chat\.global \(${#MSG1} bytes\)$" '' -- \
    "$M" pub --server "$JS_URL" chat.global "$MSG1"
t "pub --server=URL form" 0 '^published to chat\.global ' '' -- \
    "$M" pub --server="$JS_URL" chat.global "$MSG1"
printf '%s' "$MSG2" >"$TMP/msg2"
STDIN=$TMP/msg2
t "pub from standard input (DATA omitted)" 0 "^published to chat\.global \(${#MSG2} bytes\)$" '' -- \
    "$M" pub --server "$JS_URL" chat.global
t "pub from standard input ('-')" 0 '^published to chat\.global ' '' -- \
    "$M" pub --server "$JS_URL" chat.global -
STDIN=/dev/null
t "pub an invalid message" 1 '' 'unknown field' -- \
    "$M" pub --server "$JS_URL" chat.global '{"bogus":1}'
t "pub malformed JSON" 1 '' '.' -- "$M" pub --server "$JS_URL" chat.global '{'
t "pub on an unregistered subject" 1 '' 'matches no registered pattern' -- \
    "$M" pub --server "$JS_URL" chat.nope "$MSG1"
t "pub refusals need no server" 1 '' 'unknown field' -- \
    "$M" pub --server "$DEAD" chat.global '{"bogus":1}'
t "pub with no server reachable" 3 '' 'cannot connect to nats://127\.0\.0\.1:1' -- \
    "$M" pub --server "$DEAD" --connect-timeout 500 chat.global "$MSG1"
t "pub with a comma list of servers (one dead)" 0 '^published to ' '' -- \
    "$M" pub --server "$DEAD,$JS_URL" chat.global "$MSG1"
t "pub with --server repeated" 0 '^published to ' '' -- \
    "$M" pub --server "$DEAD" --server "$JS_URL" chat.global "$MSG1"
t "pub with MUDBUS_NATS_SERVERS" 0 '^published to ' '' -- \
    env MUDBUS_NATS_SERVERS="$JS_URL" "$M" pub chat.global "$MSG1"
t "--server wins over MUDBUS_NATS_SERVERS" 0 '^published to ' '' -- \
    env MUDBUS_NATS_SERVERS="$DEAD" "$M" pub --server "$JS_URL" chat.global "$MSG1"
cat >"$TMP/good.ini" <<EOF
[gateway]
listen = 0.0.0.0:4000

[nats]
servers = $JS_URL
pool_size = 4
connect_timeout = 1s
EOF
t "pub --config FILE ([nats] section; others ignored)" 0 '^published to ' '' -- \
    "$M" pub --config "$TMP/good.ini" chat.global "$MSG1"
printf '[nats]\nservers = %s\npool_sise = 2\n' "$JS_URL" >"$TMP/typo.ini"
t "pub --config with a typo" 1 '' 'pool_sise.*unknown key' -- \
    "$M" pub --config "$TMP/typo.ini" chat.global "$MSG1"
t "pub --config missing file" 1 '' '--config' -- \
    "$M" pub --config "$TMP/none.ini" chat.global "$MSG1"
t "MUDBUS_NATS_SERVERS overrides --config" 3 '' 'cannot connect' -- \
    env MUDBUS_NATS_SERVERS="$DEAD" "$M" pub --config "$TMP/good.ini" --connect-timeout 500 \
    chat.global "$MSG1"

# ---------------------------------------------------------------- auth
t "auth: --user with MUDBUS_NATS_PASSWORD" 0 '^published to ' '' -- \
    env MUDBUS_NATS_PASSWORD=s3cret "$M" pub --server "$AUTH_URL" --user operator chat.global "$MSG1"
t "auth: --user --password" 0 '^published to ' '' -- \
    "$M" pub --server "$AUTH_URL" --user operator --password s3cret chat.global "$MSG1"
t "auth: wrong password" 3 '' '[Aa]uth' -- \
    "$M" pub --server "$AUTH_URL" --user operator --password wrong chat.global "$MSG1"
t "auth: no credentials" 3 '' '[Aa]uth' -- "$M" health --server "$AUTH_URL"
t "auth: --user without a password anywhere" 2 '' 'needs --password' -- \
    "$M" health --server "$AUTH_URL" --user operator
t "auth: MUDBUS_NATS_PASSWORD without a user" 1 '' 'user' -- \
    env MUDBUS_NATS_PASSWORD=s3cret "$M" health --server "$AUTH_URL"

# ---------------------------------------------------------------- health
t "health (JetStream server)" 0 '^state: +connected$' '' -- "$M" health --server "$JS_URL"
check "health: pool 1/1 live" grep -Eq '^pool: +1/1 live$' "$TMP/out"
check "health: an RTT" grep -Eq '^rtt: +[0-9]+\.[0-9]{3} ms$' "$TMP/out"
check "health: the server URL" grep -Eq "^server: +$JS_URL\$" "$TMP/out"
check "health: server version line" grep -Eq '^server version: +[^ ]+' "$TMP/out"
check "health: JetStream available" grep -Eq '^jetstream: +available \(' "$TMP/out"
t "health (plain server)" 0 '^jetstream: +not enabled$' '' -- "$M" health --server "$PLAIN_URL"
t "health with auth" 0 '^state: +connected$' '' -- \
    env MUDBUS_NATS_PASSWORD=s3cret "$M" health --server "$AUTH_URL" --user operator
t "health with no server reachable" 3 '' 'cannot connect' -- \
    "$M" health --server "$DEAD" --connect-timeout 500

# ---------------------------------------------------------------- sub
t "sub a refused pattern" 1 '' '.' -- "$M" sub --server "$JS_URL" '>'
t "sub with no server reachable" 3 '' 'cannot connect' -- \
    "$M" sub --server "$DEAD" --connect-timeout 500 chat.global
t "sub --timeout with nothing published" 0 '' '' -- \
    "$M" sub --server "$JS_URL" chat.global --timeout 200
check "  prints nothing" [ ! -s "$TMP/out" ]
t "sub --count --timeout: too few messages" 1 '' 'timed out after 200 ms: 0 of 1 messages' -- \
    "$M" sub --server "$JS_URL" chat.global --count 1 --timeout 200

base=$(subs "$JS_MON")
"$M" sub --server "$JS_URL" 'chat.>' --count 2 --timeout 15000 >"$TMP/sub.out" 2>"$TMP/sub.err" &
BG="$BG $!"
subpid=$!
check "sub: subscribed (monitoring shows it)" wait_subs "$JS_MON" "$base"
check "raw publish of an invalid message" raw_pub "$JS_PORT" chat.global 'not json'
t "pub message 1 for the subscriber" 0 '' '' -- "$M" pub --server "$JS_URL" chat.global "$MSG1"
t "pub message 2 for the subscriber" 0 '' '' -- "$M" pub --server "$JS_URL" chat.global "$MSG2"
rc=0
wait_exit "$subpid" || rc=$?
check "sub --count 2 exits 0" [ "$rc" -eq 0 ]
check "sub printed 2 lines" [ "$(lines "$TMP/sub.out")" -eq 2 ]
check "sub line 1 is SUBJECT DATA" grep -qxF "chat.global $MSG1" "$TMP/sub.out"
check "sub line 2 in order" [ "$(sed -n 2p "$TMP/sub.out")" = "chat.global $MSG2" ]
check "sub warned about the invalid message" \
    grep -q '^mudbus: warning: dropped chat\.global (consume): ' "$TMP/sub.err"
check "sub stderr has only that warning" [ "$(lines "$TMP/sub.err")" -eq 1 ]
grep -q Sanitizer "$TMP/sub.err" && check "sub: no sanitizer report" false

# A pretty-printed message arrives on one line.
base=$(subs "$JS_MON")
"$M" sub --server "$JS_URL" 'events.player_entered.*' --count 1 --timeout 15000 \
    >"$TMP/sub.out" 2>"$TMP/sub.err" &
BG="$BG $!"
subpid=$!
check "sub events: subscribed" wait_subs "$JS_MON" "$base"
STDIN=$SRC/samples/event.json
t "pub a pretty-printed event from stdin" 0 '^published to events\.player_entered\.' '' -- \
    "$M" pub --server "$JS_URL" events.player_entered.earth_arkham_city_library
STDIN=/dev/null
rc=0
wait_exit "$subpid" || rc=$?
check "sub events exits 0" [ "$rc" -eq 0 ]
check "the event is one line" [ "$(lines "$TMP/sub.out")" -eq 1 ]
check "  starting with its subject" \
    grep -q '^events\.player_entered\.earth_arkham_city_library {.*"event_type": "player_entered"' \
    "$TMP/sub.out"
check "  nothing on stderr" [ ! -s "$TMP/sub.err" ]

# Queue group: two members, one message, one delivery.
base=$(subs "$JS_MON")
"$M" sub --server "$JS_URL" chat.global --queue workers --timeout 1500 >"$TMP/q1.out" 2>&1 &
q1=$!
"$M" sub --server "$JS_URL" chat.global --queue workers --timeout 1500 >"$TMP/q2.out" 2>&1 &
q2=$!
BG="$BG $q1 $q2"
check "queue members subscribed" wait_subs "$JS_MON" "$((base + 1))"
t "pub one message to the queue group" 0 '' '' -- "$M" pub --server "$JS_URL" chat.global "$MSG1"
wait_exit "$q1"
wait_exit "$q2"
check "the queue group got it once" [ "$(cat "$TMP/q1.out" "$TMP/q2.out" | grep -c '^chat\.global ')" -eq 1 ]

# ---------------------------------------------------------------- req
t "req with no responders" 1 '' 'no responders' -- \
    "$M" req --server "$JS_URL" chat.global "$MSG1" --timeout 2000
t "req an invalid request" 1 '' 'unknown field' -- \
    "$M" req --server "$JS_URL" chat.global '{"bogus":1}'
t "req with no server reachable" 3 '' 'cannot connect' -- \
    "$M" req --server "$DEAD" --connect-timeout 500 chat.global "$MSG1"
# A subscriber that never replies makes the request time out.
base=$(subs "$JS_MON")
"$M" sub --server "$JS_URL" chat.global --count 1 --timeout 15000 >"$TMP/sub.out" 2>"$TMP/sub.err" &
BG="$BG $!"
subpid=$!
check "req: silent subscriber ready" wait_subs "$JS_MON" "$base"
t "req timed out" 1 '' 'timed out after 300 ms' -- \
    "$M" req --server "$JS_URL" chat.global "$MSG1" --timeout 300
wait_exit "$subpid"
check "the silent subscriber saw the request" grep -qxF "chat.global $MSG1" "$TMP/sub.out"
# A responder in the NATS text protocol.
rm -f "$TMP/ready"
raw_responder "$JS_PORT" chat.global 'pong-reply' "$TMP/ready" &
BG="$BG $!"
resp=$!
for _ in $(seq 1 100); do
    [ -e "$TMP/ready" ] && break
    sleep 0.05
done
t "req with a responder prints the reply" 0 '^pong-reply$' '' -- \
    "$M" req --server "$JS_URL" chat.global "$MSG1" --timeout 5000
wait_exit "$resp"

# ---------------------------------------------------------------- dlq replay --server
D=$TMP/dlq
t "seed DLQ entry 1" 0 '^stored entry 1$' '' -- \
    "$M" dlq put --dir "$D" --subject chat.global --error MB_ETIMEOUT --payload "$MSG1"
t "seed DLQ entry 2" 0 '^stored entry 2$' '' -- \
    "$M" dlq put --dir "$D" --subject chat.global --error MB_ENOCONN --payload "$MSG2"
t "replay with --server and --to-file" 2 '' 'exactly one of' -- \
    "$M" dlq replay --dir "$D" --server "$JS_URL" --to-file "$TMP/x"
t "replay --server with no server reachable" 3 '' 'cannot connect' -- \
    "$M" dlq replay --dir "$D" --server "$DEAD" --connect-timeout 500
t "  nothing was marked replayed" 0 '' '' -- "$M" dlq list --dir "$D"
check "  both still live" [ "$(lines "$TMP/out")" -eq 3 ]
base=$(subs "$JS_MON")
"$M" sub --server "$JS_URL" 'chat.>' --count 2 --timeout 15000 >"$TMP/sub.out" 2>"$TMP/sub.err" &
BG="$BG $!"
subpid=$!
check "replay: subscriber ready" wait_subs "$JS_MON" "$base"
t "replay --server" 0 '^2 of 2 entries published to NATS$' '' -- \
    "$M" dlq replay --dir "$D" --server "$JS_URL"
rc=0
wait_exit "$subpid" || rc=$?
check "the subscriber got both entries" [ "$rc" -eq 0 ] && [ "$(lines "$TMP/sub.out")" -eq 2 ]
check "  in id order, subject and payload unchanged" \
    [ "$(cat "$TMP/sub.out")" = "chat.global $MSG1
chat.global $MSG2" ]
t "replay --server again: nothing twice" 0 '^0 of 0 entries published to NATS$' '' -- \
    "$M" dlq replay --dir "$D" --server "$JS_URL"
t "  no live entry left" 0 '' '' -- "$M" dlq list --dir "$D"
check "  header only" [ "$(lines "$TMP/out")" -eq 1 ]
t "seed an entry the client refuses" 0 '^stored entry 3$' '' -- \
    "$M" dlq put --dir "$D" --subject chat.global --error MB_ESCHEMA --payload '{"bogus":1}'
t "replay --server of a refused entry" 1 '' 'entry 3 \(chat\.global\): .*unknown field' -- \
    "$M" dlq replay --dir "$D" --server "$JS_URL"
t "  it stays live" 0 '^ *3 ' '' -- "$M" dlq list --dir "$D"
t "replay --config FILE publishes to NATS" 0 '^0 of 0 entries published to NATS$' '' -- \
    "$M" dlq replay --dir "$D" --config "$TMP/good.ini" --status MB_ETIMEOUT

finish
