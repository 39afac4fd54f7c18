"""Client connections and the sender: direct path, limiter, backpressure, stalled clients."""

from __future__ import annotations

import pytest
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage

from smbridge.codec import Kind, encode_raw
from smbridge.codec.catalog import (
    LINK_PARAMETERS_CHANGED,
    QUEUE_CHANGED,
    STATUS_CHANGED,
)
from smbridge.sender import parameters as p
from smbridge.sender.sender import MEMORY_CHECK_SECONDS
from smbridge.service import BridgeService
from smbridge.tap import Options
from smbridge.testing import RouterHarness, decode_all
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory

LIMITED = {p.ENABLED: "Yes", p.TOTAL: "60000", p.INTERVAL: "1000"}


def notification(message: tuple[int, int], size: int, tag: int = 0) -> bytes:
    """A notification of exactly ``size`` bytes with a JSON payload."""
    payload = b'{"p":"' + b"x" * (size - 22) + b'"}'
    return encode_raw(Kind.NOTIFICATION, message[0], message[1], tag, payload)


def connect(
    h: RouterHarness, factory: ClientConnectionFactory
) -> tuple[ClientConnection, StringTransport]:
    conn = factory.connection("tls")
    transport = StringTransport()
    conn.makeConnection(transport)  # type: ignore[no-untyped-call]
    return conn, transport


def test_limiter_off_keeps_the_direct_batched_path():
    """With the limiter off and the client reading, send is BatchedProtocol's: one write a turn."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher, max_unread_seconds=30)
    conn, transport = connect(h, factory)
    assert "send" not in conn.__dict__
    assert IPushProducer.providedBy(conn)
    assert transport.producer is conn and transport.streaming
    writes: list[bytes] = []
    transport.write = writes.append  # type: ignore[method-assign]
    for i in range(5):
        conn.send(notification(STATUS_CHANGED, 100, i))
    h.clock.advance(0)
    assert len(writes) == 1
    assert [f.request_id for f in decode_all(writes[0])] == [0, 1, 2, 3, 4]


def test_a_paused_client_receives_nothing_until_it_resumes():
    """Frames for a paused client are held and counted, then written at resume in one write."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    conn, transport = connect(h, factory)
    conn.pauseProducing()
    for i in range(3):
        conn.send(notification(STATUS_CHANGED, 1000, i))
    h.clock.advance(0)
    assert transport.value() == b""
    assert conn.held_bytes() == 3000
    assert factory.sender.held_bytes() == 3000
    conn.resumeProducing()
    assert [f.request_id for f in decode_all(transport.value())] == [0, 1, 2]
    assert conn.held_bytes() == 0
    assert "send" not in conn.__dict__


def test_a_client_that_does_not_read_for_too_long_is_disconnected():
    """Paused past max_unread_seconds: the connection is aborted and its session lingers."""
    h = RouterHarness()
    conn, transport, _reply = h.logon()
    conn.factory.max_unread_seconds = 30.0
    session = conn.session
    assert session is not None
    conn.pauseProducing()
    frame = notification(QUEUE_CHANGED, 5000)
    conn.send(frame)
    h.clock.advance(29.9)
    assert not transport.disconnecting
    h.clock.advance(0.2)
    assert transport.disconnected  # aborted: nothing more is written to a client not reading
    assert transport.value() == b""
    conn.connectionLost(None)
    assert session.state.value == "lingering"
    assert session.replay.since(0) == [frame]  # the frame it never got waits for its resume
    assert len(h.registry) == 1


