"""Router: sessions, forwarding, fan-out and the directory cache against a scripted Notifier."""

from __future__ import annotations

from smbridge.codec import Decoder, Kind
from smbridge.codec import catalog as c
from smbridge.testing import RouterHarness
from smbridge.upstream.connector import LinkState


def test_get_version_before_logon_and_no_session_for_others():
    """GetVersion answers without a session; any other request gets no-session."""
    h = RouterHarness()
    conn, t = h.client()
    h.send(conn, c.GET_VERSION, 5)
    h.send(conn, c.HEARTBEAT, 6)
    version, refused = h.received(t)
    assert version.kind == Kind.RESPONSE and version.request_id == 5
    assert version.parsed()["server"] == "smbridge" and version.parsed()["protocol"] == 1
    assert refused.kind == Kind.ERROR and refused.parsed()["code"] == "no-session"


def test_create_session_authenticates_upstream_and_replies():
    """CreateSession asks the Notifier, then replies with ids, timeout, heartbeat and roster."""
    h = RouterHarness()
    conn, t = h.client()
    h.send(conn, c.CREATE_SESSION, 1, {"user": "agent1", "password": "demo", "sessionTimeout": 600})
    (auth,) = h.upstream()
    assert (auth.object_type, auth.event_id) == c.LINK_AUTHENTICATE
    assert auth.parsed() == {"user": "agent1", "password": "demo", "station": None}
    h.notifier.answer(
        auth,
        {
            "user": {"id": "agent1", "displayName": "Agent 1", "extension": "1001"},
            "location": "London",
        },
    )
    opened, mine = h.upstream()
    assert opened.kind == Kind.NOTIFICATION and (opened.object_type, opened.event_id) == (
        c.LINK_SESSION_OPENED
    )
    assert mine.parsed()["topic"] == "user:agent1"
    assert h.received(t) == []  # the reply waits for My Interactions
    h.serve(mine, {"user": "agent1", "interactions": [{"id": "i1", "type": "call"}]})
    (reply,) = h.received(t)
    body = reply.parsed()
    assert body["myInteractions"] == [{"id": "i1", "type": "call"}]
    assert opened.parsed()["sessionId"] == body["sessionId"]
    assert reply.request_id == 1 and body["sessionTimeout"] == 600
    assert body["heartbeatInterval"] == 200 and body["sessionId"].startswith("sm1-")
    assert body["cic"] == {"name": "cic1", "role": "primary"} and body["roster"] == [
        {"name": "sm1"}
    ]
    assert body["location"] == "London" and body["server"]["fqdn"] == "sm1.example"
    assert len(h.registry) == 1


def test_logon_failure_is_relayed_and_creates_nothing():
    """A logon-failed answer reaches the client with its reason; no session exists after it."""
    h = RouterHarness()
    conn, t = h.client()
    h.send(conn, c.CREATE_SESSION, 3, {"user": "agent1", "password": "wrong"})
    (auth,) = h.upstream()
    h.notifier.answer(
        auth,
        {
            "code": "logon-failed",
            "message": "wrong user name or password",
            "reason": "bad-credentials",
        },
        Kind.ERROR,
    )
    (reply,) = h.received(t)
    assert reply.kind == Kind.ERROR and reply.request_id == 3
    assert (
        reply.parsed()["code"] == "logon-failed" and reply.parsed()["reason"] == "bad-credentials"
    )
    assert len(h.registry) == 0 and conn.session is None


def test_bad_create_session_fields():
    """Missing user, non-string password and a too-small timeout get clear errors."""
    h = RouterHarness()
    conn, t = h.client()
    h.send(conn, c.CREATE_SESSION, 1, {"password": "x"})
    h.send(conn, c.CREATE_SESSION, 2, {"user": "a", "password": 5})
    h.send(conn, c.CREATE_SESSION, 3, {"user": "a", "password": "demo", "sessionTimeout": 10})
    (auth,) = h.upstream()
    h.notifier.answer(auth, {"user": {"id": "a"}})
    codes = [(f.request_id, f.parsed()["code"]) for f in h.received(t)]
    assert codes == [(1, "bad-request"), (2, "bad-request"), (3, "session-timeout-too-small")]
    assert len(h.registry) == 0


def test_forwarded_request_carries_identity_and_answer_is_relayed():
    """Unhandled requests go upstream with _session appended; the answer returns by requestId."""
    h = RouterHarness()
    conn, t, session = h.logon()
    h.send(conn, c.SET_STATUS, 41, {"status": "Available", "_session": {"id": "forged"}})
    (fwd,) = h.upstream()
    assert (fwd.object_type, fwd.event_id) == c.SET_STATUS and fwd.request_id != 41
    assert fwd.parsed()["_session"] == {"id": session["sessionId"], "user": "agent1"}
    assert fwd.parsed()["status"] == "Available"
    h.notifier.answer(fwd, {"user": "agent1", "status": "Available"})
    (reply,) = h.received(t)
    assert reply.request_id == 41 and reply.kind == Kind.RESPONSE
    assert reply.parsed() == {"user": "agent1", "status": "Available"}


