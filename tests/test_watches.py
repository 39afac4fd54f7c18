"""Every watch type, per-user delivery, directories and visibility, on a scripted Notifier."""

from __future__ import annotations

from smbridge.codec import Frame, Kind
from smbridge.codec import catalog as c
from smbridge.testing import RouterHarness

ENTRIES = [
    {"id": "agent1", "displayName": "Ann Agent", "extension": "1001", "workgroups": ["Sales"]},
    {"id": "agent2", "displayName": "Bob Agent", "extension": "1002", "workgroups": ["Support"]},
    {"id": "boss", "displayName": "Carol Boss", "extension": "1900", "workgroups": []},
]


def _kinds(frames: list[Frame]) -> list[tuple[int, int]]:
    return [(f.object_type, f.event_id) for f in frames]


def _subscribe_of(h: RouterHarness, topic: str) -> Frame:
    frames = [f for f in h.upstream() if (f.object_type, f.event_id) == c.LINK_SUBSCRIBE]
    assert [f.parsed()["topic"] for f in frames] == [topic]
    return frames[0]


def test_status_watch_one_subscription_per_user_and_shared_events():
    """WatchStatus holds one topic per user; a StatusChanged reaches every watcher once."""
    h = RouterHarness()
    a, ta, _ = h.logon("agent1")
    b, tb, _ = h.logon("agent2")
    h.send(a, c.WATCH_STATUS, 10, {"users": ["agent3", "agent4"]})
    subs = {f.parsed()["topic"]: f for f in h.upstream()}
    assert set(subs) == {"status:agent3", "status:agent4"}
    s3 = h.serve(subs["status:agent3"], {"user": "agent3", "status": "Available", "since": 1})
    h.serve(subs["status:agent4"], {"user": "agent4", "status": "Away", "since": 2})
    (reply,) = h.received(ta)
    assert [u["status"] for u in reply.parsed()["users"]] == ["Available", "Away"]
    h.send(b, c.WATCH_STATUS, 11, {"users": ["agent3"]})
    assert h.upstream() == []
    h.notifier.event(c.STATUS_CHANGED, s3, {"user": "agent3", "status": "On Phone", "since": 5})
    (ea,) = h.received(ta)
    (snap_b, eb) = h.received(tb)
    assert snap_b.parsed()["users"] == [{"user": "agent3", "status": "Available", "since": 1}]
    assert ea.encode() == eb.encode() and ea.parsed()["status"] == "On Phone"


def test_status_watch_is_all_or_nothing():
    """When one user of a WatchStatus is unknown, the request fails and holds nothing."""
    h = RouterHarness()
    a, ta, _ = h.logon()
    h.send(a, c.WATCH_STATUS, 10, {"users": ["agent3", "ghost"]})
    subs = {f.parsed()["topic"]: f for f in h.upstream()}
    h.serve(subs["status:agent3"], {"user": "agent3", "status": "Available"})
    h.notifier.answer(
        subs["status:ghost"], {"code": "not-found", "message": "no user ghost"}, Kind.ERROR
    )
    (reply,) = h.received(ta)
    assert reply.parsed()["code"] == "not-found" and "ghost" in reply.parsed()["message"]
    assert "status:agent3" not in h.router.fanout.topics
    assert h.registry.get(next(iter(s.id for s in h.registry))).topics == set()


def test_statistics_watch_filters_reply_and_merges_events():
    """WatchStatistics answers the named stats; events merge into the copy later watchers get."""
    h = RouterHarness()
    a, ta, _ = h.logon("supervisor1")
    b, tb, _ = h.logon("supervisor2")
    h.send(a, c.WATCH_STATISTICS, 10, {"workgroup": "Sales", "stats": ["callsWaiting"]})
    sub = h.serve(
        _subscribe_of(h, "statistics:Sales"),
        {"workgroup": "Sales", "stats": {"callsWaiting": 2, "agentsAvailable": 5}},
    )
    (reply,) = h.received(ta)
    assert reply.parsed() == {"workgroup": "Sales", "stats": {"callsWaiting": 2}}
    h.notifier.event(
        c.STATISTICS_CHANGED, sub, {"workgroup": "Sales", "stats": {"callsWaiting": 3}}
    )
    h.send(b, c.WATCH_STATISTICS, 11, {"workgroup": "Sales"})
    (snap,) = h.received(tb)
    assert snap.parsed()["stats"] == {"callsWaiting": 3, "agentsAvailable": 5}
    (event,) = h.received(ta)
    assert event.parsed()["stats"] == {"callsWaiting": 3}


