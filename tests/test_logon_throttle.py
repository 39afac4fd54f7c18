"""Logon throttling: the pure table (injected Clock) and the router's use of it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.router.throttle import (
    Attempt,
    LogBudget,
    LogonThrottle,
    Throttled,
    ThrottleSettings,
    name_key,
    source_address,
)
from smbridge.service import BridgeService
from smbridge.tap import Options
from smbridge.testing import RouterHarness
from smbridge.transports.connection import ClientConnectionFactory

A = "10.0.0.1:5000"
B = "10.0.0.2:5000"
NO_DECAY = 1e12  # max_delay so large that no failure is forgotten within a test


def fail_until_throttled(throttle: LogonThrottle, user: str, remote: str) -> int:
    """Fail attempts at one instant until one is refused; return how many got through."""
    through = 0
    while True:
        result = throttle.attempt("user", user, remote)
        if isinstance(result, Throttled):
            return through
        result.failed()
        through += 1


def test_free_failures_then_growing_waits() -> None:
    """After N free failures each further attempt waits 1 s, 2 s, 4 s ... up to the cap."""
    clock = Clock()
    throttle = LogonThrottle(clock, ThrottleSettings(free_failures=3, max_delay=8))
    assert fail_until_throttled(throttle, "u", A) == 3
    waits = []
    for _ in range(6):
        refused = throttle.attempt("user", "u", A)
        assert isinstance(refused, Throttled) and refused.scope == "user"
        waits.append(refused.retry_after)
        clock.advance(refused.retry_after)
        attempt = throttle.attempt("user", "u", A)
        assert isinstance(attempt, Attempt)
        attempt.failed()
    assert waits == [1, 2, 4, 8, 8, 8]


def test_success_resets_and_other_address_unaffected() -> None:
    """A throttled (user, address) leaves the user free elsewhere; a success clears the key."""
    clock = Clock()
    throttle = LogonThrottle(clock, ThrottleSettings(free_failures=3))
    fail_until_throttled(throttle, "u", A)
    other = throttle.attempt("user", "u", B)
    assert isinstance(other, Attempt)
    other.succeeded()
    refused = throttle.attempt("user", "u", A)
    assert isinstance(refused, Throttled)
    clock.advance(refused.retry_after)
    good = throttle.attempt("user", "u", A)
    assert isinstance(good, Attempt)
    good.succeeded()
    assert fail_until_throttled(throttle, "u", A) == 3  # free failures again


def test_address_key_stops_spraying_many_users() -> None:
    """One address trying many users is throttled by the address key, another is not."""
    clock = Clock()
    throttle = LogonThrottle(clock, ThrottleSettings(free_failures=3, address_free_failures=10))
    through = 0
    for i in range(50):
        result = throttle.attempt("user", f"user{i}", A)
        if isinstance(result, Throttled):
            assert result.scope == "address"
            break
        result.failed()
        through += 1
    assert through == 10
    assert isinstance(throttle.attempt("user", "user99", B), Attempt)


def test_in_flight_attempts_count() -> None:
    """Attempts still waiting for the Notifier count: pipelined guesses cannot slip past."""
    clock = Clock()
    throttle = LogonThrottle(clock, ThrottleSettings(free_failures=4))
    pending = []
    for _ in range(10):
        pending.append(throttle.attempt("user", "u", A))
        clock.advance(0.003)  # a partly forgotten failure still counts whole
    assert [isinstance(p, Attempt) for p in pending] == [True] * 4 + [False] * 6


def test_abandoned_and_succeeded_give_the_count_back() -> None:
    """Attempts the Notifier never judged, and good logons, leave nothing in the table."""
    throttle = LogonThrottle(Clock(), ThrottleSettings(address_free_failures=3))
    for i in range(20):
        attempt = throttle.attempt("user", f"user{i}", A)
        assert isinstance(attempt, Attempt)
        (attempt.succeeded if i % 2 else attempt.abandoned)()
    assert len(throttle) == 0
    assert throttle.in_flight(A) == 0


def _admit_all(throttle: LogonThrottle, names: list[str], remote: str = A) -> list[Attempt]:
    attempts = []
    for name in names:
        result = throttle.attempt("user", name, remote)
        assert isinstance(result, Attempt), (name, result)
        attempts.append(result)
    return attempts


def test_storm_of_good_logons_from_one_address_all_let_through() -> None:
    """300 good logons from one address, all in flight before any settles, all get through."""
    clock = Clock()
    throttle = LogonThrottle(clock)  # the defaults: 20 free failures per address, 512 in flight
    names = [f"user{i}" for i in range(300)]  # a reconnect storm behind one NAT address
    attempts = _admit_all(throttle, names)
    assert throttle.in_flight(A) == 300
    clock.advance(0.5)
    for attempt in attempts:
        attempt.succeeded()
    assert throttle.in_flight(A) == 0
    assert len(throttle) == 0
    for attempt in _admit_all(throttle, names):  # the next storm is let through at once too
        attempt.succeeded()


def test_one_user_from_many_clients_behind_one_address() -> None:
    """One user's concurrent logons (other clientIds) pass while fewer than its free failures."""
    throttle = LogonThrottle(Clock(), ThrottleSettings(free_failures=300))
    attempts = _admit_all(throttle, ["agent1"] * 300)
    for attempt in attempts:
        attempt.succeeded()
    assert len(throttle) == 0