def test_link_loss_answers_in_flight_and_later_requests():
    """Requests in flight at link loss, and while it is down, get upstream-unavailable."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.SET_STATUS, 7, {"status": "Away"})
    h.upstream()
    h.notifier.link.connectionLost(None)
    h.send(conn, c.MAKE_CALL, 8, {"target": "1001"})
    replies = h.received(t)
    assert [(f.request_id, f.parsed()["code"], f.parsed()["retryable"]) for f in replies] == [
        (7, "upstream-unavailable", True),
        (8, "upstream-unavailable", True),
    ]
    assert h.connector.state is LinkState.DISCONNECTED


def _watch(h: RouterHarness, conn, rid: int, queue: str = "Sales"):
    h.send(conn, c.WATCH_QUEUE, rid, {"queue": queue})


def test_one_subscription_for_many_watchers_and_one_encoding():
    """Two watchers of a queue share one upstream subscription and get the same bytes."""
    h = RouterHarness()
    a, ta, _ = h.logon("agent1")
    b, tb, _ = h.logon("agent2")
    _watch(h, a, 10)
    (sub,) = h.upstream()
    assert (sub.object_type, sub.event_id) == c.LINK_SUBSCRIBE
    topic_sub = sub.parsed()["sub"]
    assert sub.parsed()["topic"] == "queue:Sales"
    h.notifier.answer(sub, {"snapshot": {"queue": "Sales", "interactions": [{"id": "c1"}]}})
    (snap_a,) = h.received(ta)
    assert snap_a.parsed() == {"queue": "Sales", "interactions": [{"id": "c1"}]}
    h.notifier.event(
        c.QUEUE_CHANGED,
        topic_sub,
        {"queue": "Sales", "added": [{"id": "c2"}], "changed": [], "removed": ["c1"]},
    )
    _watch(h, b, 11)
    assert h.upstream() == []  # no second subscription
    (event_a,) = h.received(ta)
    (snap_b,) = h.received(tb)
    assert event_a.request_id == 0 and event_a.parsed()["added"] == [{"id": "c2"}]
    assert snap_b.parsed()["interactions"] == [{"id": "c2"}]  # the copy applied the event
    h.notifier.event(
        c.QUEUE_CHANGED,
        topic_sub,
        {"queue": "Sales", "added": [{"id": "c3"}], "changed": [], "removed": []},
    )
    (ev_a,) = h.received(ta)
    (ev_b,) = h.received(tb)
    assert ev_a.encode() == ev_b.encode()
    h.send(a, c.UNWATCH_QUEUE, 12, {"queue": "Sales"})
    assert h.upstream() == []  # b still watches
    h.send(b, c.UNWATCH_QUEUE, 13, {"queue": "Sales"})
    (unsub,) = h.upstream()
    assert (unsub.object_type, unsub.event_id) == c.LINK_UNSUBSCRIBE
    assert unsub.parsed() == {"sub": topic_sub}


def test_session_end_releases_its_subscriptions():
    """A session that ends (dropped, linger over) leaves its topics; the last watcher releases."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    _watch(h, conn, 10)
    (sub,) = h.upstream()
    h.notifier.answer(sub, {"snapshot": {"queue": "Sales", "interactions": []}})
    conn.connectionLost(None)
    assert h.upstream() == [] and len(h.registry) == 1  # lingering: still subscribed
    h.clock.advance(h.registry.linger)
    frames = h.upstream()
    kinds = [(f.object_type, f.event_id) for f in frames]
    assert c.LINK_UNSUBSCRIBE in kinds and c.LINK_SESSION_CLOSED in kinds
    assert len(h.registry) == 0 and set(h.router.fanout.topics) == {"parameters"}


