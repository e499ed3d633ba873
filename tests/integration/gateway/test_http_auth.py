# SPDX-License-Identifier: MIT
"""HTTP endpoints (/healthz, /readyz, /metrics, /auth/dev-login) and token refusals (401 before
the upgrade), plus start-up refusal of a short secret."""

import asyncio
import json
import os
import re
import time
import unittest

import websockets
import websockets.exceptions

from harness import (SCALE, START_ROOM, Client, Gateway, GatewayTestCase, ahttp, brief, gw_b,
                     gw_main, mint, shared_nats, uid)

SAMPLE_RE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?[0-9]+)?$')


class HttpTests(GatewayTestCase):
    async def test_healthz(self):
        st, _, body = await ahttp(gw_main().port, "GET", "/healthz")
        self.assertEqual(st, 200, body)

    async def test_readyz_when_nats_is_up(self):
        st, _, body = await ahttp(gw_main().port, "GET", "/readyz")
        self.assertEqual(st, 200, body)

    async def test_metrics_is_prometheus_text(self):
        gw = gw_main()
        c = await self.connect(gw, "Metric")  # at least one connection to count
        await c.ping()
        st, hdr, body = await ahttp(gw.port, "GET", "/metrics")
        self.assertEqual(st, 200, body[:200])
        self.assertTrue(hdr.get("content-type", "").startswith("text/plain"), hdr.get("content-type"))
        text = body.decode("utf-8")
        samples, types = [], 0
        for ln in text.splitlines():
            if not ln.strip():
                continue
            if ln.startswith("#"):
                self.assertRegex(ln, r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* ", "comment line")
                types += ln.startswith("# TYPE")
                continue
            self.assertRegex(ln, SAMPLE_RE, "not a Prometheus sample line")
            samples.append(ln)
        self.assertGreater(types, 0, "no # TYPE lines")
        self.assertTrue(any(s.startswith("mudbus_") for s in samples), "no mudbus_ samples:\n" + text[:500])

    async def test_unknown_path_is_404(self):
        st, _, _ = await ahttp(gw_main().port, "GET", "/no-such-thing")
        self.assertEqual(st, 404)

    async def test_dev_login_enabled(self):
        gw = gw_main()
        st, hdr, body = await ahttp(gw.port, "POST", "/auth/dev-login", body={"name": "Alice"})
        self.assertEqual(st, 200, body)
        d = json.loads(body)
        self.assertEqual(d.get("player_id"), "alice", d)
        self.assertEqual(d.get("name"), "Alice", d)
        self.assertIn("expires_at", d)
        self.assertIsInstance(d.get("token"), str)
        # the token works: welcome names the player
        c = await Client.connect(gw.ws_url(d["token"]), "devlogin")
        self._clients.append(c)
        self.assertEqual(c.welcome["data"].get("player_id"), "alice", brief(c.welcome))
        self.assertEqual(c.welcome["data"].get("player_name"), "Alice", brief(c.welcome))
        self.assertEqual(c.welcome["data"].get("room_id"), START_ROOM)
        # a dev-login token is an ordinary player token: no admin rights
        await c.err("forbidden", "system", content="dev-login is not admin")

    async def test_dev_login_many_on_one_connection(self):
        """Repeated logins on one keep-alive connection, an oversized body and a bad body:
        the gateway answers each and stays up (this once freed the request state too early)."""
        import http.client

        gw = gw_main()

        def run():
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5 * SCALE)
            statuses = []
            for i in range(20):
                conn.request("POST", "/auth/dev-login", body=json.dumps({"name": "Keep%d" % i}),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                statuses.append(r.status)
                if r.status == 200:
                    self.assertIn("token", json.loads(data))
            conn.close()
            big = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5 * SCALE)
            big.request("POST", "/auth/dev-login", body="a" * 5000)
            statuses.append(big.getresponse().status)
            big.close()
            return statuses

        statuses = await asyncio.get_running_loop().run_in_executor(None, run)
        self.assertEqual(statuses, [200] * 20 + [413], statuses)
        st, _, body = await ahttp(gw.port, "GET", "/healthz")
        self.assertEqual(st, 200, body)

    async def test_dev_login_disabled_is_404(self):
        st, _, body = await ahttp(gw_b().port, "POST", "/auth/dev-login", body={"name": "Alice"})
        self.assertEqual(st, 404, body)