def test_too_many_in_flight_from_one_address_are_throttled_until_settled() -> None:
    """Past address_max_pending unanswered attempts the excess is refused; settling frees room."""
    throttle = LogonThrottle(Clock(), ThrottleSettings(address_max_pending=8))
    attempts = _admit_all(throttle, [f"user{i}" for i in range(8)])
    refusals = [throttle.attempt("user", f"more{i}", A) for i in range(5)]
    assert refusals == [Throttled(1, "address", True)] + [Throttled(1, "address", False)] * 4
    assert isinstance(throttle.attempt("user", "user0", B), Attempt)  # other addresses: no
    attempts[0].succeeded()
    attempts[0].succeeded()  # settling twice releases once
    attempts[1].abandoned()
    attempts[2].failed()
    more = _admit_all(throttle, ["more0", "more1", "more2"])
    assert isinstance(throttle.attempt("user", "more3", A), Throttled)
    assert throttle.in_flight(A) == 8
    for attempt in attempts[3:] + more:
        attempt.succeeded()
    assert throttle.in_flight(A) == 0
    # The refusals counted no failure: the address has 19 of its 20 free failures left.
    for i in range(19):
        result = throttle.attempt("user", f"spray{i}", A)
        assert isinstance(result, Attempt)
        result.failed()
    refused = throttle.attempt("user", "spray19", A)
    assert isinstance(refused, Throttled) and refused.scope == "address"


def test_address_spraying_many_users_throttled_after_answered_failures() -> None:
    """Failures in flight count on the address when answered; then it waits, one at a time."""
    clock = Clock()
    throttle = LogonThrottle(clock, ThrottleSettings(address_free_failures=20, max_delay=NO_DECAY))
    attempts = _admit_all(throttle, [f"user{i}" for i in range(30)])  # in one round trip
    for attempt in attempts:
        attempt.failed()
    refused = throttle.attempt("user", "user99", A)
    assert isinstance(refused, Throttled) and refused.scope == "address"
    assert refused.retry_after == 2**10  # the 30th failure is the 20 + 10th
    assert isinstance(throttle.attempt("user", "user99", B), Attempt)
    # After the wait only one attempt at a time: a new round trip of guesses is refused.
    clock.advance(refused.retry_after)
    (one,) = _admit_all(throttle, ["user100"])
    assert throttle.attempt("user", "user101", A) == Throttled(1, "address", True)
    one.succeeded()  # a good logon starts no wait
    (two,) = _admit_all(throttle, ["user102"])
    two.failed()
    assert throttle.attempt("user", "user103", A) == Throttled(2**11, "address", True)


