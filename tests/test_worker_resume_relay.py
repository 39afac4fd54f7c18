"""Cross-worker ResumeSession, both ends in memory: the relaying worker (WorkerRelays and
RelayedClient over the real router) and the owner's socket (RelayServerProtocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport

from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c
from smbridge.resources import Origin
from smbridge.testing import RouterHarness, decode_all
from smbridge.transports.connection import ClientConnectionFactory
from smbridge.transports.prelogon import PrelogonLimits
from smbridge.transports.relay import WorkerRelays, reading_layer
from smbridge.transports.relay_server import RelayServerFactory, peer_uid, private_dir
from smbridge.transports.relay_wire import Preamble, PreambleParser, encode_preamble

OTHER = "sm1-w1-19a8f3c2d10-3f9c0a6b1d2e4f57"  # a session of worker 1 of bridge sm1


class _Relays(WorkerRelays):
    """WorkerRelays whose dial the test answers by hand."""

    def __init__(self, h: RouterHarness, index: int = 0, count: int = 2) -> None:
        super().__init__(
            h.clock, "sm1", index, count, Path("/nonexistent"), h.router.counters, 1 << 20
        )
        self.dials: list[tuple[int, Protocol, defer.Deferred[Any]]] = []

    def connect(self, owner: int, protocol: Protocol) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.dials.append((owner, protocol, d))
        return d


def _setup() -> tuple[RouterHarness, _Relays]:
    h = RouterHarness()
    relays = _Relays(h)
    h.router.resumer.relay = relays
    return h, relays


def _resume(rid: int = 1, session_id: str = OTHER) -> bytes:
    body = {"sessionId": session_id, "resumeToken": "t" * 32, "received": 3}
    return encode(Kind.REQUEST, *c.RESUME_SESSION, rid, body)


def _counts(h: RouterHarness, name: str) -> dict[str, int]:
    return {labels.get("outcome", ""): n for key, labels, n in h.router.counters if key == name}


def _opened(relays: _Relays) -> tuple[Protocol, StringTransport]:
    _, proto, d = relays.dials[-1]
    socket = StringTransport()
    proto.makeConnection(socket)
    d.callback(proto)
    return proto, socket


def test_ids_of_this_worker_or_none_are_resumed_here() -> None:
    """An id of this worker, of a single process or of another bridge is looked up locally."""
    h, relays = _setup()
    conn, transport = h.client()
    for sid in ("sm1-w0-19a8-3f9c", "sm1-19a8f3c2d10-3f9c0a6b1d2e4f57", "sm2-w1-19a8-3f9c"):
        conn.dataReceived(_resume(5, sid))
        (reply,) = h.received(transport)
        assert reply.parsed()["code"] == "unknown-session" and not relays.dials


def test_a_worker_index_past_the_count_is_unknown_session() -> None:
    """sm1-w7-... with 2 workers: unknown-session, reason no-such-worker, counted, not dialled."""
    h, relays = _setup()
    conn, transport = h.client()
    conn.dataReceived(_resume(4, "sm1-w7-19a8f3c2d10-3f9c0a6b1d2e4f57"))
    (reply,) = h.received(transport)
    body = reply.parsed()
    assert (reply.request_id, body["code"], body["reason"]) == (
        4,
        "unknown-session",
        "no-such-worker",
    )
    assert "worker 7" in body["message"] and not relays.dials
    assert _counts(h, "relays") == {"no-such-worker": 1}
    assert _counts(h, "resumes") == {"refused": 1}


def test_relay_sends_preamble_then_every_frame_in_order() -> None:
    """The preamble, the ResumeSession and the frames pipelined behind it reach the owner in
    order; reading from the client pauses while the socket opens; this worker's deadline ends."""
    h, relays = _setup()
    conn, transport = h.client()
    conn.remote = "198.51.100.7:4000"
    conn.kind = "wss"
    conn.origin = Origin("wss", "wss://edge.example/x", "cic1", None, True)
    conn.prelogon = None
    beat = encode(Kind.REQUEST, *c.HEARTBEAT, 2, {})
    version = encode(Kind.REQUEST, *c.GET_VERSION, 3, {})
    conn.dataReceived(_resume(1) + beat + version[:7])  # half a frame behind
    assert [d[0] for d in relays.dials] == [1] and h.received(transport) == []
    conn.dataReceived(version[7:])
    proto, socket = _opened(relays)
    parser = PreambleParser()
    preamble = parser.feed(socket.value())
    assert preamble == Preamble("wss", "198.51.100.7:4000", 0, conn.origin)
    frames = decode_all(parser.rest)
    assert [(f.object_type, f.event_id, f.request_id) for f in frames] == [
        (*c.RESUME_SESSION, 1),
        (*c.HEARTBEAT, 2),
        (*c.GET_VERSION, 3),
    ]
    assert h.received(transport) == []  # nothing answered here
    more = encode(Kind.REQUEST, *c.HEARTBEAT, 9, {})
    socket.clear()
    conn.dataReceived(more)
    assert socket.value() == more  # as it came
    assert _counts(h, "relays") == {"relayed": 1}


