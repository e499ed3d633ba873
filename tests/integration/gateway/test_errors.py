# SPDX-License-Identifier: MIT
"""Error replies (PROTOCOL.md section 3): every code but unavailable (test_resilience) and
rate_limited (test_limits); the connection stays open and nothing is published. Frame-level
closes: 1009 (too large) and 1007 (invalid UTF-8)."""

import asyncio
import json
import unittest

from harness import (LIMITS, QUIET, GatewayTestCase, brief, gw_main, uid, uniq_room)


class ErrorTests(GatewayTestCase):
    async def test_bad_request_variants(self):
        gw = gw_main()
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room)
        b = await self.connect(gw, "Bob", room=room)
        # frames without a usable id: the error comes back without one
        for name, text in (("not JSON", "hello there"), ("truncated JSON", '{"type":"say","content":"x"'),
                           ("array", '[{"type":"say","content":"arr"}]'), ("string", '"say"'),
                           ("number", "42"), ("null", "null")):
            with self.subTest(frame=name):
                await a.send(text)
                f = await a.expect("error")
                self.assertEqual(f["data"].get("code"), "bad_request", "%s: %s" % (name, brief(f)))
                self.assertTrue(f["data"].get("message"), "error without message: %s" % brief(f))
                await a.ping()
        # objects with an id: the error echoes it
        cases = (
            ("unknown type", {"type": "dance", "content": "x"}),
            ("missing type", {"content": "no type"}),
            ("type not a string", {"type": 7}),
            ("say missing content", {"type": "say"}),
            ("say content number", {"type": "say", "content": 5}),
            ("say content null", {"type": "say", "content": None}),
            ("say content object", {"type": "say", "content": {"x": 1}}),
            ("say empty content", {"type": "say", "content": ""}),
            ("say unknown field", {"type": "say", "content": "extra field", "volume": 11}),
            ("join missing room_id", {"type": "join"}),
            ("join room_id number", {"type": "join", "room_id": 12}),
            ("whisper missing target", {"type": "whisper", "content": "to nobody"}),
            ("whisper target bool", {"type": "whisper", "target": True, "content": "x"}),
            ("id not a string", {"type": "ping", "id": 5}),
        )
        for name, obj in cases:
            with self.subTest(frame=name):
                cid = a.new_id()
                if "id" not in obj:
                    obj = dict(obj, id=cid)
                await a.send(json.dumps(obj))
                if isinstance(obj["id"], str):
                    f = await a.reply(cid)
                else:
                    f = await a.expect("error")
                self.assertEqual(f["event_type"], "error", "%s: %s" % (name, brief(f)))
                self.assertEqual(f["data"].get("code"), "bad_request", "%s: %s" % (name, brief(f)))
                self.assertTrue(f["data"].get("message"), "error without message: %s" % brief(f))
                await a.ping()
        # nothing of the refused says was published
        await b.expect_none("chat_message", within=0.3)
        await a.expect_none("chat_message", within=0)
        # and the connection still works for real commands
        ok = "still fine %s" % uid()
        await a.ok("say", content=ok)
        await b.chat(ok)

    async def test_invalid_room(self):
        a = await self.connect(gw_main(), "Alice")
        for room in ("a.b", "*", ">", "chat.>", "a b", "café", "x" * 129, ""):
            with self.subTest(room=room):
                await a.err("invalid_room", "join", room_id=room)
        await a.ping()
        # still in the start room: welcome's room; a valid join works
        await a.ok("join", room_id=uniq_room())

    async def test_invalid_target(self):
        gw = gw_main()
        a = await self.connect(gw, "Alice")
        # a well-formed id of a player who is not online anywhere
        await a.err("invalid_target", "whisper", target=uid("ghost"), content="anyone there?")
        # ids that are not in the token charset
        for t in ("a.b", "*", "bob smith", ""):
            with self.subTest(target=t):
                await a.err("invalid_target", "whisper", target=t, content="x")
        await a.ping()
        await a.expect_none("chat_message", within=0, content="anyone there?")

    async def test_too_long_per_channel(self):
        gw = gw_main()
        room = uniq_room()
        party = uid("party")
        a = await self.connect(gw, "Alice", room=room, party=party, adm=True)
        b = await self.connect(gw, "Bob", room=room, party=party)
        for ch, (limit, _) in LIMITS.items():
            with self.subTest(channel=ch):
                extra = {"target": b.player_id} if ch == "whisper" else {}
                # exactly at the limit, counted in characters (2-byte characters): accepted
                tag = "%s-%s-" % (ch, uid())
                at = tag + "é" * (limit - len(tag))
                self.assertEqual(len(at), limit)
                await a.ok(ch, content=at, **extra)
                await b.chat(at)
                # one character over: too_long, not published
                over = tag + "ö" * (limit + 1 - len(tag))
                await a.err("too_long", ch, content=over, **extra)
        await asyncio.sleep(QUIET)  # let any wrongly published message arrive
        for ch, (limit, _) in LIMITS.items():
            over = [f for f in b.frames if f.get("event_type") == "chat_message"
                    and len(f["data"].get("content", "")) > limit and f["data"].get("channel") == ch]
            self.assertEqual(over, [], "an over-long %s message was delivered" % ch)
        await a.ping()

    async def test_forbidden_system(self):
        gw = gw_main()
        a = await self.connect(gw, "Alice")
        b = await self.connect(gw, "Bob")
        m = "I am not an admin %s" % uid()
        await a.err("forbidden", "system", content=m)
        await a.err("forbidden", "system", content=m, target=b.player_id)
        await a.ping()
        await b.expect_no_chat(m)

    async def test_forbidden_mute_global(self):
        # admin-only commands are refused with forbidden for non-admins, whatever else is missing
        gw = gw_main()
        a = await self.connect(gw, "Alice")
        b = await self.connect(gw, "Bob")
        await a.err("forbidden", "mute_global", target=b.player_id, minutes=5, reason="no")
        await a.err("forbidden", "unmute_global", target=b.player_id)
        await a.ping()
        await b.ok("say", content="not muted %s" % uid())  # b was not muted

    async def test_id_too_long(self):
        a = await self.connect(gw_main(), "Alice")
        await a.send({"type": "ping", "id": "x" * 65})
        f = await a.wait_for(lambda f: f.get("event_type") in ("error", "pong"), "reply to an id of 65 bytes")
        self.assertEqual(f["event_type"], "error", brief(f))
        self.assertEqual(f["data"].get("code"), "bad_request", brief(f))
        f = await a.cmd("ping", id="y" * 64)  # 64 bytes is fine
        self.assertEqual(f["event_type"], "pong", brief(f))


