# SPDX-License-Identifier: MIT
"""NATS stopped and restarted under a gateway (unavailable, /readyz 503 -> 200, service resumes,
nothing sent while down), slow-client isolation (bounded queue, messages_skipped or 4008), and
SIGTERM drain (close 4009, exit 0)."""

import asyncio
import sys
import time
import unittest

from harness import (QUIET, SCALE, Closed, Gateway, GatewayTestCase, NatsServer, ahttp, brief,
                     poll_http, shared_nats, uid, uniq_room)


class NatsOutageTests(GatewayTestCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.nats = NatsServer("outage-nats").start()
        self.gw = Gateway("outage", [self.nats.url], instance_id="gw-outage",
                          env={"MUDBUS_NATS_RECONNECT_WAIT": "250ms"}).start()

    async def asyncTearDown(self):
        try:
            await super().asyncTearDown()
        finally:
            self.gw.stop()
            self.nats.stop()

    async def test_nats_stop_and_restart(self):
        gw = self.gw
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room, adm=True)
        b = await self.connect(gw, "Bob", room=room)
        before = "before %s" % uid()
        await a.ok("say", content=before)
        await b.chat(before)
        st, _, body = await ahttp(gw.port, "GET", "/readyz")
        self.assertEqual(st, 200, body)

        await asyncio.to_thread(self.nats.stop)
        st, body = await poll_http(gw.port, "/readyz", 503, 10)
        self.assertEqual(st, 503, "/readyz while NATS is down: %s %r" % (st, body))
        self.assertTrue(body and body.strip(), "/readyz 503 must give a reason")
        st, _, _ = await ahttp(gw.port, "GET", "/healthz")
        self.assertEqual(st, 200, "/healthz (liveness) while NATS is down")

        down = []
        for ch, extra in (("say", {}), ("emote", {}), ("pose", {}), ("local", {}), ("global", {}),
                          ("whisper", {"target": b.player_id}), ("system", {})):
            with self.subTest(channel=ch, nats="down"):
                m = "down %s %s" % (ch, uid())
                down.append(m)
                await a.err("unavailable", ch, content=m, **extra)
        await a.ping()  # connections stay open and served
        await b.ping()
        self.assertTrue(gw.alive(), "gateway died while NATS was down:\n" + gw.log_tail())

        await asyncio.to_thread(self.nats.start, self.nats.port)  # same port
        st, body = await poll_http(gw.port, "/readyz", 200, 20)
        self.assertEqual(st, 200, "/readyz after NATS came back: %s %r" % (st, body))

        # chat works again by itself; the first command after /readyz 200 must not be refused
        got = None
        first_lost = False
        deadline = time.monotonic() + 10 * SCALE
        i = 0
        while got is None and time.monotonic() < deadline:
            m = "after %d %s" % (i, uid())
            f = await a.cmd("say", content=m)
            if i == 0:
                self.assertEqual(f["event_type"], "ack", "first say after /readyz 200: %s" % brief(f))
            try:
                got = await b.chat(m, timeout=1.0)
            except AssertionError:
                first_lost = first_lost or i == 0
            i += 1
        self.assertIsNotNone(got, "chat did not resume within 10 s after NATS restart")
        if first_lost:
            print("\nNOTE: the first say after /readyz 200 was acked but not delivered", file=sys.stderr)
        # nothing of what was refused while down was sent later
        await asyncio.sleep(QUIET)
        for m in down:
            self.assertEqual(b.matching("chat_message", content=m), [], "refused %r was delivered" % m)
            self.assertEqual(a.matching("chat_message", content=m), [], "refused %r was delivered" % m)


