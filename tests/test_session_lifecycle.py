"""Session core for the lifecycle: replay numbering, lingering, timeout levels, control."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from smbridge.codec import Kind, encode
from smbridge.codec.catalog import QUEUE_CHANGED, SESSION_TERMINATED, WATCH_QUEUE
from smbridge.session.control import SessionControl
from smbridge.session.levels import policy_for
from smbridge.session.negotiate import TimeoutPolicy
from smbridge.session.registry import SessionRegistry, new_session_id
from smbridge.session.replay import ReplayBuffer
from smbridge.session.session import EndReason, SessionInfo, State
from smbridge.testing import FramePeer, decode_all

BASE = TimeoutPolicy(1800, 60)


def _note(n: int, size: int = 0) -> bytes:
    return encode(Kind.NOTIFICATION, *QUEUE_CHANGED, 0, {"n": f"{n:04d}", "pad": "x" * size})


def test_replay_numbers_and_returns_what_follows():
    """Frames are numbered from 1 and since(k) returns exactly frames k+1.. in order."""
    buf = ReplayBuffer(1 << 20)
    for i in range(1, 6):
        assert buf.append(_note(i)) == i
    assert buf.since(5) == [] and buf.since(2) == [_note(3), _note(4), _note(5)]
    assert buf.since(0) == [_note(i) for i in range(1, 6)]


def test_replay_is_bounded_in_bytes_and_reports_a_gap():
    """Past the byte limit the oldest frames go; asking for them gives None (a gap)."""
    size = len(_note(1, 100))
    buf = ReplayBuffer(size * 3)
    for i in range(1, 11):
        buf.append(_note(i, 100))
    assert len(buf) == 3 and buf.size == size * 3 and buf.first == 8
    assert buf.since(7) == [_note(8, 100), _note(9, 100), _note(10, 100)]
    assert buf.since(6) is None
    big = ReplayBuffer(10)
    big.append(_note(1, 100))  # larger than the whole buffer: kept nowhere
    assert big.count == 1 and len(big) == 0 and big.since(0) is None and big.since(1) == []


def _registry(clock: Clock, linger: float = 120.0, replay: int = 1 << 20) -> SessionRegistry:
    return SessionRegistry(clock, "sm1", BASE, linger=linger, replay_bytes=replay)


def test_session_numbers_notifications_itself_only_while_it_has_no_connection():
    """A connected session leaves numbering to its connection; a lingering one numbers its own."""
    clock = Clock()
    registry = _registry(clock)
    peer = FramePeer()
    session = registry.create(SessionInfo("agent1"), peer, 300)
    session.send(encode(Kind.RESPONSE, *WATCH_QUEUE, 7, {}))
    session.send(_note(1))
    assert session.replay.count == 0  # the connection numbers what it writes
    session.linger(120)
    assert session.state is State.LINGERING and session.peer is None
    session.send(encode(Kind.RESPONSE, *WATCH_QUEUE, 8, {}))  # no connection: dropped
    session.send(_note(2))
    assert session.replay.count == 1 and session.replay.since(0) == [_note(2)]
    assert [f.kind for f in peer.frames] == [Kind.RESPONSE, Kind.NOTIFICATION]


def test_replay_extend_numbers_only_the_notifications_among_written_frames():
    """What a connection writes is numbered in order, responses skipped."""
    buf = ReplayBuffer(1 << 20)
    buf.extend([_note(1), encode(Kind.RESPONSE, *WATCH_QUEUE, 7, {}), _note(2)])
    assert buf.count == 2 and buf.since(0) == [_note(1), _note(2)]


def test_linger_expiry_ends_the_session_as_disconnected():
    """A lingering session ends 'disconnected' at the linger time, leaving no timer."""
    clock = Clock()
    registry = _registry(clock, linger=30)
    ended: list[EndReason] = []
    registry.on_end(lambda s, r: ended.append(r))
    session = registry.create(SessionInfo("agent1", client_id="pc1"), FramePeer(), 300)
    session.linger(registry.linger)
    assert registry.timers.active == 2  # session timer and linger timer
    clock.advance(29)
    assert session.state is State.LINGERING and registry.lingering() == 1
    clock.advance(1)
    assert ended == [EndReason.DISCONNECTED] and len(registry) == 0
    assert registry.timers.active == 0 and clock.getDelayedCalls() == []
    assert len(session.replay) == 0 and registry.client_index_size() == 0


def test_attach_stops_lingering_and_zero_linger_ends_at_once():
    """Attaching a peer cancels the linger timer; with linger 0 a drop ends the session."""
    clock = Clock()
    registry = _registry(clock)
    session = registry.create(SessionInfo("agent1"), FramePeer(), 300)
    session.linger(120)
    peer = FramePeer()
    session.attach(peer)
    assert session.state is State.ACTIVE and session.linger_timer is None
    assert registry.timers.active == 1
    clock.advance(200)
    assert session.state is State.ACTIVE
    other = registry.create(SessionInfo("agent2"), FramePeer(), 300)
    other.linger(0)
    assert other.state is State.CLOSED and registry.get(other.id) is None


def test_expiry_while_lingering_is_expired_and_buffered():
    """The session timer keeps running while lingering; expiry ends it 'expired'."""
    clock = Clock()
    registry = _registry(clock, linger=600)
    ended: list[EndReason] = []
    registry.on_end(lambda s, r: ended.append(r))
    session = registry.create(SessionInfo("agent1"), FramePeer(), 100, notify_imminent=False)
    session.linger(registry.linger)
    clock.advance(100)
    assert ended == [EndReason.EXPIRED] and registry.timers.active == 0


def test_session_ids_carry_node_time_and_randomness():
    """Ids are <node>-<ms hex>-<16 hex>: unique, and different across 'restarts'."""
    first = {new_session_id("sm1", 1000.0) for _ in range(1000)}
    assert len(first) == 1000 and all(i.startswith("sm1-f4240-") for i in first)
    assert all(len(i.split("-")[2]) == 16 for i in first)
    assert (
        new_session_id("sm1", 1000.0).split("-")[1] != new_session_id("sm1", 2000.0).split("-")[1]
    )


def test_tokens_compare_in_constant_time_and_need_the_whole_token():
    """token_matches accepts the exact token only (hmac.compare_digest)."""
    registry = _registry(Clock())
    session = registry.create(SessionInfo("agent1"), FramePeer(), 300)
    token = session.resume_token
    assert len(token) >= 32 and SessionRegistry.token_matches(session, token)
    assert not SessionRegistry.token_matches(session, token[:-1])
    assert not SessionRegistry.token_matches(session, token + "x")
    assert not SessionRegistry.token_matches(session, "")


def test_lingering_for_finds_only_lingering_sessions_of_that_client():
    """The (user, clientId) index returns lingering sessions of that client only."""
    registry = _registry(Clock())
    a = registry.create(SessionInfo("agent1", client_id="pc1"), FramePeer(), 300)
    b = registry.create(SessionInfo("agent1", client_id="pc2"), FramePeer(), 300)
    registry.create(SessionInfo("agent1", client_id=""), FramePeer(), 300)
    assert registry.lingering_for("agent1", "pc1") == []
    a.linger(120)
    b.linger(120)
    assert registry.lingering_for("agent1", "pc1") == [a]
    assert registry.lingering_for("agent1", "") == []
    a.end(EndReason.LOGOUT)
    assert registry.lingering_for("agent1", "pc1") == [] and registry.client_index_size() == 1


def test_end_while_lingering_buffers_the_notice_and_clears():
    """Ending a lingering session for shutdown reaches no peer and frees its buffer."""
    clock = Clock()
    registry = _registry(clock)
    peer = FramePeer()
    session = registry.create(SessionInfo("agent1"), peer, 300)
    session.linger(120)
    session.end(EndReason.SHUTDOWN)
    assert peer.bodies(SESSION_TERMINATED) == [] and session.replay.count == 1
    assert len(session.replay) == 0 and registry.timers.active == 0


# --- timeout levels -------------------------------------------------------------------
INFO = SessionInfo("agent1", location="London", workgroups=["Sales", "Support"])


@pytest.mark.parametrize(
    ("params", "timeout", "source"),
    [
        ({}, 1800, "default"),
        ({"Session Timeout": "900"}, 900, "site"),
        (
            {"Session Timeout": "900", "Session Timeout/Location/London": "600"},
            600,
            "location:London",
        ),
        (
            {"Session Timeout/Location/London": "600", "Session Timeout/Workgroup/Support": "500"},
            500,
            "workgroup:Support",
        ),
        (
            {"Session Timeout/Workgroup/Support": "500", "Session Timeout/Workgroup/Sales": "400"},
            400,
            "workgroup:Sales",
        ),
        (
            {"Session Timeout/Workgroup/Sales": "400", "Session Timeout/User/agent1": "300"},
            300,
            "user:agent1",
        ),
        ({"Session Timeout/Location/Paris": "600"}, 1800, "default"),
        ({"Session Timeout/User/agent2": "300"}, 1800, "default"),
    ],
)
def test_most_specific_level_wins(params, timeout, source):
    """User beats workgroup (first listed) beats location beats site beats the default."""
    policy = policy_for(BASE, params, INFO)
    assert (policy.timeout, policy.source, policy.floor) == (timeout, source, 60)


@pytest.mark.parametrize("bad", ["abc", "30", "-5", "", "999999999"])
def test_bad_level_values_fall_through(bad):
    """A value that is not whole seconds within floor..7 days is ignored; the next level applies."""
    policy = policy_for(BASE, {"Session Timeout/User/agent1": bad, "Session Timeout": "700"}, INFO)
    assert (policy.timeout, policy.source) == (700, "site")


# --- session control --------------------------------------------------------------------
def test_control_unrestricted_by_default():
    """A fresh control allows every request and watch."""
    control = SessionControl()
    assert not control.restricted
    assert control.may_request((172, 1)) and control.may_watch("queue:Anything")


def test_control_filters_watches_and_requests():
    """Restricted categories allow only their names; requests only the listed and the essentials."""
    control = SessionControl()
    control.allow_watch("queue", ["Sales"])
    control.allow_requests(["SetStatus"])
    assert control.restricted
    assert control.may_watch("queue:Sales") and not control.may_watch("queue:Support")
    assert control.may_watch("status:agent9")  # status was not restricted
    assert control.may_request((171, 1)) and not control.may_request((172, 1))
    assert control.may_request((168, 3)) and control.may_request((168, 2))  # Heartbeat, Destroy
    with pytest.raises(ValueError):
        control.allow_watch("planets", ["Mars"])
    with pytest.raises(ValueError):
        control.allow_requests(["QueueChanged"])  # a notification, not a request


def test_frames_decode_after_numbering():
    """Numbered frames are the very bytes written (no header is added)."""
    registry = _registry(Clock())
    peer = FramePeer()
    session = registry.create(SessionInfo("agent1"), peer, 300)
    session.replay.extend([_note(1)])  # as its connection does when it writes the frame
    assert decode_all(session.replay.since(0)[0])[0].parsed()["n"] == "0001"  # type: ignore[index]
    session.send(_note(2))
    assert peer.data == _note(2)