def test_owner_frames_reach_the_client_whole() -> None:
    """Frames from the owner are written to the client whole, however the socket splits them."""
    h, relays = _setup()
    conn, transport = h.client()
    conn.dataReceived(_resume(1))
    proto, _ = _opened(relays)
    frames = [encode(Kind.NOTIFICATION, *c.QUEUE_CHANGED, 0, {"n": i}) for i in range(5)]
    data = b"".join(frames)
    for i in range(0, len(data), 7):
        proto.dataReceived(data[i : i + 7])
    assert transport.value() == data
    writes: list[list[bytes]] = []
    conn._write = writes.append  # type: ignore[method-assign]
    proto.dataReceived(data)
    assert writes == [frames]  # one frame per element: one WebSocket message each


class _TCP(StringTransport):
    """A StringTransport that reads like a socket (the layer the relay pauses)."""

    reading = True

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def pauseProducing(self) -> None:
        super().pauseProducing()
        self.stopReading()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        self.startReading()


def test_backpressure_both_ways() -> None:
    """A full client pauses reading from the owner; a full owner socket pauses reading from
    the client (under its TLS layer); the client is not read while the socket opens."""
    h, relays = _setup()
    conn = ClientConnectionFactory(h.router, h.batcher).connection("tls")
    tcp = _TCP()
    tls = StringTransport()
    tls.transport = tcp  # type: ignore[attr-defined]  # TLS over TCP: the relay finds TCP
    conn.makeConnection(tls)  # type: ignore[no-untyped-call]
    assert reading_layer(tls) is tcp
    conn.dataReceived(_resume(1))
    assert not tcp.reading  # until the owner answers
    proto, socket = _opened(relays)
    assert tcp.reading
    conn.pauseProducing()  # the client's transport is full
    assert socket.producerState == "paused"
    assert conn._stall_call is None  # the owner judges a slow reader, not this worker
    conn.resumeProducing()
    assert socket.producerState == "producing"
    assert socket.producer is not None and socket.streaming
    socket.producer.pauseProducing()  # the owner's socket is full
    assert not tcp.reading
    socket.producer.resumeProducing()
    assert tcp.reading


def test_closes_propagate_both_ways() -> None:
    """The owner closing closes the client; the client going closes the owner's socket."""
    h, relays = _setup()
    conn, transport = h.client()
    conn.dataReceived(_resume(1))
    proto, socket = _opened(relays)
    proto.connectionLost(None)
    assert transport.disconnecting
    conn2, _ = h.client()
    conn2.dataReceived(_resume(2))
    _, socket2 = _opened(relays)
    conn2.connectionLost(None)
    assert socket2.disconnecting and socket2.producer is None
    assert not relays.active


def test_client_gone_while_dialling_closes_the_socket_when_it_opens() -> None:
    """A client that leaves before the owner answers: the socket is closed as soon as it opens."""
    h, relays = _setup()
    conn, _ = h.client()
    conn.dataReceived(_resume(1))
    conn.connectionLost(None)
    _, socket = _opened(relays)
    assert socket.disconnecting and socket.value() == b""


def test_a_worker_that_does_not_answer_is_unknown_session_and_the_connection_goes_on() -> None:
    """Dial refused: unknown-session (worker-down) for the resume, then the frames pipelined
    behind it are answered here as usual."""
    h, relays = _setup()
    conn, transport = h.client()
    version = encode(Kind.REQUEST, *c.GET_VERSION, 2, {})
    conn.dataReceived(_resume(1) + version)
    _, _, d = relays.dials[-1]
    d.errback(ConnectionRefusedError("no one there"))
    error, answer = h.received(transport)
    body = error.parsed()
    assert (error.request_id, body["code"], body["reason"]) == (1, "unknown-session", "worker-down")
    assert (answer.request_id, answer.parsed()["server"]) == (2, "smbridge")
    assert conn.router is h.router and "pauseProducing" not in conn.__dict__
    assert _counts(h, "relays") == {"worker-down": 1}


# --- the owner's side ---------------------------------------------------------------------
def _owner() -> tuple[RouterHarness, Any, StringTransport]:
    h = RouterHarness()
    app = h.client()[0].factory
    app.prelogon = PrelogonLimits(10, 10, 30, 64 * 1024)
    proto = RelayServerFactory(app, h.router.counters, h.clock).buildProtocol(None)
    socket = StringTransport()
    proto.makeConnection(socket)
    return h, proto, socket


