# SPDX-License-Identifier: MIT
"""Channels, recipients and formatted lines (PROTOCOL.md sections 3 and 4) on one gateway
(plus gw-b for "everyone online"), join events, welcome, ping and sequence numbers."""

import asyncio
import json
import unittest

from harness import (QUIET, RACE_ENV, START_ROOM, Gateway, GatewayTestCase, NatsPub, brief, gw_b,
                     gw_main, metric, shared, shared_nats, uid, uniq_room, wait_metric)


ATTEMPTS = 40  # the race tests: attempts (each takes a few ms unless it fails)


class OnceTestCase(GatewayTestCase):
    def assertOnce(self, client, content):
        got = client.matching("chat_message", content=content)
        self.assertEqual(len(got), 1, "%s got %d copies of %r: %s" % (client.label, len(got), content,
                                                                       [brief(f) for f in got]))


class ChannelTests(OnceTestCase):

    def assertNoEcho(self, frame):
        self.assertIn((frame.get("data") or {}).get("echo"), (None, False),
                      "echo must be true only on the sender's own copy: %s" % brief(frame))

    async def test_welcome(self):
        gw = gw_main()
        c = await self.connect(gw, "Zoë")
        w = c.welcome
        self.assertEqual(w["event_type"], "welcome")
        d = w["data"]
        self.assertEqual(d.get("player_id"), c.player_id, brief(w))
        self.assertEqual(d.get("player_name"), "Zoë", brief(w))
        self.assertEqual(d.get("room_id"), START_ROOM, brief(w))
        self.assertEqual(d.get("gateway"), "gw-main", brief(w))
        self.assertEqual(c.ws.subprotocol, "mudbus.v1", "negotiated subprotocol")

    async def test_ping_pong(self):
        c = await self.connect(gw_main(), "Pinger")
        await c.ping()
        await c.ping()

    async def test_room_channels_say_emote_pose(self):
        gw = gw_main()
        for ch, fmt in (("say", "{n} says: {c}"), ("emote", "{n} {c}"), ("pose", "{n} {c}")):
            with self.subTest(channel=ch):
                room = uniq_room()
                a = await self.connect(gw, "Alice", room=room)
                b = await self.connect(gw, "Bob", room=room)
                c = await self.connect(gw, "Carol", room=uniq_room())  # another room
                s = await self.connect(gw, "Sam")  # still in the start room
                content = "%s test %s ünï" % (ch, uid())
                ack = await a.ok(ch, content=content)
                line = fmt.format(n="Alice", c=content)
                fb = await b.chat(content)
                self.assertChat(fb, channel=ch, sender_id=a.player_id, player_name="Alice", content=content, message=line)
                self.assertNoEcho(fb)
                fa = await a.chat(content)
                self.assertChat(fa, channel=ch, sender_id=a.player_id, player_name="Alice", content=content,
                                message=line, echo=True)
                self.assertEqual(fa["data"]["message_id"], fb["data"]["message_id"], "one message, one message_id")
                if "message_id" in ack["data"]:
                    self.assertEqual(ack["data"]["message_id"], fb["data"]["message_id"], "ack message_id")
                await c.expect_no_chat(content)
                await s.expect_no_chat(content, within=0)
                self.assertOnce(a, content)
                self.assertOnce(b, content)

    async def test_local_reaches_the_subzone_across_rooms(self):
        gw = gw_main()
        a = await self.connect(gw, "Alice", room="earth_arkham_city_library")
        b = await self.connect(gw, "Bob", room="earth_arkham_city_square")
        b2 = await self.connect(gw, "Bea", room="earth_arkham_city_square")
        c = await self.connect(gw, "Carol", room="earth_arkham_docks_pier")  # subzone docks
        content = "local test %s" % uid()
        await a.ok("local", content=content)
        line = "Alice (local): %s" % content
        for r in (b, b2):
            f = await r.chat(content)
            self.assertChat(f, channel="local", sender_id=a.player_id, player_name="Alice", message=line)
            self.assertNoEcho(f)
        fa = await a.chat(content)
        self.assertChat(fa, channel="local", message=line)
        await c.expect_no_chat(content)
        for r in (a, b, b2):
            self.assertOnce(r, content)

    async def test_global_reaches_everyone_online(self):
        a = await self.connect(gw_main(), "Alice", room=uniq_room())
        b = await self.connect(gw_main(), "Bob", room=uniq_room())
        s = await self.connect(gw_main(), "Sam")  # start room
        d = await self.connect(gw_b(), "Dora", room=uniq_room())  # other gateway
        await self.settle()
        content = "global test %s" % uid()
        await a.ok("global", content=content)
        line = "Alice (global): %s" % content
        for r in (a, b, s, d):
            f = await r.chat(content)
            self.assertChat(f, channel="global", sender_id=a.player_id, player_name="Alice", content=content, message=line)
        for r in (b, s, d):
            self.assertNoEcho(r.matching("chat_message", content=content)[0])
        await d.expect_none("chat_message", within=QUIET, content=content)  # no second copy
        for r in (a, b, s, d):
            self.assertOnce(r, content)

    async def test_whisper_only_to_target_with_echo(self):
        gw = gw_main()
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room)
        b = await self.connect(gw, "Bob", room=room)
        c = await self.connect(gw, "Carol", room=room)  # same room, must not hear it
        content = "whisper test %s" % uid()
        await a.ok("whisper", target=b.player_id, content=content)
        fb = await b.chat(content)
        self.assertChat(fb, channel="whisper", sender_id=a.player_id, player_name="Alice", content=content,
                        message="Alice whispers to you: %s" % content)
        self.assertNoEcho(fb)
        if "target_id" in fb["data"]:
            self.assertEqual(fb["data"]["target_id"], b.player_id)
        fa = await a.chat(content)
        self.assertChat(fa, channel="whisper", sender_id=a.player_id, echo=True,
                        message="Alice whispers: %s" % content)
        if "target_id" in fa["data"]:
            self.assertEqual(fa["data"]["target_id"], b.player_id)
        await c.expect_no_chat(content)
        self.assertOnce(a, content)
        self.assertOnce(b, content)

    async def test_party_reaches_party_members_only(self):
        gw = gw_main()
        p1, p2 = uid("party"), uid("party")
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room, party=p1)
        b = await self.connect(gw, "Bob", room=uniq_room(), party=p1)  # same party, other room
        bb = await self.connect(gw_b(), "Bert", room=uniq_room(), party=p1)  # same party, other gateway
        c = await self.connect(gw, "Carol", room=room, party=p2)  # other party, same room
        d = await self.connect(gw, "Dan", room=room)  # no party
        await self.settle()
        content = "party test %s" % uid()
        await a.ok("party", content=content)
        line = "Alice (party): %s" % content
        for r in (a, b, bb):
            f = await r.chat(content)
            self.assertChat(f, channel="party", sender_id=a.player_id, player_name="Alice", content=content, message=line)
        await c.expect_no_chat(content)
        await d.expect_no_chat(content, within=0)
        for r in (a, b, bb):
            self.assertOnce(r, content)

    async def test_party_without_party_claim_is_refused(self):
        # The contract does not name the code; any error is acceptable, an ack is not.
        gw = gw_main()
        room = uniq_room()
        d = await self.connect(gw, "Dan", room=room)
        e = await self.connect(gw, "Eve", room=room)
        content = "partyless %s" % uid()
        f = await d.cmd("party", content=content)
        self.assertEqual(f["event_type"], "error", "party without a party claim: %s" % brief(f))
        await e.expect_no_chat(content)
        await d.expect_no_chat(content, within=0)
        await d.ping()

    async def test_system_admin_only_to_all_and_to_target(self):
        gw = gw_main()
        x = await self.connect(gw, "Admin", room=uniq_room(), adm=True)
        a = await self.connect(gw, "Alice", room=uniq_room())
        b = await self.connect(gw_b(), "Bob", room=uniq_room())
        await self.settle()
        # to everyone
        content = "system all %s" % uid()
        await x.ok("system", content=content)
        for r in (x, a, b):
            f = await r.chat(content)
            self.assertChat(f, channel="system", content=content, message="[SYSTEM] %s" % content)
        # to one player (on the other gateway)
        content2 = "system one %s" % uid()
        await x.ok("system", content=content2, target=b.player_id)
        f = await b.chat(content2)
        self.assertChat(f, channel="system", content=content2, message="[SYSTEM] %s" % content2)
        await a.expect_no_chat(content2)
        self.assertOnce(b, content2)
        # non-admins: forbidden, nothing published (adm absent and adm false)
        y = await self.connect(gw, "Yann", room=uniq_room(), adm=False)
        content3 = "system forbidden %s" % uid()
        await a.err("forbidden", "system", content=content3)
        await y.err("forbidden", "system", content=content3, target=b.player_id)
        await b.expect_no_chat(content3)
        await x.expect_no_chat(content3, within=0)
        await a.ping()

    async def test_join_moves_the_player_with_events(self):
        gw = gw_main()
        r1, r2 = uniq_room(), uniq_room()
        a = await self.connect(gw, "Alice", room=r1)
        b = await self.connect(gw, "Bob", room=r1)
        c = await self.connect(gw, "Carol", room=r2)
        await a.ok("join", room_id=r2)
        left = await b.expect("player_left", player_id=a.player_id)
        self.assertEqual(left["data"].get("player_name"), "Alice", brief(left))
        self.assertEqual(left["data"].get("room_id"), r1, brief(left))
        ent = await c.expect("player_entered", player_id=a.player_id)
        self.assertEqual(ent["data"].get("player_name"), "Alice", brief(ent))
        self.assertEqual(ent["data"].get("room_id"), r2, brief(ent))
        # c (r2) must not see the player_left of r1, b (r1) must not see the player_entered of r2
        await c.expect_none("player_left", within=0, player_id=a.player_id)
        await b.expect_none("player_entered", within=0, player_id=a.player_id, room_id=r2)
        # a now hears r2 and no longer r1
        m1, m2 = "in r1 %s" % uid(), "in r2 %s" % uid()
        await b.ok("say", content=m1)
        await c.ok("say", content=m2)
        await a.chat(m2)
        await b.chat(m1)  # barrier: b's own echo
        await a.expect_no_chat(m1)
        # and r2 hears a; r1 does not
        m3 = "a speaks %s" % uid()
        await a.ok("say", content=m3)
        await c.chat(m3)
        await b.expect_no_chat(m3)

    async def test_first_say_in_a_fresh_room(self):
        # One gateway: the first say right after two players entered a room nobody was in must
        # reach both (the join ack must not precede the gateway's room subscription on NATS).
        self.settle_enabled = False
        gw = gw_main()
        lost = []
        for i in range(ATTEMPTS):
            room = uniq_room()
            a = await self.connect(gw, "Alice", room=room)
            b = await self.connect(gw, "Bob", room=room)
            m = "first words %d %s" % (i, uid())
            await a.ok("say", content=m)
            try:
                await b.chat(m, timeout=1.5)
            except AssertionError:
                lost.append(i)
                if len(lost) >= 3:
                    break
            await a.close()
            await b.close()
        if lost:
            self.fail("the first say in a fresh room was acked but lost: attempts %s (stopped after 3 losses; %d attempts at most)" % (lost, ATTEMPTS))

    async def test_start_room_membership(self):
        # After the welcome the player is in the start room: say there reaches others there.
        gw = gw_main()
        a = await self.connect(gw, "Alice")
        b = await self.connect(gw, "Bob")
        content = "start room %s" % uid()
        await a.ok("say", content=content)
        f = await b.chat(content)
        self.assertEqual(f["data"].get("message"), "Alice says: %s" % content)

    async def test_sequence_numbers_grow_by_one(self):
        gw = gw_main()
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room)
        b = await self.connect(gw, "Bob", room=room)
        for i in range(3):
            await a.ok("say", content="seq %d" % i)
            await b.ok("emote", content="waves %d" % i)
        await a.err("bad_request", "nonsense")
        await a.ping()
        await a.err("invalid_room", "join", room_id="a.b")
        for i in range(3):
            await a.chat("waves %d" % i)
        for c in (a, b):
            seqs = [f["sequence_number"] for f in c.frames]
            self.assertGreaterEqual(len(seqs), 8 if c is a else 6, "%s frames: %s" % (c.label, seqs))
            self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))),
                             "%s sequence numbers must grow by one per frame" % c.label)


