"""Session timers against a naive reference: one callLater per timer, reset on every touch.

Many sessions (different timeouts, imminent notice on or off) share the registry's
TimerQueue with their linger timers. A hypothesis state machine creates, touches,
drops (linger), resumes and logs out sessions and advances a Clock by random steps;
a reference model on a second Clock, advanced in lockstep, keeps one DelayedCall per
notice and per ending. Every TerminationImminent (time and secondsLeft) and every
ending (time and reason) must match the reference. Both clocks advance together, so
"within one clock step" means here: fired by the same ``advance``, at the same time.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock

from smbridge.codec.catalog import TERMINATION_IMMINENT
from smbridge.session.negotiate import TimeoutPolicy, imminent_lead
from smbridge.session.registry import SessionRegistry
from smbridge.session.replay import ReplayBuffer
from smbridge.session.session import EndReason, Session, SessionInfo, State
from smbridge.session.timer import SessionTimer, TimerQueue
from smbridge.testing import decode_all

Event = tuple[str, float, Any]  # ("imminent", time, secondsLeft) or ("end", time, reason)
EITHER = "expired|disconnected"  # the reference's session and linger deadlines coincided

TIMEOUTS = [4, 5, 6, 9, 10, 13, 30, 61, 120, 1800]
LINGERS = [1.0, 2.5, 7.0, 30.0, 120.0]
STEP = st.one_of(st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 3.0]), st.integers(1, 60).map(float))
JUMPS = st.sampled_from([120.0, 600.0, 1800.0])  # a reactor that was busy: many fall due at once


class Recorder:
    """Records TerminationImminent notices per session, with the clock time they were sent."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: dict[str, list[Event]] = {}

    def frames(self, session_id: str, data: bytes) -> None:
        for frame in decode_all(data):
            if (frame.object_type, frame.event_id) == TERMINATION_IMMINENT:
                seconds = frame.parsed()["secondsLeft"]
                self.events.setdefault(session_id, []).append(
                    ("imminent", self.clock.seconds(), seconds)
                )


class TimedPeer:
    """A connection that hands what the session writes to the recorder."""

    def __init__(self, recorder: Recorder, session_id: str = "") -> None:
        self.recorder = recorder
        self.session_id = session_id

    def send(self, data: bytes) -> None:
        self.recorder.frames(self.session_id, data)

    def close(self) -> None:
        pass


class TimedReplay(ReplayBuffer):
    """A lingering session's notices land here; they are recorded like a connection's."""

    def __init__(self, recorder: Recorder, session_id: str) -> None:
        super().__init__()
        self.recorder = recorder
        self.session_id = session_id

    def append(self, frame: bytes) -> int:
        self.recorder.frames(self.session_id, frame)
        return super().append(frame)


class RefSession:
    """The naive reference: a DelayedCall for the notice, one for expiry, one for linger."""

    def __init__(self, model: Reference, sid: str, timeout: float, notify: bool) -> None:
        self.model = model
        self.sid = sid
        self.timeout = timeout
        self.notify = notify
        self.state = "active"
        self.deadline = 0.0
        self.linger_deadline: float | None = None
        self.calls: list[IDelayedCall] = []
        self.linger_call: IDelayedCall | None = None
        self.touch()

    def _cancel(self) -> None:
        for call in self.calls:
            if call.active():
                call.cancel()
        self.calls = []

    def touch(self) -> None:
        self._cancel()
        clock = self.model.clock
        self.deadline = clock.seconds() + self.timeout
        if self.notify:
            lead = imminent_lead(self.timeout)
            self.calls.append(clock.callLater(self.timeout - lead, self._imminent))
        self.calls.append(clock.callLater(self.timeout, self._end, "expired"))

    def _imminent(self) -> None:
        now = self.model.clock.seconds()
        if now < self.deadline:  # a step that jumps past expiry too gives no notice
            self.model.record(self.sid, ("imminent", now, round(self.deadline - now)))

    def _end(self, reason: str) -> None:
        now = self.model.clock.seconds()
        if self.linger_deadline is not None and self.linger_deadline == self.deadline:
            reason = EITHER
        self.end()
        self.model.record(self.sid, ("end", now, reason))

    def linger(self, seconds: float) -> None:
        self.state = "lingering"
        self.linger_deadline = self.model.clock.seconds() + seconds
        self.linger_call = self.model.clock.callLater(seconds, self._end, "disconnected")

    def resume(self) -> None:
        self.state = "active"
        if self.linger_call is not None and self.linger_call.active():
            self.linger_call.cancel()
        self.linger_call, self.linger_deadline = None, None
        self.touch()

    def end(self) -> None:
        self.state = "closed"
        self._cancel()
        if self.linger_call is not None and self.linger_call.active():
            self.linger_call.cancel()
        self.linger_call = None