def test_spraying_for_an_hour_with_full_round_trips_stays_within_the_bound() -> None:
    """An address firing as many guesses per round trip as allowed gets its bound, no more."""
    clock = Clock()
    s = ThrottleSettings()  # 20 free failures, 512 in flight, 60 s longest wait
    throttle = LogonThrottle(clock, s)
    failures = 0
    for second in range(3600):
        batch = []
        for i in range(600):
            result = throttle.attempt("user", f"user{second}-{i}", A)
            if isinstance(result, Throttled):
                break
            batch.append(result)
        clock.advance(0.5)  # the Notifier answers the whole round trip
        for attempt in batch:
            attempt.failed()
        failures += len(batch)
        clock.advance(0.5)
    assert failures <= _address_bound(s, clock.seconds(), decay=True)
    assert failures < 512 + 2 * 60  # not 512 per wait: one at a time once past the free ones


def test_pending_entries_are_never_forgotten_as_expired() -> None:
    """An address entry with attempts in flight survives sweeps, however long it waits."""
    clock = Clock()
    throttle = LogonThrottle(clock, ThrottleSettings(address_max_pending=2, max_delay=10))
    attempts = _admit_all(throttle, ["u1", "u2"])
    clock.advance(10_000)
    for i in range(20):  # sweeps (and other keys) meanwhile
        result = throttle.attempt("user", f"x{i}", B)
        assert isinstance(result, Attempt)
        result.succeeded()
    assert throttle.in_flight(A) == 2
    assert isinstance(throttle.attempt("user", "u3", A), Throttled)
    for attempt in attempts:
        attempt.abandoned()
    assert throttle.in_flight(A) == 0
    assert len(throttle) == 0


def test_eviction_prefers_entries_without_attempts_in_flight() -> None:
    """A full table evicts a settled key before an address with attempts in flight."""
    throttle = LogonThrottle(Clock(), ThrottleSettings(max_entries=4, max_delay=NO_DECAY))
    (pending,) = _admit_all(throttle, ["u"])  # ("user", "u", A) and ("address", A)
    for i in range(10):
        result = throttle.attempt("user", f"v{i}", B)
        assert isinstance(result, Attempt)
        result.failed()
        assert len(throttle) <= 4
    assert throttle.in_flight(A) == 1
    pending.abandoned()
    assert throttle.in_flight(A) == 0


def test_an_evicted_entry_does_not_skew_the_new_one() -> None:
    """An attempt whose address entry was evicted releases nothing in the entry made since."""
    throttle = LogonThrottle(Clock(), ThrottleSettings(max_entries=2, max_delay=NO_DECAY))
    (old,) = _admit_all(throttle, ["u"])
    others = [_admit_all(throttle, ["v"], remote) for remote in (B, "10.0.0.3:1")]
    assert throttle.in_flight(A) == 0  # every entry had attempts in flight: the oldest went
    (new,) = _admit_all(throttle, ["w"])
    old.failed()
    assert throttle.in_flight(A) == 1
    new.succeeded()
    assert throttle.in_flight(A) == 0
    assert len(throttle) <= 2 and len(others) == 2


def test_failures_are_forgotten_over_time() -> None:
    """A key forgets one failure per max_delay seconds, then is dropped from the table."""
    clock = Clock()
    throttle = LogonThrottle(clock, ThrottleSettings(free_failures=3, max_delay=10))
    fail_until_throttled(throttle, "u", A)
    clock.advance(31)  # the 1 s wait, then three failures forgotten: three free again
    assert fail_until_throttled(throttle, "u", A) == 3
    clock.advance(1000)
    throttle.attempt("user", "other", B)  # sweeps
    assert len(throttle) == 2  # only the new attempt's two keys


def test_table_stays_bounded() -> None:
    """A flood of made-up users and addresses never holds more than max_entries keys."""
    throttle = LogonThrottle(Clock(), ThrottleSettings(max_entries=100))
    for i in range(5000):
        result = throttle.attempt("user", f"user{i}" * (i % 50), f"10.{i % 250}.{i // 250}.1:1")
        if isinstance(result, Attempt):
            result.failed()
        assert len(throttle) <= 100
    assert throttle.evicted > 0


