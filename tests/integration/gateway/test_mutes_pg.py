# SPDX-License-Identifier: MIT
"""Mutes on PostgreSQL (issue 6): two gateways on one real PostgreSQL server (started here:
initdb and pg_ctl as the postgres user, harness.PostgresServer) and their own nats-server. A
personal mute made through gateway A applies to deliveries on gateway B within 100 ms, and so
does a global mute to a sender on B (and the unmutes, back); a store that is down when a player
connects: `welcome`, then `error` `unavailable`, deliveries held (not lost, not unfiltered) until
the store is back, the player's own chat refused meanwhile; a store that stays down: the player
is closed with 1011 after 6 failed loads. PostgreSQL that cannot start fails
these tests; they are never skipped."""

import asyncio
import sys
import time
import unittest

from harness import (QUIET, RACE_ENV, SCALE, Gateway, GatewayTestCase, NatsServer, brief, pg_env,
                     shared, shared_postgres, uid, uniq_room)

# issue 6: a change made through one gateway applies on the others within 100 ms. Asserted as
# such in the plain build; the sanitizer build runs everything several times slower
# (MB_TIMEOUT_SCALE), and there it is the rule, not the figure, that is checked.
WITHIN = 0.100 * SCALE
TICK = 0.010  # the probing sender speaks every 10 ms
RUN_AFTER = 0.400  # and goes on this long after the change's ack


def pg_nats():
    return shared("pg-nats", lambda: NatsServer("pg-nats").start())


def pg_gateway(key):
    """Gateway pg-a / pg-b: PostgreSQL store, their own nats-server, no rate limits (the probes
    speak every 10 ms)."""
    pg = shared_postgres()

    def make():
        return Gateway(key, [pg_nats().url], instance_id="gw-" + key, no_rate_limits=True,
                       env=dict(RACE_ENV, **pg_env(pg))).start()
    gw = shared(("gw", key), make)
    if not gw.alive():
        raise RuntimeError("gateway %s died (rc %s)\n--- log:\n%s" % (key, gw.proc.returncode, gw.log_tail()))
    return gw


def stamp(client):
    """Record when each frame arrived (frame["_rx"], time.monotonic()) from now on."""
    orig = client._accept

    def accept(msg):
        n = len(client.frames)
        orig(msg)
        if len(client.frames) > n:
            client.frames[-1]["_rx"] = time.monotonic()
    client._accept = accept
    return client


