"""No zombies: 10,000 random create/drop/resume/expire cycles under a Clock leave nothing behind."""

from __future__ import annotations

import random
import socket
from typing import Any

from twisted.internet.testing import StringTransport

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.session.hook import HookRunner
from smbridge.session.session import State
from smbridge.testing import RouterHarness
from smbridge.transports.connection import ClientConnectionFactory, enable_keepalive

CYCLES = 10_000
QUEUES = ("Sales", "Support", "Billing")


class CountingHook:
    def __init__(self) -> None:
        self.created = 0
        self.destroyed: dict[str, int] = {}

    def create(self, info: Any, control: Any) -> None:
        self.created += 1

    def destroy(self, session: Any, reason: str) -> None:
        self.destroyed[session.id] = self.destroyed.get(session.id, 0) + 1


class AutoNotifier:
    """Answers whatever the bridge asks upstream, and keeps count of live subscriptions."""

    def __init__(self, h: RouterHarness) -> None:
        self.h = h
        self.subs: dict[int, str] = {}  # sub id -> topic, while subscribed

    def pump(self) -> None:
        h = self.h
        for _ in range(10):
            frames = h.upstream()
            if not frames:
                return
            for f in frames:
                key = (f.object_type, f.event_id)
                body = f.parsed()
                if key == c.LINK_AUTHENTICATE:
                    user = body["user"]
                    h.notifier.answer(f, {"user": {"id": user}, "location": "Indianapolis"})
                elif key == c.LINK_SUBSCRIBE:
                    topic = body["topic"]
                    prefix, _, name = topic.partition(":")
                    snap = (
                        {"queue": name, "interactions": []}
                        if prefix == "queue"
                        else {"user": name, "interactions": []}
                    )
                    self.subs[body["sub"]] = topic
                    h.notifier.answer(f, {"snapshot": snap})
                elif key == c.LINK_UNSUBSCRIBE:
                    self.subs.pop(body["sub"], None)
                    h.notifier.answer(f, {})