def test_long_names_are_keyed_by_digest() -> None:
    """A megabyte user name costs a fixed-size key."""
    assert len(name_key("x" * 1_000_000)) == len("sha256:") + 64
    assert name_key("agent1") == "agent1"


def test_source_address() -> None:
    """Direct peers by host; the tunnel's X-Real-IP only via a trusted proxy; IPv6 by /64."""
    assert source_address("10.0.0.1:5000") == "10.0.0.1"
    assert source_address("2001:db8:0:1:2:3:4:5:5000") == "2001:db8:0:1::/64"
    assert source_address("::ffff:10.0.0.9:5000") == "10.0.0.9"
    assert source_address("203.0.113.7 via 127.0.0.1:4000") == "203.0.113.7"
    assert source_address("203.0.113.7 via 198.51.100.1:4000") == "198.51.100.1"
    trusted = {"198.51.100.1"}.__contains__
    assert source_address("203.0.113.7 via 198.51.100.1:4000", trusted) == "203.0.113.7"
    forged = "1.2.3.4 via 127.0.0.1:1 via 198.51.100.1:4000"  # X-Real-IP with " via " in it
    assert source_address(forged) == "198.51.100.1"


def test_log_budget() -> None:
    """At most N lines per window; the next allowed line reports how many were skipped."""
    clock = Clock()
    budget = LogBudget(clock, lines=2, window=60)
    assert [budget.take() for _ in range(5)] == [0, 0, None, None, None]
    clock.advance(60)
    assert budget.take() == 3


def _bound(free: int, elapsed: float, base: float, max_delay: float) -> int:
    """The most attempts a key may get through in ``elapsed`` seconds."""
    decay = math.ceil(elapsed / max_delay) + 1 if max_delay < NO_DECAY else 0
    return free + math.floor(math.log2(elapsed / base + 1)) + decay


@settings(max_examples=300, deadline=None)
@given(
    free=st.integers(1, 6),
    gaps=st.lists(st.floats(0, 40, allow_nan=False), min_size=1, max_size=120),
    decay=st.booleans(),
)
def test_property_attempts_through_are_bounded(free: int, gaps: list[float], decay: bool) -> None:
    """Whatever the timing, a guessing key gets at most N + floor(log2(T + 1)) (+ decay) tries."""
    clock = Clock()
    max_delay = 50.0 if decay else NO_DECAY
    throttle = LogonThrottle(
        clock, ThrottleSettings(free_failures=free, address_free_failures=1000, max_delay=max_delay)
    )
    start = clock.seconds()
    through = 0
    for gap in gaps:
        clock.advance(gap)
        result = throttle.attempt("user", "victim", A)
        if isinstance(result, Attempt):
            result.failed()
            through += 1
        elapsed = clock.seconds() - start
        assert through <= _bound(free, elapsed, 1.0, max_delay)


def _address_bound(settings_: ThrottleSettings, elapsed: float, decay: bool) -> int:
    """The most failed attempts an address may get through in ``elapsed`` seconds."""
    free = settings_.address_free_failures + settings_.address_max_pending
    max_delay = settings_.max_delay if decay else NO_DECAY
    return _bound(free, elapsed, settings_.base_delay, max_delay)


