"""The load meter: Ping round trips against high and low watermarks, with a Clock."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from smbridge.testing import http_json, poll, start_site
from smbridge.upstream.load import LoadMeter


class Pinger:
    """Answers each Ping after ``delay`` seconds of the clock (or never, with None)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.delay: float | None = 0.01
        self.sent = 0
        self.down = False

    def __call__(self) -> defer.Deferred[Any]:
        self.sent += 1
        if self.down:
            return defer.fail(OSError("link down"))
        d: defer.Deferred[Any] = defer.Deferred()
        if self.delay is not None:
            self.clock.callLater(self.delay, d.callback, {})
        return d


def _meter() -> tuple[Clock, Pinger, LoadMeter]:
    clock = Clock()
    pinger = Pinger(clock)
    meter = LoadMeter(clock, pinger, interval=1.0, high_ms=300, low_ms=100)
    meter.start()
    return clock, pinger, meter


def _run(clock: Clock, seconds: float) -> None:
    for _ in range(int(seconds * 100)):
        clock.advance(0.01)


def test_fast_answers_leave_the_site_unloaded() -> None:
    """Round trips under the high watermark keep loaded false and are measured."""
    clock, pinger, meter = _meter()
    _run(clock, 5.05)
    assert meter.loaded is False
    assert meter.samples == 5
    assert meter.last_ms == pytest.approx(10, abs=1)
    meter.stop()


def test_loaded_above_high_until_below_low() -> None:
    """Above high: loaded; between the marks: still loaded; below low: unloaded again."""
    clock, pinger, meter = _meter()
    pinger.delay = 0.4
    _run(clock, 1.5)
    assert meter.loaded is True
    pinger.delay = 0.2  # between the watermarks
    _run(clock, 3.0)
    assert meter.loaded is True
    assert meter.state()["pingMs"] == pytest.approx(200, abs=15)
    pinger.delay = 0.05
    _run(clock, 2.0)
    assert meter.loaded is False
    meter.stop()


def test_a_ping_never_answered_counts_as_load() -> None:
    """A Ping outstanding past the interval makes the site loaded and no second Ping is sent."""
    clock, pinger, meter = _meter()
    pinger.delay = None
    _run(clock, 3.05)
    assert meter.loaded is True
    assert pinger.sent == 1
    assert meter.last_ms == pytest.approx(2000, abs=20)
    meter.stop()
    assert clock.getDelayedCalls() == []


def test_link_down_is_not_a_measure() -> None:
    """A Ping failing at once (link down) changes nothing and the meter keeps trying."""
    clock, pinger, meter = _meter()
    pinger.down = True
    _run(clock, 3.05)
    assert (meter.loaded, meter.samples, pinger.sent) == (False, 0, 3)
    meter.stop()


def test_bad_watermarks_are_refused() -> None:
    """A low watermark above the high one is a configuration error."""
    with pytest.raises(ValueError):
        LoadMeter(Clock(), Pinger(Clock()), high_ms=100, low_ms=200)


class LoadEndToEnd(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_simulated_load_shows_in_the_admin_status(self) -> Any:
        """POST /api/load on the Notifier makes the bridge's status loaded, then unloaded."""
        from twisted.internet import reactor

        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-load-")),
            admin_port=0,
            ping_interval=0.1,
            high_watermark_ms=150.0,
            low_watermark_ms=50.0,
        )
        self.addCleanup(site.stop)
        status_url = f"http://127.0.0.1:{site.bridge.admin_port}/api/status"

        @defer.inlineCallbacks
        def load_state() -> Any:
            code, status = yield http_json(reactor, "GET", status_url)
            self.assertEqual(code, 200)
            return status["notifier"]["load"]

        yield poll(lambda: site.bridge.load.samples >= 2, deadline=10)
        state = yield load_state()
        self.assertIs(state["loaded"], False)
        self.assertEqual((state["highWatermarkMs"], state["lowWatermarkMs"]), (150.0, 50.0))
        code, answer = yield http_json(
            reactor, "POST", f"{site.control_url}/api/load", {"pingDelayMs": 300}
        )
        self.assertEqual((code, answer), (200, {"pingDelayMs": 300}))
        yield poll(lambda: site.bridge.load.loaded, deadline=10)
        state = yield load_state()
        self.assertIs(state["loaded"], True)
        self.assertGreater(state["pingMs"], 150)
        yield http_json(reactor, "POST", f"{site.control_url}/api/load", {"pingDelayMs": 0})
        yield poll(lambda: not site.bridge.load.loaded, deadline=10)
        state = yield load_state()
        self.assertLess(state["pingMs"], 50)

    @defer.inlineCallbacks
    def test_load_endpoint_checks_its_input(self) -> Any:
        """A negative or non-integer pingDelayMs is a 400 with a JSON error."""
        from twisted.internet import reactor

        site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix="smbridge-load-")))
        self.addCleanup(site.stop)
        code, body = yield http_json(
            reactor, "POST", f"{site.control_url}/api/load", {"pingDelayMs": -1}
        )
        self.assertEqual(code, 400)
        self.assertIn("pingDelayMs", body["error"])
