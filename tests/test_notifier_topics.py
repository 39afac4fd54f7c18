"""Every topic kind on the Notifier: snapshots, not-found, the at stamp, parameters."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from smbridge.codec import catalog as c
from smbridge.codec.frames import Decoder, Frame
from smbridge.errors import BadRequest, NotFound
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.topics import TopicState

SITE = demo_site()


class Link:
    """A subscriber that keeps every frame it is sent."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def send_event(self, sub_id: int, frame: bytes) -> None:
        (f,) = Decoder().feed(frame)
        assert isinstance(f, Frame)
        self.frames.append(f)


def make() -> tuple[Notifier, Clock]:
    clock = Clock()
    clock.advance(1000)
    return Notifier(SITE, clock), clock


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("queue:Nope", "no queue 'Nope' (topic 'queue:Nope')"),
        ("directory:Nope", "no directory 'Nope' (topic 'directory:Nope')"),
        ("user:ghost", "no user 'ghost' (topic 'user:ghost')"),
        ("status:ghost", "no user 'ghost' (topic 'status:ghost')"),
        ("statistics:Nope", "no workgroup 'Nope' (topic 'statistics:Nope')"),
        (
            "weather:Indy",
            "no topic 'weather:Indy': topics are queue:, directory:, user:, status:, "
            "statistics:<name> and parameters",
        ),
    ],
)
def test_unknown_topics_are_not_found_with_a_clear_message(topic: str, message: str) -> None:
    """Subscribing to something that does not exist raises NotFound naming what is missing."""
    n, _ = make()
    with pytest.raises(NotFound) as caught:
        n.subscribe(topic, Link(), 1)
    assert caught.value.message == message


def test_snapshots_of_every_kind() -> None:
    """User, status, statistics and parameters topics answer snapshots of the contract's shape."""
    n, _ = make()
    link = Link()
    assert n.subscribe("user:agent1", link, 1) == {"user": "agent1", "interactions": []}
    assert n.subscribe("status:agent1", link, 2) == {
        "user": "agent1",
        "status": "Available",
        "since": 1000.0,
    }
    stats = n.subscribe("statistics:Sales", link, 3)
    assert stats["workgroup"] == "Sales"
    assert stats["stats"]["agentsAvailable"] == 17
    params = n.subscribe("parameters", link, 4)
    assert params == {"parameters": dict(SITE.parameters)}
    assert params["parameters"]["RestrictUserVisibility"] == "No"


def test_every_change_event_carries_at() -> None:
    """A published change event is stamped with the clock (replacing any at the caller gave)."""
    n, clock = make()
    link = Link()
    n.subscribe("queue:Sales", link, 1)
    n.subscribe("status:agent1", link, 2)
    clock.advance(2.5)
    n.publish("queue:Sales", *c.QUEUE_CHANGED, {"added": [{"id": "x"}], "at": 1})
    n.publish("status:agent1", *c.STATUS_CHANGED, {"status": "Away", "since": 1002.5})
    assert [f.parsed()["at"] for f in link.frames] == [1002.5, 1002.5]
    assert n.topic_state("status:agent1").snapshot() == {
        "user": "agent1",
        "status": "Away",
        "since": 1002.5,
    }


def test_other_events_pass_through_unstamped() -> None:
    """An event that is not one of the topic's change events is sent as given, not applied."""
    n, _ = make()
    link = Link()
    n.subscribe("status:agent1", link, 1)
    assert n.publish("status:agent1", *c.QUEUE_CHANGED, {"status": "Away"}) == 1
    assert link.frames[0].parsed() == {"status": "Away"}
    assert n.status_of("agent1") == "Available"


def test_bridge_copy_applies_events_identically() -> None:
    """A bridge-side TopicState built from the snapshot and fed the events equals the Notifier's."""
    n, _ = make()
    link = Link()
    snapshot = n.subscribe("user:agent1", link, 1)
    copy = TopicState.from_snapshot("user:agent1", snapshot)
    n.handle_forwarded(
        *c.SEND_EMAIL, {"to": "agent1", "subject": "s", "_session": {"user": "agent2"}}
    )
    n.handle_forwarded(*c.PICKUP, {"interactionId": "email-1", "_session": {"user": "agent1"}})
    for f in link.frames:
        copy.apply(f.parsed(), (f.object_type, f.event_id))
    assert copy.snapshot() == n.topic_state("user:agent1").snapshot()
    assert copy.snapshot()["interactions"][0]["state"] == "Connected"


@pytest.mark.parametrize(
    ("topic", "message", "payload"),
    [
        ("status:agent1", c.STATUS_CHANGED, {"status": "Sleeping"}),
        ("status:agent1", c.STATUS_CHANGED, {"user": "agent2", "status": "Away"}),
        ("statistics:Sales", c.STATISTICS_CHANGED, {"stats": [1]}),
        ("user:agent1", c.INTERACTION_CHANGED, {"interaction": {"state": "x"}}),
        ("parameters", c.LINK_PARAMETERS_CHANGED, {"parameters": "x"}),
    ],
)
def test_published_record_changes_are_checked(
    topic: str, message: tuple[int, int], payload: dict[str, Any]
) -> None:
    """Malformed record changes (unknown status, wrong name, non-object maps) are bad requests."""
    n, _ = make()
    before = n.topic_state(topic).snapshot()
    with pytest.raises(BadRequest):
        n.publish(topic, *message, payload)
    assert n.topic_state(topic).snapshot() == before


def test_set_parameters_publishes_parameters_changed() -> None:
    """set_parameters sends ParametersChanged with the changes and at; Register and state follow."""
    n, clock = make()
    link = Link()
    n.subscribe("parameters", link, 9)
    clock.advance(1)
    answer = n.set_parameters({"RestrictUserVisibility": "Yes", "TransferDialogDirectories": None})
    assert answer["RestrictUserVisibility"] == "Yes"
    assert "TransferDialogDirectories" not in answer
    (event,) = link.frames
    assert (event.object_type, event.event_id, event.request_id) == (200, 8, 9)
    assert event.parsed() == {
        "parameters": {"RestrictUserVisibility": "Yes", "TransferDialogDirectories": None},
        "at": 1001.0,
    }
    assert n.register({"name": "b"}, Link())["parameters"] == answer
    assert n.state()["parameters"] == answer


def test_state_lists_shared_topics_and_watched_per_user_ones() -> None:
    """State lists shared topics always and per-user topics only while watched."""
    n, _ = make()
    n.subscribe("status:agent9", Link(), 1)
    topics = n.state()["topics"]
    assert topics["queue:Sales"] == {"subscribers": 0, "items": 0}
    assert topics["statistics:Sales"] == {"subscribers": 0}
    assert topics["status:agent9"] == {"subscribers": 1}
    assert "status:agent8" not in topics and "user:agent9" not in topics