@settings(max_examples=300, deadline=None)
@given(
    free=st.integers(1, 6),
    max_pending=st.integers(1, 8),
    steps=st.lists(
        st.tuples(st.floats(0, 20, allow_nan=False), st.integers(0, 9), st.booleans()),
        min_size=1,
        max_size=150,
    ),
    decay=st.booleans(),
)
def test_property_spraying_address_is_bounded(
    free: int, max_pending: int, steps: list[tuple[float, int, bool]], decay: bool
) -> None:
    """Spraying users with answers coming late, an address gets its bound's worth of failures."""
    clock = Clock()
    s = ThrottleSettings(
        free_failures=1000,
        address_free_failures=free,
        address_max_pending=max_pending,
        max_delay=30.0 if decay else NO_DECAY,
    )
    throttle = LogonThrottle(clock, s)
    start = clock.seconds()
    in_flight: list[Attempt] = []
    through = 0
    for n, (gap, answer, good) in enumerate(steps):
        clock.advance(gap)
        for attempt in in_flight[:answer]:  # the oldest answers come in
            (attempt.succeeded if good else attempt.failed)()
            through += 0 if good else 1
        del in_flight[:answer]
        result = throttle.attempt("user", f"user{n}", A)
        if isinstance(result, Attempt):
            in_flight.append(result)
        assert throttle.in_flight(A) == len(in_flight) <= max_pending
        # Every one in flight may still fail: they count against the bound now.
        assert through + len(in_flight) <= _address_bound(s, clock.seconds() - start, decay)
    for attempt in in_flight:
        attempt.abandoned()
    assert throttle.in_flight(A) == 0


def _outcomes_for_b(steps: list[str]) -> list[bool]:
    """Run ``steps`` on a fresh throttle; whether each attempt from B got through."""
    clock = Clock()
    throttle = LogonThrottle(clock, ThrottleSettings(free_failures=2, address_free_failures=50))
    seen = []
    for step in steps:
        if step == "wait":
            clock.advance(3)
            continue
        result = throttle.attempt("user", "u", A if step == "fail-A" else B)
        if step != "fail-A":
            seen.append(isinstance(result, Attempt))
        if isinstance(result, Attempt):
            (result.succeeded if step == "ok-B" else result.failed)()
    return seen


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["fail-A", "fail-B", "ok-B", "wait"]), max_size=80))
def test_property_other_address_never_blocked_by_a(steps: list[str]) -> None:
    """Whatever address A does, the user's attempts from B fare exactly as if A did nothing."""
    without_a = [s for s in steps if s != "fail-A"]
    assert _outcomes_for_b(steps) == _outcomes_for_b(without_a)


# --- the router ------------------------------------------------------------------------
def _client(harness: RouterHarness, host: str) -> tuple[Any, StringTransport]:
    conn = ClientConnectionFactory(harness.router, harness.batcher).connection("tls")
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    conn.makeConnection(transport)  # type: ignore[no-untyped-call]
    return conn, transport


def _refuse_logon(harness: RouterHarness, auth: Any) -> None:
    harness.notifier.answer(
        auth,
        {"code": "logon-failed", "message": "no", "reason": "bad-credentials"},
        kind=Kind.ERROR,
    )


def test_router_throttles_before_asking_the_notifier() -> None:
    """Past the free failures CreateSession is answered logon-throttled, the Notifier unasked."""
    harness = RouterHarness()
    harness.router.throttle.settings = ThrottleSettings(free_failures=3)
    conn, transport = _client(harness, "10.0.0.1")
    for rid in range(1, 4):
        harness.send(conn, c.CREATE_SESSION, rid, {"user": "agent1", "password": "guess"})
        (auth,) = harness.upstream()
        _refuse_logon(harness, auth)
        (error,) = harness.received(transport)
        assert error.parsed()["code"] == "logon-failed"
    harness.send(conn, c.CREATE_SESSION, 9, {"user": "agent1", "password": "guess"})
    assert harness.upstream() == []  # the Notifier was not asked
    (error,) = harness.received(transport)
    body = error.parsed()
    assert (error.request_id, body["code"], body["retryAfter"]) == (9, "logon-throttled", 1)
    assert harness.router.counters.get("logons_throttled", scope="user") == 1
    # The right user from another address logs on at once.
    other, other_transport = _client(harness, "10.0.0.2")
    harness.send(other, c.CREATE_SESSION, 1, {"user": "agent1", "password": "demo"})
    (auth,) = harness.upstream()
    assert auth.parsed()["user"] == "agent1"


