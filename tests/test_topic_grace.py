"""A user's own topic stays subscribed for a grace period after their last session ends.

A user who logs on again within ``--user-topic-grace`` seconds is answered from the
bridge's copy (kept current by the events that arrive meanwhile), so a reconnect costs
no Unsubscribe + Subscribe pair on the Notifier link. Other topics are released at once.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python import usage

from smbridge.codec import Frame
from smbridge.codec import catalog as c
from smbridge.router.fanout import FanOut
from smbridge.service import BridgeService
from smbridge.tap import Options
from smbridge.testing import RouterHarness


def _kinds(frames: list[Frame]) -> list[tuple[int, int]]:
    return [(f.object_type, f.event_id) for f in frames]


def _logout(h: RouterHarness, conn: Any, transport: Any) -> None:
    h.send(conn, c.DESTROY_SESSION, 9, {})
    h.received(transport)


def test_reconnect_within_grace_costs_no_link_round_trip():
    """Logout then logon again inside the grace: no Unsubscribe, no Subscribe, fresh copy."""
    h = RouterHarness()
    h.router.fanout.grace = 30.0
    conn, transport, _ = h.logon("agent1")
    sub = h.user_subs["agent1"]
    _logout(h, conn, transport)
    assert _kinds(h.upstream()) == [c.LINK_SESSION_CLOSED]  # the topic is kept
    item = {"id": "i1", "state": "Alerting"}
    h.notifier.event(c.MY_INTERACTIONS_CHANGED, sub, {"user": "agent1", "added": [item]})
    h.clock.advance(29)
    conn2, transport2 = h.client()
    h.send(conn2, c.CREATE_SESSION, 1, {"user": "agent1", "password": "demo"})
    (auth,) = h.upstream()
    h.notifier.answer(auth, {"user": {"id": "agent1"}, "station": None, "location": "Indy"})
    assert _kinds(h.upstream()) == [c.LINK_SESSION_OPENED]  # no Subscribe
    (reply,) = h.received(transport2)
    assert reply.parsed()["myInteractions"] == [item]  # the event applied during the grace
    h.clock.advance(60)  # held by a session again: the grace timer was cancelled
    assert h.upstream() == [] and "user:agent1" in h.router.fanout.topics
    _logout(h, conn2, transport2)
    assert _kinds(h.upstream()) == [c.LINK_SESSION_CLOSED]
    h.clock.advance(29.9)
    assert h.upstream() == []
    h.clock.advance(0.2)
    (unsub,) = h.upstream()
    assert _kinds([unsub]) == [c.LINK_UNSUBSCRIBE] and unsub.parsed() == {"sub": sub}
    assert "user:agent1" not in h.router.fanout.topics


def test_stopping_ends_every_grace():
    """The connector stopping releases topics held by a grace and leaves no timer behind."""
    h = RouterHarness()
    h.router.fanout.grace = 30.0
    conn, transport, _ = h.logon("agent1")
    sub = h.user_subs["agent1"]
    _logout(h, conn, transport)
    h.upstream()
    assert [d.getTime() for d in h.clock.getDelayedCalls() if d.func.__name__ == "_expired"] == [
        h.clock.seconds() + 30.0
    ]
    h.connector.stopService()
    unsubs = [f.parsed() for f in h.upstream() if _kinds([f]) == [c.LINK_UNSUBSCRIBE]]
    assert unsubs == [{"sub": sub}] and "user:agent1" not in h.router.fanout.topics
    assert not [d for d in h.clock.getDelayedCalls() if d.func.__name__ == "_expired"]
    conn2, transport2, _ = h.logon("agent2")  # after the stop a release is immediate
    _logout(h, conn2, transport2)
    assert "user:agent2" not in h.router.fanout.topics


def test_grace_zero_releases_at_once():
    """--user-topic-grace 0 (the harness's default): the last session's end unsubscribes."""
    h = RouterHarness()
    assert h.router.fanout.grace == 0
    conn, transport, _ = h.logon("agent1")
    _logout(h, conn, transport)
    kinds = _kinds(h.upstream())
    assert sorted(kinds) == sorted([c.LINK_SESSION_CLOSED, c.LINK_UNSUBSCRIBE])
    assert "user:agent1" not in h.router.fanout.topics


def test_other_topics_are_released_at_once():
    """Only ``user:`` topics get the grace; an unwatched queue unsubscribes immediately."""
    h = RouterHarness()
    h.router.fanout.grace = 30.0
    conn, transport, _ = h.logon("agent1")
    h.send(conn, c.WATCH_QUEUE, 10, {"queue": "Sales"})
    (subscribe,) = h.upstream()
    sub = h.serve(subscribe, {"queue": "Sales", "interactions": []})
    h.received(transport)
    h.send(conn, c.UNWATCH_QUEUE, 11, {"queue": "Sales"})
    (unsub,) = h.upstream()
    assert _kinds([unsub]) == [c.LINK_UNSUBSCRIBE] and unsub.parsed() == {"sub": sub}


def test_option_reaches_the_fanout(tmp_path):
    """--user-topic-grace: default 30 s, passed to the fan-out, bounded 0..3600."""
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path)])
    assert options.config is not None and options.config.user_topic_grace == 30.0
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path), "--user-topic-grace", "5"])
    assert options.config is not None
    bridge = BridgeService(options.config, Clock())
    assert bridge.router.fanout.grace == 5.0
    with pytest.raises(usage.UsageError, match="--user-topic-grace must be 0..3600"):
        Options().parseOptions(["--demo", "--work-path", str(tmp_path), "--user-topic-grace", "-1"])


# --- the grace as a state machine, against a naive model -------------------------------


class _Upstream:
    """A link that answers every Subscribe at once and records what was asked."""

    up = True

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[str, float]] = []

    def on_up(self, callback: Any) -> None:
        pass

    def request(self, message: Any, body: dict[str, Any]) -> defer.Deferred[Any]:
        kind = "sub" if message == c.LINK_SUBSCRIBE else "unsub"
        self.sent.append((kind, self.clock.seconds()))
        return defer.succeed(
            {"snapshot": {"user": "u", "interactions": []}} if kind == "sub" else {}
        )


class _Watcher:
    def send(self, data: bytes) -> None:
        pass


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("watch"), st.integers(0, 2)),
        st.tuples(st.just("unwatch"), st.integers(0, 2)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 5.0, 9.9, 10.0, 25.0])),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(steps=_steps, grace=st.sampled_from([0.0, 10.0]))
def test_grace_matches_a_naive_model(steps: list[tuple[str, Any]], grace: float) -> None:
    """Subscribes and Unsubscribes (and their times) are what a naive model predicts."""
    clock = Clock()
    upstream = _Upstream(clock)
    fanout = FanOut(upstream)  # type: ignore[arg-type]
    fanout.grace = grace
    watchers = [_Watcher() for _ in range(3)]
    # The model: who watches, and the time the topic goes when nobody does (None: held).
    held: set[int] = set()
    subscribed = False
    expires: float | None = None
    expected: list[tuple[str, float]] = []

    def settle_model(now: float) -> None:
        nonlocal subscribed, expires
        if subscribed and not held and expires is not None and expires <= now:
            expected.append(("unsub", expires))
            subscribed, expires = False, None

    for op, arg in steps:
        if op == "advance":  # in two steps when the model's expiry falls inside
            target = clock.seconds() + arg
            if expires is not None and not held and clock.seconds() < expires < target:
                clock.advance(expires - clock.seconds())
                settle_model(clock.seconds())
                assert upstream.sent == expected
            clock.advance(target - clock.seconds())
            settle_model(clock.seconds())
        elif op == "watch":
            if not subscribed:
                expected.append(("sub", clock.seconds()))
                subscribed = True
            expires = None
            held.add(arg)
            fanout.watch("user:u", watchers[arg])
        else:
            fanout.unwatch("user:u", watchers[arg])
            if arg in held:
                held.discard(arg)
                if not held:
                    if grace == 0:
                        expected.append(("unsub", clock.seconds()))
                        subscribed = False
                    else:
                        expires = clock.seconds() + grace
        assert upstream.sent == expected
        assert ("user:u" in fanout.topics) == subscribed
    assert len(clock.getDelayedCalls()) == (1 if subscribed and not held else 0)