class Reference:
    def __init__(self) -> None:
        self.clock = Clock()
        self.events: dict[str, list[Event]] = {}

    def record(self, sid: str, event: Event) -> None:
        self.events.setdefault(sid, []).append(event)


def _matches(real: list[Event], expected: list[Event]) -> bool:
    if len(real) != len(expected):
        return False
    for got, want in zip(real, expected, strict=True):
        if want[2] == EITHER:
            if got[:2] != want[:2] or got[2] not in ("expired", "disconnected"):
                return False
        elif got != want:
            return False
    return True


class TimerModel(RuleBasedStateMachine):
    """Random create, touch, drop, resume, logout and clock steps; real and reference agree."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.recorder = Recorder(self.clock)
        self.registry = SessionRegistry(self.clock, "sm1", TimeoutPolicy(1800, 4))
        self.registry.on_end(self._ended)
        self.ref = Reference()
        self.sessions: dict[str, Session] = {}
        self.refs: dict[str, RefSession] = {}

    def _ended(self, session: Session, reason: EndReason) -> None:
        if reason is not EndReason.LOGOUT:  # logouts are the test's own doing
            self.recorder.events.setdefault(session.id, []).append(
                ("end", self.clock.seconds(), reason.value)
            )

    def _pick(self, index: int, state: State) -> Session | None:
        live = sorted(sid for sid, s in self.sessions.items() if s.state is state)
        return self.sessions[live[index % len(live)]] if live else None

    @rule(new=st.lists(st.tuples(st.sampled_from(TIMEOUTS), st.booleans()), min_size=1, max_size=4))
    def create(self, new: list[tuple[int, bool]]) -> None:
        for timeout, notify in new:
            peer = TimedPeer(self.recorder)
            info = SessionInfo(f"u{len(self.sessions)}")
            session = self.registry.create(info, peer, timeout, notify)
            peer.session_id = session.id
            session.replay = TimedReplay(self.recorder, session.id)
            self.sessions[session.id] = session
            self.refs[session.id] = RefSession(self.ref, session.id, timeout, notify)

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 1000))
    def touch(self, index: int) -> None:
        session = self._pick(index, State.ACTIVE)
        if session is not None:
            session.touch()
            self.refs[session.id].touch()

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 1000), linger=st.sampled_from(LINGERS))
    def drop(self, index: int, linger: float) -> None:
        session = self._pick(index, State.ACTIVE)
        if session is not None:
            session.linger(linger)
            self.refs[session.id].linger(linger)

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 1000))
    def resume(self, index: int) -> None:
        session = self._pick(index, State.LINGERING)
        if session is not None:
            session.attach(TimedPeer(self.recorder, session.id))
            session.touch()
            self.refs[session.id].resume()

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 1000), lingering=st.booleans())
    def logout(self, index: int, lingering: bool) -> None:
        session = self._pick(index, State.LINGERING if lingering else State.ACTIVE)
        if session is not None:
            session.end(EndReason.LOGOUT)
            self.refs[session.id].end()

    @rule(steps=st.lists(STEP, min_size=1, max_size=20))
    def advance(self, steps: list[float]) -> None:
        for step in steps:
            self.clock.advance(step)
            self.ref.clock.advance(step)

    @rule(step=JUMPS)
    def jump(self, step: float) -> None:
        self.clock.advance(step)
        self.ref.clock.advance(step)

    @invariant()
    def notices_and_endings_match_the_reference(self) -> None:
        for sid in self.sessions:
            real = self.recorder.events.get(sid, [])
            expected = self.ref.events.get(sid, [])
            assert _matches(real, expected), (sid, real, expected)

    @invariant()
    def states_match_and_nothing_outlives_its_session(self) -> None:
        for sid, session in self.sessions.items():
            assert session.state.value == self.refs[sid].state
        live = sum(1 for s in self.sessions.values() if s.state is not State.CLOSED)
        lingering = sum(1 for s in self.sessions.values() if s.state is State.LINGERING)
        assert self.registry.timers.active == live + lingering
        if live == 0:
            assert self.clock.getDelayedCalls() == []
        else:
            assert len(self.clock.getDelayedCalls()) == 1


TimerModel.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTimerModel = TimerModel.TestCase
TestTimerModel.__doc__ = "Every notice and ending matches one callLater per timer, in random runs."


# --- the defects, one example each --------------------------------------------------
def test_a_timer_requeued_while_firing_does_not_delay_an_earlier_one() -> None:
    """A notice re-arming its timer for expiry at 10 leaves another timer's wake-up at 7 on time."""
    clock = Clock()
    queue = TimerQueue(clock)
    log: list[tuple[str, float, float]] = []
    SessionTimer(queue, 10, True, lambda s: log.append(("a-imminent", clock.seconds(), s)), _no)
    SessionTimer(queue, 14, True, lambda s: log.append(("b-imminent", clock.seconds(), s)), _no)
    for _ in range(14):
        clock.advance(1)
    assert log == [("a-imminent", 5.0, 5.0), ("b-imminent", 7.0, 7.0)]


