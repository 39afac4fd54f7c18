"""The traffic generator on a Clock: call lifecycle, determinism, the sizing scenario's shape."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from smbridge.codec import catalog as c
from smbridge.codec.frames import Decoder, Frame
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.notifier.site import AVAILABLE, ON_PHONE, Site
from smbridge.notifier.sizing import sizing_site
from smbridge.notifier.traffic import Traffic, checked_settings

SITE = demo_site()


class Recorder:
    """Subscribes to topics and keeps (topic, message name, payload) of every event."""

    def __init__(self, notifier: Notifier, topics: list[str]) -> None:
        self.topics = dict(enumerate(topics, start=1))
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.raw: list[bytes] = []
        for sub, topic in self.topics.items():
            notifier.subscribe(topic, self, sub)

    def send_event(self, sub_id: int, frame: bytes) -> None:
        self.raw.append(frame)
        (f,) = Decoder().feed(frame)
        assert isinstance(f, Frame)
        self.events.append((self.topics[sub_id], c.name_of(f.object_type, f.event_id), f.parsed()))


def every_topic(site: Site) -> list[str]:
    return (
        [f"queue:{q}" for q in site.queues]
        + [f"statistics:{w}" for w in site.workgroups]
        + [f"{kind}:{u}" for u in site.users for kind in ("user", "status")]
    )


def make(site: Site = SITE, **settings: Any) -> tuple[Notifier, Clock, Traffic]:
    clock = Clock()
    notifier = Notifier(site, clock)
    traffic = Traffic(notifier, clock)
    if settings:
        traffic.configure(**settings)
    return notifier, clock, traffic


def run(clock: Clock, seconds: float, step: float = 0.25) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


def test_one_call_from_arrival_to_available_again() -> None:
    """A call is queued, taken by the longest-idle agent, talked, then Follow Up, Available."""
    n, clock, traffic = make(handle_seconds=8.0, follow_up_seconds=2.0)
    rec = Recorder(n, every_topic(SITE))
    traffic.start()
    clock.advance(1)  # the first call arrives at t=1
    traffic.set_rate(0)
    run(clock, 40)
    queue_events = [e for e in rec.events if e[0].startswith("queue:")]
    (added,) = [e[2]["added"][0] for e in queue_events if e[2]["added"]]
    workgroup = added["workgroup"]
    agent = SITE.workgroups[workgroup].members[0]
    assert added == {
        "id": "call-1",
        "type": "call",
        "state": "Offering",
        "direction": "inbound",
        "from": added["from"],
        "workgroup": workgroup,
        "arrived": 1.0,
    }
    mine = [
        (name, p) for topic, name, p in rec.events if topic in (f"user:{agent}", f"status:{agent}")
    ]
    assert [
        (name, p.get("status") or ("added" if p["added"] else "removed")) for name, p in mine
    ] == [
        ("MyInteractionsChanged", "added"),
        ("StatusChanged", ON_PHONE),
        ("MyInteractionsChanged", "removed"),
        ("StatusChanged", "Follow Up"),
        ("StatusChanged", AVAILABLE),
    ]
    picked_at, ended_at = mine[0][1]["at"], mine[2][1]["at"]
    assert 4.0 <= picked_at - 1.0 <= 12.0  # waited 0.5-1.5 x handleSeconds
    assert 4.0 <= ended_at - picked_at <= 12.25  # talked as long
    assert traffic.calls_in_progress == 0
    assert n.queue_items(workgroup) == []


def test_same_seed_same_events_and_another_seed_differs() -> None:
    """Two runs with the same seed and clock steps publish the same bytes; another seed does not."""

    def events(seed: int) -> list[bytes]:
        n, clock, traffic = make(calls_per_second=3.0, handle_seconds=6.0, seed=seed)
        rec = Recorder(n, every_topic(SITE))
        traffic.start()
        run(clock, 60)
        assert traffic.calls_made in (179, 180)  # the 180th is due at t=60 give or take a rounding
        return rec.raw

    first = events(7)
    assert len(first) > 1000
    assert events(7) == first
    assert events(8) != first


def test_sizing_shape_one_waiting_call_per_agent_on_a_call() -> None:
    """Steady state: about one call waits per agent on a call; under 20 % of business users talk."""
    site = sizing_site(200, business=200, seed=1)
    n, clock, traffic = make(
        site,
        calls_per_second=6.0,
        business_calls_per_second=1.3,
        handle_seconds=20.0,
        follow_up_seconds=4.0,
    )
    traffic.start()
    run(clock, 60, step=0.5)
    samples = []
    for _ in range(40):
        run(clock, 5, step=0.5)
        waiting = sum(len(n.queue_items(q)) for q in site.queues)
        on_call = sum(1 for u in site.users if u.startswith("agent") and n.status_of(u) == ON_PHONE)
        business = sum(1 for u in traffic.business if n.user_state(u).items)
        samples.append((waiting, on_call, business))
    mean_waiting = sum(s[0] for s in samples) / len(samples)
    mean_on_call = sum(s[1] for s in samples) / len(samples)
    assert 80 <= mean_on_call <= 160
    assert 0.75 <= mean_waiting / mean_on_call <= 1.25
    assert max(s[2] for s in samples) < 0.2 * 200
    assert sum(s[2] for s in samples) / len(samples) > 0.05 * 200
    assert traffic.business_calls > 100


def test_business_calls_alert_connect_and_end() -> None:
    """A business call alerts, is answered (On Phone), ends, and the user is Available again."""
    site = sizing_site(0, business=10)
    n, clock, traffic = make(site, business_calls_per_second=1.0, handle_seconds=5.0)
    rec = Recorder(n, every_topic(site))
    traffic.start()
    clock.advance(1)
    traffic.configure(business_calls_per_second=0.0)
    run(clock, 20)
    ((user_topic, _, first),) = [e for e in rec.events if e[1] == "MyInteractionsChanged"][:1]
    user = user_topic.split(":")[1]
    mine = [(name, p) for t, name, p in rec.events if t in (f"user:{user}", f"status:{user}")]
    assert [name for name, _ in mine] == [
        "MyInteractionsChanged",
        "InteractionChanged",
        "StatusChanged",
        "MyInteractionsChanged",
        "StatusChanged",
    ]
    assert first["added"][0]["state"] == "Alerting"
    assert mine[1][1]["interaction"]["state"] == "Connected"
    assert [p["status"] for name, p in mine if name == "StatusChanged"] == [ON_PHONE, AVAILABLE]
    assert n.user_state(user).items == {}


def test_business_calls_keep_under_a_fifth_on_a_call() -> None:
    """With ten business users at most one is on a call; arrivals beyond that are skipped."""
    site = sizing_site(0, business=10)
    n, clock, traffic = make(site, business_calls_per_second=5.0, handle_seconds=30.0)
    traffic.start()
    for _ in range(40):
        clock.advance(0.5)
        assert sum(1 for u in traffic.business if n.user_state(u).items) <= 1
    assert traffic.business_calls >= 1 and traffic.business_skipped > 50


def test_full_queue_abandons_the_oldest_in_the_same_event() -> None:
    """A full queue drops its oldest call in the event that adds the new one, counted abandoned."""
    n, clock, traffic = make(calls_per_second=2.0, handle_seconds=1000.0, max_queue_length=2)
    rec = Recorder(n, [f"queue:{q}" for q in SITE.queues])
    traffic.start()
    run(clock, 10)
    assert all(len(n.queue_items(q)) <= 2 for q in SITE.queues)
    both = [p for _, _, p in rec.events if p["added"] and p["removed"]]
    assert both and all(len(p["removed"]) == 1 for p in both)
    clock.advance(0)
    abandoned = sum(
        n.topic_state(f"statistics:{w}").snapshot()["stats"]["callsAbandonedToday"]
        for w in SITE.workgroups
    )
    assert abandoned == len(both) == 20 - sum(len(n.queue_items(q)) for q in SITE.queues)


def test_unavailable_agents_get_no_calls_until_available() -> None:
    """Agents in Do Not Disturb get no calls; one set Available takes the oldest call at once."""
    n, clock, traffic = make(calls_per_second=1.0, handle_seconds=2.0)
    for user in SITE.users:
        n.interactions.set_status(user, "Do Not Disturb")
    traffic.start()
    run(clock, 20)
    traffic.set_rate(0)
    assert all(not n.user_state(u).items for u in SITE.users)
    oldest = n.queue_items("Sales")[0]
    n.handle_forwarded(*c.SET_STATUS, {"status": AVAILABLE, "_session": {"user": "agent1"}})
    assert list(n.user_state("agent1").items) == [oldest["id"]]
    assert n.status_of("agent1") == ON_PHONE


def test_rate_zero_stops_arrivals_and_stop_cancels_every_timer() -> None:
    """Rate 0 stops arrivals while calls finish; stop() leaves no pending delayed call."""
    n, clock, traffic = make(calls_per_second=0.0)
    traffic.start()
    run(clock, 10)
    assert traffic.calls_made == 0
    traffic.set_rate(2.0)
    clock.advance(0.5)
    assert traffic.calls_made == 1
    traffic.set_rate(0)
    run(clock, 100)
    assert traffic.calls_made == 1 and traffic.calls_in_progress == 0
    traffic.set_rate(5.0)
    run(clock, 3)
    traffic.stop()
    n.statistics.cancel()
    assert clock.getDelayedCalls() == []
    assert traffic.running is False
    with pytest.raises(ValueError):
        traffic.set_rate(-1)


def test_calls_removed_elsewhere_are_skipped() -> None:
    """A queued call removed by someone else gets no pickup; the generator forgets it."""
    n, clock, traffic = make(calls_per_second=1.0, handle_seconds=8.0)
    traffic.start()
    clock.advance(1)
    traffic.set_rate(0)
    (queue,) = [q for q in SITE.queues if n.queue_items(q)]
    n.change_queue(queue, removed=["call-1"])
    run(clock, 30)
    assert all(not n.user_state(u).items for u in SITE.users)
    assert traffic.calls_in_progress == 0


def test_settings_are_validated_and_answered_by_wire_name() -> None:
    """checked_settings maps wire names to fields, refuses bad values; settings() answers."""
    assert checked_settings({"callsPerSecond": 2, "seed": 5}) == {
        "calls_per_second": 2.0,
        "seed": 5,
    }
    for bad, message in [
        ({"callsPerSecond": -1}, "callsPerSecond must be a number >= 0"),
        ({"handleSeconds": "8"}, "handleSeconds must be a number >= 0"),
        ({"businessCallsPerSecond": float("nan")}, "businessCallsPerSecond must be a number >= 0"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"maxQueueLength": 0}, "maxQueueLength must be an integer >= 1"),
        ({"speed": 1}, "unknown setting 'speed'"),
    ]:
        with pytest.raises(ValueError, match=message):
            checked_settings(bad)
    _, _, traffic = make(calls_per_second=2.0, seed=5)
    assert traffic.settings() == {
        "callsPerSecond": 2.0,
        "businessCallsPerSecond": 0.0,
        "handleSeconds": 8.0,
        "followUpSeconds": 2.0,
        "maxQueueLength": 50,
        "seed": 5,
    }
