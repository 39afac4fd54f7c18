"""The router through an upstream switchover: notices, fresh snapshots, haSwitchover."""

from __future__ import annotations

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.testing import RouterHarness
from smbridge.upstream.connector import LinkState


def _switch(h: RouterHarness, snapshots: dict[str, dict[str, object]]) -> None:
    """Drop the link while running, bring up a new one, answer Register and re-subscriptions."""
    h.connector.running = True
    h.notifier.link.connectionLost(None)
    assert h.connector.state is LinkState.SWITCHING
    h.notifier = h.connect_link()
    (register,) = h.notifier.take()
    h.notifier.answer(register, {"cic": {"name": "cic2", "role": "primary"}, "parameters": {}})
    assert h.connector.state is LinkState.UP
    for frame in h.upstream():
        if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
            topic = frame.parsed()["topic"]
            h.notifier.answer(frame, {"snapshot": snapshots.get(topic, {"parameters": {}})})


def test_switchover_notices_and_fresh_snapshots_reach_every_session() -> None:
    """Each session hears Switchover started, then completed with the new snapshots it watches."""
    h = RouterHarness()
    sessions = []
    for user in ("agent1", "agent2"):
        conn, t, _ = h.logon(user)
        sessions.append((conn, t))
    for conn, _ in sessions:
        h.send(conn, c.WATCH_QUEUE, 10, {"queue": "Sales"})
    (sub,) = h.upstream()
    h.notifier.answer(sub, {"snapshot": {"queue": "Sales", "interactions": []}})
    for _, t in sessions:
        h.received(t)
    fresh = {"queue": "Sales", "interactions": [{"id": "i9", "state": "alerting"}]}
    _switch(
        h,
        {
            "queue:Sales": fresh,
            "user:agent1": {"user": "agent1", "interactions": []},
            "user:agent2": {"user": "agent2", "interactions": []},
        },
    )
    for user, (_, t) in zip(("agent1", "agent2"), sessions, strict=True):
        notices = [f for f in h.received(t) if (f.object_type, f.event_id) == c.SWITCHOVER]
        assert [f.kind for f in notices] == [Kind.NOTIFICATION, Kind.NOTIFICATION]
        started, completed = (f.parsed() for f in notices)
        assert started == {"phase": "started", "cic": {"name": "cic1", "role": "primary"}}
        assert completed["phase"] == "completed"
        assert completed["cic"] == {"name": "cic2", "role": "primary"}
        assert completed["snapshots"]["queue:Sales"]["interactions"] == fresh["interactions"]
        assert completed["snapshots"][f"user:{user}"] == {"user": user, "interactions": []}


def test_heartbeat_reports_the_switchover_once() -> None:
    """The first Heartbeat after a switchover says haSwitchover true, the next one false."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.HEARTBEAT, 20)
    assert h.received(t)[0].parsed() == {"sessionUpdated": True, "haSwitchover": False}
    _switch(h, {"user:agent1": {"user": "agent1", "interactions": []}})
    h.received(t)
    h.send(conn, c.HEARTBEAT, 21)
    assert h.received(t)[0].parsed() == {"sessionUpdated": True, "haSwitchover": True}
    h.send(conn, c.HEARTBEAT, 22)
    assert h.received(t)[0].parsed() == {"sessionUpdated": True, "haSwitchover": False}


def test_forwarded_request_in_flight_is_answered_upstream_unavailable() -> None:
    """A forwarded request cut off by the switchover gets exactly one retryable error."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.SET_STATUS, 30, {"status": "Available"})
    (forwarded,) = h.upstream()
    assert (forwarded.object_type, forwarded.event_id) == c.SET_STATUS
    _switch(h, {"user:agent1": {"user": "agent1", "interactions": []}})
    answers = [f for f in h.received(t) if f.request_id == 30]
    assert len(answers) == 1
    assert answers[0].kind == Kind.ERROR
    assert answers[0].parsed()["code"] == "upstream-unavailable"
    assert answers[0].parsed()["retryable"] is True
