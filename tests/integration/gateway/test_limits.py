# SPDX-License-Identifier: MIT
"""Rate limits and configuration: rate_limited with retry_after_ms ([limits] say_per_minute = 2
in a config file), the default say limit (15 per minute), --no-rate-limits, [gateway] start_room,
[auth] jwt_secret_file, an environment override (MUDBUS_LIMITS_EMOTE_MAX_CHARS), admission
in bursts ([gateway] accept_batch), and the start room as a quiet lobby or not
([gateway] start_room_presence)."""

import asyncio
import os
import signal
import unittest

from harness import (SECRET, QUIET, Gateway, GatewayTestCase, brief, gw_main, metric, shared,
                     shared_nats, uid, uniq_room)

CFG_SECRET = b"config-file-secret-for-mudbus-tests-0123456789"
CFG_START = "earth_innsmouth_docks_pier"


def gw_cfg():
    def make():
        gw = Gateway("cfg", [shared_nats().url], instance_id="gw-cfg", secret=None,
                     env={"MUDBUS_LIMITS_EMOTE_MAX_CHARS": "10"})
        sf = os.path.join(gw.dir, "jwt.secret")
        with open(sf, "wb") as f:
            f.write(CFG_SECRET + b"\n")
        gw.config = {"gateway": {"start_room": CFG_START},
                     "limits": {"say_per_minute": 2, "join_per_minute": 3, "rate_limits": True},
                     "auth": {"jwt_secret_file": sf}}
        gw.secret = None
        return gw.start()
    return shared("gw-cfg", make)


class LimitTests(GatewayTestCase):
    async def connect_cfg(self, name, room=None):
        gw = gw_cfg()
        pid = uid(name.lower())
        return await self.connect(gw, name, pid=pid, room=room, token=gw.token(pid, name, secret=CFG_SECRET))

    async def test_join_rate_limited(self):
        a = await self.connect_cfg("Alice")
        for i in range(3):
            await a.ok("join", room_id=uniq_room())
        f = await a.err("rate_limited", "join", room_id=uniq_room())
        ra = f["data"].get("retry_after_ms")
        self.assertIsInstance(ra, int, "retry_after_ms: %s" % brief(f))
        self.assertTrue(1 <= ra <= 20000, "retry_after_ms %r not in 1..20000" % ra)
        self.assertIn("join", f["data"]["message"], brief(f))

    async def test_rate_limited_with_retry_after(self):
        room = uniq_room()
        a = await self.connect_cfg("Alice", room)
        b = await self.connect_cfg("Bob", room)
        m = ["rl %d %s" % (i, uid()) for i in range(3)]
        await a.ok("say", content=m[0])
        await a.ok("say", content=m[1])
        f = await a.err("rate_limited", "say", content=m[2])
        ra = f["data"].get("retry_after_ms")
        self.assertIsInstance(ra, int, "retry_after_ms: %s" % brief(f))
        # 2 per minute: the next token is at most 30 s away
        self.assertTrue(1 <= ra <= 30000, "retry_after_ms %r not in 1..30000" % ra)
        await b.chat(m[0])
        await b.chat(m[1])
        await b.expect_no_chat(m[2])
        # per channel and per player: emote and another player's say still pass
        await a.ok("emote", content="waves")
        await b.ok("say", content="bob %s" % uid())
        await a.ping()

    async def test_config_start_room_and_secret_file(self):
        a = await self.connect_cfg("Alice")
        self.assertEqual(a.welcome["data"].get("room_id"), CFG_START, brief(a.welcome))
        self.assertEqual(a.welcome["data"].get("gateway"), "gw-cfg", brief(a.welcome))
        # a token signed with another secret (the env secret of the other gateways) is refused
        r = await self.raw(gw_cfg(), "/ws?token=" + gw_cfg().token(uid("x"), "X", secret=SECRET))
        self.assertEqual(r.status, 401)

    async def test_env_overrides_limit(self):
        a = await self.connect_cfg("Alice")
        await a.ok("emote", content="x" * 10)
        await a.err("too_long", "emote", content="x" * 11)

    async def test_default_say_rate_limit_is_15_per_minute(self):
        a = await self.connect(gw_main(), "Alice", room=uniq_room())
        for i in range(15):
            await a.ok("say", content="burst %d" % i)
        f = await a.err("rate_limited", "say", content="burst 15")
        self.assertIsInstance(f["data"].get("retry_after_ms"), int, brief(f))
        self.assertTrue(1 <= f["data"]["retry_after_ms"] <= 4000, brief(f))  # 15/min: a token every 4 s

    async def test_no_rate_limits_flag(self):
        def make():
            return Gateway("norl", [shared_nats().url], no_rate_limits=True, instance_id="gw-norl").start()
        gw = shared("gw-norl", make)
        room = uniq_room()
        a = await self.connect(gw, "Alice", room=room)
        b = await self.connect(gw, "Bob", room=room)
        ids = [await a.send_cmd("say", content="free %d" % i) for i in range(25)]
        for cid in ids:
            f = await a.reply(cid)
            self.assertEqual(f["event_type"], "ack", brief(f))
        for i in range(25):
            await b.chat("free %d" % i)
        await a.expect_none("error", within=QUIET)