def test_a_client_holding_too_many_bytes_is_disconnected():
    """Past max_held_bytes while paused the client is dropped and what it held is freed."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher, max_held_bytes=10_000)
    conn, transport = connect(h, factory)
    conn.pauseProducing()
    for i in range(10):
        conn.send(notification(QUEUE_CHANGED, 1000, i))
    assert conn.held_total() == 10_000
    h.clock.advance(0)
    assert not transport.disconnecting
    conn.send(notification(QUEUE_CHANGED, 1000, 10))
    h.clock.advance(0)  # the abort runs at the next turn
    assert transport.disconnected
    assert transport.value() == b""
    conn.connectionLost(None)
    assert conn.held_bytes() == 0
    assert factory.sender.held_bytes() == 0


def _bounded(limiter: bool, paused: bool) -> None:
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher, max_held_bytes=100_000)
    if limiter:
        factory.sender.configure(LIMITED)  # 60,000 bytes a second
    conn, transport = connect(h, factory)
    if paused:
        conn.pauseProducing()
    sent = 0
    while not transport.disconnected and sent < 1000:  # bounded
        for _ in range(10):  # a turn of pipelined answers
            if conn.dropped:
                break  # what comes after the drop in this turn is held for the session
            conn.send(notification(QUEUE_CHANGED, 1000, sent))
            sent += 1
            held = conn.held_total()
            held_by_parts = conn.held_bytes() + factory.sender.session_status(conn)["queuedBytes"]
            held_by_parts += sum(len(d) for c, d in factory.sender.inbox if c is conn)
            assert held == held_by_parts
            assert held <= 101_000  # the bound, and the frame that crossed it
        h.clock.advance(0)
        if not paused:
            transport.clear()  # the kernel took what was written
    if not (limiter or paused):  # a client that reads is never held for
        assert sent == 1000 and not transport.disconnected
    else:  # 100 frames held (after the 60 of the first interval, limiter on, not paused)
        assert transport.disconnected
        assert sent == (101 if paused else 161)
    conn.connectionLost(None)
    assert factory.sender.held_bytes() == 0


@pytest.mark.parametrize("limiter", [False, True])
@pytest.mark.parametrize("paused", [False, True])
def test_the_bytes_held_for_one_client_are_bounded_whatever_the_path(limiter, paused):
    """Limiter on or off, paused or not: held bytes are counted exactly and bounded."""
    _bounded(limiter, paused)


def test_a_turn_of_pipelined_answers_is_bounded_before_it_is_written():
    """Answers queued in one turn count at once: past the bound it is dropped before a write."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher, max_held_bytes=100_000)
    conn, transport = connect(h, factory)
    for i in range(150):
        conn.send(notification(QUEUE_CHANGED, 1000, i))
    assert conn.held_total() == 150_000  # counted, all still in the turn's queue
    assert "send" in conn.__dict__  # dropped: the rest is held for the session, not written
    h.clock.advance(0)
    assert transport.disconnected
    assert transport.value() == b""


def test_a_transport_backlog_counts_toward_the_bound_once_it_pauses_us():
    """What the transport holds when it pauses the connection counts toward the bound."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher, max_held_bytes=100_000)
    conn, transport = connect(h, factory)
    transport.dataBuffer = b"x" * 95_000  # type: ignore[attr-defined]  # the kernel took none
    transport.offset = 0  # type: ignore[attr-defined]
    conn.pauseProducing()
    assert conn.held_total() == 95_000
    conn.send(notification(QUEUE_CHANGED, 1000))
    h.clock.advance(0)
    assert not transport.disconnected
    for i in range(5):
        conn.send(notification(QUEUE_CHANGED, 1000, i))
    h.clock.advance(0)
    assert transport.disconnected


def test_a_lower_bound_applies_to_open_connections_at_once():
    """Lowering max_held_bytes (a reload) drops the open connections already over it."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher, max_held_bytes=1 << 20)
    conn, transport = connect(h, factory)
    other, other_transport = connect(h, factory)
    for c in (conn, other):
        c.pauseProducing()
    for i in range(80):
        conn.send(notification(QUEUE_CHANGED, 1000, i))
    for i in range(60):
        other.send(notification(QUEUE_CHANGED, 1000, i))
    factory.max_held_bytes = 65536
    h.clock.advance(0)
    assert transport.disconnected
    assert not other_transport.disconnected
    for i in range(6):
        other.send(notification(QUEUE_CHANGED, 1000, i))
    h.clock.advance(0)
    assert other_transport.disconnected


