/* SPDX-License-Identifier: MIT */
/*
 * loadgen_frame: reading the gateway's frames (PROTOCOL.md section 3) in
 * bench/loadgen, and the say content it sends.
 *
 * Two readers. lg_frame_scan is the fast one, run on every frame: it finds
 * the few fields the load generator needs by key search, without building a
 * tree, so that reading 100,000+ frames a second costs the client little. It
 * relies on two facts: the frame starts with {"sequence_number":N, (the
 * gateway's contract), and a key cannot occur inside a JSON string, because
 * its quotes would be escaped there. lg_frame_validate is the slow, strict
 * one (jansson): it checks the whole envelope and the event's data against
 * the protocol, and the loadgen runs it on a sample of frames to prove the
 * fast reader saw the right thing.
 *
 * The say content is "lg:<sender index>:<send time ns>:<say number>:" padded
 * with 'x' to the requested length; the receiver takes its send time out of
 * it (CLOCK_MONOTONIC, same machine) for the publish-to-receipt latency.
 *
 * No state; any thread.
 */
#ifndef MUDBUS_BENCH_LOADGEN_FRAME_H
#define MUDBUS_BENCH_LOADGEN_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef enum lg_event {
    LG_EV_OTHER = 0,
    LG_EV_WELCOME,
    LG_EV_CHAT,
    LG_EV_ACK,
    LG_EV_ERROR,
    LG_EV_SKIPPED,
    LG_EV_ENTERED,
    LG_EV_LEFT,
    LG_EV_PONG,
    LG_EV_COUNT
} lg_event;

/* Name of an lg_event for reports ("chat_message", ...; "other"). */
const char *lg_event_name(lg_event ev);

typedef struct lg_frame {
    uint64_t seq; /* sequence_number */
    lg_event ev;
    /* chat_message whose content is a loadgen say: ours = 1 and the fields
     * taken from the content; echo = data.echo is true. */
    int ours;
    int echo;
    uint32_t sender;
    uint64_t sent_ns;
    uint64_t say_no;
    /* ack and error: data.id (not NUL-terminated; len 0 when absent). */
    const char *id;
    size_t id_len;
    /* error: data.code. */
    const char *code;
    size_t code_len;
    /* messages_skipped: data.count. */
    uint64_t skipped;
} lg_frame;

/* Reads the frame buf[0..len) into *out. Returns 0, or -1 when the frame does
 * not start with {"sequence_number":N, or has no string event_type (then
 * *out is partly filled). Pointers in *out point into buf. */
int lg_frame_scan(const char *buf, size_t len, lg_frame *out);

/* Writes the content of say number say_no from client `sender`, sent at
 * sent_ns, padded to `bytes` (at least the header's length; at most len-1)
 * into buf. Returns its length. */
size_t lg_content_format(char *buf, size_t len, uint32_t sender, uint64_t sent_ns, uint64_t say_no,
                         size_t bytes);

/* Strict check of one frame against PROTOCOL.md section 3 with jansson: one
 * JSON object; sequence_number an integer equal to scan->seq; event_type a
 * string naming scan->ev; timestamp an RFC 3339 UTC string with
 * milliseconds; room_id and player_id strings when present; no other
 * envelope key; data an object with the fields of the event (for
 * chat_message: message_id, channel "say", sender_id, player_name, content,
 * message "<player_name> says: <content>", timestamp, echo boolean when
 * present and equal to scan->echo; a loadgen content must have sender_id
 * `<id_prefix><sender>`). Returns 0, or -1 with one line (no newline) in
 * why. */
int lg_frame_validate(const char *buf, size_t len, const lg_frame *scan, const char *id_prefix,
                      char *why, size_t why_len);

#endif