def gw_batch():
    """A gateway that accepts 2 connections per loop iteration."""
    def make():
        gw = Gateway("batch", [shared_nats().url], instance_id="gw-batch")
        gw.config = {"gateway": {"accept_batch": 2}}
        return gw.start()
    return shared("gw-batch", make)


class AdmissionTests(GatewayTestCase):
    async def test_burst_beyond_accept_batch_is_served_in_full(self):
        # 120 connections at once against 2 accepts per loop iteration: the rest wait in the
        # backlog and are taken in later iterations; every one is welcomed, joins, and hears
        # the others' chat (nothing is refused or lost). The gateway is stopped (SIGSTOP) while
        # the clients connect, so that all of them are in its backlog when it resumes.
        gw = gw_batch()
        acc0 = await metric(gw, "mudbus_gateway_accepted_total")
        def0 = await metric(gw, "mudbus_gateway_accept_deferred_total")
        room = uniq_room()
        n = 120
        os.kill(gw.proc.pid, signal.SIGSTOP)
        try:
            tasks = [asyncio.ensure_future(self.connect(gw, "P%d" % i, room=room))
                     for i in range(n)]
            await asyncio.sleep(0.5)
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        clients = await asyncio.gather(*tasks)
        self.assertEqual(len(clients), n)
        for c in clients:
            self.assertEqual(c.welcome["event_type"], "welcome", brief(c.welcome))
        line = "burst %s" % uid()
        await clients[0].ok("say", content=line)
        for c in clients[1:]:
            await c.chat(line)
        acc1 = await metric(gw, "mudbus_gateway_accepted_total")
        def1 = await metric(gw, "mudbus_gateway_accept_deferred_total")
        # n WebSockets plus the /metrics requests themselves
        self.assertGreaterEqual(acc1 - acc0, n)
        self.assertGreater(def1 - def0, 0, "no iteration used its whole batch of 2")

    async def test_loop_busy_histogram_is_exported(self):
        gw = gw_batch()
        await self.connect(gw, "Alice", room=uniq_room())
        self.assertGreater(await metric(gw, "mudbus_gateway_loop_busy_seconds_count"), 0)


