# SPDX-License-Identifier: MIT
"""What a (MythosMUD-style) game server publishes on NATS reaches the right players: NPC chat in a
room, global chat with room_id null, system and admin lines, whispers to a player, game events
(everyone / a room), and invalid payloads are not delivered (PROTOCOL.md sections 1, 2 and 4)."""

import asyncio
import unittest

from harness import (QUIET, GatewayTestCase, NatsPub, brief, chat_payload, event_payload, gw_b, gw_main,
                     shared_nats, uid, uniq_room)


class InboundTests(GatewayTestCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.pub = await asyncio.to_thread(NatsPub, shared_nats().url)

    async def asyncTearDown(self):
        self.pub.close()
        await super().asyncTearDown()

    async def publish(self, subject, payload):
        await asyncio.to_thread(self.pub.publish, subject, payload)

    async def test_npc_say_in_a_room(self):
        room = uniq_room()
        a = await self.connect(gw_main(), "Alice", room=room)
        b = await self.connect(gw_b(), "Bob", room=room)
        c = await self.connect(gw_main(), "Carol", room=uniq_room())
        await self.settle()
        content = "Welcome, traveller %s" % uid()
        p = chat_payload(content=content, room_id=room, speaker_kind="npc")
        await self.publish("chat.say.room." + room, p)
        for r in (a, b):
            f = await r.chat(content)
            self.assertChat(f, channel="say", sender_id="npc_1", player_name="Old Man", content=content,
                            message="Old Man says: %s" % content, message_id=p["message_id"])
            self.assertEqual(f["data"].get("speaker_kind"), "npc", brief(f))
            self.assertIn(f["data"].get("echo"), (None, False), brief(f))
        await c.expect_no_chat(content)

    async def test_global_with_null_room_id(self):
        a = await self.connect(gw_main(), "Alice", room=uniq_room())
        b = await self.connect(gw_b(), "Bob", room=uniq_room())
        await self.settle()
        content = "the stars are right %s" % uid()
        await self.publish("chat.global", chat_payload(channel="global", content=content, room_id=None))
        for r in (a, b):
            f = await r.chat(content)
            self.assertChat(f, channel="global", message="Old Man (global): %s" % content)

    async def test_system_and_admin_lines(self):
        a = await self.connect(gw_main(), "Alice", room=uniq_room())
        b = await self.connect(gw_b(), "Bob", room=uniq_room())
        await self.settle()
        c1 = "server restarts in 5 minutes %s" % uid()
        await self.publish("chat.system", chat_payload(channel="system", content=c1, sender_id="system",
                                                       sender_name="System", speaker_kind="system"))
        for r in (a, b):
            f = await r.chat(c1)
            self.assertChat(f, channel="system", message="[SYSTEM] %s" % c1)
        c2 = "admin note %s" % uid()
        await self.publish("chat.system", chat_payload(channel="admin", content=c2, sender_id="warden",
                                                       sender_name="Warden"))
        for r in (a, b):
            f = await r.chat(c2)
            self.assertChat(f, channel="admin", message="[ADMIN] Warden: %s" % c2)
        # to one player
        c3 = "just for bob %s" % uid()
        await self.publish("chat.system", chat_payload(channel="system", content=c3, target_id=b.player_id))
        await b.chat(c3)
        await a.expect_no_chat(c3)

    async def test_whisper_from_game_server(self):
        a = await self.connect(gw_main(), "Alice", room=uniq_room())
        b = await self.connect(gw_b(), "Bob", room=uniq_room())
        await self.settle()
        content = "psst from the shadows %s" % uid()
        await self.publish("chat.whisper.player." + b.player_id,
                           chat_payload(channel="whisper", content=content, target_id=b.player_id))
        f = await b.chat(content)
        self.assertChat(f, channel="whisper", message="Old Man whispers to you: %s" % content)
        await a.expect_no_chat(content)

    async def test_game_events(self):
        room = uniq_room()
        a = await self.connect(gw_main(), "Alice", room=room)
        b = await self.connect(gw_b(), "Bob", room=room)
        c = await self.connect(gw_main(), "Carol", room=uniq_room())
        await self.settle()
        tick = {"tick": 4242, "phase": "night", "nested": {"list": [1, 2, 3]}}
        await self.publish("events.game_tick", event_payload("game_tick", tick))
        for r in (a, b, c):
            f = await r.expect("game_tick", tick=4242)
            self.assertEqual(f["data"], tick, "game_tick data must be the event_data: %s" % brief(f))
        died = {"player_id": "someone", "killer": "a shoggoth", "mark": uid()}
        await self.publish("events.player_died." + room, event_payload("player_died", died, room_id=room))
        for r in (a, b):
            f = await r.expect("player_died", mark=died["mark"])
            self.assertEqual(f["data"], died, brief(f))
        await c.expect_none("player_died", mark=died["mark"])

    async def test_invalid_payloads_are_not_delivered(self):
        room = uniq_room()
        a = await self.connect(gw_main(), "Alice", room=room)
        await self.settle()
        bad = [
            ("unknown field", dict(chat_payload(content="bad unknown field"), colour="red")),
            ("content too long", chat_payload(content="bad " + "x" * 10001)),
            ("bad channel", chat_payload(content="bad channel", channel="shout")),
            ("bad timestamp", chat_payload(content="bad timestamp", timestamp="yesterday")),
            ("control char", chat_payload(content="bad \u0007 bell")),
        ]
        for name, p in bad:
            await self.publish("chat.say.room." + room, p)
        await self.publish("chat.say.room." + room, b'{"message_id": "x", "content": "bad json"')
        good = "good after bad %s" % uid()
        await self.publish("chat.say.room." + room, chat_payload(content=good, room_id=room))
        await a.chat(good)
        await asyncio.sleep(QUIET)
        got = [f for f in a.frames if f.get("event_type") == "chat_message"
               and str((f.get("data") or {}).get("content", "")).startswith("bad")]
        self.assertEqual(got, [], "invalid payloads were delivered: %s" % [brief(f) for f in got])
        await a.ping()
        self.assertTrue(gw_main().alive())


if __name__ == "__main__":
    unittest.main()
