# SPDX-License-Identifier: MIT
"""
harness.py - integration-test harness for mudbus-gateway (PROTOCOL.md sections 3 and 4).

Runs the REAL gateway binary against a REAL nats-server and talks to it with real WebSocket
clients (Debian's python3-websockets 10.4) plus a small raw RFC 6455 client for the cases a
library client cannot produce (invalid UTF-8, oversized frames, a reader that stops reading).
Standard library otherwise.

Environment:
  MB_GATEWAY_BIN     gateway binary (default: <repo>/build/mudbus-gateway)
  MB_NATS_SERVER     nats-server binary (default: nats-server on PATH, /usr/sbin, /usr/bin)
  MB_TEST_TMP        scratch directory (kept); default: a temporary directory removed at exit
  MB_TIMEOUT_SCALE   multiply every timeout (slow or instrumented builds), default 1

Every process started here is killed at exit (atexit, SIGTERM/SIGINT handlers, and
PR_SET_PDEATHSIG so that even a SIGKILLed test runner leaves nothing behind).
"""

import asyncio
import atexit
import base64
import ctypes
import hashlib
import hmac
import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import websockets
import websockets.exceptions

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

SCALE = float(os.environ.get("MB_TIMEOUT_SCALE", "1") or "1")
TIMEOUT = 5.0 * SCALE  # waiting for a frame that must come
QUIET = 0.4 * SCALE
SETTLE = 0.3 * SCALE  # see GatewayTestCase.settle  # waiting to make sure a frame does NOT come (after a positive barrier)

START_ROOM = "earth_arkham_city_square"
FRAME_MAX = 16384  # bytes of one WebSocket message, both ways
SUBPROTOCOL = "mudbus.v1"
SECRET = b"mudbus-integration-test-secret-0123456789abcdef"  # 47 bytes >= 32

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")

CHAT_TYPES = ("say", "emote", "pose", "local", "global", "whisper", "party", "system")

LIMITS = {  # PROTOCOL.md section 3: content limits (characters) and rate limits (per minute)
    "say": (500, 15),
    "local": (500, 20),
    "global": (1000, 10),
    "whisper": (1000, 5),
    "emote": (200, 10),
    "pose": (100, 10),
    "party": (1000, 30),
    "system": (2000, 100),
}


def gateway_bin():
    b = os.environ.get("MB_GATEWAY_BIN") or os.path.join(REPO, "build", "mudbus-gateway")
    return os.path.abspath(b)


def nats_bin():
    b = os.environ.get("MB_NATS_SERVER")
    if b:
        return b
    for c in (shutil.which("nats-server"), "/usr/bin/nats-server", "/usr/sbin/nats-server"):
        if c and os.access(c, os.X_OK):
            return c
    raise RuntimeError("nats-server not found (set MB_NATS_SERVER)")


# --------------------------------------------------------------------------------------------
# scratch space and process bookkeeping

_own_tmp = not os.environ.get("MB_TEST_TMP")
TMP = os.environ.get("MB_TEST_TMP") or tempfile.mkdtemp(prefix="mb-gw-it-")
os.makedirs(TMP, exist_ok=True)

_procs = []  # every Popen we started and have not reaped


def _pdeathsig():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _kill_all():
    for p in list(_procs):
        if p.poll() is None:
            try:
                p.kill()  # by pid (Popen), never by name
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _procs.remove(p)
    if _own_tmp:
        shutil.rmtree(TMP, ignore_errors=True)


atexit.register(_kill_all)


def _on_signal(signum, frame):
    _kill_all()
    os._exit(128 + signum)


for _s in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_s, _on_signal)

_seq = itertools.count(1)


def uid(prefix="p"):
    """A unique token-charset id (per run and per call)."""
    return "%s%d%s%d" % (prefix, next(_seq), "".join(random.choice("abcdefghjkmnpqrstuvwxyz") for _ in range(4)), os.getpid() % 1000)


def uniq_room(subzone=None, room="hall"):
    """A unique room id {plane}_{zone}_{subzone}_{room}; pass subzone to put rooms together."""
    return "earth_%s_%s_%s" % (uid("z"), subzone or uid("s"), room)


def _read_tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(no log: %s)" % e


