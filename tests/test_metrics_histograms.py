"""The bridge's timing histograms: the pure core, and where the router observes them.

The router is driven by ``RouterHarness`` on a ``Clock``, so each observed time is
exact: what the clock advanced between the request and its answer.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.histograms import (
    LOGON_BUCKETS,
    Histogram,
    Timings,
)
from smbridge.testing import RouterHarness


def test_bucket_bounds_are_inclusive_and_the_last_is_inf():
    """A value equal to a bound counts in that bucket (Prometheus ``le``); above all: +Inf."""
    h = Histogram((0.1, 0.5, 1.0))
    for value in (0.0, 0.1, 0.1000001, 0.5, 2.0, 7.5):
        h.observe(value)
    assert h.cumulative() == [(0.1, 2), (0.5, 4), (1.0, 4), (float("inf"), 6)]
    assert h.count == 6
    assert h.sum == pytest.approx(0.0 + 0.1 + 0.1000001 + 0.5 + 2.0 + 7.5)


def test_bounds_must_be_sorted_distinct_and_finite():
    """A histogram refuses bounds that would make its buckets ambiguous."""
    for bad in ((), (0.5, 0.1), (0.1, 0.1), (0.1, float("inf")), (float("nan"),)):
        with pytest.raises(ValueError):
            Histogram(bad)


@given(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=60),
    st.lists(
        st.floats(min_value=0.0001, max_value=50, allow_nan=False), min_size=1, max_size=12
    ).map(lambda b: tuple(sorted(set(b)))),
)
def test_histogram_matches_a_naive_model(values, bounds):
    """Each cumulative bucket is the number of values <= its bound; sum and count agree."""
    h = Histogram(bounds)
    for v in values:
        h.observe(v)
    expected = [(b, sum(1 for v in values if v <= b)) for b in bounds]
    expected.append((float("inf"), len(values)))
    assert h.cumulative() == expected
    assert h.count == len(values)
    assert h.sum == pytest.approx(sum(values))


def test_publish_delay_is_clamped_and_needs_a_numeric_at():
    """An ``at`` in the future counts as 0; a missing or non-numeric ``at`` is not observed."""
    clock = Clock()
    clock.advance(100.0)
    t = Timings(clock)
    t.published({"at": 99.75})
    t.published({"at": 100.5})  # the Notifier's clock runs ahead: 0, not negative
    t.published({"queue": "Sales"})
    t.published({"at": "yesterday"})
    t.published({"at": True})
    assert t.publish.count == 2
    assert t.publish.sum == pytest.approx(0.25)


def test_logon_time_runs_from_create_session_to_the_reply():
    """The clock advanced while the Notifier authenticated is the observed logon time."""
    h = RouterHarness()
    timings = h.router.timings
    conn, transport = h.client()
    h.send(conn, c.CREATE_SESSION, 1, {"user": "agent1", "password": "demo"})
    (auth,) = h.upstream()
    h.clock.advance(0.3)
    h.notifier.answer(
        auth,
        {"user": {"id": "agent1", "rights": []}, "station": None, "location": "Indianapolis"},
    )
    for frame in h.upstream():
        if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
            h.clock.advance(0.2)
            h.serve(frame, {"user": "agent1", "interactions": []})
    (reply,) = h.received(transport)
    assert "sessionId" in reply.parsed()
    assert timings.logon.count == 1
    assert timings.logon.sum == pytest.approx(0.5)
    assert timings.logon.cumulative()[LOGON_BUCKETS.index(0.5)] == (0.5, 1)


def test_refused_logon_is_timed_too():
    """A CreateSession answered with an error (bad password) is observed like any other."""
    h = RouterHarness()
    conn, transport = h.client()
    h.send(conn, c.CREATE_SESSION, 1, {"user": "agent1", "password": "nope"})
    (auth,) = h.upstream()
    h.clock.advance(0.05)
    h.notifier.answer(auth, {"code": "logon-failed", "message": "no"}, kind=Kind.ERROR)
    (reply,) = h.received(transport)
    assert reply.parsed()["code"] == "logon-failed"
    assert h.router.timings.logon.count == 1
    assert h.router.timings.logon.sum == pytest.approx(0.05)


def test_forwarded_and_local_round_trips_are_told_apart():
    """A forwarded request counts its wait for the Notifier; local ones, their own time."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    timings = h.router.timings
    h.send(conn, c.SET_STATUS, 41, {"status": "Available"})
    (fwd,) = h.upstream()
    h.clock.advance(0.125)
    h.notifier.answer(fwd, {"user": "agent1", "status": "Available"})
    (reply,) = h.received(t)
    assert reply.request_id == 41
    assert (timings.forwarded.count, timings.forwarded.sum) == (1, pytest.approx(0.125))
    assert timings.local.count == 0
    h.send(conn, c.HEARTBEAT, 42, {})  # answered at once
    (beat,) = h.received(t)
    assert beat.request_id == 42
    assert (timings.local.count, timings.local.sum) == (1, 0.0)
    h.send(conn, c.WATCH_QUEUE, 43, {"queue": "Sales"})  # waits for the snapshot
    (sub,) = h.upstream()
    assert timings.local.count == 1
    h.clock.advance(0.04)
    h.serve(sub, {"queue": "Sales", "interactions": []})
    (snap,) = h.received(t)
    assert snap.request_id == 43
    assert (timings.local.count, timings.local.sum) == (2, pytest.approx(0.04))
    assert timings.forwarded.count == 1


