#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_cli_dlq.sh: end-to-end tests of `mudbus dlq list|show|replay|purge|stats|put`.
#
# Usage: test_cli_dlq.sh PATH-TO-MUDBUS-BINARY SOURCE-DIR
#
# DLQs are seeded with `mudbus dlq put` (manual dead-lettering, a documented
# command). Every case checks the exit status, stdout and stderr the way
# tests/cli/test_cli.sh does: successes exit 0 with nothing on stderr,
# refusals exit 1 (refused), 2 (usage) or 3 (I/O, in use) with one
# `mudbus: ...` line; any sanitizer report fails the case. Scratch files live
# in a temporary directory removed on exit, also when a case fails or the
# script is interrupted; a background replay started here is killed then too.
# The last line printed is `N passed, M failed`; the exit status is non-zero
# if any failed.

set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 PATH-TO-MUDBUS-BINARY SOURCE-DIR" >&2
    exit 2
fi
M=$1
if [ ! -x "$M" ]; then
    echo "test_cli_dlq.sh: $M is not an executable" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mudbus-cli-dlq-test.XXXXXX") || exit 2
BG=""
cleanup() {
    if [ -n "$BG" ]; then
        kill "$BG" 2>/dev/null
        wait "$BG" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=tests/cli/harness.sh
. "$(dirname "$0")/harness.sh"

lines() { wc -l <"$1" | tr -d ' '; }

D=$TMP/dlq

# ---------------------------------------------------------------- help and usage
t "dlq --help" 0 '^Usage: mudbus dlq COMMAND' '' -- "$M" dlq --help
check "dlq --help lists every command" \
    bash -c "for c in list show replay purge stats put; do grep -Eq \"^  \$c \" '$TMP/out' || exit 1; done"
check "dlq --help documents the exit statuses" grep -q '^Exit status:' "$TMP/out"
t "dlq without a command" 2 '' 'missing command' -- "$M" dlq
t "dlq unknown command" 2 '' "unknown command 'nope'" -- "$M" dlq nope
for c in list show replay purge stats put; do
    t "dlq $c --help" 0 "^Usage: mudbus dlq $c" '' -- "$M" dlq "$c" --help
    check "dlq $c --help documents the exit statuses" grep -q '^Exit status:' "$TMP/out"
    t "dlq $c without --dir" 2 '' 'missing --dir' -- "$M" dlq "$c"
    t "dlq $c with an unknown option" 2 '' "unknown option '--bogus'" -- \
        "$M" dlq "$c" --dir "$D" --bogus
done
t "list --help shows the filters" 0 '--include-replayed' '' -- "$M" dlq list --help
t "list of a missing directory" 1 '' 'no such file|not found|No such' -- \
    "$M" dlq list --dir "$TMP/missing"

# ---------------------------------------------------------------- put
t "put without --subject" 2 '' 'missing --subject' -- "$M" dlq put --dir "$D" --error MB_EIO
t "put without --error" 2 '' 'missing --error' -- "$M" dlq put --dir "$D" --subject a.b
t "put with an unknown status" 2 '' "unknown status 'MB_NOPE'" -- \
    "$M" dlq put --dir "$D" --subject a.b --error MB_NOPE
t "put with a bad header" 2 '' "is not NAME=VALUE" -- \
    "$M" dlq put --dir "$D" --subject a.b --error MB_EIO --header novalue
t "put with --payload and --payload-file" 2 '' 'exclude each other' -- \
    "$M" dlq put --dir "$D" --subject a.b --error MB_EIO --payload x --payload-file y
t "put with bad --attempts" 2 '' "bad --attempts" -- \
    "$M" dlq put --dir "$D" --subject a.b --error MB_EIO --attempts -1
t "put with an empty subject" 1 '' 'empty subject' -- \
    "$M" dlq put --dir "$D" --subject '' --error MB_EIO
t "put the first entry (creates DIR)" 0 '^stored entry 1$' '' -- \
    "$M" dlq put --dir "$D" --subject chat.say.room.library --error MB_ETIMEOUT \
    --payload '{"text":"hello"}' --header Nats-Msg-Id=m-1 --header X-Empty= \
    --message 'publish timed out' --attempts 3 --origin publish
printf 'bin\000ary\377\000' >"$TMP/binary"
STDIN=$TMP/binary
t "put a binary payload from stdin" 0 '^stored entry 2$' '' -- \
    "$M" dlq put --dir "$D" --subject chat.whisper.player.p1 --error ENOCONN --payload-file -
STDIN=/dev/null
t "put a third" 0 '^stored entry 3$' '' -- \
    "$M" dlq put --dir "$D" --subject events.player_entered.library --error MB_ESCHEMA
t "put a fourth" 0 '^stored entry 4$' '' -- \
    "$M" dlq put --dir "$D" --subject chat.global --error mb_etimeout

# ---------------------------------------------------------------- list
t "list" 0 '^ *ID +LAST_FAILURE +STATUS +ATTEMPTS +ORIGIN +STATE +BYTES +SUBJECT$' '' -- \
    "$M" dlq list --dir "$D"
check "list shows the 4 entries" [ "$(lines "$TMP/out")" -eq 5 ]
check "list shows entry 1's fields" \
    grep -Eq '^ *1 +20[0-9-]+T[0-9:.]+Z +MB_ETIMEOUT +3 +publish +live +16 +chat\.say\.room\.library$' \
    "$TMP/out"
t "list --json" 0 '^\{"id":1,"subject":"chat.say.room.library","headers":\[\["Nats-Msg-Id","m-1"\],\["X-Empty",""\]\],"payload":"\{\\"text\\":\\"hello\\"\}","error":"MB_ETIMEOUT"' \
    '' -- "$M" dlq list --dir "$D" --json
check "list --json: 4 lines" [ "$(lines "$TMP/out")" -eq 4 ]
check "list --json: a binary payload is base64" \
    grep -q '"id":2,.*"payload_base64":"YmluAGFyef8A"' "$TMP/out"
if command -v python3 >/dev/null; then
    check "list --json: every line is valid JSON" \
        python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$TMP/out"
fi
t "list --subject 'chat.>'" 0 '' '' -- "$M" dlq list --dir "$D" --subject 'chat.>'
check "  3 entries" [ "$(lines "$TMP/out")" -eq 4 ]
t "list --subject 'chat.*.room.*'" 0 'chat\.say\.room\.library' '' -- \
    "$M" dlq list --dir "$D" --subject 'chat.*.room.*'
check "  1 entry" [ "$(lines "$TMP/out")" -eq 2 ]
t "list --status MB_ETIMEOUT" 0 '' '' -- "$M" dlq list --dir "$D" --status MB_ETIMEOUT
check "  2 entries" [ "$(lines "$TMP/out")" -eq 3 ]
t "list --status ETIMEOUT --subject chat.global" 0 'chat\.global' '' -- \
    "$M" dlq list --dir "$D" --status ETIMEOUT --subject chat.global
check "  1 entry" [ "$(lines "$TMP/out")" -eq 2 ]
t "list --since far future" 0 '' '' -- "$M" dlq list --dir "$D" --since 2999-01-01T00:00:00Z
check "  none" [ "$(lines "$TMP/out")" -eq 1 ]
t "list --until far past" 0 '' '' -- "$M" dlq list --dir "$D" --until 2000-01-01T00:00:00Z
check "  none" [ "$(lines "$TMP/out")" -eq 1 ]
t "list --since past --until future" 0 '' '' -- \
    "$M" dlq list --dir "$D" --since 2000-01-01T00:00:00Z --until 2999-01-01T00:00:00Z
check "  all 4" [ "$(lines "$TMP/out")" -eq 5 ]
t "list --older-than 1h" 0 '' '' -- "$M" dlq list --dir "$D" --older-than 1h
check "  none that old" [ "$(lines "$TMP/out")" -eq 1 ]
t "list with a bad pattern" 1 '' 'wildcard must be a whole token' -- \
    "$M" dlq list --dir "$D" --subject 'chat.*x'
t "list with '>' not last" 1 '' "'>' must be the last token" -- \
    "$M" dlq list --dir "$D" --subject 'chat.>.x'
t "list with a bad status" 2 '' "unknown status 'MB_WHAT'" -- \
    "$M" dlq list --dir "$D" --status MB_WHAT
t "list with a bad time" 2 '' "--since 'yesterday'" -- "$M" dlq list --dir "$D" --since yesterday
t "list with since after until" 2 '' 'must be before' -- \
    "$M" dlq list --dir "$D" --since 2030-01-01T00:00:00Z --until 2020-01-01T00:00:00Z
t "list with a bad duration" 2 '' "bad duration '5 days'" -- \
    "$M" dlq list --dir "$D" --older-than '5 days'
t "list with an extra argument" 2 '' "unexpected argument 'x'" -- "$M" dlq list --dir "$D" x

# ---------------------------------------------------------------- show
t "show 1" 0 '^id: +1$' '' -- "$M" dlq show --dir "$D" 1
check "show 1: subject" grep -Eq '^subject: +chat\.say\.room\.library$' "$TMP/out"
check "show 1: error" grep -Eq '^error: +MB_ETIMEOUT \(timed out\)$' "$TMP/out"
check "show 1: message" grep -Eq '^error message: +"publish timed out"$' "$TMP/out"
check "show 1: attempts" grep -Eq '^attempts: +3$' "$TMP/out"
check "show 1: headers" grep -Eq '^  "X-Empty": ""$' "$TMP/out"
check "show 1: payload" grep -Fxq '"{\"text\":\"hello\"}"' "$TMP/out"
t "show 2 (binary)" 0 '^payload: +9 bytes, base64$' '' -- "$M" dlq show --dir "$D" 2
t "show --raw 2" 0 '' '' -- "$M" dlq show --dir "$D" --raw 2
check "show --raw gives the payload bytes unchanged" cmp -s "$TMP/out" "$TMP/binary"
t "show --json 3" 0 '^\{"id":3,"subject":"events.player_entered.library"' '' -- \
    "$M" dlq show --dir "$D" --json 3
t "show a missing id" 1 '' 'no entry 99' -- "$M" dlq show --dir "$D" 99
t "show a bad id" 2 '' "bad ID 'x'" -- "$M" dlq show --dir "$D" x
t "show without an id" 2 '' 'missing ID' -- "$M" dlq show --dir "$D"
t "show --json --raw" 2 '' 'exclude each other' -- "$M" dlq show --dir "$D" --json --raw 1

# ---------------------------------------------------------------- stats
t "stats" 0 '^depth: +4$' '' -- "$M" dlq stats --dir "$D"
check "stats: segments" grep -Eq '^segments: +1$' "$TMP/out"
check "stats: next id" grep -Eq '^next id: +5$' "$TMP/out"
check "stats: oldest age" grep -Eq '^oldest age: +[0-9]+s$' "$TMP/out"
check "stats: no corruption" grep -Eq '^corrupt records: +0$' "$TMP/out"

# ---------------------------------------------------------------- replay
t "replay without a target" 2 '' 'exactly one of --to-file FILE and --dry-run' -- \
    "$M" dlq replay --dir "$D"
t "replay with both targets" 2 '' 'exactly one of' -- \
    "$M" dlq replay --dir "$D" --dry-run --to-file "$TMP/x"
t "replay with a bad rate" 2 '' "bad rate '0'" -- "$M" dlq replay --dir "$D" --dry-run --rate 0
t "replay with a bad --on-error" 2 '' 'stop or skip' -- \
    "$M" dlq replay --dir "$D" --dry-run --on-error maybe
t "replay --dry-run" 0 '^would replay 1 chat\.say\.room\.library$' '' -- \
    "$M" dlq replay --dir "$D" --dry-run
check "replay --dry-run: summary" grep -q '^dry run: 4 entries would be replayed$' "$TMP/out"
t "replay --dry-run --subject --max" 0 '^dry run: 1 entries would be replayed$' '' -- \
    "$M" dlq replay --dir "$D" --dry-run --subject 'chat.>' --max 1
t "replay to an unwritable file" 3 '' 'opening' -- \
    "$M" dlq replay --dir "$D" --to-file "$TMP/no/such/dir/out"
if [ -w /dev/full ]; then
    t "replay to a full disk (/dev/full)" 3 '' 'writing the replay file' -- \
        "$M" dlq replay --dir "$D" --to-file /dev/full
    t "  nothing was marked replayed" 0 '' '' -- "$M" dlq list --dir "$D"
    check "  all 4 still live" [ "$(lines "$TMP/out")" -eq 5 ]
fi
t "replay --max 2 --to-file" 0 '^2 of 2 entries replayed to ' '' -- \
    "$M" dlq replay --dir "$D" --to-file "$TMP/replay.jsonl" --max 2 --rate 1000
t "replay the rest" 0 '^2 of 2 entries replayed to ' '' -- \
    "$M" dlq replay --dir "$D" --to-file "$TMP/replay.jsonl"
check "the replay file has each entry once, in order" \
    [ "$(sed 's/^{"id":\([0-9]*\),.*/\1/' "$TMP/replay.jsonl" | tr '\n' ' ')" = "1 2 3 4 " ]
if command -v python3 >/dev/null; then
    check "replay lines are valid JSON" \
        python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$TMP/replay.jsonl"
fi
t "replay again: nothing left" 0 '^0 of 0 entries replayed' '' -- \
    "$M" dlq replay --dir "$D" --to-file "$TMP/replay.jsonl"
t "list after replay: no live entry" 0 '' '' -- "$M" dlq list --dir "$D"
check "  header only" [ "$(lines "$TMP/out")" -eq 1 ]
t "list --include-replayed" 0 ' replayed ' '' -- "$M" dlq list --dir "$D" --include-replayed
check "  4 replayed" [ "$(grep -c ' replayed ' "$TMP/out")" -eq 4 ]
t "replay --include-replayed to stdout" 0 '^\{"id":4,"subject":"chat.global",' '' -- \
    "$M" dlq replay --dir "$D" --include-replayed --to-file - --subject chat.global
check "  only the JSON line on stdout" [ "$(lines "$TMP/out")" -eq 1 ]

# ---------------------------------------------------------------- purge
t "purge without a filter" 2 '' 'without --all' -- "$M" dlq purge --dir "$D"
t "purge --all with a filter" 2 '' 'exclude each other' -- \
    "$M" dlq purge --dir "$D" --all --subject a.b
t "purge replayed chat entries" 0 '^purged 3 entries$' '' -- \
    "$M" dlq purge --dir "$D" --subject 'chat.>' --include-replayed
t "show a purged entry" 1 '' 'no entry 1' -- "$M" dlq show --dir "$D" 1
t "purge --older-than 1d: nothing that old" 0 '^purged 0 entries$' '' -- \
    "$M" dlq purge --dir "$D" --older-than 1d --include-replayed
t "purge --all --include-replayed" 0 '^purged 1 entries$' '' -- \
    "$M" dlq purge --dir "$D" --all --include-replayed
t "stats after purge" 0 '^depth: +0$' '' -- "$M" dlq stats --dir "$D"
check "stats: no oldest entry" grep -Eq '^oldest: +-$' "$TMP/out"
t "ids go on after a purge" 0 '^stored entry 5$' '' -- \
    "$M" dlq put --dir "$D" --subject a.b --error MB_EIO

# ---------------------------------------------------------------- in use, interrupted replay
D2=$TMP/busy
for i in $(seq 1 6); do
    "$M" dlq put --dir "$D2" --subject "slow.$i" --error MB_ETIMEOUT --payload "p$i" >/dev/null
done
"$M" dlq replay --dir "$D2" --to-file "$TMP/slow.jsonl" --rate 2 >/dev/null 2>"$TMP/bg_err" &
BG=$!
for _ in $(seq 1 100); do
    [ -s "$TMP/slow.jsonl" ] && break
    sleep 0.05
done
t "purge while a replay holds the directory" 3 '' 'in use by another writer' -- \
    "$M" dlq purge --dir "$D2" --all
t "list beside the running replay (read-only)" 0 'slow\.6' '' -- "$M" dlq list --dir "$D2"
kill -KILL "$BG" 2>/dev/null
wait "$BG" 2>/dev/null
BG=""
done_before=$(lines "$TMP/slow.jsonl")
check "the killed replay had done some but not all ($done_before)" \
    [ "$done_before" -ge 1 ] && [ "$done_before" -lt 6 ]
t "the interrupted replay resumes" 0 'entries replayed to' '' -- \
    "$M" dlq replay --dir "$D2" --to-file "$TMP/slow.jsonl"
check "every entry replayed, none lost (at most the one in flight repeated)" bash -c "
    ids=\$(sed 's/^{\"id\":\([0-9]*\),.*/\1/' '$TMP/slow.jsonl' | sort -un | tr '\n' ' ')
    [ \"\$ids\" = '1 2 3 4 5 6 ' ] && [ \$(wc -l <'$TMP/slow.jsonl') -le 7 ]"

# ---------------------------------------------------------------- damage
D3=$TMP/torn
"$M" dlq put --dir "$D3" --subject t.a --error MB_EIO >/dev/null
"$M" dlq put --dir "$D3" --subject t.b --error MB_EIO >/dev/null
seg=$D3/seg-000000000001.dlq
size=$(wc -c <"$seg")
head -c $((size - 5)) "$seg" >"$TMP/cut" && cat "$TMP/cut" >"$seg"
rc=0
"$M" dlq list --dir "$D3" >"$TMP/out" 2>"$TMP/err" || rc=$?
check "list of a torn tail exits 0" [ "$rc" -eq 0 ]
check "  and warns on stderr" grep -q '^mudbus: warning: dlq: segment 1: torn tail' "$TMP/err"
check "  and lists the intact entry only" [ "$(lines "$TMP/out")" -eq 2 ]
check "  and leaves the file alone (read-only)" [ "$(wc -c <"$seg")" -eq $((size - 5)) ]
rc=0
"$M" dlq put --dir "$D3" --subject t.c --error MB_EIO >"$TMP/out" 2>"$TMP/err" || rc=$?
check "a writable open repairs it and the next id is reused" \
    grep -q '^stored entry 2$' "$TMP/out"
t "after repair: no warning" 0 't\.c' '' -- "$M" dlq list --dir "$D3"

if [ -w /dev/full ]; then
    rc=0
    "$M" dlq list --dir "$D3" >/dev/full 2>"$TMP/err" || rc=$?
    check "write error on stdout exits 3 (dlq list >/dev/full)" [ "$rc" -eq 3 ]
fi

finish
