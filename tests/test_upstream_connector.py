"""The connector's link state machine with a Clock and fake Notifier endpoints."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.errors import UpstreamUnavailable
from smbridge.testing import FakeNotifierEndpoint
from smbridge.transports.batch import WriteBatcher
from smbridge.upstream.addresses import PINNED, NotifierEndpoints
from smbridge.upstream.connector import LinkState, UpstreamConnector

CIC_A = {"name": "cicA", "role": "primary"}
CIC_B = {"name": "cicB", "role": "primary"}


class Rig:
    """A connector over two fake Notifiers, A and B, recording states and switchovers."""

    def __init__(self, mode: str = "follow-primary") -> None:
        self.clock = Clock()
        self.a = FakeNotifierEndpoint("a:5597")
        self.b = FakeNotifierEndpoint("b:5597")
        self.endpoints = NotifierEndpoints(
            [("a:5597", self.a), ("b:5597", self.b)],
            mode,
            pinned="a:5597" if mode == PINNED else None,
        )
        self.connector = UpstreamConnector(
            self.clock, self.endpoints, {"name": "sm1"}, WriteBatcher(self.clock), "a, b", 1 << 20
        )
        self.states: list[str] = []
        self.switchovers: list[tuple[str, Any]] = []
        self.connector.on_switchover(lambda phase, cic: self.switchovers.append((phase, cic)))
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self._observe)

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("event") == "upstream.state":
            self.events.append(event)
            self.states.append(event["new"])

    def close(self) -> None:
        globalLogPublisher.removeObserver(self._observe)
        if self.connector.running:
            self.connector.stopService()

    def register(self, endpoint: FakeNotifierEndpoint, cic: dict[str, Any]) -> None:
        self.clock.advance(0)  # the write batcher flushes on the next turn
        peer = endpoint.last
        (frame,) = peer.take()
        assert (frame.object_type, frame.event_id) == c.LINK_REGISTER
        peer.answer(frame, {"cic": cic, "parameters": {}, "roster": []})

    def refuse(self, endpoint: FakeNotifierEndpoint, primary: str | None) -> None:
        self.clock.advance(0)  # the write batcher flushes on the next turn
        peer = endpoint.last
        (frame,) = peer.take()
        body: dict[str, Any] = {"code": "not-primary", "message": "backup"}
        if primary is not None:
            body["primary"] = primary
        peer.answer(frame, body, kind=Kind.ERROR)
        endpoint.drop()


def test_first_connection_walks_connecting_registering_up() -> None:
    """Starting dials the first address, registers, and logs each transition with its key."""
    rig = Rig()
    try:
        rig.connector.startService()
        assert rig.connector.state is LinkState.REGISTERING
        rig.register(rig.a, CIC_A)
        assert rig.connector.state is LinkState.UP
        assert rig.states == ["connecting", "registering", "up"]
        assert all(e["old"] != e["new"] for e in rig.events)
        assert rig.switchovers == []
        assert rig.connector.switchovers == 0
    finally:
        rig.close()


def test_dropped_link_switches_and_follows_the_named_primary() -> None:
    """A dropped up link switches; a refusal naming B makes the next (quick) dial go to B."""
    rig = Rig()
    try:
        rig.connector.startService()
        rig.register(rig.a, CIC_A)
        rig.a.drop()
        assert rig.connector.state is LinkState.SWITCHING
        assert rig.switchovers == [("started", CIC_A)]
        rig.clock.advance(0.21)  # a quick retry: at most 0.2 s after an up link dropped
        assert rig.a.attempts == 2
        rig.refuse(rig.a, "b:5597")
        assert rig.connector.state is LinkState.SWITCHING
        assert rig.endpoints.current == "b:5597"
        rig.clock.advance(0.21)  # the named primary is dialled at once too
        assert rig.b.attempts == 1
        rig.register(rig.b, CIC_B)
        assert rig.connector.state is LinkState.UP
        assert rig.switchovers == [("started", CIC_A), ("completed", CIC_B)]
        assert rig.connector.switchovers == 1
        assert rig.states[-5:] == ["switching", "registering", "switching", "registering", "up"]
    finally:
        rig.close()


def test_unreachable_address_moves_on_to_the_next_with_backoff() -> None:
    """A refused TCP connect moves follow-primary on to B, after a jittered backoff delay."""
    rig = Rig()
    try:
        rig.a.reachable = False
        rig.connector.startService()
        assert rig.a.attempts == 1
        assert rig.endpoints.current == "b:5597"
        rig.clock.advance(0.84)
        assert rig.b.attempts == 0  # the first retry waits 0.5 s x 1.7, plus jitter below 1 s
        rig.clock.advance(1.05)
        assert rig.b.attempts == 1
        rig.register(rig.b, CIC_B)
        assert rig.connector.state is LinkState.UP
        assert rig.switchovers == []  # never up before: not a switchover
    finally:
        rig.close()


def test_backoff_grows_while_every_address_is_down() -> None:
    """With both addresses down, attempts alternate and the delays grow (bounded by 30 s)."""
    rig = Rig()
    try:
        rig.a.reachable = rig.b.reachable = False
        rig.connector.startService()
        times = []
        for _ in range(8):
            before = rig.a.attempts + rig.b.attempts
            waited = 0.0
            while rig.a.attempts + rig.b.attempts == before and waited < 60:
                rig.clock.advance(0.1)
                waited += 0.1
            times.append(waited)
        assert abs(rig.a.attempts - rig.b.attempts) <= 1
        assert times[-1] > times[0]
        assert max(times) <= 31.1
        assert rig.connector.state is LinkState.CONNECTING
    finally:
        rig.close()


def test_pinned_mode_never_leaves_its_server() -> None:
    """Pinned to A, a refusal naming B and an unreachable A still dial only A."""
    rig = Rig(PINNED)
    try:
        rig.connector.startService()
        rig.register(rig.a, CIC_A)
        rig.a.drop()
        rig.clock.advance(2.0)
        rig.refuse(rig.a, "b:5597")
        rig.a.reachable = False
        rig.clock.advance(60.0)
        assert rig.b.attempts == 0
        assert rig.a.attempts >= 3
        assert rig.endpoints.current == "a:5597"
        rig.a.reachable = True
        rig.clock.advance(60.0)
        rig.register(rig.a, CIC_A)
        assert rig.connector.state is LinkState.UP
        assert rig.switchovers == [("started", CIC_A), ("completed", CIC_A)]
    finally:
        rig.close()


def test_requests_in_flight_fail_retryable_when_the_link_drops() -> None:
    """A request in flight when the link drops fails upstream-unavailable, marked retryable."""
    rig = Rig()
    try:
        rig.connector.startService()
        rig.register(rig.a, CIC_A)
        d = rig.connector.request(c.LINK_PING, {})
        rig.a.drop()
        failure = d.result
        d.addErrback(lambda f: None)
        assert isinstance(failure.value, UpstreamUnavailable)
        assert failure.value.payload()["retryable"] is True
        after = rig.connector.request(c.LINK_PING, {})
        assert isinstance(after.result.value, UpstreamUnavailable)
        after.addErrback(lambda f: None)
    finally:
        rig.close()


def test_stop_moves_to_disconnected() -> None:
    """Stopping the service while up drops the link and ends in disconnected, no switchover."""
    rig = Rig()
    try:
        rig.connector.startService()
        rig.register(rig.a, CIC_A)
        rig.connector.stopService()
        rig.a.drop()
        assert rig.connector.state is LinkState.DISCONNECTED
        assert rig.switchovers == []
    finally:
        rig.close()


def test_link_lost_while_registering_tries_the_next_address() -> None:
    """A link that drops before Register is answered (say TLS refused) moves on to B."""
    rig = Rig()
    try:
        rig.connector.startService()
        rig.a.drop()
        assert rig.connector.state is LinkState.CONNECTING
        assert rig.endpoints.current == "b:5597"
        assert rig.connector.last_error == "the Notifier closed the link"
        rig.clock.advance(2.0)
        rig.register(rig.b, CIC_B)
        assert rig.connector.state is LinkState.UP
    finally:
        rig.close()