class TokenTests(GatewayTestCase):
    async def test_valid_token_upgrades(self):
        gw = gw_main()
        r = await self.raw(gw, "/ws?token=" + gw.token(uid("ok"), "Okay"))
        self.assertEqual(r.status, 101)
        self.assertEqual(r.headers.get("sec-websocket-protocol"), "mudbus.v1")
        self.assertEqual(r.problems, [])
        w = await r.recv_json()
        self.assertEqual(w["event_type"], "welcome")

    async def test_refused_tokens_get_401_before_upgrade(self):
        gw = gw_main()
        pid = uid("tok")
        now = int(time.time())
        good = gw.token(pid, "Tok")
        h, p, s = good.split(".")
        tampered_payload = mint(pid, "Tok", adm=True).split(".")[1]
        cases = {
            "missing token": "/ws",
            "empty token": "/ws?token=",
            "garbage": "/ws?token=not-a-jwt",
            "forged (other secret)": "/ws?token=" + mint(pid, "Tok", secret=b"another-secret-that-is-long-enough-000"),
            "tampered payload": "/ws?token=%s.%s.%s" % (h, tampered_payload, s),
            "expired": "/ws?token=" + mint(pid, "Tok", exp=now - 60),
            "alg none": "/ws?token=" + mint(pid, "Tok", alg="none"),
            "alg HS512": "/ws?token=" + mint(pid, "Tok", alg="HS512"),
            "no exp": "/ws?token=" + mint(pid, "Tok", drop=("exp",)),
            "no sub": "/ws?token=" + mint(pid, "Tok", drop=("sub",)),
            "sub not token charset": "/ws?token=" + mint("a.b", "Tok"),
            "exp not a number": "/ws?token=" + mint(pid, "Tok", claims={"exp": "tomorrow"}),
        }
        for name, path in cases.items():
            with self.subTest(case=name):
                r = await self.raw(gw, path)
                self.assertEqual(r.status, 401, "%s: HTTP %s %r" % (name, r.status, getattr(r, "body", b"")[:200]))

    async def test_token_expiring_during_session_closes_4001(self):
        gw = gw_main()
        pid = uid("exp")
        c = await self.connect(gw, "Expiring", pid=pid, token=gw.token(pid, "Expiring", exp=int(time.time()) + 2))
        await c.ping()
        code = await c.wait_closed(timeout=6)
        self.assertEqual(code, 4001, "close code when the token expires during the session")

    async def test_library_client_sees_http_401(self):
        # python3-websockets reads the refusal as an HTTP/1.1 status (InvalidStatusCode 401)
        gw = gw_main()
        pid = uid("tok")
        now = int(time.time())
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            await websockets.connect(gw.ws_url(mint(pid, "Tok", exp=now - 60)), subprotocols=["mudbus.v1"],
                                     open_timeout=5)
        self.assertEqual(cm.exception.status_code, 401)


class StartupTests(unittest.TestCase):
    def test_short_secret_refused_at_start(self):
        gw = Gateway("shortsecret", [shared_nats().url], secret=b"x" * 31)
        gw.spawn()
        rc = gw.wait_exit(10)
        self.assertIsNotNone(rc, "gateway with a 31-byte secret is still running")
        self.assertNotEqual(rc, 0, "gateway with a 31-byte secret exited 0")
        self.assertFalse(os.path.exists(gw.port_file) and open(gw.port_file).read().strip(),
                         "gateway with a 31-byte secret wrote a port file")

    def test_no_secret_refused_at_start(self):
        gw = Gateway("nosecret", [shared_nats().url], secret=None)
        gw.spawn()
        rc = gw.wait_exit(10)
        self.assertIsNotNone(rc, "gateway without a secret is still running")
        self.assertNotEqual(rc, 0, "gateway without a secret exited 0")


if __name__ == "__main__":
    unittest.main()
