#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_cli.sh: end-to-end tests of the `mudbus` operator tool.
#
# Usage: test_cli.sh PATH-TO-MUDBUS-BINARY SOURCE-DIR
# (CTest runs it so; SOURCE-DIR is the repository root, for samples/ and
# CMakeLists.txt.)
#
# Every case runs the binary with fixed arguments and standard input and checks
# the exit status, stdout and stderr: successes exit 0 with nothing on stderr;
# refusals exit with the documented status (1 refused, 2 usage, 3 I/O) and one
# `mudbus: ...` line on stderr that names the parameter or rule. Any sanitizer
# report on stderr fails the case, so the suite is meaningful under ASan/UBSan.
# Scratch files live in a temporary directory removed on exit. The last line
# printed is `N passed, M failed`; the exit status is non-zero if any failed.

set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 PATH-TO-MUDBUS-BINARY SOURCE-DIR" >&2
    exit 2
fi
M=$1
SRC=$2
SAMPLES=$SRC/samples
if [ ! -x "$M" ]; then
    echo "test_cli.sh: $M is not an executable" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mudbus-cli-test.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/cli/harness.sh
. "$(dirname "$0")/harness.sh"

repeat() { # repeat CHAR COUNT
    head -c "$2" /dev/zero | tr '\0' "$1"
}

CHAT_HEAD='"message_id":"m1","timestamp":"2026-01-13T10:00:00Z","sender_id":"p1","sender_name":"Armitage","channel":"say"'

# ---------------------------------------------------------------- top level
t "--help" 0 '^Usage: mudbus ' '' -- "$M" --help
check "--help lists the groups and exit statuses" \
    grep -Eq '^  subjects ' "$TMP/out"
