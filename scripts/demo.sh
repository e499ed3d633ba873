#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# demo.sh: the first command of the README. Installs the Debian packages
# (scripts/deps.sh), configures and builds mudbus in Release mode in `build/`,
# then shows the `mudbus` operator tool at work on the sample messages in
# samples/: the subject registry, building and checking subjects (and an
# injection attempt refused), validating a chat and an event message, and a
# bad message refused with the field and rule named.
#
# Usage: scripts/demo.sh   (from any directory; run as root on Debian 12)
# Environment: MB_DEMO_BUILD_DIR overrides the build directory (default build).
#
# A later issue turns this into the gateway demo (nats-server, mudbus-gateway
# and browsers chatting); the command stays the same.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=${MB_DEMO_BUILD_DIR:-build}
JOBS=$(nproc 2>/dev/null || echo 2)

section() {
    printf '\n==== %s ====\n' "$*"
}

# Show a command, run it, and say how it ended. A refusal is part of the
# demo, so a non-zero exit does not stop the script; `want` says which exit
# status the demo expects and anything else is a failure.
show() {
    local want=$1
    shift
    local shown="" a
    for a in "$@"; do
        case "$a" in
        *[!A-Za-z0-9_./=:-]*) shown+=" '$a'" ;;
        *) shown+=" $a" ;;
        esac
    done
    printf '\n$ mudbus%s\n' "$shown"
    local rc=0
    "$BUILD/mudbus" "$@" || rc=$?
    printf '(exit status %d)\n' "$rc"
    if [ "$rc" -ne "$want" ]; then
        echo "demo.sh: expected exit status $want from: mudbus $*" >&2
        exit 1
    fi
}

section "1/3 dependencies"
scripts/deps.sh demo

section "2/3 configure and build (Release, $BUILD/)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD" -j"$JOBS"

section "3/3 the mudbus tool on the samples"
echo "The subject patterns of the wire contract (PROTOCOL.md section 1):"
show 0 subjects list

echo
echo "Build the subject for chat said in a room; parameters are checked:"
show 0 subjects build chat_say_room room_id=earth_arkham_city_library
echo
echo "A room id that tries to inject a token is refused, naming the parameter:"
show 1 subjects build chat_say_room room_id=earth.arkham

echo
echo "Which pattern and schema a publish subject belongs to:"
show 0 subjects check chat.say.room.earth_arkham_city_library
show 1 subjects check chat.say.room
echo
echo "Subscriptions must not be too broad:"
show 0 subjects check-sub 'chat.*.room.*'
show 1 subjects check-sub '*'

echo
echo "Validate the sample messages ($(wc -c <samples/chat.json) bytes of chat):"
cat samples/chat.json
show 0 validate samples/chat.json
show 0 validate --subject events.player_entered.earth_arkham_city_library samples/event.json
echo
echo "Refusals name the field and the rule:"
show 1 validate samples/bad_channel.json
show 1 validate samples/bad_timestamp.json
show 1 validate --subject events.player_entered.earth_arkham_city_library samples/chat.json

section "done"
echo "The tool is $BUILD/mudbus; try '$BUILD/mudbus --help'."
echo "Next: scripts/test.sh builds with sanitizers, runs every test, fuzzes and benchmarks."