class FrameTests(GatewayTestCase):
    async def test_oversized_frame_closes_1009(self):
        gw = gw_main()
        r = await self.raw(gw, "/ws?token=" + gw.token(uid("big"), "Big"))
        self.assertEqual(r.status, 101)
        w = await r.recv_json()
        self.assertEqual(w["event_type"], "welcome")
        await r.send_text(json.dumps({"type": "say", "content": "x" * 16400}))  # > 16384 bytes
        code = await r.wait_close()
        self.assertEqual(code, 1009, "close code for a frame > 16 KiB")

    async def test_fragmented_oversized_message_closes_1009(self):
        gw = gw_main()
        r = await self.raw(gw, "/ws?token=" + gw.token(uid("frag"), "Frag"))
        self.assertEqual(r.status, 101)
        await r.recv_json()
        msg = json.dumps({"type": "say", "content": "y" * 20000}).encode()
        await r.send_frame(r.OP_TEXT, msg[:10000], fin=False)
        await r.send_frame(r.OP_CONT, msg[10000:], fin=True)
        code = await r.wait_close()
        self.assertEqual(code, 1009, "close code for a message > 16 KiB in two fragments")

    async def test_frame_of_exactly_16_kib_is_served(self):
        gw = gw_main()
        r = await self.raw(gw, "/ws?token=" + gw.token(uid("edge"), "Edge"))
        self.assertEqual(r.status, 101)
        await r.recv_json()
        base = json.dumps({"type": "ping", "id": "edge-1"})
        frame = base[:-1] + " " * (16384 - len(base)) + "}"
        self.assertEqual(len(frame.encode()), 16384)
        await r.send_text(frame)
        f = await r.recv_until(lambda f: f["event_type"] in ("pong", "error", "ack"), "reply")
        self.assertEqual(f["event_type"], "pong", "reply to a 16384-byte ping: %s" % brief(f))

    async def test_server_frames_stay_within_16_kib(self):
        # "Every frame is one UTF-8 JSON object in a text frame, at most 16 KiB": also the frames a
        # client receives for valid commands at their limits (system: 2000 characters), with a
        # 64-character sender name and characters the gateway escapes or that take 4 bytes.
        gw = gw_main()
        x = await self.connect(gw, "\U0001F600" * 64, room=uniq_room(), adm=True, label="LongNameAdmin")
        y = await self.connect(gw, "Yves", label="Yves")
        for name, content in (("4-byte characters", "\U0001F600" * 2000),
                              ("U+2028 (escaped by the gateway)", "\u2028" * 2000),
                              ("quotes and backslashes", '"\\' * 1000)):
            with self.subTest(content=name):
                self.assertEqual(len(content), 2000)
                await x.ok("system", content=content)
                await y.chat(content)
        too_big = [p for p in y.problems + x.problems if "exceeds 16 KiB" in p]
        del y.problems[:], x.problems[:]  # reported here, not again by tearDown
        if too_big:
            self.fail("frames over 16 KiB were sent:\n  " + "\n  ".join(p[:120] for p in too_big))

    async def test_invalid_utf8_closes_1007(self):
        gw = gw_main()
        for name, payload in (("0xff byte", b'{"type":"say","content":"\xff"}'),
                              ("truncated sequence", b'{"type":"say","content":"\xc3"}'),
                              ("overlong slash", b'{"type":"say","content":"\xc0\xaf"}'),
                              ("surrogate", b'{"type":"say","content":"\xed\xa0\x80"}')):
            with self.subTest(case=name):
                r = await self.raw(gw, "/ws?token=" + gw.token(uid("utf"), "Utf"))
                self.assertEqual(r.status, 101)
                await r.recv_json()
                await r.send_text(payload)
                code = await r.wait_close()
                self.assertEqual(code, 1007, "close code for invalid UTF-8 (%s)" % name)


if __name__ == "__main__":
    unittest.main()