def test_per_user_events_reach_only_that_users_sessions():
    """MyInteractionsChanged and InteractionChanged reach every session of their user only."""
    h = RouterHarness()
    a1, t1, _ = h.logon("agent1")
    a2, t2, _ = h.logon("agent1")  # a second session of the same user: no new subscription
    b, tb, _ = h.logon("agent2")
    call = {"id": "i9", "type": "call", "state": "Connected"}
    h.notifier.event(
        c.MY_INTERACTIONS_CHANGED,
        h.user_subs["agent1"],
        {"user": "agent1", "added": [call], "changed": [], "removed": []},
    )
    h.notifier.event(
        c.INTERACTION_CHANGED,
        h.user_subs["agent1"],
        {"user": "agent1", "interaction": {**call, "state": "Held"}},
    )
    for t in (t1, t2):
        assert _kinds(h.received(t)) == [c.MY_INTERACTIONS_CHANGED, c.INTERACTION_CHANGED]
    assert h.received(tb) == []
    # a new session of agent1 starts from the copy, which applied both events
    a3, t3, reply = h.logon("agent1")
    assert reply["myInteractions"] == [{**call, "state": "Held"}]


def test_too_many_watches():
    """Past --max-watches a watch is refused with too-many-watches and nothing is held."""
    h = RouterHarness(max_watches=2)
    a, ta, _ = h.logon()
    for rid, queue in ((1, "Q1"), (2, "Q2")):
        h.send(a, c.WATCH_QUEUE, 10 + rid, {"queue": queue})
        h.serve(_subscribe_of(h, f"queue:{queue}"), {"queue": queue, "interactions": []})
    h.send(a, c.WATCH_QUEUE, 13, {"queue": "Q1"})  # already held: fine
    h.send(a, c.WATCH_QUEUE, 14, {"queue": "Q3"})
    h.send(a, c.WATCH_STATUS, 15, {"users": ["x"]})
    replies = h.received(ta)
    assert [r.kind for r in replies[:3]] == [Kind.RESPONSE] * 3
    assert [r.parsed()["code"] for r in replies[3:]] == ["too-many-watches"] * 2
    assert replies[3].parsed()["limit"] == 2 and h.upstream() == []


def _load_directory(h: RouterHarness, conn, transport, name: str = "Company Directory") -> int:
    h.send(conn, c.GET_DIRECTORY, 30, {"name": name})
    sub = h.serve(_subscribe_of(h, f"directory:{name}"), {"name": name, "entries": ENTRIES})
    return sub


def test_search_and_transfer_targets_from_the_cache():
    """SearchDirectory and GetTransferTargets answer from the cache by name, id or extension."""
    h = RouterHarness({"TransferDialogDirectories": "Company Directory"})
    a, ta, _ = h.logon()
    _load_directory(h, a, ta)
    h.received(ta)
    h.send(a, c.SEARCH_DIRECTORY, 31, {"name": "Company Directory", "query": "AGENT"})
    h.send(a, c.SEARCH_DIRECTORY, 32, {"name": "Company Directory", "query": "19"})
    h.send(a, c.GET_TRANSFER_TARGETS, 33, {"query": "bob", "limit": 5})
    h.send(a, c.SEARCH_DIRECTORY, 34, {"name": "Company Directory", "query": "a", "limit": 0})
    assert h.upstream() == []  # no upstream round trip
    r1, r2, r3, r4 = h.received(ta)
    assert [e["id"] for e in r1.parsed()["entries"]] == ["agent1", "agent2"]
    assert [e["id"] for e in r2.parsed()["entries"]] == ["boss"]
    assert r3.parsed()["entries"] == [{**ENTRIES[1], "directory": "Company Directory"}]
    assert r4.parsed()["code"] == "bad-request" and "limit" in r4.parsed()["message"]