def test_a_timer_started_by_a_callback_while_firing_does_not_delay_an_earlier_one() -> None:
    """A linger timer started from an expiry callback at 4 leaves a timer due at 6 on time."""
    clock = Clock()
    queue = TimerQueue(clock)
    ended: list[tuple[str, float]] = []

    def first_expired() -> None:
        SessionTimer(
            queue, 30, False, _no_notice, lambda: ended.append(("linger", clock.seconds()))
        )

    SessionTimer(queue, 4, False, _no_notice, first_expired)
    SessionTimer(queue, 6, False, _no_notice, lambda: ended.append(("second", clock.seconds())))
    for _ in range(40):
        clock.advance(1)
    assert ended == [("second", 6.0), ("linger", 34.0)]


def test_cancelled_timers_do_not_pile_up_in_the_queue() -> None:
    """Thousands of short-lived long timers leave the heap at most twice the live ones (plus 64)."""
    clock = Clock()
    queue = TimerQueue(clock)
    keep = [SessionTimer(queue, 1800, True, _no_notice, _no) for _ in range(10)]
    for _ in range(5000):
        SessionTimer(queue, 1800, True, _no_notice, _no).cancel()
    assert queue.active == len(keep) and len(queue._heap) <= 2 * len(keep) + 64
    fired: list[float] = []
    SessionTimer(queue, 5, False, _no_notice, lambda: fired.append(clock.seconds()))
    clock.advance(5)
    assert fired == [5.0] and len(clock.getDelayedCalls()) == 1


def _no() -> None:
    pass


def _no_notice(seconds_left: float) -> None:
    pass


@pytest.mark.parametrize("timeout", [4, 61, 1800])
def test_the_notice_comes_lead_seconds_before_expiry(timeout: int) -> None:
    """An untouched session gets TerminationImminent min(60, T/2) before expiry, expires at T."""
    clock = Clock()
    registry = SessionRegistry(clock, "sm1", TimeoutPolicy(1800, 4))
    recorder = Recorder(clock)
    peer = TimedPeer(recorder)
    session = registry.create(SessionInfo("u"), peer, timeout)
    peer.session_id = session.id
    ended: list[float] = []
    registry.on_end(lambda s, r: ended.append(clock.seconds()))
    for _ in range(timeout * 4):
        clock.advance(0.25)
    lead = imminent_lead(timeout)
    assert recorder.events[session.id] == [("imminent", timeout - lead, round(lead))]
    assert ended == [float(timeout)]