async def until(cond, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("no %s within %.1fs" % (what, timeout))
        await asyncio.sleep(0.005)


class Pump:
    """A sender that says a numbered line every TICK seconds (fire and forget), remembering when
    each was sent."""

    def __init__(self, client, tag):
        self.c, self.tag = client, tag
        self.sent = {}  # content -> (monotonic send time, command id)
        self.order = []
        self._stop = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        i = 0
        while not self._stop:
            content = "%s %d" % (self.tag, i)
            t = time.monotonic()
            cid = await self.c.send_cmd("say", content=content)
            self.sent[content] = (t, cid)
            self.order.append(content)
            i += 1
            await asyncio.sleep(TICK)

    async def stop(self):
        self._stop = True
        await self.task
        return self.order[-1]

    def received_by(self, client):
        """Send times of this pump's lines that reached client."""
        return sorted(self.sent[f["data"]["content"]][0] for f in client.frames
                      if f.get("event_type") == "chat_message"
                      and (f.get("data") or {}).get("content") in self.sent
                      and not (f.get("data") or {}).get("echo"))


class MutesPgTests(GatewayTestCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.pg = shared_postgres()
        self.a, self.b = pg_gateway("pg-a"), pg_gateway("pg-b")

    async def test_cross_gateway_global_mute_within_100ms(self):
        room = uniq_room()
        x = stamp(await self.connect(self.a, "Admin", room=uniq_room(), adm=True))
        s = await self.connect(self.b, "Sam", room=room)
        c = await self.connect(self.b, "Cleo", room=room)
        await self.settle()
        pump = Pump(s, "g-tick %s" % uid())
        await until(lambda: len(pump.received_by(c)) >= 5, "ticks before the mute")
        f = await x.ok("mute_global", target=s.player_id, minutes=10, reason="cross")
        t_ack = f["_rx"]
        await asyncio.sleep(RUN_AFTER)
        await pump.stop()
        replies = {}
        for content in pump.order:
            t, cid = pump.sent[content]
            replies[content] = (t, await s.reply(cid))
        acked_late = [(round((t - t_ack) * 1000, 1), content) for content, (t, r) in replies.items()
                      if r["event_type"] == "ack" and t >= t_ack + WITHIN]
        refused = [content for content, (t, r) in replies.items()
                   if r["event_type"] == "error" and r["data"].get("code") == "muted"]
        others = [brief(r) for _, (t, r) in replies.items()
                  if r["event_type"] != "ack" and r["data"].get("code") != "muted"]
        self.assertEqual(others, [], "replies other than ack / muted")
        last_ack = max(t for t, r in replies.values() if r["event_type"] == "ack")
        print("\n  global mute A->B: last line accepted %.1f ms after A's ack" % ((last_ack - t_ack) * 1000),
              file=sys.stderr)
        self.assertEqual(acked_late, [], "lines accepted from a sender on gw B more than %d ms after the global "
                                         "mute's ack on gw A (ms after ack, line)" % round(WITHIN * 1000))
        self.assertTrue(refused, "the sender was never refused")
        self.assertEqual(self.pg.psql("SELECT count(*) FROM mutes_global WHERE target = '%s'" % s.player_id), "1")
        await asyncio.sleep(QUIET)
        leaked = [m for m in refused if c.matching("chat_message", content=m)]
        self.assertEqual(leaked, [], "refused lines were delivered")
        # and back: unmute_global on A lets the sender on B speak again within 100 ms
        f = await x.ok("unmute_global", target=s.player_id)
        t_ack = f["_rx"]
        while True:
            t = time.monotonic()
            r = await s.cmd("say", content="unmuted? %s" % uid())
            if r["event_type"] == "ack":
                break
            self.assertEqual(r["data"].get("code"), "muted", brief(r))
            self.assertLess(t - t_ack, WITHIN, "a line sent %.1f ms after the unmute's ack on gw A was refused on gw B"
                            % ((t - t_ack) * 1000))
            await asyncio.sleep(TICK)
        print("  global unmute A->B: first line accepted was sent %.1f ms after A's ack" % ((t - t_ack) * 1000),
              file=sys.stderr)

    async def test_cross_gateway_personal_mute_within_100ms(self):
        """R has a session on A and one on B; R mutes S through A: B stops delivering S to R
        within 100 ms of A's ack (S keeps speaking every 10 ms, C on B keeps hearing S); R
        unmutes through B: A delivers S again within 100 ms."""
        room = uniq_room()
        rid = uid("rita")
        ra = stamp(await self.connect(self.a, "Rita", pid=rid, room=room))
        rb = stamp(await self.connect(self.b, "Rita", pid=rid, room=room))
        s = await self.connect(self.a, "Sam", room=room)
        c = await self.connect(self.b, "Cleo", room=room)
        await self.settle()
        pump = Pump(s, "p-tick %s" % uid())
        await until(lambda: len(pump.received_by(rb)) >= 5 and len(pump.received_by(ra)) >= 5,
                    "ticks before the mute")
        f = await ra.ok("mute", target=s.player_id)
        t_ack = f["_rx"]
        await asyncio.sleep(RUN_AFTER)
        t_unmute = time.monotonic()  # lines sent from here on may meet the unmute on their way
        f = await rb.ok("unmute", target=s.player_id)
        t_ack2 = f["_rx"]
        await asyncio.sleep(RUN_AFTER)
        last = await pump.stop()
        await c.chat(last)  # every line was delivered where it is not filtered
        await ra.chat(last, timeout=2)
        await rb.chat(last, timeout=2)
        heard_c = pump.received_by(c)
        self.assertEqual(len(heard_c), len(pump.order), "C (not muting) missed lines")
        # muted from 100 ms after the mute's ack until (with a margin for lines in flight) the unmute
        muted_window = lambda ts: [round((t - t_ack) * 1000, 1) for t in ts
                                   if t_ack + WITHIN <= t < t_unmute - 0.050]
        late_b = muted_window(pump.received_by(rb))
        late_a = muted_window(pump.received_by(ra))
        in_b = [t for t in pump.received_by(rb) if t_ack <= t < t_unmute - 0.050]
        print("\n  personal mute A->B: last line delivered on B %s ms after A's ack"
              % (round((max(in_b) - t_ack) * 1000, 1) if in_b else "-"), file=sys.stderr)
        self.assertEqual(late_a, [], "gw A delivered lines sent more than %d ms after the mute's ack (ms after ack)"
                         % round(WITHIN * 1000))
        self.assertEqual(late_b, [], "gw B delivered lines sent more than %d ms after the mute's ack on gw A "
                                     "(ms after ack)" % round(WITHIN * 1000))
        self.assertEqual(self.pg.psql("SELECT count(*) FROM mutes_player WHERE muter = '%s'" % rid), "0",
                         "the unmute reached PostgreSQL")
        # the unmute made through B: lines sent from 100 ms after its ack on reach R on A (and B)
        for who, cl in (("A", ra), ("B", rb)):
            got = set(pump.received_by(cl))
            missing = [round((pump.sent[m][0] - t_ack2) * 1000, 1) for m in pump.order
                       if pump.sent[m][0] >= t_ack2 + WITHIN and pump.sent[m][0] not in got]
            self.assertEqual(missing, [], "gw %s did not deliver lines sent more than %d ms after the unmute's "
                                          "ack on gw B (ms after ack)" % (who, round(WITHIN * 1000)))
        # a channel mute made through A is in force on B 100 ms after the ack, and the unmute too
        await ra.ok("mute_channel", channel="emote")
        await asyncio.sleep(WITHIN)
        e1 = "emote to a muted channel %s" % uid()
        await s.ok("emote", content=e1)
        await c.chat(e1)
        await rb.expect_no_chat(e1, within=0.2)
        await ra.expect_no_chat(e1, within=0)
        await ra.ok("unmute_channel", channel="emote")
        await asyncio.sleep(WITHIN)
        e2 = "emote after unmute_channel %s" % uid()
        await s.ok("emote", content=e2)
        await rb.chat(e2)
        await ra.chat(e2)

    async def test_store_down_at_connect(self):
        """PostgreSQL is stopped when V connects to gateway D: V gets `welcome` then `error`
        (`unavailable`); others' chat is held for V, V's own chat is refused (`unavailable`);
        when PostgreSQL is back, the held lines arrive filtered by V's stored mutes (M's line
        does not), and chat works."""
        pg = self.pg
        room = uniq_room()
        d = Gateway("pg-down", [pg_nats().url], instance_id="gw-pg-down",
                    env=dict(RACE_ENV, MUDBUS_GATEWAY_START_ROOM=room, **pg_env(pg))).start()
        self.addCleanup(d.stop)
        vid, mid = uid("vic"), uid("mal")
        # V's mute of M is in the store (written straight into PostgreSQL: V has never been on any
        # gateway, so D's load at V's connect needs the store)
        pg.psql("INSERT INTO mutes_player (muter, target, created_ms, expires_ms, reason) "
                "VALUES ('%s', '%s', %d, NULL, '')" % (vid, mid, int(time.time() * 1000)))
        m = await self.connect(d, "Mal", pid=mid)  # in the start room
        s = await self.connect(d, "Sam")
        c = await self.connect(d, "Cleo")
        m0 = "room is live %s" % uid()
        await s.ok("say", content=m0)
        await c.chat(m0)
        self.addCleanup(lambda: pg.running or pg.start())  # never leave it down for later tests
        await asyncio.to_thread(pg.stop)
        t_down = time.monotonic()
        v = await self.connect(d, "Vic", pid=vid)  # the harness checks the first frame is the welcome
        e = await v.expect("error", code="unavailable", timeout=5)
        self.assertIsNone(e["data"].get("id"), "not a reply to a command: %s" % brief(e))
        self.assertTrue(e["data"].get("message"), brief(e))
        refused = []
        for ch, extra in (("say", {}), ("emote", {}), ("global", {}), ("whisper", {"target": c.player_id})):
            mine = "V while unloaded %s %s" % (ch, uid())
            refused.append(mine)
            await v.err("unavailable", ch, content=mine, **extra)
        # a loaded player's mute command cannot reach the store: refused, nothing changes
        lost = uid("t")
        await c.err("unavailable", "mute", target=lost)
        mm1, ms1 = "from M while held %s" % uid(), "from S while held %s" % uid()
        wm1, ws1 = "whisper from M while held %s" % uid(), "whisper from S while held %s" % uid()
        await m.ok("say", content=mm1)
        await s.ok("say", content=ms1)
        await c.chat(mm1)
        await c.chat(ms1)
        await m.cmd("whisper", target=vid, content=wm1)  # V is online: held for V, not refused
        f = await s.cmd("whisper", target=vid, content=ws1)
        self.assertNotEqual((f["data"] or {}).get("code"), "invalid_target", brief(f))
        await v.expect_none("chat_message", within=QUIET)  # held: nothing unfiltered, nothing at all
        held_for = time.monotonic() - t_down
        await asyncio.to_thread(pg.start)
        t_up = time.monotonic()
        await v.chat(ms1, timeout=12)
        print("\n  store down: held %.1fs, delivered %.1fs after PostgreSQL was back"
              % (held_for, time.monotonic() - t_up), file=sys.stderr)
        await v.chat(ws1, timeout=2)
        await v.expect_no_chat(mm1, within=0.2)
        await v.expect_no_chat(wm1, within=0)
        mv, mm2, ms2 = "V again %s" % uid(), "from M after %s" % uid(), "from S after %s" % uid()
        await v.ok("say", content=mv)
        await c.chat(mv)
        await m.ok("say", content=mm2)
        await s.ok("say", content=ms2)
        await c.chat(mm2)
        await v.chat(ms2)
        await v.expect_none("chat_message", within=0.2, sender_id=mid)
        self.assertEqual([x for x in refused if c.matching("chat_message", content=x)], [],
                         "a refused line was sent")
        dm = await v.cmd("mutes")
        self.assertEqual(dm["event_type"], "mutes", brief(dm))
        self.assertEqual([p.get("target") for p in dm["data"]["players"]], [mid], brief(dm))
        # the store works again for commands too; C's refused mute was not half-made
        await v.ok("mute", target=s.player_id)
        dc = await c.cmd("mutes")
        self.assertEqual(dc["data"].get("players"), [], brief(dc))
        self.assertEqual(pg.psql("SELECT count(*) FROM mutes_player WHERE target = '%s'" % lost), "0")


    async def test_store_down_too_long_closes_1011(self):
        """PostgreSQL stays down while V's mutes are to be loaded: the gateway retries (0.5 s to
        8 s apart) and after 6 failed loads closes V with 1011 "mute store unavailable"; V got
        nothing unfiltered meanwhile, and players loaded before the outage chat on."""
        pg = self.pg
        room = uniq_room()
        d = Gateway("pg-gone", [pg_nats().url], instance_id="gw-pg-gone",
                    env=dict(RACE_ENV, MUDBUS_GATEWAY_START_ROOM=room, **pg_env(pg))).start()
        self.addCleanup(d.stop)
        s = await self.connect(d, "Sam")
        c = await self.connect(d, "Cleo")
        self.addCleanup(lambda: pg.running or pg.start())  # never leave it down for later tests
        await asyncio.to_thread(pg.stop)
        t0 = time.monotonic()
        v = await self.connect(d, "Vic")
        await v.expect("error", code="unavailable", timeout=5)
        line = "while V waits %s" % uid()
        await s.ok("say", content=line)
        await c.chat(line)
        code = await v.wait_closed(timeout=60)
        took = time.monotonic() - t0
        print("\n  store down: closed with %s after %.1fs" % (code, took), file=sys.stderr)
        self.assertEqual(code, 1011, "close code after the mute store stayed down")
        self.assertIn("mute store", v.close_reason or "")
        self.assertEqual(v.matching("chat_message"), [], "V got chat before its mutes were loaded")
        self.assertGreater(took, 10, "closed after %.1fs: before the retries could run" % took)
        line2 = "after V left %s" % uid()
        await c.ok("say", content=line2)
        await s.chat(line2)
        await asyncio.to_thread(pg.start)

    async def test_store_down_at_a_quick_reconnect(self):
        """R leaves gateway D and comes back at once (D still has R's entry), while R's mutes
        changed in the store meanwhile (a mute of S, made elsewhere) and the store is down: no
        line of S may reach R, before or after the store is back."""
        pg = self.pg
        room = uniq_room()
        d = Gateway("pg-down2", [pg_nats().url], instance_id="gw-pg-down2",
                    env=dict(RACE_ENV, MUDBUS_GATEWAY_START_ROOM=room, **pg_env(pg))).start()
        self.addCleanup(d.stop)
        rid = uid("rita")
        r1 = await self.connect(d, "Rita", pid=rid)
        s = await self.connect(d, "Sam")
        t = await self.connect(d, "Tom")
        m0 = "before %s" % uid()
        await s.ok("say", content=m0)
        await r1.chat(m0)
        await r1.close()
        pg.psql("INSERT INTO mutes_player (muter, target, created_ms, expires_ms, reason) "
                "VALUES ('%s', '%s', %d, NULL, '')" % (rid, s.player_id, int(time.time() * 1000)))
        self.addCleanup(lambda: pg.running or pg.start())
        await asyncio.to_thread(pg.stop)
        r2 = await self.connect(d, "Rita", pid=rid)  # well within the 3 s an entry lingers
        m1 = "S while the store is down %s" % uid()
        await s.ok("say", content=m1)
        await t.chat(m1)
        await asyncio.sleep(QUIET)
        while_down = [brief(f) for f in r2.matching("chat_message", sender_id=s.player_id)]
        errors = [brief(f) for f in r2.matching("error")]
        await asyncio.to_thread(pg.start)
        deadline = time.monotonic() + 10
        while True:  # until D has loaded R's mutes again (a failed load is retried 0.5 s to 8 s later)
            f = await r2.cmd("mutes")
            if f["event_type"] == "mutes" and [p.get("target") for p in f["data"]["players"]] == [s.player_id]:
                break
            self.assertLess(time.monotonic(), deadline, "R's stored mute never loaded: %s" % brief(f))
            await asyncio.sleep(0.1)
        m2, mt = "S after %s" % uid(), "T after %s" % uid()
        await s.ok("say", content=m2)
        await t.ok("say", content=mt)
        await r2.chat(mt, timeout=12)
        after = [brief(f) for f in r2.matching("chat_message", sender_id=s.player_id)
                 if f["data"].get("content") != m1]
        if while_down or after:
            self.fail("lines of S, whom R had muted (in the store) before connecting, reached R:\n"
                      "  while the store was down (R's errors: %s): %s\n  after it was back: %s"
                      % (errors or "none", while_down or "none", after or "none"))


if __name__ == "__main__":
    unittest.main()
