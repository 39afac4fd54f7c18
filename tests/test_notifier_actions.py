"""Forwarded client requests on the Notifier: what each changes, publishes and refuses."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from smbridge.codec import catalog as c
from smbridge.codec.frames import Decoder, Frame
from smbridge.errors import ProtocolError
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.notifier.sizing import sizing_site

SITE = demo_site()  # agent1, agent4 in Sales; agent2 in Support; agent3 in Billing
START = 100.0


class Recorder:
    """Subscribes to topics and keeps (topic, message name, payload) of every event."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.topics: dict[int, str] = {}
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def watch(self, *topics: str) -> Recorder:
        for topic in topics:
            sub = len(self.topics) + 1
            self.topics[sub] = topic
            self.notifier.subscribe(topic, self, sub)
        return self

    def send_event(self, sub_id: int, frame: bytes) -> None:
        (f,) = Decoder().feed(frame)
        assert isinstance(f, Frame)
        self.events.append((self.topics[sub_id], c.name_of(f.object_type, f.event_id), f.parsed()))

    def names(self) -> list[tuple[str, str]]:
        return [(t, name) for t, name, _ in self.events]


def make(site: Any = SITE) -> tuple[Notifier, Clock]:
    clock = Clock()
    clock.advance(START)
    return Notifier(site, clock), clock


def ask(n: Notifier, message: tuple[int, int], user: str, **body: Any) -> dict[str, Any]:
    return n.handle_forwarded(*message, {**body, "_session": {"id": f"s-{user}", "user": user}})