def wait_port(port, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


# --------------------------------------------------------------------------------------------
# nats-server


class NatsServer:
    def __init__(self, name="nats", jetstream=True):
        self.name = name
        self.jetstream = jetstream
        self.dir = tempfile.mkdtemp(prefix=name + "-", dir=TMP)
        self.store = os.path.join(self.dir, "js")
        self.log = os.path.join(self.dir, "nats.log")
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self, port=None, timeout=10.0):
        """Start on a free port (first time) or on `port` (restart on the same port)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        args = [nats_bin(), "-a", "127.0.0.1", "-p", str(port if port else -1),
                "--ports_file_dir", self.dir]
        if self.jetstream:
            args += ["-js", "-sd", self.store]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     preexec_fn=_pdeathsig)
        logf.close()
        _procs.append(self.proc)
        pf = os.path.join(self.dir, "nats-server_%d.ports" % self.proc.pid)
        deadline = time.monotonic() + timeout * SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nats-server exited with %s:\n%s" % (self.proc.returncode, _read_tail(self.log)))
            try:
                with open(pf) as f:
                    info = json.load(f)
                url = info["nats"][0]
                self.port = int(url.rsplit(":", 1)[1])
                if wait_port(self.port, 2):
                    return self
            except (OSError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.02)
        raise RuntimeError("nats-server did not write %s in time:\n%s" % (pf, _read_tail(self.log)))

    def stop(self, timeout=10.0):
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        if p in _procs:
            _procs.remove(p)

    def restart_same_port(self):
        port = self.port
        self.stop()
        return self.start(port=port)


class NatsPub:
    """A minimal NATS publisher (the plain text protocol over TCP), standing in for a game
    server that publishes into mudbus."""

    def __init__(self, url):
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), 5)
        self.f = self.sock.makefile("rb")
        info = self.f.readline()
        if not info.startswith(b"INFO "):
            raise RuntimeError("not a NATS server: %r" % info[:80])
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"mb-gw-it"}\r\nPING\r\n')
        self._pong()

    def _pong(self):
        while True:
            ln = self.f.readline()
            if not ln:
                raise RuntimeError("NATS connection closed")
            if ln.startswith(b"PONG"):
                return
            if ln.startswith(b"-ERR"):
                raise RuntimeError("NATS: %r" % ln)

    def publish(self, subject, payload):
        data = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
        self.sock.sendall(b"PUB %s %d\r\n%s\r\nPING\r\n" % (subject.encode(), len(data), data))
        self._pong()  # flushed: the server has it

    def request(self, subject, payload):
        """One request/reply (e.g. to the JetStream API); the reply's payload as bytes."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        inbox = "_INBOX.mbtest.%s" % uid("r")
        self.sock.sendall(b"SUB %s 1\r\nPUB %s %s %d\r\n%s\r\n"
                          % (inbox.encode(), subject.encode(), inbox.encode(), len(data), data))
        while True:
            ln = self.f.readline()
            if not ln:
                raise RuntimeError("NATS connection closed")
            if ln.startswith(b"-ERR"):
                raise RuntimeError("NATS: %r" % ln)
            if ln.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            if ln.startswith(b"MSG ") or ln.startswith(b"HMSG "):
                n = int(ln.split()[-1])
                body = self.f.read(n + 2)[:n]
                self.sock.sendall(b"UNSUB 1\r\n")
                return body

    def subscribe(self, subject, sid=7):
        """Subscribe (and flush); read what comes with next_msg. Use a NatsPub that only
        listens after this: publish and request do not expect messages in between."""
        self.sock.sendall(b"SUB %s %d\r\nPING\r\n" % (subject.encode(), sid))
        self._pong()

    def next_msg(self, timeout=5.0):
        """The next message of a subscription: (subject, payload as bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                ln = self.f.readline()
                if not ln:
                    raise RuntimeError("NATS connection closed")
                if ln.startswith(b"PING"):
                    self.sock.sendall(b"PONG\r\n")
                elif ln.startswith(b"MSG "):
                    parts = ln.split()
                    n = int(parts[-1])
                    return parts[1].decode(), self.f.read(n + 2)[:n]
        finally:
            self.sock.settimeout(5)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def now_rfc3339():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def chat_payload(**kw):
    p = {"message_id": uid("m"), "timestamp": now_rfc3339(), "sender_id": "npc_1", "sender_name": "Old Man",
         "channel": "say", "content": "hello"}
    p.update(kw)
    return p


def event_payload(event_type, event_data, **kw):
    p = {"message_id": uid("m"), "timestamp": now_rfc3339(), "event_type": event_type, "event_data": event_data}
    p.update(kw)
    return p


# --------------------------------------------------------------------------------------------
# mudbus-gateway


def ini_text(sections):
    out = []
    for sec, kv in sections.items():
        out.append("[%s]" % sec)
        for k, v in kv.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            out.append("%s = %s" % (k, v))
        out.append("")
    return "\n".join(out)


class Gateway:
    def __init__(self, name, nats_urls, *, dev_login=False, no_rate_limits=False, instance_id=None,
                 config=None, env=None, secret=SECRET, extra_args=()):
        self.name = name
        self.nats_urls = list(nats_urls)
        self.dev_login = dev_login
        self.no_rate_limits = no_rate_limits
        self.instance_id = instance_id
        self.config = config  # dict of sections, or None
        self.env = dict(env or {})
        self.secret = secret  # bytes for the env var, or None to not set it
        self.extra_args = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="gw-%s-" % name, dir=TMP)
        self.log = os.path.join(self.dir, "gateway.log")
        self.port_file = os.path.join(self.dir, "port")
        self.proc = None
        self.port = None

    def args(self):
        a = [gateway_bin(), "--listen", "127.0.0.1:0", "--port-file", self.port_file,
             "--nats", ",".join(self.nats_urls)]
        if self.dev_login:
            a.append("--dev-login")
        if self.no_rate_limits:
            a.append("--no-rate-limits")
        if self.instance_id:
            a += ["--instance-id", self.instance_id]
        if self.config is not None:
            cf = os.path.join(self.dir, "gateway.ini")
            with open(cf, "w") as f:
                f.write(self.config if isinstance(self.config, str) else ini_text(self.config))
            a += ["--config", cf]
        return a + self.extra_args

    def environment(self):
        e = {k: v for k, v in os.environ.items() if not k.startswith("MUDBUS_")}
        if self.secret is not None:
            e["MUDBUS_AUTH_JWT_SECRET"] = self.secret.decode()
        # One SQLite mute store for every gateway of a run (gateways share mutes through it,
        # as they would through PostgreSQL), never in the working directory.
        e["MUDBUS_STORE_SQLITE_PATH"] = os.path.join(TMP, "mutes.db")
        e.update(self.env)
        return e

    def spawn(self):
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        binary = gateway_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError("gateway binary %s is missing or not executable (set MB_GATEWAY_BIN)" % binary)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     env=self.environment(), preexec_fn=_pdeathsig)
        logf.close()
        _procs.append(self.proc)
        return self.proc

    def start(self, timeout=10.0):
        self.spawn()
        deadline = time.monotonic() + timeout * SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gateway %s exited with %s before listening; args %s\n--- log:\n%s"
                                   % (self.name, self.proc.returncode, self.args(), _read_tail(self.log)))
            try:
                with open(self.port_file) as f:
                    txt = f.read()
                if txt.endswith("\n") and txt.strip().isdigit():
                    self.port = int(txt.strip())
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("gateway %s wrote no port file in %.0fs\n--- log:\n%s" % (self.name, timeout, _read_tail(self.log)))

    def wait_exit(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.proc in _procs:
            _procs.remove(self.proc)
        return rc

    def stop(self, timeout=10.0):
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in _procs:
            _procs.remove(p)
        return p.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=40):
        return _read_tail(self.log, n)

    def ws_url(self, token=None, path="/ws"):
        if token is None:
            return "ws://127.0.0.1:%d%s" % (self.port, path)
        return "ws://127.0.0.1:%d%s?token=%s" % (self.port, path, token)

    def token(self, sub, name, **kw):
        kw.setdefault("secret", self.secret if self.secret is not None else SECRET)
        return mint(sub, name, **kw)


# Shared servers: started on first use, stopped at exit. Independent tests share them.
_shared = {}


def shared(key, factory):
    obj = _shared.get(key)
    if obj is None:
        obj = factory()
        _shared[key] = obj
    return obj


def shared_nats():
    return shared("nats", lambda: NatsServer("shared-nats").start())


def shared_gateway(key, **kw):
    """A gateway on the shared nats-server, keyed by `key` (same key -> same process)."""
    def make():
        return Gateway(key, [shared_nats().url], **kw).start()
    gw = shared(("gw", key), make)
    if not gw.alive():
        raise RuntimeError("shared gateway %s died (rc %s)\n--- log:\n%s" % (key, gw.proc.returncode, gw.log_tail()))
    return gw


def _stop_shared():
    for k, v in list(_shared.items()):
        try:
            v.stop()
        except Exception:
            pass


atexit.register(_stop_shared)


# --------------------------------------------------------------------------------------------
# tokens


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(sub, name, *, secret=SECRET, exp=None, adm=None, party=None, alg="HS256", header=None,
         claims=None, drop=()):
    """An HS256 JWT (or alg none / HS512 for refusal tests). `claims` overrides/extends, `drop`
    removes claims."""
    h = header or {"alg": alg, "typ": "JWT"}
    c = {"sub": sub, "name": name, "exp": int(time.time()) + 3600 if exp is None else exp}
    if adm is not None:
        c["adm"] = adm
    if party is not None:
        c["party"] = party
    if claims:
        c.update(claims)
    for k in drop:
        c.pop(k, None)
    si = b64u(json.dumps(h, separators=(",", ":")).encode()) + "." + b64u(json.dumps(c, separators=(",", ":")).encode())
    if alg == "none":
        sig = b""
    elif alg == "HS512":
        sig = hmac.new(secret, si.encode(), hashlib.sha512).digest()
    else:
        sig = hmac.new(secret, si.encode(), hashlib.sha256).digest()
    return si + "." + b64u(sig)


# --------------------------------------------------------------------------------------------
# HTTP


def http_request(port, method, path, body=None, headers=None, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SCALE)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = dict(headers or {}, **{"Content-Type": "application/json"})
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


async def ahttp(port, method, path, body=None, headers=None, timeout=5.0):
    return await asyncio.to_thread(http_request, port, method, path, body, headers, timeout)


async def metric(gw, name):
    """The value of the unlabelled series `name` in the gateway's /metrics."""
    st, _, body = await ahttp(gw.port, "GET", "/metrics")
    assert st == 200, "GET /metrics: %s" % st
    for ln in body.decode().splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    raise AssertionError("%s missing from /metrics" % name)


