"""Fan-out runs: the events of one upstream read reach each watcher as one piece (issue 16: 3).

router/fanout.py stages consecutive events of one topic on the write batcher and
hands each watcher the run at once; what a client receives, and how its session
numbers it for a resume, must be exactly what event-by-event delivery gives. The
reference model is the same router with staging off (``fanout.batcher = None``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher

from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c
from smbridge.testing import RouterHarness, decode_all
from smbridge.transports.held import Run

USERS = 3


def to_client(frame: bytes) -> bytes:
    """An upstream event as the bridge writes it: request id 0, the same payload."""
    return frame[:10] + bytes(4) + frame[14:]


class Site:
    """A harness with ``USERS`` sessions watching queue:Sales, and what they received."""

    def __init__(self, staged: bool) -> None:
        self.h = h = RouterHarness()
        if not staged:
            h.router.fanout.batcher = None
        self.conns: list[Any] = []
        self.transports: list[StringTransport] = []
        self.sub = 0
        for i in range(USERS):
            conn, t, _ = h.logon(f"agent{i + 1}")
            h.send(conn, c.WATCH_QUEUE, 2, {"queue": "Sales"})
            for frame in h.upstream():
                self.sub = h.serve(frame, {"queue": "Sales", "interactions": []})
            h.received(t)
            self.conns.append(conn)
            self.transports.append(t)
        self.forwarded: list[Any] = []  # upstream requests not answered yet
        self.n = 0

    def event(self, pad: int = 0) -> bytes:
        self.n += 1
        body: dict[str, Any] = {"queue": "Sales", "added": [{"id": f"i{self.n}"}]}
        if pad:  # past the safeguard's small_message_bytes: it suppresses the frame
            body["added"][0]["note"] = "x" * pad
        return encode(Kind.NOTIFICATION, *c.QUEUE_CHANGED, self.sub, body)

    def read(self, parts: list[str]) -> None:
        """One upstream read: events, and the oldest forwarded request's answer where asked."""
        self.forwarded += self.h.notifier.take()
        data = b""
        for part in parts:
            if part == "event":
                data += self.event()
            elif part == "big":
                data += self.event(pad=2100)
            elif part.startswith("user"):  # an event of one user's own topic
                self.n += 1
                sub = self.h.user_subs[f"agent{int(part[4:]) + 1}"]
                body = {"user": "x", "added": [{"id": f"u{self.n}"}]}
                data += encode(Kind.NOTIFICATION, *c.MY_INTERACTIONS_CHANGED, sub, body)
            elif self.forwarded:
                asked = self.forwarded.pop(0)
                data += encode(Kind.RESPONSE, asked.object_type, asked.event_id, asked.request_id)
        if data:
            self.h.notifier.link.dataReceived(data)

    def step(self, op: tuple[str, int, list[str]]) -> None:
        name, i, parts = op
        conn = self.conns[i]
        if name == "read":
            self.read(parts)
        elif name == "turn":
            self.h.clock.advance(0)
        elif not conn.connected:
            return
        elif name == "heartbeat":
            conn.dataReceived(encode(Kind.REQUEST, *c.HEARTBEAT, 7, {}))
        elif name == "status":
            conn.dataReceived(encode(Kind.REQUEST, *c.SET_STATUS, 8, {"status": "Away"}))
        elif name == "pause":
            conn.pauseProducing()
        elif name == "resume":
            conn.resumeProducing()
        elif name == "drop":
            conn.connectionLost(None)
        elif name == "guard":  # the memory safeguard on or off (as the Sender turns it)
            conn.guard_changed(not conn._guarded)

    def outcome(self) -> list[tuple[bytes, int, int]]:
        self.h.clock.advance(0)
        out = []
        for conn, t in zip(self.conns, self.transports, strict=True):
            session = self.h.registry.get(conn.session.id) if conn.session else None
            count = session.replay.count if session is not None else -1
            out.append((t.value(), count, conn.sent_frames))
        return out