def gw_no_fanout():
    """A gateway with [gateway] local_fanout = off: its own chat comes back through NATS."""
    def make():
        return Gateway("nofanout", [shared_nats().url], instance_id="gw-nofanout",
                       config={"gateway": {"local_fanout": "off"}}).start()
    return shared("gw-nofanout", make)


def gw_echo():
    """Local fan-out with [nats] no_echo = off: NATS brings the gateway's own messages back and
    they are dropped by id (what a pool of several connections does to part of them)."""
    def make():
        return Gateway("echo", [shared_nats().url], instance_id="gw-echo", env=RACE_ENV,
                       config={"nats": {"no_echo": "off"}}).start()
    return shared("gw-echo", make)


class LocalFanoutTests(OnceTestCase):
    """What a player of this gateway publishes (chat, presence, whispers and system messages to
    players here) goes to its players at once (local fan-out); players on other gateways get it
    through NATS. By default the server sends none of it back (no_echo on the gateway's one
    connection); a copy that does come back is dropped by its message id."""

    async def chat_once(self, gw, echoes):
        other = gw_b()
        fan0 = await metric(gw, "mudbus_gateway_local_fanouts_total")
        drop0 = await metric(gw, "mudbus_gateway_echoes_dropped_total")
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room)
        b = await self.connect(gw, "Bob", room=room)
        c = await self.connect(other, "Carol", room=room)  # the same room on another gateway
        sent = []
        for ch in ("say", "emote", "pose", "local", "global"):
            content = "%s fan-out %s" % (ch, uid())
            await a.ok(ch, content=content)
            sent.append(content)
        for content in sent:
            fa, fb, fc = await a.chat(content), await b.chat(content), await c.chat(content)
            self.assertEqual(fa["data"].get("echo"), True, brief(fa))
            self.assertIn(fb["data"].get("echo"), (None, False), brief(fb))
            self.assertEqual(fb["data"]["message_id"], fc["data"]["message_id"], "one message, one id")
            self.assertEqual(fb["data"]["timestamp"], fc["data"]["timestamp"],
                             "the local copy carries the published timestamp")
            self.assertEqual(fb["data"]["message"], fc["data"]["message"], "the same formatted line")
        if echoes:
            self.assertGreaterEqual(await wait_metric(gw, "mudbus_gateway_echoes_dropped_total",
                                                      drop0 + echoes),
                                    drop0 + echoes, "the NATS copies of the messages are dropped")
        await asyncio.sleep(QUIET)
        self.assertGreaterEqual(await metric(gw, "mudbus_gateway_local_fanouts_total"), fan0 + 5)
        for content in sent:
            for cl in (a, b, c):
                self.assertOnce(cl, content)
        return drop0

    async def test_chat_once_and_nothing_comes_back(self):
        gw = gw_main()
        drop0 = await self.chat_once(gw, 0)
        self.assertEqual(await metric(gw, "mudbus_gateway_echoes_dropped_total"), drop0,
                         "no_echo: the server sent none of the gateway's own chat back")

    async def test_chat_copies_from_nats_are_dropped(self):
        await self.chat_once(gw_echo(), 5)

    async def presence_once(self, gw):
        r1, r2 = uniq_room(), uniq_room()
        o = await self.connect(gw, "Olive", room=r1)       # here
        p = await self.connect(gw_b(), "Pavel", room=r1)   # on another gateway
        q = await self.connect(gw, "Quinn", room=r2)
        x = await self.connect(gw, "Xena", room=r1)
        await x.ok("join", room_id=r2)
        await x.close()
        for cl, want in ((o, {"player_entered": r1, "player_left": r1}),
                         (p, {"player_entered": r1, "player_left": r1}),
                         (q, {"player_entered": r2, "player_left": r2})):
            for ev, room in want.items():
                await cl.expect(ev, player_id=x.player_id, room_id=room)
        await asyncio.sleep(QUIET)
        for cl in (o, p, q):
            for ev in ("player_entered", "player_left"):
                got = cl.matching(ev, player_id=x.player_id)
                self.assertEqual(len(got), 1, "%s: %d %s frames for one move: %s"
                                 % (cl.label, len(got), ev, [brief(f) for f in got]))
        # The mover hears of its own arrival (as through NATS), not of its leaving.
        self.assertEqual(len(x.matching("player_entered", player_id=x.player_id, room_id=r2)), 1)
        self.assertEqual(x.matching("player_left", player_id=x.player_id), [])

    async def test_presence_once(self):
        await self.presence_once(gw_main())

    async def test_presence_copies_from_nats_are_dropped(self):
        gw = gw_echo()
        drop0 = await metric(gw, "mudbus_gateway_echoes_dropped_total")
        await self.presence_once(gw)
        # joins: r1 entered (welcome), r1 left + r2 entered (join), r2 left (close)
        self.assertGreaterEqual(await metric(gw, "mudbus_gateway_echoes_dropped_total"), drop0 + 4)

    async def whisper_here(self, gw):
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room)
        b = await self.connect(gw, "Bob", room=room)
        x = await self.connect(gw, "Admin", room=room, adm=True)
        c = await self.connect(gw_b(), "Carol", room=room)
        watch = NatsPub(shared_nats().url)  # a game server listening to whispers
        self.addCleanup(watch.close)
        await asyncio.to_thread(watch.subscribe, "chat.whisper.player.%s" % b.player_id)
        w = "psst %s" % uid()
        ack = await a.ok("whisper", target=b.player_id, content=w)
        got = await b.chat(w, channel="whisper")
        self.assertEqual(got["data"]["message"], "Alice whispers to you: " + w, brief(got))
        self.assertEqual(got["data"]["message_id"], ack["data"]["message_id"])
        await a.chat(w, echo=True, message="Alice whispers: " + w)
        subject, payload = await asyncio.to_thread(watch.next_msg)
        self.assertEqual(subject, "chat.whisper.player.%s" % b.player_id)
        self.assertEqual(json.loads(payload)["content"], w, payload)
        sysline = "maintenance %s" % uid()
        await x.ok("system", target=b.player_id, content=sysline)
        await b.chat(sysline, channel="system")
        broadcast = "everyone %s" % uid()
        await x.ok("system", content=broadcast)
        for cl in (a, b, c):
            await cl.chat(broadcast, channel="system")
        await x.chat(broadcast, echo=True)
        await asyncio.sleep(QUIET)
        self.assertOnce(b, w)
        self.assertOnce(a, w)
        self.assertOnce(b, sysline)
        for cl in (a, b, c, x):
            self.assertOnce(cl, broadcast)
        for cl in (a, c, x):
            self.assertEqual(cl.matching("chat_message", content=sysline), [], cl.label)
        for cl in (c, x):
            self.assertEqual(cl.matching("chat_message", content=w), [], cl.label)

    async def test_whisper_and_system_here_once(self):
        await self.whisper_here(gw_main())

    async def test_whisper_and_system_here_once_when_echoed(self):
        await self.whisper_here(gw_echo())

    async def test_off_delivers_through_nats(self):
        gw = gw_no_fanout()
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room)
        b = await self.connect(gw, "Bob", room=room)
        content = "through NATS %s" % uid()
        await a.ok("say", content=content)
        await b.chat(content)
        await a.chat(content, echo=True)
        await asyncio.sleep(QUIET)
        self.assertOnce(a, content)
        self.assertOnce(b, content)
        self.assertEqual(await metric(gw, "mudbus_gateway_local_fanouts_total"), 0)
        self.assertEqual(await metric(gw, "mudbus_gateway_echoes_dropped_total"), 0)


if __name__ == "__main__":
    unittest.main()