def test_random_cycles_leave_no_subscription_buffer_timer_or_entry():
    """After 10,000 random cycles and the last expiry, every per-session resource is gone."""
    rng = random.Random(20261121)
    h = RouterHarness()
    hook = CountingHook()
    h.router.hook = HookRunner(hook, h.clock, 5.0)
    h.registry.linger = 30.0
    auto = AutoNotifier(h)
    factory = ClientConnectionFactory(h.router, h.batcher)
    conns: list[tuple[Any, StringTransport]] = []  # connections still open
    sessions: dict[str, Any] = {}  # every session ever created -> (id, token)
    tokens: dict[str, str] = {}
    rid = 0

    def connect() -> tuple[Any, StringTransport]:
        conn = factory.connection(rng.choice(("tls", "ws")))
        t = StringTransport()
        conn.makeConnection(t)
        conns.append((conn, t))
        return conn, t

    def collect(t: StringTransport) -> None:
        for frame in h.received(t):
            if frame.kind == Kind.RESPONSE and (frame.object_type, frame.event_id) in (
                c.CREATE_SESSION,
            ):
                body = frame.parsed()
                tokens[body["sessionId"]] = body["resumeToken"]
        t.clear()

    ops = ("create", "drop", "resume", "expire", "watch", "destroy", "event", "badresume")
    weights = (5, 4, 4, 2, 3, 1, 3, 1)
    for _ in range(CYCLES):
        op = rng.choices(ops, weights)[0]
        rid += 1
        live = [s for s in h.registry]
        if op == "create":
            conn, t = connect()
            body = {
                "user": f"u{rng.randrange(40)}",
                "password": "demo",
                "clientId": f"pc{rng.randrange(3)}",
                "sessionTimeout": rng.choice((60, 90, 120)),
                "notifyImminent": rng.random() < 0.5,
            }
            h.send(conn, c.CREATE_SESSION, rid, body)
            auto.pump()
            collect(t)
            if conn.session is not None:
                sessions[conn.session.id] = conn.session
        elif op == "drop" and conns:
            conn, t = conns.pop(rng.randrange(len(conns)))
            conn.connectionLost(None)
        elif op in ("resume", "badresume") and live:
            session = rng.choice(live)
            conn, t = connect()
            token = tokens.get(session.id, "")
            if op == "badresume":
                token = "!" + token[1:]  # "!" is not in the token alphabet
            received = rng.randint(0, session.replay.count)
            h.send(
                conn,
                c.RESUME_SESSION,
                rid,
                {"sessionId": session.id, "resumeToken": token, "received": received},
            )
            reply = h.received(t)[0]
            if op == "badresume":
                assert reply.parsed()["code"] == "logon-failed"
            else:
                assert reply.parsed()["resumed"] is True and conn.session is session
        elif op == "expire":
            h.clock.advance(rng.choice((1, 5, 20, 31, 61, 125)))
            auto.pump()
        elif op == "watch":
            attached = [(cn, t) for cn, t in conns if cn.session is not None]
            if attached:
                conn, t = rng.choice(attached)
                h.send(conn, c.WATCH_QUEUE, rid, {"queue": rng.choice(QUEUES)})
                auto.pump()
        elif op == "destroy":
            attached = [(cn, t) for cn, t in conns if cn.session is not None]
            if attached:
                conn, t = rng.choice(attached)
                h.send(conn, c.DESTROY_SESSION, rid)
                auto.pump()
        elif op == "event":
            topics = {t: s for s, t in auto.subs.items() if t.startswith("queue:")}
            if topics:
                topic = rng.choice(sorted(topics))
                item = {"id": f"i{rid}"}
                name = topic.partition(":")[2]
                h.notifier.event(c.QUEUE_CHANGED, topics[topic], {"queue": name, "added": [item]})
        for _conn, t in conns:
            t.clear()
        conns = [(cn, t) for cn, t in conns if cn.connected]

    created = len(sessions)
    assert created > 1000 and h.router.counters.get("resumes", outcome="resumed") > 500
    assert h.router.counters.get("resumes", outcome="refused") > 100
    # Everything still open drops; then time passes beyond every linger and timeout.
    for conn, _ in conns:
        conn.connectionLost(None)
    h.clock.advance(3600)
    auto.pump()
    assert len(h.registry) == 0 and h.registry.client_index_size() == 0
    assert h.registry.timers.active == 0
    assert set(auto.subs.values()) <= {"parameters"}  # the bridge's own pin at most
    assert set(h.router.fanout.topics) == {"parameters"}
    assert h.router._scopes == {} and h.router._ha_switched == set()
    assert all(s.state is State.CLOSED and len(s.replay) == 0 for s in sessions.values())
    assert all(s.linger_timer is None for s in sessions.values())
    assert hook.created == created and len(hook.destroyed) == created
    assert set(hook.destroyed.values()) == {1}  # exactly once each
    assert h.router.hook is not None and h.router.hook.pending_destroys == 0
    assert h.clock.getDelayedCalls() == []


def test_keepalive_is_set_on_the_tcp_layer_under_tls():
    """enable_keepalive sets SO_KEEPALIVE and the timings on the socket under wrapping layers,
    also under a TLS-like layer that forwards setTcpKeepAlive but whose handle is not the socket."""

    class Tcp:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def setTcpKeepAlive(self, on: int) -> None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, on)

        def getHandle(self) -> socket.socket:
            return self.sock

    class Wrapper:
        def __init__(self, inner: Any) -> None:
            self.transport = inner

    class TlsLike(Wrapper):  # TLSMemoryBIOProtocol: its handle is the OpenSSL connection
        def getHandle(self) -> object:
            return object()

        def setTcpKeepAlive(self, on: int) -> None:
            self.transport.setTcpKeepAlive(on)

    def options(sock: socket.socket) -> tuple[int, ...]:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )

    for wrap in (Wrapper, TlsLike):
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            assert enable_keepalive(Wrapper(wrap(Tcp(accepted))))
            assert options(accepted) == (1, 60, 10, 6), wrap
        finally:
            for sock in (accepted, client, server):
                sock.close()
    assert not enable_keepalive(Wrapper(Wrapper(Wrapper(Tcp(socket.socket())))))  # too deep
    assert not enable_keepalive(StringTransport())