def test_one_read_of_events_is_one_run_per_watcher_in_order() -> None:
    """Five events in two reads of a turn: each watcher gets one run, written, counted, numbered."""
    site = Site(staged=True)
    queued: list[list[bytes]] = [[] for _ in site.conns]
    for conn, out in zip(site.conns, queued, strict=True):
        conn.send_run = lambda run, out=out, send=conn.send_run: (out.append(run), send(run))
    before = [(conn.session.replay.count, conn.sent_frames) for conn in site.conns]
    frames = [site.event() for _ in range(5)]
    site.h.notifier.link.dataReceived(b"".join(frames[:2]))
    site.h.notifier.link.dataReceived(b"".join(frames[2:]))  # the next read, same turn
    assert queued == [[] for _ in site.conns]  # staged until the turn's end
    assert [t.value() for t in site.transports] == [b""] * USERS
    site.h.clock.advance(0)
    for out in queued:
        assert len(out) == 1 and type(out[0]) is Run
        assert out[0].frames == [to_client(f) for f in frames]
    for conn, t, (count, sent) in zip(site.conns, site.transports, before, strict=True):
        assert t.value() == b"".join(map(to_client, frames))
        assert (conn.session.replay.count, conn.sent_frames) == (count + 5, sent + 5)
        assert conn.held_total() == 0


def test_an_answer_inside_a_read_keeps_its_place_between_events() -> None:
    """Event, a forwarded request's answer, event, all in one read: the client sees that order."""
    site = Site(staged=True)
    conn, t = site.conns[0], site.transports[0]
    conn.dataReceived(encode(Kind.REQUEST, *c.SET_STATUS, 8, {"status": "Away"}))
    site.h.clock.advance(0)
    site.read(["event", "answer", "event"])
    kinds = [(f.kind, f.request_id) for f in site.h.received(t)]
    assert kinds == [(Kind.NOTIFICATION, 0), (Kind.RESPONSE, 8), (Kind.NOTIFICATION, 0)]


def test_a_tunnel_like_connection_takes_a_run_frame_by_frame() -> None:
    """A connection whose _write wraps each frame gets each frame of a run on its own."""
    site = Site(staged=True)
    conn = site.conns[0]
    written: list[list[bytes]] = []

    class Wrapping(type(conn)):  # type: ignore[misc]
        def _write(self, out: list[bytes]) -> None:
            written.append(list(out))

    conn.__class__ = Wrapping
    assert not Wrapping._whole_runs
    frames = [site.event() for _ in range(3)]
    site.h.notifier.link.dataReceived(b"".join(frames))
    site.h.clock.advance(0)
    assert written == [[to_client(f) for f in frames]]


class Broken:
    """A watcher whose every send fails."""

    def send(self, data: bytes) -> None:
        raise RuntimeError("broken watcher")


def test_a_failing_watcher_is_logged_once_and_the_others_still_get_the_run() -> None:
    """One watcher raising: one fanout.run_failed line per run, every other watcher served."""
    site = Site(staged=True)
    topic = site.h.router.fanout.topics["queue:Sales"]
    topic.watchers.update({Broken(), Broken()})
    topic.changed()
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        for count in (1, 3):  # a single event, then a run of three
            frames = [site.event() for _ in range(count)]
            site.h.notifier.link.dataReceived(b"".join(frames))
            for t in site.transports:
                assert site.h.received(t) == decode_all(b"".join(map(to_client, frames)))
    finally:
        globalLogPublisher.removeObserver(observer)
    failed = [e for e in observer if e.get("event") == "fanout.run_failed"]
    assert len(failed) == 2 and all(e["log_failure"].check(RuntimeError) for e in failed)


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["read", "read", "status", "status", "turn", "heartbeat", "pause", "resume", "drop"]
            + ["guard"]
        ),
        st.integers(0, USERS - 1),
        st.lists(
            st.sampled_from(
                ["event", "event", "answer", "big"] + [f"user{i}" for i in range(USERS)]
            ),
            max_size=8,
        ),
    ),
    max_size=25,
)


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_runs_deliver_exactly_what_event_by_event_delivery_does(ops: list[Any]) -> None:
    """Any mix of reads, requests, pauses and drops: the bytes, numbers and counts of unstaged."""
    staged, model = Site(staged=True), Site(staged=False)
    for site in (staged, model):
        for t in site.transports:
            t.clear()
        for op in ops:
            site.step(op)
    assert staged.outcome() == model.outcome()