async def wait_metric(gw, name, at_least, timeout=TIMEOUT):
    """Poll `name` until it reaches at_least or timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = await metric(gw, name)
        if v >= at_least or time.monotonic() > deadline:
            return v
        await asyncio.sleep(0.02)


async def poll_http(port, path, want_status, timeout):
    """Poll until GET path returns want_status; returns (status, body) of the last try."""
    deadline = time.monotonic() + timeout * SCALE
    last = None
    while True:
        try:
            st, _, body = await ahttp(port, "GET", path, timeout=2)
            last = (st, body)
            if st == want_status:
                return last
        except OSError as e:
            last = (None, repr(e).encode())
        if time.monotonic() >= deadline:
            return last
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------------
# envelope checks (applied to every frame every client receives)


def envelope_problems(f, last_seq):
    """A list of contract violations of one server frame (PROTOCOL.md section 3)."""
    p = []
    if not isinstance(f, dict):
        return ["frame is not a JSON object: %r" % (f,)]
    et = f.get("event_type")
    if not isinstance(et, str) or not et:
        p.append("event_type missing or not a string")
    sq = f.get("sequence_number")
    if not isinstance(sq, int) or isinstance(sq, bool):
        p.append("sequence_number missing or not an integer")
    elif last_seq is not None and sq != last_seq + 1:
        p.append("sequence_number %d after %d (must grow by one per frame)" % (sq, last_seq))
    ts = f.get("timestamp")
    if not isinstance(ts, str) or not TS_RE.match(ts):
        p.append("timestamp %r is not RFC 3339 UTC" % (ts,))
    if "data" in f and not isinstance(f["data"], dict):
        p.append("data is not an object")
    if et != "pong" and not isinstance(f.get("data"), dict):
        p.append("data missing")
    return p


def brief(f):
    s = json.dumps(f, ensure_ascii=False)
    return s if len(s) <= 300 else s[:300] + "...(%d bytes)" % len(s)


# --------------------------------------------------------------------------------------------
# async WebSocket client (python3-websockets)


class Closed(Exception):
    pass


class Client:
    """A WebSocket client with a background reader. Received frames are kept in order; the
    expect* helpers consume the first unconsumed frame that matches, leaving others for later."""

    def __init__(self, ws, label):
        self.ws = ws
        self.label = label
        self.frames = []  # every frame, in order
        self.pending = []  # not yet consumed by an expect
        self.problems = []  # contract violations seen by the reader
        self.last_seq = None
        self.closed = False
        self.close_code = None
        self.close_reason = None
        self.welcome = None
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url, label, expect_welcome=True, **kw):
        kw.setdefault("subprotocols", [SUBPROTOCOL])
        kw.setdefault("open_timeout", TIMEOUT)
        kw.setdefault("close_timeout", 1)
        kw.setdefault("ping_interval", None)
        ws = await websockets.connect(url, **kw)
        c = cls(ws, label)
        if expect_welcome:
            f = await c.next_frame()
            if f.get("event_type") != "welcome":
                raise AssertionError("%s: first frame is not welcome: %s" % (label, brief(f)))
            c.welcome = f
        return c

    async def _read(self):
        try:
            async for msg in self.ws:
                self._accept(msg)
        except websockets.exceptions.ConnectionClosed:
            pass
        except Exception as e:  # pragma: no cover - reported as a problem
            self.problems.append("reader: %r" % (e,))
        finally:
            self.closed = True
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self._changed.set()

    def _accept(self, msg):
        if isinstance(msg, bytes):
            self.problems.append("binary frame (%d bytes)" % len(msg))
            return
        nbytes = len(msg.encode("utf-8"))
        if nbytes > FRAME_MAX:
            self.problems.append("server frame of %d bytes exceeds 16 KiB: %s" % (nbytes, msg[:200]))
        try:
            f = json.loads(msg)
        except ValueError:
            self.problems.append("frame is not JSON: %r" % msg[:200])
            return
        for p in envelope_problems(f, self.last_seq):
            self.problems.append("%s in %s" % (p, brief(f)))
        if isinstance(f, dict) and isinstance(f.get("sequence_number"), int):
            self.last_seq = f["sequence_number"]
        if not isinstance(f, dict):
            return
        self.frames.append(f)
        self.pending.append(f)
        self._changed.set()

    def _summary(self, n=8):
        if not self.pending:
            return "none"
        return "; ".join(brief(f) for f in self.pending[-n:])

    async def next_frame(self, timeout=TIMEOUT):
        return await self.wait_for(lambda f: True, "any frame", timeout)

    async def wait_for(self, pred, what, timeout=TIMEOUT):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, f in enumerate(self.pending):
                if pred(f):
                    del self.pending[i]
                    return f
            if self.closed:
                raise AssertionError("%s: connection closed (code %s %r) while waiting for %s; unconsumed: %s"
                                     % (self.label, self.close_code, self.close_reason, what, self._summary()))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("%s: no %s within %.1fs; unconsumed frames: %s"
                                     % (self.label, what, timeout, self._summary()))
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def expect(self, event_type, timeout=TIMEOUT, **data):
        def pred(f):
            if f.get("event_type") != event_type:
                return False
            d = f.get("data") or {}
            return all(d.get(k) == v for k, v in data.items())
        what = "%s frame%s" % (event_type, (" with " + json.dumps(data, ensure_ascii=False)) if data else "")
        if len(what) > 200:
            what = what[:200] + "..."
        return await self.wait_for(pred, what, timeout)

    async def chat(self, content, timeout=TIMEOUT, **data):
        return await self.expect("chat_message", timeout, content=content, **data)

    def matching(self, event_type, **data):
        """Every received frame (consumed or not) of that type whose data matches."""
        return [f for f in self.frames if f.get("event_type") == event_type
                and all((f.get("data") or {}).get(k) == v for k, v in data.items())]

    async def expect_none(self, event_type, within=QUIET, **data):
        """Fail if a frame of that type (with matching data) has arrived or arrives within `within`."""
        await asyncio.sleep(within)
        hits = [f for f in self.pending if f.get("event_type") == event_type
                and all((f.get("data") or {}).get(k) == v for k, v in data.items())]
        if hits:
            raise AssertionError("%s: unexpected %s frame(s): %s" % (self.label, event_type,
                                                                    "; ".join(brief(f) for f in hits)))

    async def expect_no_chat(self, content, within=QUIET):
        await self.expect_none("chat_message", within, content=content)

    def new_id(self):
        return "%s-%d" % (self.label, next(self._ids))

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj, ensure_ascii=False))

    async def send_cmd(self, type_, **fields):
        t = getattr(self, "test", None)
        if t is not None and type_ in CHAT_TYPES:
            await t.settle()
        elif t is not None and type_ == "join":
            t._touched()
        cid = fields.pop("id", None) or self.new_id()
        await self.send(dict({"type": type_, "id": cid}, **fields))
        return cid

    async def reply(self, cid, timeout=TIMEOUT):
        return await self.wait_for(
            lambda f: f.get("event_type") in ("ack", "error", "pong", "mutes") and (f.get("data") or {}).get("id") == cid,
            "ack/error for id %r" % cid, timeout)

    async def cmd(self, type_, timeout=TIMEOUT, **fields):
        cid = await self.send_cmd(type_, **fields)
        return await self.reply(cid, timeout)

    async def ok(self, type_, timeout=TIMEOUT, **fields):
        f = await self.cmd(type_, timeout, **fields)
        if f.get("event_type") != "ack":
            raise AssertionError("%s: %s %s was refused: %s" % (self.label, type_, brief(fields), brief(f)))
        return f

    async def err(self, code, type_, timeout=TIMEOUT, **fields):
        f = await self.cmd(type_, timeout, **fields)
        d = f.get("data") or {}
        if f.get("event_type") != "error" or d.get("code") != code:
            raise AssertionError("%s: %s %s: want error %s, got %s" % (self.label, type_, brief(fields)[:200], code, brief(f)))
        if not isinstance(d.get("message"), str) or not d["message"]:
            raise AssertionError("%s: error frame without a message: %s" % (self.label, brief(f)))
        return f

    async def ping(self, timeout=TIMEOUT):
        """A ping/pong round trip: proves the connection is still open and served."""
        cid = await self.send_cmd("ping")
        f = await self.wait_for(lambda f: f.get("event_type") in ("pong", "error", "ack")
                                and ((f.get("data") or {}).get("id") in (cid, None)), "pong", timeout)
        if f.get("event_type") != "pong":
            raise AssertionError("%s: ping answered with %s" % (self.label, brief(f)))
        return f

    async def wait_closed(self, timeout=TIMEOUT):
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: still open after %.1fs" % (self.label, timeout))
        return self.close_code

    async def close(self):
        if not self.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 2)
            except Exception:
                pass
        if not self._reader.done():
            self._reader.cancel()
            try:
                await self._reader
            except BaseException:
                pass


# --------------------------------------------------------------------------------------------
# raw RFC 6455 client: handshake status, arbitrary frames, a reader that can stop reading


class RawWS:
    OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

    def __init__(self, reader, writer, status, headers):
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers
        self.close_code = None
        self.last_seq = None
        self.problems = []

    @classmethod
    async def open(cls, port, path, subprotocol=SUBPROTOCOL, rcvbuf=None, limit=1 << 16, timeout=TIMEOUT):
        """Handshake; returns a RawWS whose .status is the HTTP status (101 on success)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, port, key))
        if subprotocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % subprotocol
        writer.write((req + "\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        self = cls(reader, writer, status, headers)
        self.status_line = lines[0]
        if status == 101:
            want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            if headers.get("sec-websocket-accept") != want:
                self.problems.append("bad Sec-WebSocket-Accept %r" % headers.get("sec-websocket-accept"))
        else:
            # read whatever body there is (bounded) so the caller can show it
            try:
                n = int(headers.get("content-length", "0"))
                self.body = await asyncio.wait_for(reader.readexactly(n), 2) if n else b""
            except Exception:
                self.body = b""
        return self

    async def send_frame(self, opcode, payload, fin=True):
        hdr = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.writer.write(hdr + mask + masked)
        await self.writer.drain()

    async def send_text(self, data):
        await self.send_frame(self.OP_TEXT, data.encode() if isinstance(data, str) else data)

    async def recv_frame(self, timeout=TIMEOUT):
        async def rd():
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            if b1 & 0x80:
                self.problems.append("server frame is masked")
                mask = await self.reader.readexactly(4)
                data = bytes(b ^ mask[i & 3] for i, b in enumerate(await self.reader.readexactly(n)))
            else:
                data = await self.reader.readexactly(n)
            return b0 & 0x0F, bool(b0 & 0x80), data
        return await asyncio.wait_for(rd(), timeout)

    async def recv_json(self, timeout=TIMEOUT):
        """The next text message as JSON; answers pings; raises Closed(code) on a close frame or EOF."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                op, fin, data = await self.recv_frame(max(0.01, deadline - loop.time()))
            except asyncio.IncompleteReadError:
                raise Closed(None)
            except ConnectionError:
                raise Closed(None)
            if op == self.OP_CLOSE:
                self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                try:
                    await self.send_frame(self.OP_CLOSE, data[:2])
                except Exception:
                    pass
                raise Closed(self.close_code)
            if op == self.OP_PING:
                await self.send_frame(self.OP_PONG, data)
                continue
            if op == self.OP_PONG:
                continue
            if op != self.OP_TEXT or not fin:
                self.problems.append("unexpected frame opcode %d fin %s" % (op, fin))
                continue
            if len(data) > FRAME_MAX:
                self.problems.append("server frame of %d bytes exceeds 16 KiB" % len(data))
            f = json.loads(data.decode("utf-8"))
            for p in envelope_problems(f, self.last_seq):
                self.problems.append(p + " in " + brief(f))
            if isinstance(f, dict) and isinstance(f.get("sequence_number"), int):
                self.last_seq = f["sequence_number"]
            return f

    async def recv_until(self, pred, what, timeout=TIMEOUT):
        """The next JSON frame for which pred(frame) is true, skipping others (e.g. player_entered
        of other players in the start room)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        skipped = []
        while True:
            rem = deadline - loop.time()
            if rem <= 0:
                raise AssertionError("raw: no %s within %.1fs; skipped: %s" % (what, timeout, "; ".join(skipped[-5:])))
            try:
                f = await self.recv_json(rem)
            except asyncio.TimeoutError:
                continue
            if pred(f):
                return f
            skipped.append(brief(f))

    async def recv_type(self, event_type, timeout=TIMEOUT):
        return await self.recv_until(lambda f: f.get("event_type") == event_type, event_type, timeout)

    async def wait_close(self, timeout=TIMEOUT):
        """Read (discarding) until a close frame or EOF; returns the close code (None on EOF
        without a close frame)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            rem = deadline - loop.time()
            if rem <= 0:
                raise AssertionError("connection still open after %.1fs" % timeout)
            try:
                await self.recv_json(rem)
            except Closed as c:
                return c.args[0]
            except asyncio.TimeoutError:
                raise AssertionError("connection still open after %.1fs" % timeout)

    def abort(self):
        try:
            self.writer.transport.abort()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
# test base class


class GatewayTestCase(unittest.IsolatedAsyncioTestCase):
    """Creates clients that are closed after the test, and fails the test when any client saw
    a frame that breaks the envelope contract (JSON object, event_type, consecutive
    sequence_number, RFC 3339 timestamp, data object)."""

    async def asyncSetUp(self):
        asyncio.get_running_loop().slow_callback_duration = 5.0  # no debug-mode noise
        self._clients = []
        self._raws = []
        self.settle_enabled = True
        self._last_setup = 0.0

    async def asyncTearDown(self):
        for c in self._clients:
            await c.close()
        for r in self._raws:
            r.abort()
        problems = ["%s: %s" % (c.label, p) for c in self._clients for p in c.problems]
        problems += ["raw: %s" % p for r in self._raws for p in r.problems]
        if problems:
            self.fail("envelope contract violations:\n  " + "\n  ".join(problems[:20]))

    async def connect(self, gw, name="Alice", pid=None, room=None, label=None, token=None, **claims):
        """Connect a player (a fresh unique id unless pid is given) and wait for the welcome;
        with room, join it and wait for the ack."""
        pid = pid or uid(re.sub(r"[^a-z]", "", name.lower())[:6] or "p")
        token = token or gw.token(pid, name, **claims)
        c = await Client.connect(gw.ws_url(token), label or "%s(%s)" % (name, pid))
        self._touched()
        c.test = self
        self._clients.append(c)
        c.player_id = pid
        c.name = name
        if room:
            await c.ok("join", room_id=room)
        return c

    async def settle(self):
        """Wait until SETTLE has passed since the last connect or join of this test (a no-op when
        it has), so that fresh NATS subscriptions are live. The contract says a player is reachable
        as soon as the welcome / join ack arrived; test_cluster's *_right_after_* tests check
        exactly that and turn settling off (self.settle_enabled = False). Every other test settles
        automatically before its first chat command after a connect or join, so that this one
        known race does not make unrelated tests fail."""
        if not self.settle_enabled:
            return
        wait = self._last_setup + SETTLE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _touched(self):
        self._last_setup = time.monotonic()

    async def raw(self, gw, path, **kw):
        r = await RawWS.open(gw.port, path, **kw)
        self._raws.append(r)
        return r

    def assertChat(self, frame, **want):
        d = frame.get("data") or {}
        for k, v in want.items():
            self.assertEqual(d.get(k), v, "data.%s in %s" % (k, brief(frame)))
        for k in ("message_id", "channel", "sender_id", "player_name", "content", "message", "timestamp"):
            self.assertIn(k, d, "chat_message data lacks %s: %s" % (k, brief(frame)))
        self.assertRegex(d["timestamp"], TS_RE, "data.timestamp in %s" % brief(frame))


# the shared gateways (on the shared nats-server)
# The race tests join dozens of times a minute: the join limit (default 30) is raised here and
# tested on its own gateway in test_limits.
RACE_ENV = {"MUDBUS_LIMITS_JOIN_PER_MINUTE": "100000"}


def gw_main():
    """Default limits (joins excepted), --dev-login, instance id gw-main."""
    return shared_gateway("main", instance_id="gw-main", dev_login=True, env=RACE_ENV)


def gw_b():
    """A second gateway on the same NATS, without --dev-login, instance id gw-b."""
    return shared_gateway("b", instance_id="gw-b", env=RACE_ENV)


# --------------------------------------------------------------------------------------------
# PostgreSQL (the mute store shared by several gateways; issue 6)
#
# A real PostgreSQL server (Debian's postgresql-15: /usr/lib/postgresql/*/bin) run as the
# postgres user: initdb into a temporary directory owned by postgres (outside TMP, which is
# private to root), pg_ctl start on a free 127.0.0.1 port with the socket in that directory,
# createdb mudbus. stop() / start() again keep the port (the "store is down" tests). Every
# server is stopped at exit by pg_ctl (then by the postmaster's pid), and a watchdog process
# stops it even when the test runner is SIGKILLed. A server that cannot start raises: the test
# fails, it is never skipped.


def pg_bindir():
    """The directory with initdb and pg_ctl (MB_PG_BINDIR, else the newest
    /usr/lib/postgresql/*/bin that has both)."""
    d = os.environ.get("MB_PG_BINDIR")
    cands = [d] if d else sorted(
        (p for p in (os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql"))
         if os.path.isdir(p)) if os.path.isdir("/usr/lib/postgresql") else [],
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[-2].split(".")], reverse=True)
    for c in cands:
        if all(os.access(os.path.join(c, b), os.X_OK) for b in ("initdb", "pg_ctl", "createdb", "psql")):
            return c
    raise RuntimeError("PostgreSQL not found: no /usr/lib/postgresql/*/bin with initdb and pg_ctl "
                       "(apt-get install postgresql; or set MB_PG_BINDIR)")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_pg_servers = []


class PostgresServer:
    USER = "postgres"
    DB = "mudbus"

    def __init__(self, name="pg"):
        import pwd
        self.name = name
        self.bindir = pg_bindir()
        try:
            pw = pwd.getpwnam(self.USER)
        except KeyError:
            raise RuntimeError("no %s user (apt-get install postgresql)" % self.USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.dir = tempfile.mkdtemp(prefix="mb-pg-%s-" % name)
        os.chown(self.dir, self.uid, self.gid)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = None
        self.initialized = False
        self.running = False
        self.watchdog = None
        _pg_servers.append(self)

    @property
    def url(self):
        return "postgresql://%s@127.0.0.1:%d/%s" % (self.USER, self.port, self.DB)

    def _run(self, *argv, timeout=60, check=True):
        """Run a PostgreSQL program as the postgres user (runuser), in the server's directory."""
        cmd = ["runuser", "-u", self.USER, "--", os.path.join(self.bindir, argv[0])] + list(argv[1:])
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
               "PGCONNECT_TIMEOUT": "5"}
        r = subprocess.run(cmd, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout * SCALE)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s%s\n--- postgres log:\n%s"
                               % (" ".join(cmd), r.returncode, r.stdout.decode(errors="replace"),
                                  r.stderr.decode(errors="replace"), _read_tail(self.log, 20)))
        return r

    def _start_watchdog(self):
        """Stops the server and removes its directory once this process is gone, however it ended."""
        if self.watchdog is not None:
            return
        script = ('while kill -0 %d 2>/dev/null; do sleep 0.5; done; '
                  'runuser -u %s -- %s -D %s stop -m immediate -w -t 10 >/dev/null 2>&1; rm -rf %s'
                  % (os.getpid(), self.USER, os.path.join(self.bindir, "pg_ctl"), self.data, self.dir))
        self.watchdog = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True, cwd="/")

    def start(self, timeout=30.0):
        """initdb (first time) and start, on a free port the first time and on the same port
        after stop()."""
        assert not self.running, "already running"
        if not self.initialized:
            self._run("initdb", "-D", self.data, "-A", "trust", "-U", self.USER, "-E", "UTF8",
                      "--locale=C.UTF-8", "-N", timeout=120)
            self.initialized = True
            self._start_watchdog()
        first = self.port is None
        if first:
            self.port = free_port()
        opts = ("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
                % (self.port, self.dir))
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", str(int(timeout * SCALE)),
                  "start", timeout=timeout + 10)
        self.running = True
        if not wait_port(self.port, 5 * SCALE):
            raise RuntimeError("postgres %s is not listening on %d:\n%s" % (self.name, self.port, _read_tail(self.log)))
        if first:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, self.DB)
        return self

    def stop(self, mode="fast"):
        """Stop the server (its port stays reserved for start())."""
        if not self.running:
            return
        r = self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "20", "stop", timeout=30, check=False)
        if r.returncode != 0:
            self._kill_postmaster()
        self.running = False

    def _kill_postmaster(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
            os.kill(pid, signal.SIGKILL)  # the postmaster, by its pid
        except (OSError, ValueError):
            pass

    def psql(self, sql):
        """Run SQL on the mudbus database; returns psql's unaligned, tuples-only output."""
        r = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, "-d", self.DB,
                      "-v", "ON_ERROR_STOP=1", "-At", "-c", sql, timeout=30)
        return r.stdout.decode().strip()

    def close(self):
        """Stop (immediate), keep the log in TMP, remove the directory, end the watchdog."""
        if self.running:
            r = self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "10", "stop",
                          timeout=20, check=False)
            if r.returncode != 0:
                self._kill_postmaster()
            self.running = False
        try:
            shutil.copy(self.log, os.path.join(TMP, "postgres-%s.log" % self.name))
        except OSError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.watchdog is not None and self.watchdog.poll() is None:
            try:
                os.killpg(self.watchdog.pid, signal.SIGKILL)  # its own session: the sh and its sleep
            except OSError:
                pass
            self.watchdog.wait(5)
        self.watchdog = None


def _close_pg_servers():
    for s in list(_pg_servers):
        try:
            s.close()
        except Exception:
            pass
        _pg_servers.remove(s)


atexit.register(_close_pg_servers)  # registered after _kill_all: runs before TMP is removed


def shared_postgres():
    """One PostgreSQL server for the tests of a run (started on first use)."""
    return shared("postgres", lambda: PostgresServer("shared").start())


def pg_env(pg):
    """Gateway environment for the PostgreSQL mute store."""
    return {"MUDBUS_STORE_BACKEND": "postgres", "MUDBUS_STORE_POSTGRES_URL": pg.url}
