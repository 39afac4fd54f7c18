"""Session timers on time over real TLS: the real bridge and Notifier, three concurrent sessions.

agent1 (T = 8 s: notice at 4 s with secondsLeft 4, expiry at 8 s) and agent2 (T = 12 s
from a user-level server parameter, then a Heartbeat: notice 6 s before its new
deadline, expiry at it) share the bridge's timer queue with agent3, dropped right after
logon and lingering 5 s. On the old queue agent1's notice re-armed the one shared call
for its own expiry at 8 s, so agent3's linger (due at 5 s) and agent2's notice (due at
about 6 s) came only at 8 s: about 2-3 s late.

Tolerance: an event may not come early (beyond clock granularity, ``EARLY``) and may
come at most ``LATE`` = 0.75 s after its due time. The reactor fires a DelayedCall on
its first iteration after the due time, a few milliseconds on an idle machine; the
allowance covers a loaded shared CI machine and the TLS write to the client, and
stays well under the 2-3 s by which the defect made these events late.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client.protocol import BridgeProtocol
from smbridge.codec import catalog as c
from smbridge.session.session import EndReason, Session
from smbridge.testing import poll, start_site

pytestmark = pytest.mark.integration

EARLY = 0.01
LATE = 0.75
LINGER = 5.0


class TimedClient:
    """A raw client that notes when each notification arrives (reactor time)."""

    def __init__(self, port: int, ca: Path) -> None:
        self.port = port
        self.ca = ca
        self.proto: BridgeProtocol | None = None
        self.notes: list[tuple[float, tuple[int, int], dict[str, Any]]] = []

    @defer.inlineCallbacks
    def log_on(self, user: str) -> Any:
        endpoint = wrapClientTLS(
            pki.client_options("localhost", self.ca),
            HostnameEndpoint(reactor, "127.0.0.1", self.port),
        )
        proto = BridgeProtocol(tls=True)
        yield connectProtocol(endpoint, proto)
        yield proto.ready
        proto.add_listener(self._note)
        self.proto = proto
        reply = yield proto.request(
            *c.CREATE_SESSION, {"user": user, "password": "demo", "clientId": f"timers-{user}"}
        )
        return reply

    def _note(self, frame: Any) -> None:
        key = (frame.object_type, frame.event_id)
        self.notes.append((reactor.seconds(), key, frame.parsed()))

    def of(self, message: tuple[int, int]) -> list[tuple[float, dict[str, Any]]]:
        return [(t, body) for t, key, body in self.notes if key == message]


class TimersOnTime(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-timers-")),
            session_timeout=8,
            parameters={"Session Timeout/User/agent2": "12"},
            linger=LINGER,
        )
        self.addCleanup(self.site.stop)

    def _assert_on_time(self, what: str, at: float, due: float) -> None:
        self.assertGreaterEqual(at, due - EARLY, f"{what} early: {at - due:+.3f}s")
        self.assertLessEqual(at, due + LATE, f"{what} late: {at - due:+.3f}s")

    @defer.inlineCallbacks
    def test_notices_expiries_and_a_linger_on_time_together(self) -> Any:
        """Two timeouts and a linger in one queue: each notice, expiry and linger end is on time."""
        registry = self.site.bridge.registry
        ended: dict[str, tuple[float, EndReason]] = {}

        def on_end(session: Session, reason: EndReason) -> None:
            ended[session.id] = (reactor.seconds(), reason)

        registry.on_end(on_end)
        port, ca = self.site.client_port, self.site.pki.ca
        a, b, gone = TimedClient(port, ca), TimedClient(port, ca), TimedClient(port, ca)
        reply_a = yield a.log_on("agent1")
        reply_b = yield b.log_on("agent2")
        reply_gone = yield gone.log_on("agent3")
        self.assertEqual((reply_a["sessionTimeout"], reply_a["heartbeatInterval"]), (8, 2))
        self.assertEqual((reply_b["sessionTimeout"], reply_b["heartbeatInterval"]), (12, 4))
        self.assertEqual(reply_b["timeoutSource"], "user:agent2")
        start_a = registry.get(reply_a["sessionId"]).logon_time
        # agent3 drops without DestroySession: it lingers from when the bridge sees it.
        assert gone.proto is not None and gone.proto.transport is not None
        dropped = reactor.seconds()
        gone.proto.transport.abortConnection()
        lingering = registry.get(reply_gone["sessionId"])
        yield poll(lambda: lingering.state.value == "lingering", deadline=5)
        seen_drop = reactor.seconds()
        # agent2 heartbeats: its deadline moves to 12 s after the bridge handled it.
        assert b.proto is not None
        sent = reactor.seconds()
        beat = yield b.proto.request(*c.HEARTBEAT, {})
        answered = reactor.seconds()
        self.assertTrue(beat["sessionUpdated"])
        # Wait for the clients to read SessionTerminated, not only for the bridge to end them.
        yield poll(
            lambda: reply_b["sessionId"] in ended and b.of(c.SESSION_TERMINATED), deadline=30
        )
        yield poll(lambda: reply_a["sessionId"] in ended and a.of(c.SESSION_TERMINATED), deadline=5)

        (notice_a,) = a.of(c.TERMINATION_IMMINENT)
        self._assert_on_time("agent1's notice", notice_a[0], start_a + 4)
        self.assertIn(notice_a[1]["secondsLeft"], (3, 4))  # 4; 3 only if it came > 0.5 s late
        (terminated_a,) = a.of(c.SESSION_TERMINATED)
        self.assertEqual(terminated_a[1], {"reason": "expired"})
        self._assert_on_time("agent1's expiry", terminated_a[0], start_a + 8)

        # The deadline lies between the heartbeat's send and its answer, plus 12 s.
        (notice_b,) = b.of(c.TERMINATION_IMMINENT)
        self.assertGreaterEqual(notice_b[0], sent + 12 - 6 - EARLY)
        self.assertLessEqual(notice_b[0], answered + 12 - 6 + LATE)
        self.assertIn(notice_b[1]["secondsLeft"], (5, 6))
        (terminated_b,) = b.of(c.SESSION_TERMINATED)
        self.assertEqual(terminated_b[1], {"reason": "expired"})
        self.assertGreaterEqual(terminated_b[0], sent + 12 - EARLY)
        self.assertLessEqual(terminated_b[0], answered + 12 + LATE)

        at, reason = ended[reply_gone["sessionId"]]
        self.assertEqual(reason, EndReason.DISCONNECTED)
        self.assertGreaterEqual(at, dropped + LINGER - EARLY)
        self.assertLessEqual(at, seen_drop + LINGER + LATE)
        self.assertEqual(gone.of(c.TERMINATION_IMMINENT), [])
        self.assertEqual(len(registry), 0)
