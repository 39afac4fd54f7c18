"""The call traffic generator, driven by a Clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from smbridge.codec.frames import Decoder, Frame
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.notifier.traffic import Traffic

SITE = demo_site()


class Recorder:
    """A subscriber that keeps the decoded payloads it receives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send_event(self, sub_id: int, frame: bytes) -> None:
        (decoded,) = Decoder().feed(frame)
        assert isinstance(decoded, Frame)
        self.events.append(decoded.parsed())


def make(rate: float = 1.0, handle: float = 8.0, **kw: Any) -> tuple[Notifier, Clock, Traffic]:
    clock = Clock()
    notifier = Notifier(SITE, clock)
    return notifier, clock, Traffic(notifier, clock, rate, handle, **kw)


def sizes(n: Notifier) -> dict[str, int]:
    return {q: len(n.queue_items(q)) for q in SITE.queues}


def test_calls_arrive_round_robin() -> None:
    """At one call per second the queues get calls in turn, with a phone number and arrival time."""
    n, clock, traffic = make()
    traffic.start()
    clock.advance(1)
    clock.advance(1)
    clock.advance(1)
    assert sizes(n) == {"Sales": 1, "Support": 1, "Billing": 1}
    (call,) = n.queue_items("Support")
    assert call == {
        "id": "call-2",
        "type": "call",
        "state": "Offering",
        "from": "+1 317 555 8061",
        "workgroup": "Support",
        "arrived": 2.0,
    }


def test_call_lifecycle_events() -> None:
    """A watcher sees added, then changed to Alerting, then removed after handle_seconds."""
    n, clock, traffic = make(rate=1.0, handle=8.0, alert_seconds=2.0)
    watcher = Recorder()
    n.subscribe("queue:Sales", watcher, 1)
    traffic.start()
    clock.advance(1)  # call-1 into Sales at t=1
    traffic.set_rate(0)
    clock.advance(2)  # t=3: Alerting
    clock.advance(6)  # t=9: gone
    assert [
        (e["added"] and e["added"][0]["state"], [c["state"] for c in e["changed"]], e["removed"])
        for e in watcher.events
    ] == [("Offering", [], []), ([], ["Alerting"], []), ([], [], ["call-1"])]
    assert watcher.events[0]["queue"] == "Sales"
    assert traffic.calls_in_progress == 0
    assert clock.getDelayedCalls() == []


def test_steady_state_is_bounded_by_handle_time() -> None:
    """With rate r and handle time h each queue settles near r*h/len(queues) calls."""
    n, clock, traffic = make(rate=3.0, handle=4.0)
    traffic.start()
    for _ in range(300):
        clock.advance(0.1)
    assert sizes(n) == {"Sales": 4, "Support": 4, "Billing": 4}
    assert traffic.calls_made == 90


def test_full_queue_drops_oldest_in_same_event() -> None:
    """When a queue is full the oldest call leaves in the event that adds the new one."""
    n, clock, traffic = make(rate=1.0, handle=1000.0, max_queue_length=2, queues=["Sales"])
    watcher = Recorder()
    n.subscribe("queue:Sales", watcher, 1)
    traffic.start()
    clock.advance(1)
    clock.advance(1)
    clock.advance(1)
    assert [c["id"] for c in n.queue_items("Sales")] == ["call-2", "call-3"]
    last = watcher.events[-1]
    assert ([c["id"] for c in last["added"]], last["removed"]) == (["call-3"], ["call-1"])
    assert traffic.calls_in_progress == 2


def test_set_rate_changes_and_stops_arrivals() -> None:
    """set_rate takes effect at once; rate 0 stops arrivals; negative rates are refused."""
    n, clock, traffic = make(rate=0.0)
    traffic.start()
    clock.advance(10)
    assert traffic.calls_made == 0
    traffic.set_rate(2.0)
    clock.advance(0.5)
    assert traffic.calls_made == 1
    traffic.set_rate(0)
    clock.advance(100)
    assert traffic.calls_made == 1
    with pytest.raises(ValueError):
        traffic.set_rate(-1)
    with pytest.raises(ValueError):
        traffic.set_rate(float("inf"))


def test_stop_cancels_every_timer() -> None:
    """stop leaves no pending delayed call, and calls already queued stay in their queues."""
    n, clock, traffic = make(rate=5.0)
    traffic.start()
    clock.advance(1)
    traffic.stop()
    assert clock.getDelayedCalls() == []
    assert sum(sizes(n).values()) == 5
    assert traffic.running is False


def test_items_removed_elsewhere_are_skipped() -> None:
    """A call removed by someone else (a published event) gets no later Alerting or removal."""
    n, clock, traffic = make(rate=1.0, handle=8.0)
    watcher = Recorder()
    n.subscribe("queue:Sales", watcher, 1)
    traffic.start()
    clock.advance(1)
    traffic.set_rate(0)
    n.change_queue("Sales", removed=["call-1"])
    clock.advance(20)
    assert len(watcher.events) == 2
