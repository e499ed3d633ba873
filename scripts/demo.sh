#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# demo.sh: the first command of the README. Installs the Debian packages
# that are missing, builds mudbus, then runs the demo: a local nats-server
# with JetStream (data in .demo/ of the checkout), mudbus-gateway with the
# development login enabled, and prints the URL of the browser client.
# Ctrl-C stops both cleanly.
#
# Usage: scripts/demo.sh   (from any directory; run as root on Debian 12)
# Environment: MB_DEMO_PORT (default 8080), MB_DEMO_NATS_PORT (default 4222),
#              MB_DEMO_SECONDS (stop by itself after that many seconds; for CI)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PORT=${MB_DEMO_PORT:-8080}
NATS_PORT=${MB_DEMO_NATS_PORT:-4222}
DATA=$ROOT/.demo

scripts/deps.sh demo
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target mudbus_gateway mudbus_cli

mkdir -p "$DATA/jetstream"
# A secret for this demo only, kept between runs (tokens stay valid).
if [ ! -s "$DATA/jwt_secret" ]; then
    (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n' >"$DATA/jwt_secret")
fi

pids=()
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "demo.sh: stopping"
    # The gateway first (it drains its clients), then nats-server.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
    done
}
trap cleanup INT TERM EXIT

# The servers run in sessions of their own (setsid): a Ctrl-C at the terminal
# reaches only this script, whose cleanup stops the gateway (it drains) and
# then nats-server, instead of both dying at once while `wait` below takes
# that for a crash.
setsid nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$DATA/jetstream" -l "$DATA/nats-server.log" &
pids+=($!)
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
    sleep 0.1
done

rm -f "$DATA/port"
# The start room announces arrivals here (a few people trying it out); the
# default is a quiet lobby.
MUDBUS_AUTH_JWT_SECRET_FILE=$DATA/jwt_secret MUDBUS_STORE_SQLITE_PATH=$DATA/mutes.db \
    MUDBUS_GATEWAY_START_ROOM_PRESENCE=on setsid build/mudbus-gateway \
    --listen "127.0.0.1:$PORT" --nats "nats://127.0.0.1:$NATS_PORT" --web-root "$ROOT/web" \
    --dev-login --port-file "$DATA/port" 2>>"$DATA/gateway.log" &
pids+=($!)
for _ in $(seq 50); do
    [ -s "$DATA/port" ] && break
    if ! kill -0 "${pids[1]}" 2>/dev/null; then
        echo "demo.sh: the gateway did not start; its log:" >&2
        tail -n 20 "$DATA/gateway.log" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<MSG

  mudbus demo is running.

    Browser client:  http://127.0.0.1:$PORT/
    (sign in with any name; open a second window as someone else and chat)

    Health:   curl http://127.0.0.1:$PORT/readyz
    Metrics:  curl http://127.0.0.1:$PORT/metrics
    Logs:     $DATA/gateway.log, $DATA/nats-server.log

  Press Ctrl-C to stop.

MSG

if [ -n "${MB_DEMO_SECONDS:-}" ]; then
    sleep "$MB_DEMO_SECONDS"
    curl -fsS "http://127.0.0.1:$PORT/readyz"
    exit 0
fi
wait -n "${pids[@]}"
echo "demo.sh: a process stopped unexpectedly; see $DATA/*.log" >&2
exit 1
