"""Workgroup and agent statistics: values kept from the model, coalesced StatisticsChanged."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from smbridge.codec import catalog as c
from smbridge.codec.frames import Decoder, Frame
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.notifier.statistics import AGENT_STATS, WORKGROUP_STATS, agent_stat

SITE = demo_site()  # Sales: agent1, agent4, ... agent49 (17 agents) and supervisor1


class Watcher:
    """Keeps the StatisticsChanged payloads of the topics it watches."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send_event(self, sub_id: int, frame: bytes) -> None:
        (f,) = Decoder().feed(frame)
        assert isinstance(f, Frame)
        assert (f.object_type, f.event_id) == c.STATISTICS_CHANGED
        self.events.append(f.parsed())


def make() -> tuple[Notifier, Clock, Watcher]:
    clock = Clock()
    clock.advance(50)
    n = Notifier(SITE, clock)
    watcher = Watcher()
    n.subscribe("statistics:Sales", watcher, 1)
    return n, clock, watcher


def ask(n: Notifier, message: tuple[int, int], user: str, **body: Any) -> dict[str, Any]:
    return n.handle_forwarded(*message, {**body, "_session": {"id": "s", "user": user}})


def stats(n: Notifier, workgroup: str = "Sales") -> dict[str, Any]:
    return dict(n.topic_state(f"statistics:{workgroup}").snapshot()["stats"])


def test_initial_snapshot_has_workgroup_and_agent_statistics() -> None:
    """A workgroup's snapshot has its 10 statistics and 10 per agent member, not supervisors."""
    n, _, _ = make()
    snapshot = stats(n)
    assert len(snapshot) == len(WORKGROUP_STATS) + 17 * len(AGENT_STATS) == 180
    assert {k: snapshot[k] for k in WORKGROUP_STATS} == {
        "callsWaiting": 0,
        "longestWaitSeconds": 0,
        "averageWaitSeconds": 0,
        "agentsAvailable": 17,
        "agentsOnCall": 0,
        "agentsInFollowUp": 0,
        "agentsOther": 0,
        "callsAnsweredToday": 0,
        "callsAbandonedToday": 0,
        "serviceLevel": 100,
    }
    assert snapshot[agent_stat("agent4", "status")] == "Available"
    assert snapshot[agent_stat("agent4", "statusSince")] == 50.0
    assert agent_stat("supervisor1", "status") not in snapshot
    assert agent_stat("agent2", "status") not in snapshot


def test_changes_in_one_turn_are_one_event_with_only_what_changed() -> None:
    """Two status changes in one reactor turn give one StatisticsChanged, after callLater(0)."""
    n, clock, watcher = make()
    ask(n, c.SET_STATUS, "agent1", status="Away")
    ask(n, c.SET_STATUS, "agent4", status="At Lunch")
    assert watcher.events == []
    clock.advance(0)
    assert watcher.events == [
        {
            "workgroup": "Sales",
            "stats": {
                "agent:agent1:status": "Away",
                "agent:agent4:status": "At Lunch",
                "agentsAvailable": 15,
                "agentsOther": 2,
            },
            "at": 50.0,
        }
    ]


def test_a_change_undone_within_the_turn_sends_nothing() -> None:
    """A value that changes and changes back before the flush is not published."""
    n, clock, watcher = make()
    ask(n, c.SET_STATUS, "agent1", status="Away")
    ask(n, c.SET_STATUS, "agent1", status="Available")
    clock.advance(0)
    assert watcher.events == []


def test_queue_statistics_follow_the_queue() -> None:
    """callsWaiting and longestWaitSeconds follow the queue, computed at the flush."""
    n, clock, watcher = make()
    n.change_queue("Sales", added=[{"id": "a", "arrived": 40.0}, {"id": "b", "arrived": 48.0}])
    clock.advance(0)
    assert watcher.events[-1]["stats"] == {"callsWaiting": 2, "longestWaitSeconds": 10}
    n.change_queue("Sales", removed=["a"])
    clock.advance(0)
    assert watcher.events[-1]["stats"] == {"callsWaiting": 1, "longestWaitSeconds": 2}


def test_answered_abandoned_and_service_level() -> None:
    """Answering and abandoning calls update the counts, the average wait and the service level."""
    n, clock, _ = make()
    for i, arrived in enumerate((45.0, 10.0)):
        n.interactions.enqueue("Sales", {"id": f"c{i}", "type": "call", "arrived": arrived})
    ask(n, c.PICKUP, "agent1", interactionId="c0")  # waited 5 s
    ask(n, c.PICKUP, "agent4", interactionId="c1")  # waited 40 s
    n.interactions.enqueue("Sales", {"id": "c2", "arrived": 50.0})
    n.interactions.enqueue("Sales", {"id": "c3", "arrived": 50.0}, drop=["c2"])
    clock.advance(0)
    s = stats(n)
    assert (s["callsAnsweredToday"], s["callsAbandonedToday"]) == (2, 1)
    assert (s["averageWaitSeconds"], s["serviceLevel"]) == (22, 33)
    assert (s["agentsOnCall"], s["agentsAvailable"], s["callsWaiting"]) == (2, 15, 1)


def test_agent_statistics_after_a_call_and_follow_up() -> None:
    """An ended call adds to the agent's handled calls and talk time; Follow Up time is counted."""
    n, clock, _ = make()
    n.interactions.enqueue("Sales", {"id": "c1", "type": "call", "arrived": 50.0})
    ask(n, c.PICKUP, "agent1", interactionId="c1")
    clock.advance(0)
    assert stats(n)[agent_stat("agent1", "interactions")] == 1
    clock.advance(30)
    ask(n, c.DISCONNECT, "agent1", interactionId="c1")
    clock.advance(7)
    ask(n, c.SET_STATUS, "agent1", status="Available")
    ask(n, c.MAKE_CALL, "agent1", target="x")
    ask(n, c.TRANSFER, "agent1", interactionId="call-1", target="agent4")
    clock.advance(0)
    s = stats(n)
    assert {stat: s[agent_stat("agent1", stat)] for stat in AGENT_STATS} == {
        "status": "Available",
        "statusSince": 87.0,
        "callsHandled": 2,
        "talkSeconds": 30,
        "averageTalkSeconds": 15,
        "longestTalkSeconds": 30,
        "followUpSeconds": 7,
        "callsMade": 1,
        "callsTransferred": 1,
        "interactions": 0,
    }


def test_status_published_by_the_control_api_counts_too() -> None:
    """A StatusChanged published on a status topic updates the workgroup counts like SetStatus."""
    n, clock, watcher = make()
    n.publish("status:agent7", *c.STATUS_CHANGED, {"status": "Follow Up", "since": 50.0})
    clock.advance(0)
    assert watcher.events[-1]["stats"]["agentsInFollowUp"] == 1
    assert watcher.events[-1]["stats"]["agentsAvailable"] == 16


def test_other_workgroups_are_not_touched() -> None:
    """A change in Sales publishes nothing on Support's statistics."""
    n, clock, _ = make()
    support = Watcher()
    n.subscribe("statistics:Support", support, 2)
    ask(n, c.SET_STATUS, "agent1", status="Away")
    clock.advance(0)
    assert support.events == []
