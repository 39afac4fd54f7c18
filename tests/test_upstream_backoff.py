"""The Notifier link's reconnect policy on a Clock: quick after a lasting link, slow if it flaps."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from smbridge.codec import catalog as c
from smbridge.testing import FakeNotifierEndpoint
from smbridge.transports.batch import WriteBatcher
from smbridge.upstream.addresses import NotifierEndpoints
from smbridge.upstream.backoff import QUICK_FLAPS, QUICK_RETRY, STABLE_AFTER, LinkBackoff
from smbridge.upstream.connector import LinkState, UpstreamConnector


def _policy(clock: Clock) -> LinkBackoff:
    return LinkBackoff(clock, jitter=lambda: 0.0)


def test_failed_attempts_grow_the_delay_up_to_the_cap() -> None:
    """Each failed attempt multiplies the delay by 1.7 from 0.5 s, never past 30 s."""
    policy = _policy(Clock())
    delays = []
    for _ in range(12):
        policy.failed()
        delays.append(policy.next_delay())
    assert delays[0] == pytest.approx(0.85)
    assert delays[1] == pytest.approx(0.5 * 1.7**2)
    assert delays == sorted(delays)
    assert max(delays) == 30.0


def test_a_lasting_link_that_drops_gets_one_quick_retry_per_address() -> None:
    """A link up past STABLE_AFTER retries at once per address, then backs off from the start."""
    clock = Clock()
    policy = _policy(clock)
    policy.failed()
    policy.failed()  # two failures before it came up: forgotten once the link lasted
    policy.came_up()
    clock.advance(STABLE_AFTER)
    policy.went_down(addresses=2)
    assert policy.next_delay() <= QUICK_RETRY
    assert policy.next_delay() <= QUICK_RETRY
    policy.failed()
    assert policy.next_delay() == pytest.approx(0.85)


def test_a_link_that_drops_right_after_up_backs_off() -> None:
    """Ups that end at once: two quick retries (switch over and back), then delays grow to 30 s."""
    clock = Clock()
    policy = _policy(clock)
    delays = []
    for _ in range(10):
        policy.came_up()
        clock.advance(0.01)
        policy.went_down(addresses=1)
        delay = policy.next_delay()
        delays.append(delay)
        clock.advance(delay)
    assert QUICK_FLAPS == 2
    assert delays[:2] == [0.0, 0.0]  # a switchover and a switch back are followed at once
    assert delays[2:] == sorted(delays[2:])
    assert delays[2] == pytest.approx(0.85)
    assert delays[-1] == 30.0


def test_the_backoff_resets_only_after_the_link_stays_up() -> None:
    """After flapping, an up under STABLE_AFTER keeps the long delay; a lasting one resets it."""
    clock = Clock()
    policy = _policy(clock)
    for _ in range(6):
        policy.came_up()
        policy.went_down(addresses=1)
        policy.next_delay()
    policy.came_up()
    clock.advance(STABLE_AFTER - 1)
    policy.went_down(addresses=1)
    assert policy.next_delay() == pytest.approx(0.5 * 1.7**5)  # the seventh flap in a row
    policy.came_up()
    clock.advance(STABLE_AFTER)
    policy.went_down(addresses=1)
    assert policy.next_delay() <= QUICK_RETRY


def test_a_named_primary_is_dialled_quickly_without_resetting_the_count() -> None:
    """A refusal naming the primary buys one quick dial; the failure count it carries stays."""
    policy = _policy(Clock())
    for _ in range(4):
        policy.failed()
    policy.quick(1)
    assert policy.next_delay() <= QUICK_RETRY
    assert policy.next_delay() == pytest.approx(0.5 * 1.7**4)


def test_the_jitter_is_added_to_every_delay() -> None:
    """The jitter (one second at most) spreads bridges that lost the same Notifier."""
    policy = LinkBackoff(Clock(), jitter=lambda: 0.5)
    policy.failed()
    assert policy.next_delay() == pytest.approx(0.85 + 0.5)
    policy.quick(1)
    assert policy.next_delay() == pytest.approx(QUICK_RETRY * 0.5)


def _flapping_attempts(seconds: float) -> tuple[int, UpstreamConnector]:
    """Run a connector against a Notifier that registers it and drops it at once; count dials."""
    clock = Clock()
    notifier = FakeNotifierEndpoint("a:5597")
    endpoints = NotifierEndpoints([("a:5597", notifier)])
    connector = UpstreamConnector(
        clock, endpoints, {"name": "sm1"}, WriteBatcher(clock), "a:5597", 1 << 20
    )
    connector.startService()
    served = 0
    elapsed = 0.0
    while elapsed < seconds:
        clock.advance(0.05)
        elapsed += 0.05
        if notifier.attempts > served:
            served = notifier.attempts
            peer = notifier.last
            (frame,) = peer.take()
            assert (frame.object_type, frame.event_id) == c.LINK_REGISTER
            cic: dict[str, Any] = {"name": "cicA", "role": "primary"}
            peer.answer(frame, {"cic": cic, "parameters": {}, "roster": []})
            assert connector.state is LinkState.UP
            notifier.drop()
    connector.stopService()
    return notifier.attempts, connector


def test_connector_dials_a_flapping_notifier_a_bounded_number_of_times() -> None:
    """A link dropped right after each Register is redialled about 10 times a minute, not 300."""
    attempts, connector = _flapping_attempts(60.0)
    assert 6 <= attempts <= 13
    assert connector.last_error is not None
