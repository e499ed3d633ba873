# SPDX-License-Identifier: MIT
"""Mutes (PROTOCOL.md sections 3 and 4): personal mutes, channel mutes, the mutes list, global
mutes (admin only; error `muted`), and what is never filtered (system)."""

import unittest

from harness import (GatewayTestCase, brief, gw_b, gw_main, uid, uniq_room)


class MuteTests(GatewayTestCase):
    async def test_personal_mute_filters_room_chat_and_whispers(self):
        room = uniq_room()
        a = await self.connect(gw_main(), "Alice", room=room)
        b = await self.connect(gw_main(), "Bob", room=room)
        c = await self.connect(gw_b(), "Carol", room=room)
        await self.settle()
        await a.ok("mute", target=b.player_id)
        m1 = "annoying %s" % uid()
        await b.ok("say", content=m1)
        await c.chat(m1)
        await b.chat(m1, echo=True)
        await a.expect_no_chat(m1)
        # a whisper from a muted player: the sender is not told, the target gets nothing
        m2 = "whisper while muted %s" % uid()
        await b.ok("whisper", target=a.player_id, content=m2)
        await a.expect_no_chat(m2)
        # unmute: delivered again
        await a.ok("unmute", target=b.player_id)
        m3 = "forgiven %s" % uid()
        await b.ok("say", content=m3)
        await a.chat(m3)

    async def test_channel_mute(self):
        a = await self.connect(gw_main(), "Alice", room=uniq_room())
        b = await self.connect(gw_main(), "Bob", room=uniq_room())
        await a.ok("mute_channel", channel="global")
        m1 = "global noise %s" % uid()
        await b.ok("global", content=m1)
        await b.chat(m1)
        await a.expect_no_chat(m1)
        await a.err("bad_request", "mute_channel", channel="system")  # system is never filtered
        await a.err("bad_request", "mute_channel", channel="shouting")
        await a.ok("unmute_channel", channel="global")
        m2 = "global again %s" % uid()
        await b.ok("global", content=m2)
        await a.chat(m2)

    async def test_mutes_list(self):
        a = await self.connect(gw_main(), "Alice")
        t1, t2 = uid("t"), uid("t")
        await a.ok("mute", target=t1)
        await a.ok("mute", target=t2, minutes=30)
        await a.ok("mute_channel", channel="local")
        cid = await a.send_cmd("mutes")
        f = await a.wait_for(lambda f: f.get("event_type") == "mutes", "mutes frame")
        d = f["data"]
        targets = {p.get("target"): p for p in d.get("players", [])}
        self.assertEqual(set(targets), {t1, t2}, brief(f))
        self.assertIn("expires_at", targets[t2], brief(f))
        self.assertTrue(targets[t2]["expires_at"], "a 30-minute mute has an expiry: %s" % brief(f))
        self.assertIn("local", d.get("channels", []), brief(f))
        self.assertIn("global", d, brief(f))
        self.assertIsNone(d["global"], brief(f))
        self.assertIsNotNone(cid)

    async def test_global_mute_by_admin(self):
        room = uniq_room()
        x = await self.connect(gw_main(), "Admin", room=room, adm=True)
        b = await self.connect(gw_b(), "Bob", room=room)
        await self.settle()
        await x.ok("mute_global", target=b.player_id, minutes=10, reason="spam")
        for ch, extra in (("say", {}), ("emote", {}), ("global", {}), ("whisper", {"target": x.player_id})):
            with self.subTest(channel=ch):
                await b.err("muted", ch, content="muted %s" % uid(), **extra)
        await x.expect_none("chat_message", within=0.3, sender_id=b.player_id)
        await x.ok("unmute_global", target=b.player_id)
        m = "free again %s" % uid()
        # the global mute is lifted (allow the change to propagate across gateways)
        for _ in range(20):
            f = await b.cmd("say", content=m)
            if f["event_type"] == "ack":
                break
        self.assertEqual(f["event_type"], "ack", brief(f))
        await x.chat(m)

    async def test_system_is_never_filtered(self):
        x = await self.connect(gw_main(), "Admin", room=uniq_room(), adm=True)
        a = await self.connect(gw_main(), "Alice", room=uniq_room())
        await a.ok("mute", target=x.player_id)
        m = "system through mutes %s" % uid()
        await x.ok("system", content=m)
        await a.chat(m)


if __name__ == "__main__":
    unittest.main()