def test_a_paused_connection_arms_the_memory_check():
    """A transport that pauses the connection with bytes in its buffer triggers a recount."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    factory.sender.configure({p.MAX_PRIVATE_BYTES: "50000"})
    conn, transport = connect(h, factory)
    transport.dataBuffer = b"x" * 60_000  # type: ignore[attr-defined]
    transport.offset = 0  # type: ignore[attr-defined]
    conn.pauseProducing()
    h.clock.advance(MEMORY_CHECK_SECONDS)
    assert factory.sender.safeguard_active
    transport.dataBuffer = b""  # type: ignore[attr-defined]
    conn.resumeProducing()
    h.clock.advance(MEMORY_CHECK_SECONDS)
    assert not factory.sender.safeguard_active
    conn.connectionLost(None)


def test_the_limiter_follows_the_routers_parameters_live():
    """A parameters change reaching the router switches the connections' sender on and off."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    h.router.parameter_listeners.append(factory.sender.configure)
    conn, transport = connect(h, factory)
    h.notifier.event(LINK_PARAMETERS_CHANGED, h.params_sub, {"parameters": LIMITED})
    h.clock.advance(0)
    assert factory.sender.limited
    assert factory.sender.settings.total_bytes == 60000
    assert conn.__dict__["send"] == conn._send_limited
    for i in range(100):
        conn.send(notification(QUEUE_CHANGED, 1000, i))
    h.clock.advance(0)
    assert len(transport.value()) == 60000
    transport.clear()
    h.clock.pump([1.0] + [0.1] * 9)  # the next interval, paced in ten steps
    assert len(transport.value()) == 40000
    h.notifier.event(LINK_PARAMETERS_CHANGED, h.params_sub, {"parameters": dict.fromkeys(LIMITED)})
    h.clock.advance(0)
    assert not factory.sender.limited
    assert "send" not in conn.__dict__


def test_an_invalid_parameter_is_refused_and_the_old_value_kept():
    """A refused total leaves the limiter at its previous total and is reported in status."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    assert factory.sender.configure(LIMITED) == []
    errors = factory.sender.configure({**LIMITED, p.TOTAL: "1000"})
    assert errors == [f"{p.TOTAL} must be an integer greater than 50000, not '1000'"]
    assert factory.sender.settings.total_bytes == 60000
    assert factory.sender.status()["refusedParameters"] == errors


def test_status_reports_bytes_per_priority_and_limiting():
    """The sender's status counts bytes per class and says whether limiting is active."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    factory.sender.configure(LIMITED)
    conn, transport = connect(h, factory)
    for i in range(70):
        conn.send(notification(QUEUE_CHANGED, 1000, i))
    conn.send(notification(STATUS_CHANGED, 500))
    h.clock.advance(0)
    status = factory.sender.status()
    assert status["limiting"] is True
    assert status["byPriority"]["low"]["sentBytes"] == 60000
    assert status["byPriority"]["low"]["queuedBytes"] == 10000
    assert status["byPriority"]["high"]["queuedBytes"] == 500
    assert status["heldBytes"] == 10500
    assert factory.sender.session_status(conn)["queuedBytes"] == 10500
    conn.connectionLost(None)
    assert factory.sender.status()["heldBytes"] == 0


def test_max_unread_seconds_option_reaches_the_connections(tmp_path):
    """--max-unread-seconds sets the connections' limit; a value out of 1..3600 is refused."""
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path), "--max-unread-seconds", "30"])
    assert options.config is not None and options.config.max_unread_seconds == 30.0
    bridge = BridgeService(options.config, Clock())
    assert bridge.connections.max_unread_seconds == 30.0
    with pytest.raises(usage.UsageError, match="--max-unread-seconds must be 1..3600"):
        Options().parseOptions(
            ["--demo", "--work-path", str(tmp_path), "--max-unread-seconds", "0"]
        )


def test_max_held_bytes_option_reaches_the_connections(tmp_path):
    """--max-held-bytes bounds the bytes held for a paused client; out of range is refused."""
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path), "--max-held-bytes", "100000"])
    assert options.config is not None and options.config.max_held_bytes == 100000
    bridge = BridgeService(options.config, Clock())
    assert bridge.connections.max_held_bytes == 100000
    with pytest.raises(usage.UsageError, match="--max-held-bytes must be 65536..1073741824"):
        Options().parseOptions(["--demo", "--work-path", str(tmp_path), "--max-held-bytes", "10"])


def test_bytes_written_are_counted_by_priority_and_per_connection_with_the_limiter_off():
    """The direct path counts what it writes: per priority for the bridge, in total per client."""
    h = RouterHarness()
    factory = ClientConnectionFactory(h.router, h.batcher)
    conn, transport = connect(h, factory)
    conn.send(notification(STATUS_CHANGED, 300))  # high by default
    conn.send(notification(QUEUE_CHANGED, 1000))  # low
    conn.send(notification(QUEUE_CHANGED, 1000))
    h.clock.advance(0)
    assert len(transport.value()) == 2300
    by = factory.sender.status()["byPriority"]
    assert (by["high"]["sentFrames"], by["high"]["sentBytes"]) == (1, 300)
    assert (by["low"]["sentFrames"], by["low"]["sentBytes"]) == (2, 2000)
    assert by["medium"]["sentBytes"] == 0
    assert factory.sender.session_status(conn)["sentBytes"] == 2300