def thread_policies(pid):
    """{tid: scheduling policy} of a process's threads (0 SCHED_OTHER, 3 SCHED_BATCH)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # ended meanwhile
        out[int(tid)] = int(fields[38])  # field 41 of stat(5), counted after "(comm)"
    return out


class ProcessSetupTests(GatewayTestCase):
    async def test_loop_runs_normal_and_helpers_batch(self):
        """The helper threads (workers, libmudbus's and nats.c's) are SCHED_BATCH, so that
        waking one does not preempt the loop thread; the loop thread stays SCHED_OTHER."""
        gw = gw_main()
        await self.connect(gw, "Alice", room=uniq_room())
        pol = thread_policies(gw.proc.pid)
        self.assertEqual(pol.get(gw.proc.pid), 0, "the loop thread: %s" % pol)
        batch = [t for t, p in pol.items() if p == 3]
        # at least the two worker pools (4 threads each by default) and the NATS client's thread
        self.assertGreaterEqual(len(batch), 9, pol)

class DescriptorTableTests(GatewayTestCase):
    async def test_descriptor_table_is_grown_at_start(self):
        """The kernel doubles a process's descriptor table when a descriptor past its end is
        allocated, and in a process with several threads each doubling waits for an RCU grace
        period (8-20 ms on a VM), inside accept() on the loop. The gateway grows the table once
        at start, for max_connections and a margin, up to its open-file limit."""
        gw = Gateway("fdtable", [shared_nats().url], instance_id="gw-fdtable",
                     config={"gateway": {"max_connections": 3000}}).start()
        self.addCleanup(gw.stop)
        await self.connect(gw, "Alice")
        with open("/proc/%d/limits" % gw.proc.pid) as f:
            soft = int(next(ln for ln in f if ln.startswith("Max open files")).split()[3])
        with open("/proc/%d/status" % gw.proc.pid) as f:
            size = int(next(ln for ln in f if ln.startswith("FDSize:")).split()[1])
        want = min(3000 + 256, soft - 1) + 1
        self.assertGreaterEqual(size, want, "FDSize %d: the table was not grown at start" % size)
        with open("/proc/%d/status" % gw.proc.pid) as f:
            self.assertGreater(int(next(ln for ln in f if ln.startswith("Threads:")).split()[1]), 1)


def gw_lobby(presence):
    """A gateway with a start room of its own, presence there on or left at its default (off)."""
    def make():
        gw = Gateway("lobby-%s" % presence, [shared_nats().url],
                     instance_id="gw-lobby-%s" % presence)
        cfg = {"start_room": "earth_lobby_%s_hall_%s" % (presence, uid().lower())}
        if presence == "on":
            cfg["start_room_presence"] = True
        gw.config = {"gateway": cfg}
        return gw.start()
    return shared("gw-lobby-%s" % presence, make)


class PresenceTests(GatewayTestCase):
    async def test_start_room_is_a_quiet_lobby_by_default(self):
        gw = gw_lobby("default")
        a = await self.connect(gw, "Alice")
        b = await self.connect(gw, "Bob")
        lobby = a.welcome["data"]["room_id"]
        await b.ok("join", room_id=uniq_room())
        await a.expect_none("player_entered", player_id=b.player_id)
        await a.expect_none("player_left", player_id=b.player_id)
        # Chat in the lobby still works, and so does presence in other rooms.
        c = await self.connect(gw, "Cora")
        await a.expect_none("player_entered", player_id=c.player_id)
        line = "lobby %s" % uid()
        await a.ok("say", content=line)
        await c.chat(line)
        room = uniq_room()
        await a.ok("join", room_id=room)
        await c.ok("join", room_id=room)
        await a.expect("player_entered", player_id=c.player_id, room_id=room)
        self.assertTrue(lobby.startswith("earth_lobby_default_hall"), lobby)

    async def test_start_room_presence_on_announces_arrivals_and_departures(self):
        gw = gw_lobby("on")
        a = await self.connect(gw, "Alice")
        lobby = a.welcome["data"]["room_id"]
        b = await self.connect(gw, "Bob")
        await a.expect("player_entered", player_id=b.player_id, room_id=lobby)
        await b.ok("join", room_id=uniq_room())
        await a.expect("player_left", player_id=b.player_id, room_id=lobby)


if __name__ == "__main__":
    unittest.main()