def test_owner_takes_a_relayed_connection_as_a_client_of_its_kind() -> None:
    """After the preamble the stream is a client connection of the given kind and address,
    with the deadline before logon; its ResumeSession resumes the session here."""
    h, proto, socket = _owner()
    conn, transport, reply = h.logon("agent1")
    conn.connectionLost(None)  # lingers
    origin = Origin("wss", "wss://edge.example", "cic1", None, False)
    preamble = encode_preamble(Preamble("wss", "203.0.113.5:777", 1, origin))
    body = {"sessionId": reply["sessionId"], "resumeToken": reply["resumeToken"], "received": 0}
    data = preamble + encode(Kind.REQUEST, *c.RESUME_SESSION, 1, body)
    proto.dataReceived(data[:3])
    proto.dataReceived(data[3:])
    relayed = proto.conn
    assert relayed is not None and (relayed.kind, relayed.remote) == ("wss", "203.0.113.5:777")
    assert relayed.origin == origin
    (answer,) = h.received(socket)
    assert answer.parsed()["resumed"] is True
    session = h.registry.get(reply["sessionId"])
    assert session is not None and session.peer is relayed and session.transport == "wss"
    assert session.remote == "203.0.113.5:777" and relayed.prelogon is None
    proto.connectionLost(None)
    assert session.state.value == "lingering"
    assert _counts(h, "relays") == {"accepted": 1}


def test_owner_refuses_a_bad_preamble() -> None:
    """Garbage instead of a preamble: the socket is aborted and the refusal counted."""
    h, proto, socket = _owner()
    proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert socket.disconnecting and proto.conn is None
    assert _counts(h, "relays") == {"refused": 1}


def test_owner_waits_for_the_preamble_a_bounded_time() -> None:
    """No preamble within PREAMBLE_TIMEOUT seconds: aborted."""
    h, proto, socket = _owner()
    proto.dataReceived(b"SMR1")
    h.clock.advance(10)
    assert socket.disconnecting and _counts(h, "relays") == {"refused": 1}


def test_private_dir_and_peer_uid(tmp_path: Path) -> None:
    """The run directory is made 0700 (a looser one is tightened); a Unix peer's uid is read."""
    import os
    import socket

    run = private_dir(tmp_path / "run")
    assert run.stat().st_mode & 0o777 == 0o700
    run.chmod(0o755)
    assert private_dir(run).stat().st_mode & 0o777 == 0o700

    class _T:
        def __init__(self, s: socket.socket) -> None:
            self.s = s

        def getHandle(self) -> socket.socket:
            return self.s

    a, b = socket.socketpair()
    with a, b:
        assert peer_uid(_T(a)) == os.getuid()
    assert peer_uid(StringTransport()) is None


# --- random interleavings against a naive model ---------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    beats=st.integers(0, 6),
    cuts=st.lists(st.integers(1, 40), max_size=8),
    dial_after=st.integers(0, 10),
    dial_ok=st.booleans(),
    owner_frames=st.integers(0, 4),
    owner_cut=st.integers(1, 30),
    ending=st.sampled_from(["none", "client", "owner"]),
)
def test_relay_against_a_naive_model(
    beats: int,
    cuts: list[int],
    dial_after: int,
    dial_ok: bool,
    owner_frames: int,
    owner_cut: int,
    ending: str,
) -> None:
    """However the client's bytes are split and whenever the dial settles, the model holds:
    relayed, the owner gets the preamble and every client frame once, in order, and the
    client exactly the owner's frames; refused, the client gets unknown-session and then
    this worker's own answers, in order; a close on one side closes the other."""
    h, relays = _setup()
    conn, transport = h.client()
    sent = [_resume(1)] + [encode(Kind.REQUEST, *c.HEARTBEAT, 2 + i, {}) for i in range(beats)]
    data = b"".join(sent)
    chunks, pos = [], 0
    for cut in cuts:
        if pos < len(data):
            chunks.append(data[pos : pos + cut])
            pos += cut
    chunks.append(data[pos:])
    socket = StringTransport()
    dialled = False

    def settle() -> None:
        nonlocal dialled
        if dialled or not relays.dials:
            return
        dialled = True
        _, proto, d = relays.dials[0]
        if dial_ok:
            proto.makeConnection(socket)
            d.callback(proto)
        else:
            d.errback(ConnectionRefusedError("down"))

    for i, chunk in enumerate(chunks):
        if i == dial_after:
            settle()
        conn.dataReceived(chunk)
    settle()
    h.clock.advance(0)
    if not dial_ok:  # the model: one refusal, then this worker answers each Heartbeat
        answers = h.received(transport)
        assert [f.request_id for f in answers] == list(range(1, beats + 2))
        assert answers[0].parsed()["reason"] == "worker-down"
        assert {f.parsed()["code"] for f in answers[1:]} <= {"no-session"}
        assert socket.value() == b""
        return
    parser = PreambleParser()
    assert isinstance(parser.feed(socket.value()), Preamble)
    assert parser.rest == data  # every frame, once, in order
    proto = relays.dials[0][1]
    out = [encode(Kind.NOTIFICATION, *c.QUEUE_CHANGED, 0, {"n": n}) for n in range(owner_frames)]
    stream = b"".join(out)
    for i in range(0, len(stream), owner_cut):
        proto.dataReceived(stream[i : i + owner_cut])
    assert transport.value() == stream  # nothing answered here, the owner's frames whole
    if ending == "client":
        conn.connectionLost(None)
        assert socket.disconnecting
    elif ending == "owner":
        proto.connectionLost(None)
        assert transport.disconnecting
    assert (relays.active == set()) == (ending != "none")
