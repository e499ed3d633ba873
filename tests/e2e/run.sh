#!/usr/bin/env bash
# Browser test of web/ against a real mudbus-gateway and nats-server.
#
#   tests/e2e/run.sh [GATEWAY_BIN]
#
# GATEWAY_BIN defaults to $MB_GATEWAY_BIN, then build/mudbus-gateway. Starts
# nats-server (JetStream, temp dir) and the gateway (--dev-login) on free
# loopback ports, runs chat.test.mjs in headless Chromium (/usr/bin/chromium,
# or $CHROMIUM; never downloaded), stops both, and exits non-zero on failure.
# Screenshots go to $E2E_ARTIFACTS (default tests/e2e/artifacts).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
gateway=${1:-${MB_GATEWAY_BIN:-$root/build/mudbus-gateway}}
nats=$(PATH=$PATH:/usr/sbin:/usr/local/sbin command -v nats-server || true)
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export E2E_ARTIFACTS=${E2E_ARTIFACTS:-$here/artifacts}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

die() { echo "e2e: $*" >&2; exit 1; }
[[ -x $gateway ]] || die "no gateway binary at $gateway (build it, or pass its path)"
[[ -n $nats && -x $nats ]] || die "no nats-server (apt-get install nats-server)"
[[ -x $CHROMIUM ]] || die "no Chromium at $CHROMIUM (apt-get install chromium)"
command -v node >/dev/null || die "no node"

if [[ ! -d $here/node_modules/playwright-core ]]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
fi

tmp=$(mktemp -d)
nats_pid='' gw_pid='' test_pid=''
stop() { # pid: TERM, then KILL after 5 s
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop "$test_pid"
    stop "$gw_pid"
    stop "$nats_pid"
    if [[ $rc -ne 0 ]]; then
        echo "--- gateway log (last 40 lines) ---" >&2; tail -n 40 "$tmp/gateway.log" >&2 2>/dev/null || true
        echo "--- nats-server log (last 10 lines) ---" >&2; tail -n 10 "$tmp/nats.log" >&2 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_file FILE PID WHAT: until FILE is non-empty, while PID lives, 15 s at most
wait_file() {
    for _ in $(seq 150); do
        [[ -s $1 ]] && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited before it was ready"
        sleep 0.1
    done
    die "$3 not ready after 15 s"
}

"$nats" -a 127.0.0.1 -p -1 --ports_file_dir "$tmp" -js -sd "$tmp/js" >"$tmp/nats.log" 2>&1 &
nats_pid=$!
wait_file "$tmp/nats-server_$nats_pid.ports" "$nats_pid" nats-server
nats_url=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).nats[0])' "$tmp/nats-server_$nats_pid.ports")

MUDBUS_AUTH_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') \
    MUDBUS_STORE_SQLITE_PATH="$tmp/mutes.db" "$gateway" --listen 127.0.0.1:0 --nats "$nats_url" --web-root "$root/web" --dev-login \
    --port-file "$tmp/gateway.port" >"$tmp/gateway.log" 2>&1 &
gw_pid=$!
wait_file "$tmp/gateway.port" "$gw_pid" mudbus-gateway
base_url="http://127.0.0.1:$(tr -d '[:space:]' <"$tmp/gateway.port")"
for i in $(seq 150); do
    curl -fsS -o /dev/null "$base_url/readyz" 2>/dev/null && break
    kill -0 "$gw_pid" 2>/dev/null || die "mudbus-gateway exited before it was ready"
    [[ $i -eq 150 ]] && die "mudbus-gateway: /readyz not OK after 15 s"
    sleep 0.1
done
echo "e2e: gateway $base_url (pid $gw_pid), nats $nats_url (pid $nats_pid)"

# In the background so that a signal reaches the trap at once; `timeout`
# bounds a hung browser.
BASE_URL=$base_url timeout -k 10 300 node --test --test-reporter=spec --test-timeout=60000 \
    "$here/chat.test.mjs" &
test_pid=$!
wait "$test_pid"
echo "e2e: screenshots in $E2E_ARTIFACTS"