class SlowClientTests(GatewayTestCase):
    """Default queue limits ([gateway] queue_max_msgs 256, queue_max_bytes 1 MiB as configured by
    the gateway); messages of 7000 characters (frames of ~14 KB, under the 16 KiB frame limit)."""
    N = 250  # ~3.6 MB per reader: far more than a stalled reader's kernel buffers + soft queue
    PAD = "z" * 6994

    def make_gateway(self):
        return Gateway("slow", [shared_nats().url], instance_id="gw-slow",
                       config={"limits": {"rate_limits": False, "say_max_chars": 7000,
                                          "whisper_max_chars": 7000}}).start()

    async def stalled_reader(self, gw, room):
        """A raw client with a 4 KiB receive buffer that stops reading after its join ack."""
        slow = await self.raw(gw, "/ws?token=" + gw.token(uid("slow"), "Slow"), rcvbuf=4096, limit=4096)
        self.assertEqual(slow.status, 101)
        w = await slow.recv_json()
        self.assertEqual(w["event_type"], "welcome")
        slow.player_id = w["data"]["player_id"]
        await slow.send_text('{"type":"join","id":"j1","room_id":"%s"}' % room)
        f = await slow.recv_until(lambda f: f["event_type"] in ("ack", "error") and f["data"].get("id") == "j1", "join ack")
        self.assertEqual(f["event_type"], "ack", brief(f))
        return slow

    async def test_slow_client_is_isolated(self):
        gw = self.make_gateway()
        try:
            await self._ambient(gw)
        finally:
            rc = gw.stop()
        self.assertEqual(rc, 0, "gateway exit status after SIGTERM\n" + gw.log_tail())

    async def _ambient(self, gw):
        room = uniq_room()
        slow = await self.stalled_reader(gw, room)
        fast = await self.connect(gw, "Fast", room=room)
        sender = await self.connect(gw, "Sender", room=room)
        t0 = time.monotonic()
        worst = 0.0
        for b in range(0, self.N, 10):  # batches of 10; each batch must reach the fast reader promptly
            tb = time.monotonic()
            ids = [await sender.send_cmd("say", content="%05d %s" % (i, self.PAD)) for i in range(b, b + 10)]
            for cid in ids:
                f = await sender.reply(cid)
                self.assertEqual(f["event_type"], "ack", brief(f))
            for i in range(b, b + 10):
                try:
                    await fast.chat("%05d %s" % (i, self.PAD), timeout=3 * SCALE)
                except AssertionError as e:
                    self.fail("fast reader did not get message %d of %d within 3 s (%s)" % (i, self.N, str(e)[:300]))
            worst = max(worst, time.monotonic() - tb)
        elapsed = time.monotonic() - t0
        self.assertEqual(fast.matching("messages_skipped"), [], "the fast reader lost messages")
        got = [f["data"]["content"][:5] for f in fast.frames if f.get("event_type") == "chat_message"]
        self.assertEqual(got, ["%05d" % i for i in range(self.N)], "fast reader: every message, in order")
        print("\n  slow client: fast reader got %d x 14 KB in %.2f s (worst batch %.2f s)"
              % (self.N, elapsed, worst), file=sys.stderr)

        # now the stalled one reads: it must learn that it lost messages (messages_skipped) or be closed 4008
        chats, skipped, code = [], None, None
        try:
            while True:
                f = await slow.recv_json(timeout=5 * SCALE)
                if f["event_type"] == "chat_message":
                    chats.append(int(f["data"]["content"][:5]))
                elif f["event_type"] == "messages_skipped":
                    skipped = f
                    break
        except Closed as c:
            code = c.args[0]
        except asyncio.TimeoutError:
            pass
        self.assertTrue(skipped is not None or code == 4008,
                        "stalled client: neither messages_skipped nor close 4008 (got %d of %d messages, close %s)"
                        % (len(chats), self.N, code))
        if skipped is not None:
            d = skipped["data"]
            self.assertIsInstance(d.get("count"), int, brief(skipped))
            self.assertGreaterEqual(d["count"], 1, brief(skipped))
            self.assertIsInstance(d.get("reason"), str, brief(skipped))
            # read the rest: what was delivered is in order, and delivered + skipped <= N
            try:
                while True:
                    f = await slow.recv_json(timeout=1)
                    if f["event_type"] == "chat_message":
                        chats.append(int(f["data"]["content"][:5]))
                    elif f["event_type"] == "messages_skipped":
                        d["count"] += f["data"]["count"]
            except (Closed, asyncio.TimeoutError):
                pass
            self.assertEqual(chats, sorted(chats), "stalled client: messages out of order")
            self.assertEqual(len(chats) + d["count"], self.N,
                             "stalled client: %d delivered + %d skipped != %d sent" % (len(chats), d["count"], self.N))
        # the gateway still serves the others
        await fast.ping()
        await sender.ping()
        st, _, _ = await ahttp(gw.port, "GET", "/healthz")
        self.assertEqual(st, 200)

    async def test_critical_overflow_closes_4008(self):
        """Whispers are never dropped: a stalled target that piles up more than the hard limit
        (4 x queue_max_bytes = 4 MiB by default) is closed with 4008; the sender is unaffected."""
        gw = self.make_gateway()
        try:
            room = uniq_room()
            slow = await self.stalled_reader(gw, room)
            sender = await self.connect(gw, "Sender", room=uniq_room())
            n = 450  # ~6.3 MB of whispers
            code = None
            for b in range(0, n, 25):
                ids = [await sender.send_cmd("whisper", target=slow.player_id, content="%05d %s" % (i, self.PAD))
                       for i in range(b, min(n, b + 25))]
                for cid in ids:
                    f = await sender.reply(cid)
                    # once the target is closed, it is offline: invalid_target is then right
                    if f["event_type"] == "error":
                        self.assertEqual(f["data"].get("code"), "invalid_target", brief(f))
            echoes = sender.matching("chat_message", channel="whisper")
            self.assertGreater(len(echoes), 0)
            code = await slow.wait_close(10 * SCALE)
            self.assertEqual(code, 4008, "stalled whisper target: close code")
            await sender.ping()
        finally:
            rc = gw.stop()
        self.assertEqual(rc, 0, "gateway exit status after SIGTERM\n" + gw.log_tail())


class SigtermTests(GatewayTestCase):
    async def test_sigterm_closes_4009_and_exits_0(self):
        gw = Gateway("term", [shared_nats().url], instance_id="gw-term").start()
        try:
            room = uniq_room()
            a = await self.connect(gw, "Alice", room=room)
            b = await self.connect(gw, "Bob")
            r = await self.raw(gw, "/ws?token=" + gw.token(uid("raw"), "Raw"))
            await r.recv_json()
            await a.ping()
            t0 = time.monotonic()
            gw.proc.send_signal(15)
            for c in (a, b):
                code = await c.wait_closed(timeout=5 * SCALE)
                self.assertEqual(code, 4009, "%s close code on SIGTERM (reason %r)" % (c.label, c.close_reason))
            self.assertEqual(await r.wait_close(5 * SCALE), 4009, "raw client close code on SIGTERM")
            rc = await asyncio.to_thread(gw.wait_exit, 10 * SCALE)
            self.assertIsNotNone(rc, "gateway still running 10 s after SIGTERM\n" + gw.log_tail())
            self.assertEqual(rc, 0, "exit status after SIGTERM\n" + gw.log_tail())
            print("\n  sigterm: drained and exited in %.2f s" % (time.monotonic() - t0), file=sys.stderr)
        finally:
            gw.stop()


if __name__ == "__main__":
    unittest.main()