def test_unknown_queue_error_reaches_the_watcher():
    """A Subscribe refused upstream fails the WatchQueue with the Notifier's code."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    _watch(h, conn, 10, "Nope")
    (sub,) = h.upstream()
    h.notifier.answer(sub, {"code": "not-found", "message": "no queue Nope"}, Kind.ERROR)
    (reply,) = h.received(t)
    assert reply.kind == Kind.ERROR and reply.parsed()["code"] == "not-found"
    assert "queue:Nope" not in h.router.fanout.topics


def test_directory_served_from_cache_after_first_load():
    """GetDirectory loads once upstream; later requests and changes are served locally."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.GET_DIRECTORY, 20, {"name": "Company Directory"})
    (sub,) = h.upstream()
    assert sub.parsed()["topic"] == "directory:Company Directory"
    h.notifier.answer(
        sub,
        {
            "snapshot": {
                "name": "Company Directory",
                "entries": [{"id": "agent1", "displayName": "A1"}],
            }
        },
    )
    (first,) = h.received(t)
    h.notifier.event(
        c.DIRECTORY_CHANGED,
        sub.parsed()["sub"],
        {"name": "Company Directory", "added": [{"id": "agent2"}], "changed": [], "removed": []},
    )
    h.send(conn, c.GET_DIRECTORY, 21, {"name": "Company Directory"})
    assert h.upstream() == []
    (change, second) = h.received(t)  # the first GetDirectory made it a watcher
    assert change.parsed()["added"] == [{"id": "agent2"}]
    assert [e["id"] for e in first.parsed()["entries"]] == ["agent1"]
    assert [e["id"] for e in second.parsed()["entries"]] == ["agent1", "agent2"]


def test_heartbeat_and_destroy():
    """Heartbeat answers sessionUpdated; DestroySession answers and ends the session."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.HEARTBEAT, 30)
    h.send(conn, c.DESTROY_SESSION, 31)
    h.send(conn, c.HEARTBEAT, 32)
    replies = h.received(t)
    assert replies[0].parsed() == {"sessionUpdated": True, "haSwitchover": False}
    assert replies[1].request_id == 31 and replies[1].kind == Kind.RESPONSE
    assert replies[2].parsed()["code"] == "no-session"
    assert len(h.registry) == 0


def test_bad_frame_gets_error_and_close():
    """A malformed frame is answered with bad-frame and the connection is closed."""
    h = RouterHarness()
    conn, t = h.client()
    conn.dataReceived(b"\x00\x00\x00\x0a\x07\x01\x00\xa8\x00\x01\x00\x00\x00\x09")
    (err,) = Decoder().feed(t.value())
    assert err.kind == Kind.ERROR and err.request_id == 9
    assert (err.object_type, err.event_id) == c.CREATE_SESSION  # names the offending type
    assert err.parsed()["code"] == "bad-frame" and "version 7" in err.parsed()["message"]
    assert t.disconnecting


def test_second_logon_on_one_connection_is_refused():
    """A connection carries one session; a second CreateSession gets session-exists."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.send(conn, c.CREATE_SESSION, 9, {"user": "agent1", "password": "demo"})
    (reply,) = h.received(t)
    assert reply.parsed()["code"] == "session-exists"


def test_reconnect_announces_sessions_and_resubscribes():
    """After the link comes back, live sessions are announced again and topics re-subscribed."""
    h = RouterHarness()
    conn, t, session = h.logon()
    _watch(h, conn, 10)
    (sub,) = h.upstream()
    h.notifier.answer(sub, {"snapshot": {"queue": "Sales", "interactions": []}})
    h.notifier.link.connectionLost(None)
    h.connector.state = LinkState.CONNECTING
    h.notifier = h.connect_link()
    (register,) = h.notifier.take()
    h.notifier.answer(register, {"cic": {"name": "cic1", "role": "primary"}, "parameters": {}})
    frames = h.upstream()
    opened = [f.parsed() for f in frames if (f.object_type, f.event_id) == c.LINK_SESSION_OPENED]
    subs = {
        f.parsed()["topic"]: f.parsed()["sub"]
        for f in frames
        if (f.object_type, f.event_id) == c.LINK_SUBSCRIBE
    }
    assert [o["sessionId"] for o in opened] == [session["sessionId"]]
    assert subs == {
        "queue:Sales": sub.parsed()["sub"],
        "user:agent1": h.user_subs["agent1"],
        "parameters": h.params_sub,
    }


def test_get_version_after_logon_does_not_restart_the_timer():
    """GetVersion is answered in a session but leaves the timer alone; Heartbeat restarts it."""
    h = RouterHarness()
    conn, t, _ = h.logon()  # 1800 s timeout, notice 60 s before expiry
    h.clock.advance(1000)
    h.send(conn, c.GET_VERSION, 50)
    assert h.received(t)[0].parsed()["protocol"] == 1
    h.clock.advance(740)  # 1740 s after logon: the notice is due unless the timer moved
    assert [f.parsed() for f in h.received(t)] == [{"secondsLeft": 60}]
    h.send(conn, c.HEARTBEAT, 51)
    h.received(t)
    h.clock.advance(1739)
    assert h.received(t) == [] and len(h.registry) == 1