def refused(n: Notifier, message: tuple[int, int], user: str, **body: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        ask(n, message, user, **body)
    return caught.value


def queued_call(n: Notifier, queue: str = "Sales", call_id: str = "c1") -> dict[str, Any]:
    call = {
        "id": call_id,
        "type": "call",
        "state": "Offering",
        "direction": "inbound",
        "from": "+1 317 555 0100",
        "workgroup": queue,
        "arrived": n.clock.seconds(),
    }
    n.interactions.enqueue(queue, call)
    return call


def test_set_status_publishes_status_changed_with_since() -> None:
    """SetStatus answers {user, status, since} and publishes StatusChanged stamped with at."""
    n, clock = make()
    rec = Recorder(n).watch("status:agent7")
    clock.advance(5)
    assert ask(n, c.SET_STATUS, "agent7", status="Away") == {
        "user": "agent7",
        "status": "Away",
        "since": 105.0,
    }
    assert rec.events == [
        (
            "status:agent7",
            "StatusChanged",
            {"user": "agent7", "status": "Away", "since": 105.0, "at": 105.0},
        )
    ]
    assert n.subscribe("status:agent7", Recorder(n), 1) == {
        "user": "agent7",
        "status": "Away",
        "since": 105.0,
    }


def test_set_status_to_the_same_status_publishes_nothing() -> None:
    """Setting the status a user already has answers it with the old since and sends no event."""
    n, clock = make()
    rec = Recorder(n).watch("status:agent7")
    clock.advance(5)
    assert ask(n, c.SET_STATUS, "agent7", status="Available")["since"] == START
    assert rec.events == []


@pytest.mark.parametrize("status", ["Out to sea", "", None, 3])
def test_set_status_refuses_unknown_status_naming_valid_ones(status: Any) -> None:
    """An unknown status is a bad request whose message lists the site's statuses."""
    n, _ = make()
    error = refused(n, c.SET_STATUS, "agent7", status=status)
    assert error.code == "bad-request"
    assert "Available, Away, At Lunch, Do Not Disturb" in error.message
    assert error.extra["statuses"] == list(SITE.statuses)
    assert n.status_of("agent7") == "Available"


@pytest.mark.parametrize("session", [None, {"id": "s"}, {"id": "s", "user": "ghost"}])
def test_requests_need_a_known_session_user(session: Any) -> None:
    """A forwarded request without _session.user naming a site user is a bad request."""
    n, _ = make()
    with pytest.raises(ProtocolError) as caught:
        n.handle_forwarded(*c.SET_STATUS, {"status": "Away", "_session": session})
    assert (caught.value.code, caught.value.message) == (
        "bad-request",
        "SetStatus needs _session.user naming a known user",
    )


def test_change_station() -> None:
    """ChangeStation answers the station and its location and updates the session's record."""
    n, _ = make()

    class Link:
        def send_event(self, sub_id: int, frame: bytes) -> None:
            pass

    link = Link()
    n.register({"name": "b1", "kind": "on-server"}, link)
    n.session_opened(link, {"sessionId": "s-agent1", "user": "agent1", "station": "IND-01"})
    assert ask(n, c.CHANGE_STATION, "agent1", station="LON-02") == {
        "station": "LON-02",
        "location": "London",
    }
    assert n.state()["sessions"][0]["station"] == "LON-02"
    error = refused(n, c.CHANGE_STATION, "agent1", station="MARS-1")
    assert (error.code, error.message) == ("not-found", "no station 'MARS-1'")
    assert refused(n, c.CHANGE_STATION, "agent1").code == "bad-request"


def test_make_call_adds_an_outbound_call_and_sets_on_phone() -> None:
    """MakeCall puts a connected outbound call in My Interactions and the user goes On Phone."""
    n, _ = make()
    rec = Recorder(n).watch("user:agent1", "status:agent1")
    answer = ask(n, c.MAKE_CALL, "agent1", target="+1 555 0199")
    call = answer["interaction"]
    assert call == {
        "id": "call-1",
        "type": "call",
        "state": "Connected",
        "direction": "outbound",
        "remote": "+1 555 0199",
        "user": "agent1",
        "started": START,
    }
    assert rec.events == [
        (
            "user:agent1",
            "MyInteractionsChanged",
            {"user": "agent1", "added": [call], "changed": [], "removed": [], "at": START},
        ),
        (
            "status:agent1",
            "StatusChanged",
            {"user": "agent1", "status": "On Phone", "since": START, "at": START},
        ),
    ]
    assert refused(n, c.MAKE_CALL, "agent1", target="").code == "bad-request"


def test_pickup_moves_a_queued_call_to_my_interactions() -> None:
    """Pickup takes a call from the user's workgroup queue: QueueChanged, then My Interactions."""
    n, clock = make()
    queued_call(n)
    rec = Recorder(n).watch("queue:Sales", "user:agent1", "status:agent1")
    clock.advance(12)
    picked = ask(n, c.PICKUP, "agent1", interactionId="c1")["interaction"]
    assert picked == {
        "id": "c1",
        "type": "call",
        "state": "Connected",
        "direction": "inbound",
        "remote": "+1 317 555 0100",
        "workgroup": "Sales",
        "user": "agent1",
        "started": 112.0,
        "arrived": START,
    }
    assert rec.names() == [
        ("queue:Sales", "QueueChanged"),
        ("user:agent1", "MyInteractionsChanged"),
        ("status:agent1", "StatusChanged"),
    ]
    assert rec.events[0][2]["removed"] == ["c1"]
    assert n.queue_items("Sales") == []
    assert list(n.user_state("agent1").items) == ["c1"]


def test_pickup_from_another_workgroups_queue_is_forbidden() -> None:
    """Only members of the queue's workgroup may pick a call up; the call stays queued."""
    n, _ = make()
    queued_call(n)
    error = refused(n, c.PICKUP, "agent2", interactionId="c1")
    assert error.code == "forbidden"
    assert error.message == "agent2 is not a member of a workgroup of queue 'Sales' (Sales)"
    assert [i["id"] for i in n.queue_items("Sales")] == ["c1"]


def test_pickup_unknown_and_connected_interactions() -> None:
    """Pickup of an interaction nowhere is not-found; of one already connected, a bad request."""
    n, _ = make()
    error = refused(n, c.PICKUP, "agent1", interactionId="nope")
    assert (error.code, error.message) == ("not-found", "no interaction 'nope' waits in a queue")
    call_id = ask(n, c.MAKE_CALL, "agent1", target="x")["interaction"]["id"]
    assert refused(n, c.PICKUP, "agent1", interactionId=call_id).code == "bad-request"
    assert refused(n, c.PICKUP, "agent1").code == "bad-request"


def test_pickup_answers_an_alerting_interaction() -> None:
    """Pickup of an Alerting interaction of one's own connects it with an InteractionChanged."""
    n, _ = make()
    ask(n, c.SEND_EMAIL, "agent2", to="agent1", subject="hello")
    rec = Recorder(n).watch("user:agent1")
    answered = ask(n, c.PICKUP, "agent1", interactionId="email-1")["interaction"]
    assert answered["state"] == "Connected"
    assert rec.events == [
        (
            "user:agent1",
            "InteractionChanged",
            {"user": "agent1", "interaction": answered, "at": START},
        )
    ]


def test_disconnect_ends_the_call_and_status_follows() -> None:
    """Disconnect removes the call: after an ACD call the agent is in Follow Up, else Available."""
    n, clock = make()
    queued_call(n)
    ask(n, c.PICKUP, "agent1", interactionId="c1")
    rec = Recorder(n).watch("user:agent1", "status:agent1")
    clock.advance(30)
    ended = ask(n, c.DISCONNECT, "agent1", interactionId="c1")["interaction"]
    assert (ended["id"], ended["state"]) == ("c1", "Disconnected")
    assert [e[2].get("removed") or e[2].get("status") for e in rec.events] == [
        ["c1"],
        "Follow Up",
    ]
    ask(n, c.SET_STATUS, "agent4", status="Available")
    call_id = ask(n, c.MAKE_CALL, "agent4", target="x")["interaction"]["id"]
    ask(n, c.DISCONNECT, "agent4", interactionId=call_id)
    assert n.status_of("agent4") == "Available"
    error = refused(n, c.DISCONNECT, "agent1", interactionId="c1")
    assert (error.code, error.message) == (
        "not-found",
        "interaction 'c1' is not in agent1's My Interactions",
    )


def test_transfer_to_a_user_and_to_a_workgroup() -> None:
    """Transfer to a user makes it Alerting in their My Interactions; to a workgroup, queued."""
    n, _ = make()
    first = ask(n, c.MAKE_CALL, "agent1", target="+1 555 0101")["interaction"]
    rec = Recorder(n).watch("user:agent1", "user:agent4", "queue:Support")
    moved = ask(n, c.TRANSFER, "agent1", interactionId=first["id"], target="agent4")["interaction"]
    assert (moved["user"], moved["state"], moved["transferredBy"]) == (
        "agent4",
        "Alerting",
        "agent1",
    )
    assert rec.names() == [
        ("user:agent1", "MyInteractionsChanged"),
        ("user:agent4", "MyInteractionsChanged"),
    ]
    assert n.status_of("agent1") == "Available"
    queued = ask(n, c.TRANSFER, "agent4", interactionId=first["id"], target="Support")[
        "interaction"
    ]
    assert (queued["state"], queued["workgroup"], queued["from"]) == (
        "Offering",
        "Support",
        "+1 555 0101",
    )
    assert [i["id"] for i in n.queue_items("Support")] == [first["id"]]
    assert n.user_state("agent4").items == {}


def test_transfer_to_nowhere_keeps_the_interaction() -> None:
    """Transfer to an unknown target (or to oneself) is not-found and changes nothing."""
    n, _ = make()
    call_id = ask(n, c.MAKE_CALL, "agent1", target="x")["interaction"]["id"]
    for target in ("nobody", "agent1"):
        error = refused(n, c.TRANSFER, "agent1", interactionId=call_id, target=target)
        assert (error.code, error.message) == (
            "not-found",
            f"no user or workgroup {target!r} to transfer to",
        )
    assert list(n.user_state("agent1").items) == [call_id]


def test_send_chat_creates_one_chat_for_both_users() -> None:
    """SendChat adds a chat to both users' My Interactions; a second message updates it for both."""
    n, _ = make()
    rec = Recorder(n).watch("user:agent1", "user:agent2")
    chat = ask(n, c.SEND_CHAT, "agent1", to="agent2", text="hi")["interaction"]
    assert (chat["type"], chat["direction"], chat["remote"], chat["lastMessage"]) == (
        "chat",
        "outbound",
        "agent2",
        "hi",
    )
    theirs = n.user_state("agent2").items[chat["id"]]
    assert (theirs["direction"], theirs["remote"], theirs["user"]) == (
        "inbound",
        "agent1",
        "agent2",
    )
    reply = ask(n, c.SEND_CHAT, "agent2", to="agent1", text="hello")["interaction"]
    assert reply["id"] == chat["id"] and reply["lastFrom"] == "agent2"
    assert [name for _, name in rec.names()] == ["MyInteractionsChanged"] * 2 + [
        "InteractionChanged"
    ] * 2
    assert n.user_state("agent1").items[chat["id"]]["lastMessage"] == "hello"


def test_send_chat_refusals() -> None:
    """SendChat to an unknown user is not-found; to oneself or without text, a bad request."""
    n, _ = make()
    assert refused(n, c.SEND_CHAT, "agent1", to="ghost", text="x").message == (
        "no user 'ghost' to chat with"
    )
    assert refused(n, c.SEND_CHAT, "agent1", to="agent1", text="x").code == "bad-request"
    assert refused(n, c.SEND_CHAT, "agent1", to="agent2").code == "bad-request"


def test_send_email_to_a_workgroup_or_a_user() -> None:
    """SendEmail to a workgroup queues it; to a user it alerts in their My Interactions."""
    n, _ = make()
    queued = ask(n, c.SEND_EMAIL, "agent1", to="Billing", subject="Invoice")["interaction"]
    assert n.queue_items("Billing") == [queued]
    assert (queued["type"], queued["from"], queued["subject"]) == ("email", "agent1", "Invoice")
    direct = ask(n, c.SEND_EMAIL, "agent1", to="agent3", subject="Hi")["interaction"]
    assert n.user_state("agent3").items[direct["id"]]["state"] == "Alerting"
    error = refused(n, c.SEND_EMAIL, "agent1", to="Nowhere", subject="x")
    assert (error.code, error.message) == (
        "not-found",
        "no user or workgroup 'Nowhere' to send an email to",
    )


def test_callback_goes_to_a_workgroup_queue() -> None:
    """Callback queues in the named workgroup or the user's first; an unknown one is not-found."""
    n, _ = make()
    own = ask(n, c.CALLBACK, "agent2", number="+1 555 0123")["interaction"]
    assert (own["type"], own["workgroup"], own["from"], own["requestedBy"]) == (
        "callback",
        "Support",
        "+1 555 0123",
        "agent2",
    )
    named = ask(n, c.CALLBACK, "agent2", number="+1 555 0124", workgroup="Sales")["interaction"]
    assert n.queue_items("Sales") == [named]
    assert refused(n, c.CALLBACK, "agent2", number="1", workgroup="Nope").message == (
        "no workgroup 'Nope'"
    )
    assert refused(n, c.CALLBACK, "agent2", number="").code == "bad-request"
    lonely, _ = make(sizing_site(2, supervisors=1))
    error = refused(lonely, c.CALLBACK, "supervisor1", number="1")
    assert (error.code, error.message) == (
        "bad-request",
        "Callback needs a workgroup: supervisor1 is in none",
    )


def test_licenses_come_from_the_pool_per_session() -> None:
    """Licenses are seats per session until none is left; release and SessionClosed give back."""
    n, _ = make()
    body = {"license": "Interaction Supervisor"}
    granted = n.handle_forwarded(
        *c.ACQUIRE_LICENSE, {**body, "_session": {"id": "a", "user": "agent1"}}
    )
    assert granted == {"license": "Interaction Supervisor", "granted": True, "available": 1}
    again = n.handle_forwarded(
        *c.ACQUIRE_LICENSE, {**body, "_session": {"id": "a", "user": "agent1"}}
    )
    assert again["available"] == 1
    n.handle_forwarded(*c.ACQUIRE_LICENSE, {**body, "_session": {"id": "b", "user": "agent2"}})
    with pytest.raises(ProtocolError) as caught:
        n.handle_forwarded(*c.ACQUIRE_LICENSE, {**body, "_session": {"id": "c", "user": "agent3"}})
    assert caught.value.payload() == {
        "code": "license-unavailable",
        "message": "all 2 'Interaction Supervisor' licenses are in use",
        "license": "Interaction Supervisor",
    }
    released = n.handle_forwarded(
        *c.RELEASE_LICENSE, {**body, "_session": {"id": "a", "user": "agent1"}}
    )
    assert released == {"license": "Interaction Supervisor", "released": True}
    assert n.handle_forwarded(
        *c.RELEASE_LICENSE, {**body, "_session": {"id": "a", "user": "agent1"}}
    ) == {
        "license": "Interaction Supervisor",
        "released": False,
    }
    n.session_closed(object(), {"sessionId": "b"})  # type: ignore[arg-type]
    assert n.state()["licenses"]["Interaction Supervisor"] == {"total": 2, "available": 2}
    error = refused(n, c.ACQUIRE_LICENSE, "agent1", license="Flux Capacitor")
    assert error.code == "not-found"
    assert error.message.startswith(
        "no license 'Flux Capacitor' (the site has: Interaction Desktop"
    )
