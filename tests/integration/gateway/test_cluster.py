# SPDX-License-Identifier: MIT
"""Two gateways on one NATS: players on gw-main and gw-b in the same room hear each other
(exactly once), whisper crosses gateways, join events cross gateways, local crosses gateways,
and a whisper to a player online nowhere is invalid_target on both."""

import asyncio
import time
import unittest

from harness import (GatewayTestCase, brief, gw_b, gw_main, uid, uniq_room)


ATTEMPTS = 40  # the race tests: attempts (each takes a few ms unless it fails)


class ClusterTests(GatewayTestCase):
    async def test_same_room_across_gateways(self):
        room = uniq_room()
        a = await self.connect(gw_main(), "Alice", room=room)
        b = await self.connect(gw_b(), "Bob", room=room)
        self.assertEqual(a.welcome["data"]["gateway"], "gw-main")
        self.assertEqual(b.welcome["data"]["gateway"], "gw-b")
        await self.settle()
        m1 = "from A %s" % uid()
        await a.ok("say", content=m1)
        f = await b.chat(m1)
        self.assertChat(f, channel="say", sender_id=a.player_id, message="Alice says: %s" % m1)
        self.assertIn(f["data"].get("echo"), (None, False), brief(f))
        await a.chat(m1, echo=True)
        m2 = "from B %s" % uid()
        await b.ok("emote", content=m2)
        f = await a.chat(m2)
        self.assertChat(f, channel="emote", sender_id=b.player_id, message="Bob %s" % m2)
        await b.chat(m2, echo=True)
        await a.expect_none("chat_message", content=m1)  # no duplicate copy of anything
        await b.expect_none("chat_message", within=0, content=m1)
        await a.expect_none("chat_message", within=0, content=m2)
        await b.expect_none("chat_message", within=0, content=m2)

    async def test_whisper_across_gateways(self):
        room_a, room_b = uniq_room(), uniq_room()
        a = await self.connect(gw_main(), "Alice", room=room_a)
        b = await self.connect(gw_b(), "Bob", room=room_b)
        c = await self.connect(gw_b(), "Carol", room=room_b)
        await self.settle()
        m = "psst %s" % uid()
        await a.ok("whisper", target=b.player_id, content=m)
        f = await b.chat(m)
        self.assertChat(f, channel="whisper", sender_id=a.player_id, message="Alice whispers to you: %s" % m)
        await a.chat(m, echo=True)
        m2 = "back %s" % uid()
        await b.ok("whisper", target=a.player_id, content=m2)
        f = await a.chat(m2)
        self.assertChat(f, channel="whisper", sender_id=b.player_id, message="Bob whispers to you: %s" % m2)
        await c.expect_no_chat(m)
        await c.expect_no_chat(m2, within=0)
        await b.expect_none("chat_message", within=0, content=m)  # exactly one copy
        self.assertEqual(len(b.matching("chat_message", content=m)), 1)
        # online nowhere: invalid_target from either gateway
        ghost = uid("ghost")
        await a.err("invalid_target", "whisper", target=ghost, content="hello?")
        await b.err("invalid_target", "whisper", target=ghost, content="hello?")

    async def test_whisper_after_target_disconnects(self):
        # Once the target's close handshake with its gateway (gw-b) has completed, the target is
        # not online anywhere: the next whisper from gw-main is invalid_target, promptly (not a
        # whisper_timeout stall ending in `unavailable`, which would claim NATS is down).
        for attempt in range(6):  # the race is timing-dependent: try a few times
            a = await self.connect(gw_main(), "Alice")
            b = await self.connect(gw_b(), "Bob")
            await self.whisper_when_reachable(a, b)  # see test_whisper_right_after_welcome
            await b.close()
            t0 = time.monotonic()
            f = await a.cmd("whisper", target=b.player_id, content="after leaving %d" % attempt)
            took = time.monotonic() - t0
            self.assertEqual(f["event_type"], "error",
                             "attempt %d: whisper to a disconnected player: %s" % (attempt, brief(f)))
            self.assertEqual(f["data"].get("code"), "invalid_target",
                             "attempt %d: reply after %.2f s: %s" % (attempt, took, brief(f)))
            await a.close()

    async def whisper_when_reachable(self, a, b, limit=3.0):
        t0 = time.monotonic()
        while True:
            f = await a.cmd("whisper", target=b.player_id, content="reachable?")
            if f["event_type"] == "ack" or time.monotonic() - t0 > limit:
                break
            await asyncio.sleep(0.05)
        self.assertEqual(f["event_type"], "ack", "whisper to an online player: %s" % brief(f))

    async def test_whisper_right_after_welcome(self):
        # After the welcome the player is online: a whisper from another gateway must reach them
        # (the gateway must not send welcome before the player's NATS subscription is live).
        self.settle_enabled = False
        refused = []
        for i in range(ATTEMPTS):
            a = await self.connect(gw_main(), "Alice")  # a fresh sender each time (5 whispers/min)
            b = await self.connect(gw_b(), "Bob")  # returns once the welcome has arrived
            m = "first whisper %d %s" % (i, uid())
            f = await a.cmd("whisper", target=b.player_id, content=m)
            if f["event_type"] != "ack":
                refused.append("attempt %d: %s" % (i, brief(f)))
                if len(refused) >= 3:
                    break
            else:
                await b.chat(m)
            await a.close()
            await b.close()
        if refused:
            self.fail("whispers sent right after the target's welcome were refused (stopped after 3; %d attempts at most):\n  %s"
                      % (ATTEMPTS, "\n  ".join(refused)))

    async def test_say_right_after_join_ack(self):
        # After the join ack the player is in the room: a say there from another gateway must
        # reach them (the join ack must not precede the room subscription on NATS).
        self.settle_enabled = False
        b = await self.connect(gw_b(), "Bob")
        lost = []
        for i in range(ATTEMPTS):
            room = uniq_room()
            a = await self.connect(gw_main(), "Alice", room=room)  # a fresh speaker (15 says/min)
            await b.ok("join", room_id=room)
            m = "first say %d %s" % (i, uid())
            await a.ok("say", content=m)
            try:
                await b.chat(m, timeout=1.5)
            except AssertionError:
                lost.append(i)
                if len(lost) >= 3:
                    break
            await a.close()
        if lost:
            self.fail("says right after the listener's join ack were lost: attempts %s (stopped after 3 losses; %d attempts at most)" % (lost, ATTEMPTS))

    async def test_player_entered_right_after_join_ack(self):
        self.settle_enabled = False
        a = await self.connect(gw_main(), "Alice")
        b = await self.connect(gw_b(), "Bob")
        lost = []
        for i in range(ATTEMPTS):
            room = uniq_room()
            await b.ok("join", room_id=room)
            await a.ok("join", room_id=room)
            try:
                await b.expect("player_entered", timeout=1.5, player_id=a.player_id, room_id=room)
            except AssertionError:
                lost.append(i)
                if len(lost) >= 3:
                    break
        if lost:
            self.fail("player_entered right after the listener's join ack was lost: attempts %s (stopped after 3 losses; %d attempts at most)" % (lost, ATTEMPTS))

    async def test_join_events_across_gateways(self):
        r1, r2 = uniq_room(), uniq_room()
        a = await self.connect(gw_main(), "Alice", room=r1)
        b1 = await self.connect(gw_b(), "Bob", room=r1)
        b2 = await self.connect(gw_b(), "Bea", room=r2)
        await self.settle()
        await a.ok("join", room_id=r2)
        left = await b1.expect("player_left", player_id=a.player_id)
        self.assertEqual(left["data"].get("room_id"), r1, brief(left))
        ent = await b2.expect("player_entered", player_id=a.player_id)
        self.assertEqual(ent["data"].get("room_id"), r2, brief(ent))
        self.assertEqual(ent["data"].get("player_name"), "Alice", brief(ent))

    async def test_local_across_gateways(self):
        sz = uid("sz")
        a = await self.connect(gw_main(), "Alice", room=uniq_room(subzone=sz, room="north"))
        b = await self.connect(gw_b(), "Bob", room=uniq_room(subzone=sz, room="south"))
        c = await self.connect(gw_b(), "Carol", room=uniq_room())
        await self.settle()
        m = "local x %s" % uid()
        await a.ok("local", content=m)
        f = await b.chat(m)
        self.assertChat(f, channel="local", message="Alice (local): %s" % m)
        await c.expect_no_chat(m)


if __name__ == "__main__":
    unittest.main()