def test_router_pipelined_guesses_reach_the_notifier_only_n_times() -> None:
    """Guesses sent together on one connection: only the free ones are passed upstream."""
    harness = RouterHarness()
    harness.router.throttle.settings = ThrottleSettings(free_failures=3)
    conn, transport = _client(harness, "10.0.0.1")
    for rid in range(1, 21):
        harness.send(conn, c.CREATE_SESSION, rid, {"user": "agent1", "password": f"g{rid}"})
    auths = harness.upstream()
    assert len(auths) == 3
    codes = [f.parsed()["code"] for f in harness.received(transport)]
    assert codes == ["logon-throttled"] * 17


def test_resume_with_bad_tokens_is_throttled() -> None:
    """Guessing a session's resume token is throttled like guessing a password."""
    harness = RouterHarness()
    harness.router.throttle.settings = ThrottleSettings(free_failures=3)
    _, _, reply = harness.logon()
    conn, transport = _client(harness, "10.0.0.9")
    codes = []
    for rid in range(1, 7):
        body = {"sessionId": reply["sessionId"], "resumeToken": f"bad{rid}", "received": 0}
        harness.send(conn, c.RESUME_SESSION, rid, body)
        codes += [f.parsed()["code"] for f in harness.received(transport)]
    assert codes == ["logon-failed"] * 3 + ["logon-throttled"] * 3
    assert harness.router.counters.get("logons_throttled", scope="user") == 3


def _granted(user: str) -> dict[str, Any]:
    return {"user": {"id": user, "displayName": user}, "station": None, "location": "Indy"}


def test_router_storm_of_good_logons_from_one_address_reaches_the_notifier() -> None:
    """300 CreateSessions from one address at once all go upstream; past the cap, throttled."""
    harness = RouterHarness()
    harness.router.throttle.settings = ThrottleSettings(address_max_pending=300)
    conns = [_client(harness, "10.0.0.1") for _ in range(301)]
    for i, (conn, _) in enumerate(conns):
        harness.send(conn, c.CREATE_SESSION, 1, {"user": f"user{i}", "password": "demo"})
    auths = harness.upstream()
    assert len(auths) == 300
    (refused,) = harness.received(conns[300][1])
    assert (refused.parsed()["code"], refused.parsed()["retryAfter"]) == ("logon-throttled", 1)
    assert harness.router.counters.get("logons_throttled", scope="address") == 1
    for auth in auths:
        harness.notifier.answer(auth, _granted(auth.parsed()["user"]))
    assert harness.router.throttle.in_flight(A) == 0
    assert harness.router.counters.get("logons", transport="tls") == 300


def test_router_settles_logons_whose_connection_or_link_went_away() -> None:
    """A logon in flight is settled by its answer after its client left, or by a link drop."""
    harness = RouterHarness()
    throttle = harness.router.throttle
    conns = [_client(harness, "10.0.0.1") for _ in range(3)]
    for i, (conn, _) in enumerate(conns):
        harness.send(conn, c.CREATE_SESSION, 1, {"user": f"user{i}", "password": "x"})
    good, bad, lost = harness.upstream()
    assert throttle.in_flight(A) == 3
    for conn, _ in conns[:2]:
        conn.connectionLost(None)
    harness.notifier.answer(good, _granted("user0"))
    _refuse_logon(harness, bad)
    assert throttle.in_flight(A) == 1
    harness.notifier.link.connectionLost(None)  # type: ignore[arg-type]
    harness.clock.advance(0)
    assert throttle.in_flight(A) == 0
    (error,) = harness.received(conns[2][1])
    assert error.parsed()["code"] == "upstream-unavailable"
    assert len(throttle) == 2  # user1's failure, on its key and the address: nothing else
    assert lost.parsed()["user"] == "user2"