check "--help documents exit status 3" grep -Eq '^  3 ' "$TMP/out"
t "-h" 0 '^Usage: mudbus ' '' -- "$M" -h
t "--version" 0 '^mudbus [0-9]+\.[0-9]+\.[0-9]+$' '' -- "$M" --version
want_version=$(sed -n 's/^project(mudbus VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
check "--version matches CMakeLists.txt ($want_version)" \
    grep -qx "mudbus $want_version" "$TMP/out"
t "--version with an argument" 2 '' 'no arguments' -- "$M" --version x
t "no command" 2 '' 'missing command' -- "$M"
t "unknown command" 2 '' "unknown command 'frobnicate'" -- "$M" frobnicate
t "unknown top-level option" 2 '' "unknown option '--bogus'" -- "$M" --bogus
if [ -w /dev/full ]; then
    rc=0
    "$M" subjects list >/dev/full 2>"$TMP/err" || rc=$?
    check "write error on stdout exits 3 (subjects list >/dev/full)" [ "$rc" -eq 3 ]
    check "write error is reported" grep -q '^mudbus: writing output' "$TMP/err"
fi

# ---------------------------------------------------------------- subjects
t "subjects --help" 0 '^Usage: mudbus subjects ' '' -- "$M" subjects --help
check "subjects --help lists check-sub" grep -Eq '^  check-sub ' "$TMP/out"
t "subjects -h" 0 '^Usage: mudbus subjects ' '' -- "$M" subjects -h
t "subjects without a command" 2 '' 'missing command' -- "$M" subjects
t "subjects unknown command" 2 '' "unknown command 'nope'" -- "$M" subjects nope
t "subjects unknown option" 2 '' "unknown option '--bogus'" -- "$M" subjects --bogus

# ---- subjects list
t "subjects list" 0 '^NAME +TEMPLATE +SCHEMA$' '' -- "$M" subjects list
cp "$TMP/out" "$TMP/list"
# The 28 patterns of PROTOCOL.md section 1, in order.
cat >"$TMP/want_list" <<'EOF'
chat_say_room chat.say.room.{room_id} chat
chat_local_subzone chat.local.subzone.{subzone} chat
chat_global chat.global chat
chat_whisper_player chat.whisper.player.{target_id} chat
chat_system chat.system chat
chat_emote_room chat.emote.room.{room_id} chat
chat_pose_room chat.pose.room.{room_id} chat
chat_party_group chat.party.group.{party_id} chat
event_player_entered events.player_entered.{room_id} event
event_player_left events.player_left.{room_id} event
event_game_tick events.game_tick event
event_player_mortally_wounded events.player_mortally_wounded.{room_id} event
event_player_dp_decay events.player_dp_decay.{room_id} event
event_player_died events.player_died.{room_id} event
event_player_respawned events.player_respawned.{room_id} event
event_domain events.domain.{event_type} event
combat_attack combat.attack.{room_id} event
combat_npc_attacked combat.npc_attacked.{room_id} event
combat_started combat.started.{room_id} event
combat_ended combat.ended.{room_id} event
combat_npc_died combat.npc_died.{room_id} event
combat_damage combat.damage.{room_id} event
combat_dp_update combat.dp_update.{player_id} event
combat_player_died combat.player_died.{room_id} event
combat_player_mortally_wounded combat.player_mortally_wounded.{room_id} event
combat_target_switch combat.target_switch.{room_id} event
combat_dp_decay combat.dp_decay.{player_id} event
mutes_changed mutes.changed.{player_id} event
EOF
tail -n +2 "$TMP/list" | awk '{ print $1, $2, $3 }' >"$TMP/got_list"
check "subjects list shows the 28 contract patterns with template and schema" \
    cmp -s "$TMP/want_list" "$TMP/got_list"
# Aligned columns: the 2nd and 3rd columns start at the same offset on every line.
# shellcheck disable=SC2016 # an awk program, not shell
check "subjects list columns are aligned" awk '
    { match($0, /^[^ ]+ +/); c2 = RLENGTH
      rest = substr($0, c2 + 1); match(rest, /^[^ ]+ +/); c3 = c2 + RLENGTH
      if (NR == 1) { a = c2; b = c3 } else if (c2 != a || c3 != b) bad = 1 }
    END { exit bad || NR < 2 }' "$TMP/list"
check "subjects list has no trailing spaces" bash -c "! grep -q ' \$' '$TMP/list'"
t "subjects list --help" 0 '^Usage: mudbus subjects list' '' -- "$M" subjects list --help
t "subjects list with an extra argument" 2 '' "unexpected argument 'x'" -- "$M" subjects list x
t "subjects list with an unknown option" 2 '' "unknown option '--long'" -- \
    "$M" subjects list --long

# ---- subjects build
t "build chat_say_room" 0 '^chat\.say\.room\.earth_arkham_city_library$' '' -- \
    "$M" subjects build chat_say_room room_id=earth_arkham_city_library
check "build prints only the subject" [ "$(wc -l <"$TMP/out")" -eq 1 ]
t "build chat_global (no parameters)" 0 '^chat\.global$' '' -- "$M" subjects build chat_global
t "build event_domain" 0 '^events\.domain\.weather_changed$' '' -- \
    "$M" subjects build event_domain event_type=weather_changed
t "build mutes_changed with a uuid" 0 '^mutes\.changed\.a1b2c3d4-e5f6-4789-8abc-def012345678$' \
    '' -- "$M" subjects build mutes_changed player_id=a1b2c3d4-e5f6-4789-8abc-def012345678
t "build with a 128-byte value" 0 "^chat\\.say\\.room\\.$(repeat r 128)\$" '' -- \
    "$M" subjects build chat_say_room "room_id=$(repeat r 128)"
t "build after --" 0 '^chat\.global$' '' -- "$M" subjects build -- chat_global
for bad in 'a.b' '*' '>' 'a b' '' 'caf'$'\xc3\xa9' 'x;y' $'a\tb' "$(repeat r 129)"; do
    t "build refuses room_id='$(printf %.20s "$bad")'" 1 '' 'room_id' -- \
        "$M" subjects build chat_say_room "room_id=$bad"
done
t "build of an unknown pattern" 1 '' 'nosuch' -- "$M" subjects build nosuch room_id=x
t "build with a missing parameter" 1 '' 'room_id' -- "$M" subjects build chat_say_room
t "build with an unexpected parameter" 1 '' 'colour' -- \
    "$M" subjects build chat_say_room room_id=x colour=green
t "build with a repeated parameter" 1 '' 'room_id' -- \
    "$M" subjects build chat_say_room room_id=x room_id=y
t "build with an argument that is not PARAM=VALUE" 2 '' "'room_id' is not PARAM=VALUE" -- \
    "$M" subjects build chat_say_room room_id
t "build with an empty PARAM" 2 '' 'empty PARAM' -- "$M" subjects build chat_say_room =x
t "build without NAME" 2 '' 'missing pattern NAME' -- "$M" subjects build
t "build --help" 0 '^Usage: mudbus subjects build NAME' '' -- "$M" subjects build --help
check "build --help documents the exit statuses" grep -q '^Exit status:' "$TMP/out"
t "build -h after arguments" 0 '^Usage: mudbus subjects build' '' -- \
    "$M" subjects build chat_say_room -h
t "build with an unknown option" 2 '' "unknown option '--bogus'" -- \
    "$M" subjects build --bogus chat_global

# ---- subjects check
t "check a room subject" 0 '^ok: chat_say_room \(chat\.say\.room\.\{room_id\}\), schema chat$' \
    '' -- "$M" subjects check chat.say.room.earth_arkham_city_library
t "check events.game_tick" 0 '^ok: event_game_tick .*schema event$' '' -- \
    "$M" subjects check events.game_tick
t "check combat.dp_update" 0 '^ok: combat_dp_update .*schema event$' '' -- \
    "$M" subjects check combat.dp_update.p1
t "check chat.say.room (missing token)" 1 '' '^mudbus: .+ \([a-z_]+\)$' -- "$M" subjects check chat.say.room
t "check an extra token" 1 '' '^mudbus: .+ \([a-z_]+\)$' -- "$M" subjects check chat.say.room.a.b
t "check an unregistered subject" 1 '' '^mudbus: .+ \([a-z_]+\)$' -- "$M" subjects check nosuch.subject
t "check a wildcard" 1 '' '^mudbus: .+ \([a-z_]+\)$' -- "$M" subjects check 'chat.say.room.*'
t "check an empty token" 1 '' '^mudbus: .+ \([a-z_]+\)$' -- "$M" subjects check 'chat..room.x'
t "check an empty subject" 1 '' '^mudbus: .+ \([a-z_]+\)$' -- "$M" subjects check ''
t "check a 256-byte subject" 1 '' '^mudbus: .+ \([a-z_]+\)$' -- \
    "$M" subjects check "chat.say.room.$(repeat r 242)"
t "check without SUBJECT" 2 '' 'missing SUBJECT' -- "$M" subjects check
t "check with two subjects" 2 '' "unexpected argument" -- "$M" subjects check chat.global chat.system
t "check --help" 0 '^Usage: mudbus subjects check SUBJECT' '' -- "$M" subjects check --help

# ---- subjects check-sub
t "check-sub chat.*.room.*" 0 '^ok: chat\.\*\.room\.\* ' '' -- "$M" subjects check-sub 'chat.*.room.*'
t "check-sub chat.say.room.*" 0 '^ok: ' '' -- "$M" subjects check-sub 'chat.say.room.*'
t "check-sub chat.>" 0 '^ok: ' '' -- "$M" subjects check-sub 'chat.>'
t "check-sub a literal subject" 0 '^ok: ' '' -- "$M" subjects check-sub 'chat.global'
for bad in '*' '>' '*.chat' 'chat.*.*.*' 'chat.>.x' 'chat.a*' '' 'chat..x'; do
    t "check-sub refuses '$bad'" 1 '' '^mudbus: .+ \([a-z_]+\)$' -- "$M" subjects check-sub "$bad"
done
t "check-sub without PATTERN" 2 '' 'missing PATTERN' -- "$M" subjects check-sub
t "check-sub --help" 0 '^Usage: mudbus subjects check-sub' '' -- "$M" subjects check-sub --help

# ---------------------------------------------------------------- validate
t "validate samples/chat.json" 0 '^ok: chat$' '' -- "$M" validate "$SAMPLES/chat.json"
t "validate samples/event.json" 0 '^ok: event$' '' -- "$M" validate "$SAMPLES/event.json"
t "validate --kind chat" 0 '^ok: chat$' '' -- "$M" validate --kind chat "$SAMPLES/chat.json"
t "validate --kind=event" 0 '^ok: event$' '' -- "$M" validate --kind=event "$SAMPLES/event.json"
t "validate -k auto" 0 '^ok: chat$' '' -- "$M" validate -k auto "$SAMPLES/chat.json"
t "validate --kind event refuses a chat message" 1 '' 'event_type|event_data|sender_name|channel|content' -- \
    "$M" validate --kind event "$SAMPLES/chat.json"
t "validate --kind bogus" 2 '' "--kind 'bogus'" -- "$M" validate --kind bogus "$SAMPLES/chat.json"
t "validate --kind without a value" 2 '' "'--kind' needs a value" -- "$M" validate --kind

# stdin
STDIN=$SAMPLES/chat.json
t "validate - (stdin)" 0 '^ok: chat$' '' -- "$M" validate -
t "validate without FILE reads stdin" 0 '^ok: chat$' '' -- "$M" validate
STDIN=$SAMPLES/bad_channel.json
t "validate - refuses a bad message on stdin" 1 '' '^mudbus: <stdin>: .*channel' -- "$M" validate -
STDIN=/dev/null
t "validate empty input" 1 '' '<stdin>' -- "$M" validate

# --subject routes the schema
t "validate --subject chat subject" 0 '^ok: chat ' '' -- \
    "$M" validate --subject chat.say.room.earth_arkham_city_library "$SAMPLES/chat.json"
t "validate --subject events subject" 0 '^ok: event ' '' -- \
    "$M" validate --subject events.player_entered.earth_arkham_city_library "$SAMPLES/event.json"
t "validate -s=SUBJECT" 0 '^ok: event ' '' -- \
    "$M" validate -s=events.game_tick "$SAMPLES/event.json"
t "validate: a chat payload to an events subject is refused" 1 '' \
    'chat\.json: .*\(schema event of pattern event_player_entered\)$' -- \
    "$M" validate --subject events.player_entered.earth_arkham_city_library "$SAMPLES/chat.json"
t "validate: an event payload to a chat subject is refused" 1 '' \
    'event\.json: .*\(schema chat of pattern chat_global\)$' -- \
    "$M" validate --subject chat.global "$SAMPLES/event.json"
t "validate: an invalid --subject is refused" 1 '' "^mudbus: --subject: .*'chat\\.say\\.room'" -- \
    "$M" validate --subject chat.say.room "$SAMPLES/chat.json"
t "validate: a wildcard --subject is refused" 1 '' '--subject' -- \
    "$M" validate --subject 'chat.say.room.*' "$SAMPLES/chat.json"
t "validate --subject without a value" 2 '' "'--subject' needs a value" -- "$M" validate --subject
t "validate --kind with --subject" 2 '' 'exclude each other' -- \
    "$M" validate --kind chat --subject chat.global "$SAMPLES/chat.json"

# every bad sample is refused with the field or rule named
declare -A why_bad=(
    [bad_channel.json]='channel'
    [bad_control_char.json]='content'
    [bad_duplicate_key.json]='duplicate'
    [bad_event_data.json]='event_data'
    [bad_missing_field.json]='message_id'
    [bad_not_object.json]='object'
    [bad_sender_id.json]='sender_id'
    [bad_syntax.json]='json|JSON'
    [bad_timestamp.json]='timestamp'
    [bad_type.json]='sender_id'
    [bad_unknown_field.json]='colour'
)
nbad=0
for f in "$SAMPLES"/bad_*.json; do
    b=$(basename "$f")
    nbad=$((nbad + 1))
    t "validate refuses $b" 1 '' "${why_bad[$b]:-.}" -- "$M" validate "$f"
    check "$b has an expected reason in this test" [ -n "${why_bad[$b]:-}" ]
done
check "there are bad samples to refuse" [ "$nbad" -ge 10 ]

# limits: content length, and the bounded read
printf '{%s,"content":"%s"}' "$CHAT_HEAD" "$(repeat a 10000)" >"$TMP/content_10000.json"
printf '{%s,"content":"%s"}' "$CHAT_HEAD" "$(repeat a 10001)" >"$TMP/content_10001.json"
t "validate content of 10000 characters" 0 '^ok: chat$' '' -- "$M" validate "$TMP/content_10000.json"
t "validate refuses content of 10001 characters" 1 '' 'content' -- \
    "$M" validate "$TMP/content_10001.json"
# exactly the maximum payload (chat.json padded with spaces) passes ...
{ cat "$SAMPLES/chat.json"; repeat ' ' $((65536 - $(wc -c <"$SAMPLES/chat.json"))); } \
    >"$TMP/max.json"
check "max.json is 65536 bytes" [ "$(wc -c <"$TMP/max.json")" -eq 65536 ]
t "validate a payload of exactly 65536 bytes" 0 '^ok: chat$' '' -- "$M" validate "$TMP/max.json"
# ... one byte more is refused
{ cat "$TMP/max.json"; printf ' '; } >"$TMP/over.json"
t "validate refuses 65537 bytes" 1 '' '65536' -- "$M" validate "$TMP/over.json"
STDIN=$TMP/over.json
t "validate refuses 65537 bytes on stdin" 1 '' '<stdin>.*65536' -- "$M" validate -
STDIN=/dev/null
# an endless input is refused after a bounded read instead of hanging
rc=0
yes '{"a":1}' | timeout 20 "$M" validate - >"$TMP/out" 2>"$TMP/err" || rc=$?
check "validate refuses an endless stdin (exit $rc, want 1)" [ "$rc" -eq 1 ]
check "endless stdin: the reason names the maximum" grep -q '65536' "$TMP/err"

# I/O and usage errors
t "validate a missing file" 3 '' 'no-such-file\.json' -- "$M" validate "$TMP/no-such-file.json"
t "validate a directory" 3 '' "$TMP" -- "$M" validate "$TMP"
t "validate two files" 2 '' 'more than one FILE' -- \
    "$M" validate "$SAMPLES/chat.json" "$SAMPLES/event.json"
t "validate unknown option" 2 '' "unknown option '--bogus'" -- "$M" validate --bogus
t "validate --help" 0 '^Usage: mudbus validate ' '' -- "$M" validate --help
check "validate --help documents --subject" grep -q -- '--subject SUBJECT' "$TMP/out"
t "validate -h" 0 '^Usage: mudbus validate ' '' -- "$M" validate -h
t "validate a file named after --" 0 '^ok: chat$' '' -- "$M" validate -- "$SAMPLES/chat.json"

finish