def test_restricted_visibility_in_answers_and_events():
    """With RestrictUserVisibility a user sees only viewable workgroups, in replies and events."""
    h = RouterHarness({"RestrictUserVisibility": "Yes"})
    sales, ts, _ = h.logon("agent1", rights=["view:Sales"])
    boss, tb, _ = h.logon("boss", rights=["view:*"])
    sub = _load_directory(h, sales, ts)
    (reply,) = h.received(ts)
    assert [e["id"] for e in reply.parsed()["entries"]] == ["agent1"]
    h.send(boss, c.GET_DIRECTORY, 30, {"name": "Company Directory"})
    (reply,) = h.received(tb)
    assert len(reply.parsed()["entries"]) == 3
    # agent2 moves into Sales (becomes visible), boss's entry changes (never visible to sales),
    # and a new Support agent arrives (invisible).
    h.notifier.event(
        c.DIRECTORY_CHANGED,
        sub,
        {
            "name": "Company Directory",
            "added": [{"id": "agent3", "workgroups": ["Support"]}],
            "changed": [
                {**ENTRIES[1], "workgroups": ["Sales"]},
                {**ENTRIES[2], "extension": "1901"},
            ],
            "removed": [],
        },
    )
    (ev_sales,) = h.received(ts)
    (ev_boss,) = h.received(tb)
    assert ev_sales.parsed()["added"] == [{**ENTRIES[1], "workgroups": ["Sales"]}]
    assert ev_sales.parsed()["changed"] == [] and ev_sales.parsed()["removed"] == []
    assert len(ev_boss.parsed()["added"]) == 1 and len(ev_boss.parsed()["changed"]) == 2
    # agent1 leaves Sales: removed for the sales user; an invisible removal sends nothing
    h.notifier.event(
        c.DIRECTORY_CHANGED,
        sub,
        {
            "name": "Company Directory",
            "added": [],
            "changed": [{**ENTRIES[0], "workgroups": ["Billing"]}],
            "removed": [],
        },
    )
    h.notifier.event(
        c.DIRECTORY_CHANGED,
        sub,
        {"name": "Company Directory", "added": [], "changed": [], "removed": ["agent3"]},
    )
    (ev1,) = h.received(ts)
    assert ev1.parsed()["removed"] == ["agent1"] and ev1.parsed()["added"] == []
    assert len(h.received(tb)) == 2
    h.send(sales, c.SEARCH_DIRECTORY, 40, {"name": "Company Directory", "query": "agent"})
    (found,) = h.received(ts)
    assert [e["id"] for e in found.parsed()["entries"]] == ["agent2"]


def test_parameter_change_applies_without_restart():
    """A ParametersChanged event turns restriction on and preloads newly named directories."""
    h = RouterHarness()
    a, ta, _ = h.logon("agent1", rights=["view:Sales"])
    _load_directory(h, a, ta)
    (reply,) = h.received(ta)
    assert len(reply.parsed()["entries"]) == 3
    h.notifier.event(
        c.LINK_PARAMETERS_CHANGED,
        h.params_sub,
        {
            "parameters": {
                "RestrictUserVisibility": "Yes",
                "DirectoriestoCacheOnSMStartup": "Sales Directory",
            }
        },
    )
    sub = _subscribe_of(h, "directory:Sales Directory")  # preloaded at once
    h.serve(sub, {"name": "Sales Directory", "entries": ENTRIES[:1]})
    h.send(a, c.GET_DIRECTORY, 41, {"name": "Company Directory"})
    (reply,) = h.received(ta)
    assert [e["id"] for e in reply.parsed()["entries"]] == ["agent1"]
    assert h.router.parameters()["RestrictUserVisibility"] == "Yes"


def test_reference_counting_under_every_ending():
    """Logoff, expiry, a dropped connection and a pending watch each release the topic once."""
    h = RouterHarness()
    sessions = [h.logon(f"u{i}") for i in range(4)]
    for i, (conn, _t, _) in enumerate(sessions[:3]):
        h.send(conn, c.WATCH_QUEUE, 50, {"queue": "Sales"})
        if i == 0:
            h.serve(_subscribe_of(h, "queue:Sales"), {"queue": "Sales", "interactions": []})
    topic = h.router.fanout.topics["queue:Sales"]
    assert len(topic.watchers) == 3
    h.send(sessions[0][0], c.DESTROY_SESSION, 51)  # logoff
    sessions[1][0].connectionLost(None)  # dropped
    h.registry.get(sessions[2][2]["sessionId"]).timer.deadline = 0  # expires at the next wake
    h.clock.advance(1740)  # the timers' first wake; only that session's deadline has passed
    frames = h.upstream()
    assert _kinds(frames).count(c.LINK_UNSUBSCRIBE) == 4  # queue + three user topics
    assert "queue:Sales" not in h.router.fanout.topics
    # a watch still waiting for its snapshot when the session ends is cancelled, not leaked
    conn, t, _ = sessions[3]
    h.send(conn, c.WATCH_QUEUE, 52, {"queue": "Support"})
    pending = _subscribe_of(h, "queue:Support")
    conn.connectionLost(None)
    h.clock.advance(h.registry.linger)  # dropped: it lingers, then ends
    h.serve(pending, {"queue": "Support", "interactions": []})
    assert "queue:Support" not in h.router.fanout.topics
    assert set(h.router.fanout.topics) == {"parameters"}