def test_router_settles_a_logon_whose_request_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A logon whose Notifier request raises is abandoned: its place in flight is released."""
    harness = RouterHarness()

    def broken(message: Any, body: Any) -> Any:
        raise RuntimeError("broken")

    monkeypatch.setattr(harness.connector, "request", broken)
    conn, transport = _client(harness, "10.0.0.1")
    harness.send(conn, c.CREATE_SESSION, 1, {"user": "agent1", "password": "demo"})
    (error,) = harness.received(transport)
    assert error.kind == Kind.ERROR
    assert harness.router.throttle.in_flight(A) == 0
    assert len(harness.router.throttle) == 0


def test_router_resumes_settle_on_every_outcome() -> None:
    """Unknown sessions, bad tokens and good resumes all release their place in flight."""
    harness = RouterHarness()
    throttle = harness.router.throttle
    _, _, reply = harness.logon()
    conn, transport = _client(harness, "10.0.0.1")
    bodies = [
        {"sessionId": "sm1-nope", "resumeToken": "x", "received": 0},
        {"sessionId": reply["sessionId"], "resumeToken": "bad", "received": 0},
        {"sessionId": reply["sessionId"], "resumeToken": reply["resumeToken"], "received": 0},
    ]
    for rid, body in enumerate(bodies, start=1):
        harness.send(conn, c.RESUME_SESSION, rid, body)
        assert throttle.in_flight(A) == 0
    codes = [f.parsed().get("code", "ok") for f in harness.received(transport)]
    assert codes[:2] == ["unknown-session", "logon-failed"]
    assert harness.router.counters.get("resumes", outcome="resumed") == 1


# --- options -------------------------------------------------------------------------
def test_options_reach_the_throttle(tmp_path: Path) -> None:
    """The --logon-* options (command line or config file) set the bridge's throttle."""
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(
        "logon-max-delay: 30\nlogon-address-free-failures: 50\nlogon-address-max-pending: 64\n"
    )
    options = Options()
    options.parseOptions(
        ["--demo", "--work-path", str(tmp_path), "--config", str(config_file)]
        + ["--logon-free-failures", "2", "--logon-throttle-entries", "1000"]
    )
    config = options.config
    assert config is not None
    assert config.logon_throttle == ThrottleSettings(2, 50, 30.0, 1000, address_max_pending=64)
    options = Options()
    options.parseOptions(
        ["--demo", "--work-path", str(tmp_path), "--logon-address-max-pending", "9"]
    )
    assert options.config is not None
    assert options.config.logon_throttle.address_max_pending == 9
    bridge = BridgeService(config, Clock())
    assert bridge.router.throttle.settings == config.logon_throttle
    assert bridge.router.throttle.trusted_proxy == bridge.guard.is_trusted


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--logon-free-failures", "0"),
        ("--logon-address-free-failures", "0"),
        ("--logon-max-delay", "0.5"),
        ("--logon-throttle-entries", "10"),
        ("--logon-address-max-pending", "0"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, flag: str, value: str) -> None:
    """Out-of-range --logon-* values are a usage error naming the option."""
    with pytest.raises(usage.UsageError, match=flag):
        Options().parseOptions(["--demo", "--work-path", str(tmp_path), flag, value])


def test_throttled_logons_logged_once_per_wait_without_secrets() -> None:
    """Hammering during a wait logs one session.logon_throttled line, naming no password."""
    harness = RouterHarness()
    harness.router.throttle.settings = ThrottleSettings(free_failures=1)
    conn, transport = _client(harness, "10.0.0.1")
    logged = EventLoggingObserver()
    globalLogPublisher.addObserver(logged)
    try:
        harness.send(conn, c.CREATE_SESSION, 1, {"user": "agent1", "password": "s3cret-guess"})
        (auth,) = harness.upstream()
        _refuse_logon(harness, auth)
        for rid in range(2, 52):
            harness.send(conn, c.CREATE_SESSION, rid, {"user": "agent1", "password": "s3cret-x"})
    finally:
        globalLogPublisher.removeObserver(logged)
    lines = [e for e in logged if e.get("event") == "session.logon_throttled"]
    assert len(lines) == 1
    assert (lines[0]["name"], lines[0]["address"], lines[0]["scope"]) == (
        "agent1",
        "10.0.0.1",
        "user",
    )
    assert not any("s3cret" in formatEvent(e) + repr(sorted(map(str, e.values()))) for e in logged)
    assert harness.router.counters.get("logons_throttled", scope="user") == 50
    assert len(harness.received(transport)) == 51
