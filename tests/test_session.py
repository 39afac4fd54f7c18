"""Session core: timeout negotiation, the timer, and the lifecycle, on a Clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from smbridge.codec.catalog import SESSION_TERMINATED, TERMINATION_IMMINENT
from smbridge.errors import BadRequest, SessionTimeoutTooSmall
from smbridge.session.negotiate import (
    TimeoutPolicy,
    heartbeat_interval,
    imminent_lead,
    negotiate_timeout,
)
from smbridge.session.registry import SessionRegistry
from smbridge.session.session import EndReason, InvalidTransition, SessionInfo, State
from smbridge.testing import FramePeer

POLICY = TimeoutPolicy(timeout=1800, floor=60)


def test_no_request_gets_configured_timeout():
    """Without sessionTimeout the configured T applies."""
    assert negotiate_timeout(POLICY, None, None) == 1800


def test_request_below_floor_is_refused_with_the_floor():
    """A request under Tmin is refused and the error names Tmin."""
    with pytest.raises(SessionTimeoutTooSmall) as e:
        negotiate_timeout(POLICY, 59, None)
    assert e.value.code == "session-timeout-too-small"
    assert e.value.payload()["minSessionTimeout"] == 60


def test_request_within_range_is_granted():
    """Tmin <= R <= T grants R, including both bounds."""
    assert negotiate_timeout(POLICY, 60, None) == 60
    assert negotiate_timeout(POLICY, 900, None) == 900
    assert negotiate_timeout(POLICY, 1800, None) == 1800


def test_request_above_configured_is_capped():
    """R > T gives T without a client floor, max(client floor, T) with one."""
    assert negotiate_timeout(POLICY, 7200, None) == 1800
    assert negotiate_timeout(POLICY, 7200, 3600) == 3600
    assert negotiate_timeout(POLICY, 7200, 600) == 1800


@pytest.mark.parametrize("bad", ["60", -5, 0, True, [1]])
def test_bad_values_are_bad_requests(bad):
    """Non-numbers, booleans and non-positive values are refused as bad requests."""
    with pytest.raises(BadRequest):
        negotiate_timeout(POLICY, bad, None)
    with pytest.raises(BadRequest):
        negotiate_timeout(POLICY, 7200, bad)


def test_policy_validates_itself():
    """A configured timeout below the floor is a configuration error."""
    with pytest.raises(ValueError):
        TimeoutPolicy(timeout=30, floor=60)


def test_heartbeat_and_imminent_lead():
    """Heartbeat is a third of the timeout up to 300 s; the notice lead is 60 s or half."""
    assert heartbeat_interval(1800) == 300 and heartbeat_interval(90) == 30
    assert heartbeat_interval(2) == 1
    assert imminent_lead(1800) == 60 and imminent_lead(100) == 50


def _session(clock: Clock, timeout: int = 300, notify: bool = True):
    registry = SessionRegistry(clock, "sm1", POLICY)
    ended: list = []
    registry.on_end(lambda s, r: ended.append((s.id, r)))
    peer = FramePeer()
    session = registry.create(SessionInfo("agent1"), peer, timeout, notify)
    return registry, session, peer, ended


def test_imminent_then_expiry():
    """TerminationImminent comes 60 s before expiry; at expiry SessionTerminated and close."""
    clock = Clock()
    registry, session, peer, ended = _session(clock, 300)
    clock.advance(239)
    assert peer.frames == []
    clock.advance(1)
    assert peer.bodies(TERMINATION_IMMINENT) == [{"secondsLeft": 60}]
    clock.advance(59)
    assert session.state is State.ACTIVE
    clock.advance(1)
    assert peer.bodies(SESSION_TERMINATED) == [{"reason": "expired"}]
    assert peer.closed and session.state is State.CLOSED
    assert ended == [(session.id, EndReason.EXPIRED)] and len(registry) == 0
    assert clock.getDelayedCalls() == []


def test_activity_restarts_the_timer():
    """touch() moves the deadline; no notice or expiry happens while activity continues."""
    clock = Clock()
    _, session, peer, _ = _session(clock, 300)
    for _ in range(10):
        clock.advance(200)
        session.touch()
    assert peer.frames == [] and session.state is State.ACTIVE
    clock.advance(240)
    assert peer.bodies(TERMINATION_IMMINENT) == [{"secondsLeft": 60}]
    session.touch()  # activity after the notice: a later notice again
    clock.advance(240)
    assert len(peer.bodies(TERMINATION_IMMINENT)) == 2
    clock.advance(60)
    assert session.state is State.CLOSED


def test_short_timeout_notices_at_half():
    """With a 60 s timeout the notice comes at 30 s, saying 30 s are left."""
    clock = Clock()
    _, _, peer, _ = _session(clock, 60)
    clock.advance(30)
    assert peer.bodies(TERMINATION_IMMINENT) == [{"secondsLeft": 30}]


def test_no_notice_when_not_asked():
    """notifyImminent false: expiry without a notice."""
    clock = Clock()
    _, session, peer, _ = _session(clock, 120, notify=False)
    clock.advance(120)
    assert peer.bodies(TERMINATION_IMMINENT) == []
    assert peer.bodies(SESSION_TERMINATED) == [{"reason": "expired"}]


def test_end_is_once_and_transitions_are_checked():
    """Ending twice calls listeners once; a closed session cannot become active again."""
    clock = Clock()
    _, session, peer, ended = _session(clock)
    session.end(EndReason.LOGOUT, notify=False)
    session.end(EndReason.SHUTDOWN)
    assert ended == [(session.id, EndReason.LOGOUT)] and peer.frames == []
    assert clock.getDelayedCalls() == []
    with pytest.raises(InvalidTransition):
        session._transition(State.ACTIVE)


def test_shutdown_tells_the_client():
    """Ending for shutdown sends SessionTerminated with reason shutdown."""
    clock = Clock()
    registry, session, peer, _ = _session(clock)
    registry.end_all(EndReason.SHUTDOWN)
    assert peer.bodies(SESSION_TERMINATED) == [{"reason": "shutdown"}]


def test_ids_and_tokens():
    """Ids embed the node name and are unique; tokens carry at least 128 bits."""
    clock = Clock()
    registry = SessionRegistry(clock, "sm7", POLICY)
    sessions = [registry.create(SessionInfo(f"u{i}"), FramePeer(), 300) for i in range(50)]
    assert len({s.id for s in sessions}) == 50
    assert all(s.id.startswith("sm7-") for s in sessions)
    assert all(len(s.resume_token) >= 32 for s in sessions)  # 24 bytes, url-safe base64
    assert registry.get(sessions[0].id) is sessions[0]


def test_one_delayed_call_for_all_session_timers():
    """A thousand sessions share one reactor DelayedCall; each still expires at its own time."""
    clock = Clock()
    registry = SessionRegistry(clock, "sm1", POLICY)
    peers = []
    for i in range(1000):
        peer = FramePeer()
        registry.create(SessionInfo(f"u{i}"), peer, 60 + i % 7, notify_imminent=False)
        peers.append(peer)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(62)
    expired = [p for p in peers if p.closed]
    assert len(expired) == len([i for i in range(1000) if 60 + i % 7 <= 62])
    assert len(registry) == 1000 - len(expired) and len(clock.getDelayedCalls()) == 1


def test_queue_disarms_when_the_last_timer_ends():
    """Ending every session leaves nothing scheduled on the reactor."""
    clock = Clock()
    registry = SessionRegistry(clock, "sm1", POLICY)
    for i in range(5):
        registry.create(SessionInfo(f"u{i}"), FramePeer(), 300)
    registry.end_all(EndReason.SHUTDOWN)
    assert clock.getDelayedCalls() == [] and len(registry.timers) == 0
    session = registry.create(SessionInfo("late"), FramePeer(), 120)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(120)
    assert session.state is State.CLOSED and clock.getDelayedCalls() == []