def test_a_forwarded_request_while_the_link_is_down_is_still_timed():
    """upstream-unavailable, answered at once, is one forwarded observation of 0 s."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    h.notifier.link.connectionLost(None)
    h.send(conn, c.MAKE_CALL, 8, {"target": "1001"})
    (reply,) = h.received(t)
    assert reply.parsed()["code"] == "upstream-unavailable"
    assert (h.router.timings.forwarded.count, h.router.timings.forwarded.sum) == (1, 0.0)


def test_publish_delay_is_observed_once_per_event_not_per_watcher():
    """Three watchers of one queue: one event is one observation of (now - at)."""
    h = RouterHarness()
    conns = [h.logon(f"agent{n}") for n in (1, 2, 3)]
    h.send(conns[0][0], c.WATCH_QUEUE, 10, {"queue": "Sales"})
    (sub,) = h.upstream()
    sid = h.serve(sub, {"queue": "Sales", "interactions": []})
    for conn, _, _ in conns[1:]:
        h.send(conn, c.WATCH_QUEUE, 11, {"queue": "Sales"})
    for _, t, _ in conns:
        h.received(t)
    at = h.clock.seconds()
    h.clock.advance(0.015)
    h.notifier.event(
        c.QUEUE_CHANGED, sid, {"queue": "Sales", "added": [{"id": "x"}], "removed": [], "at": at}
    )
    for _, t, _ in conns:
        (event,) = h.received(t)
        assert event.parsed()["added"] == [{"id": "x"}]
    publish = h.router.timings.publish
    assert (publish.count, publish.sum) == (1, pytest.approx(0.015))


def test_resume_time_is_observed_for_taken_and_refused_resumes():
    """A resume that succeeds and one refused (unknown session) each add one observation."""
    from twisted.internet.testing import StringTransport

    from smbridge.transports.connection import ClientConnectionFactory

    h = RouterHarness()
    conn, _, reply = h.logon()
    conn.connectionLost(None)
    for sid, code in ((reply["sessionId"], None), ("nope", "unknown-session")):
        again = ClientConnectionFactory(h.router, h.batcher).connection("tls")
        t = StringTransport()
        again.makeConnection(t)
        body = {"sessionId": sid, "resumeToken": reply["resumeToken"], "received": 0}
        h.send(again, c.RESUME_SESSION, 9, body)
        (answer, *_) = h.received(t)
        assert answer.parsed().get("code") == code
    assert h.router.timings.resume.count == 2
