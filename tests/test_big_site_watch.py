"""Large watch snapshots to clients (router/continued.py): a bounded first piece, then the
rest as QueueChanged ``continued`` events, before any later change of the watch."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.codec.pieces import PIECE_BYTES
from smbridge.router.continued import continued
from smbridge.testing import RouterHarness
from smbridge.topics import ItemSetState
from smbridge.transports.connection import ClientConnectionFactory

CALLS = 6_000  # about 480 kB of queue snapshot: larger than one piece


def calls(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"call{i}", "type": "call", "state": "Offering", "from": f"+1 317 555 {i:04d}"}
        for i in range(count)
    ]


def rebuilt(frames: list[Any]) -> list[dict[str, Any]]:
    """Apply a reply or reset and its continued events as a client would; return the items."""
    state = ItemSetState("Sales", "queue", "interactions")
    state.load(frames[0].parsed())
    for frame in frames[1:]:
        state.apply(frame.parsed())
    return list(state.items.values())


def test_a_large_queue_snapshot_is_answered_in_bounded_pieces() -> None:
    """WatchQueue: the reply holds a first piece and more; continued QueueChanged carry the rest."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.WATCH_QUEUE, 5, {"queue": "Sales"})
    (sub,) = h.upstream()
    sid = h.serve(sub, {"queue": "Sales", "interactions": calls(CALLS)})
    h.notifier.event(
        c.QUEUE_CHANGED, sid, {"queue": "Sales", "added": [{"id": "late"}], "changed": []}
    )
    frames = h.received(t)
    reply, rest, late = frames[0], frames[1:-1], frames[-1]
    assert (reply.kind, reply.request_id) == (Kind.RESPONSE, 5)
    assert reply.parsed()["more"] is True and reply.parsed()["queue"] == "Sales"
    assert len(rest) >= 1
    assert all((f.object_type, f.event_id) == c.QUEUE_CHANGED for f in rest)
    assert all(f.parsed()["continued"] is True for f in rest)
    assert [f.parsed()["more"] for f in rest] == [True] * (len(rest) - 1) + [False]
    assert all(len(f.payload) <= PIECE_BYTES for f in frames)
    assert rebuilt([reply, *rest]) == calls(CALLS)
    assert late.parsed()["added"] == [{"id": "late"}]  # the change comes after the whole snapshot


def test_a_small_queue_snapshot_is_one_plain_reply() -> None:
    """A snapshot that fits is one reply without more, as before."""
    first, rest = continued(c.QUEUE_CHANGED, {"queue": "Sales", "interactions": calls(3)})
    assert rest == [] and b'"more"' not in first


def test_a_reset_after_a_gap_is_sent_in_bounded_pieces() -> None:
    """Resume with a gap: a large queue's reset snapshot comes as a piece and continued events."""
    h = RouterHarness()
    h.registry.replay_bytes = 200
    conn, t, reply = h.logon()
    h.send(conn, c.WATCH_QUEUE, 2, {"queue": "Sales"})
    (sub,) = h.upstream()
    sid = h.serve(sub, {"queue": "Sales", "interactions": []})
    h.received(t)
    conn.connectionLost(None)
    h.notifier.event(c.QUEUE_CHANGED, sid, {"queue": "Sales", "added": calls(CALLS), "changed": []})
    again = ClientConnectionFactory(h.router, h.batcher).connection("tls")
    transport = StringTransport()
    again.makeConnection(transport)  # type: ignore[no-untyped-call]
    h.send(
        again,
        c.RESUME_SESSION,
        9,
        {"sessionId": reply["sessionId"], "resumeToken": reply["resumeToken"], "received": 0},
    )
    frames = h.received(transport)
    assert frames[0].parsed()["gap"] is True
    sales = [f for f in frames[1:] if (f.object_type, f.event_id) == c.QUEUE_CHANGED]
    assert sales[0].parsed()["reset"] is True and sales[0].parsed()["more"] is True
    assert len(sales) >= 2 and all(f.parsed().get("continued") for f in sales[1:])
    assert all(len(f.payload) <= PIECE_BYTES for f in frames)
    assert rebuilt(sales) == calls(CALLS)


def test_switchover_sends_a_large_snapshot_after_the_notice_in_pieces() -> None:
    """Switchover completed names a large watch in following; its reset comes after, in pieces,
    built once for every session that sees it."""
    h = RouterHarness()
    sessions = [h.logon(user)[:2] for user in ("agent1", "agent2")]
    for conn, _ in sessions:
        h.send(conn, c.WATCH_QUEUE, 10, {"queue": "Sales"})
    (sub,) = h.upstream()
    h.serve(sub, {"queue": "Sales", "interactions": []})
    for _, t in sessions:
        h.received(t)
    h.switch_over()
    for frame in h.upstream():
        if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
            topic = frame.parsed()["topic"]
            if topic == "queue:Sales":
                snapshot: dict[str, Any] = {"queue": "Sales", "interactions": calls(CALLS)}
            elif topic.startswith("user:"):
                snapshot = {"user": topic[5:], "interactions": []}
            else:
                snapshot = {"parameters": {}}
            h.notifier.answer(frame, {"snapshot": snapshot})
    seen = []
    for _, t in sessions:
        frames = h.received(t)
        at = next(i for i, f in enumerate(frames) if f.parsed().get("phase") == "completed")
        notice, after = frames[at].parsed(), frames[at + 1 :]
        assert notice["following"] == ["queue:Sales"]
        assert "queue:Sales" not in notice["snapshots"] and len(notice["snapshots"]) == 1
        assert after[0].parsed()["reset"] is True and len(after) >= 2
        assert all(len(f.payload) <= PIECE_BYTES for f in frames)
        assert rebuilt(after) == calls(CALLS)
        seen.append([f.payload for f in after])
    assert seen[0] == seen[1]
