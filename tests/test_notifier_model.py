"""The sans-IO Notifier core: logons, topics and fan-out, bridges, forwarded requests."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from smbridge.codec.catalog import DIRECTORY_CHANGED, QUEUE_CHANGED, STATUS_CHANGED
from smbridge.codec.frames import Decoder, Frame, Kind
from smbridge.errors import BadRequest, LogonFailed, NotFound, ProtocolError
from smbridge.notifier import auth
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.notifier.site import Site

SITE = demo_site()


class FakeSubscriber:
    """Collects the frames a Notifier sends to one link."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send_event(self, sub_id: int, frame: bytes) -> None:
        self.sent.append((sub_id, frame))

    def frames(self) -> list[Frame]:
        out = []
        for _, raw in self.sent:
            (frame,) = Decoder().feed(raw)
            assert isinstance(frame, Frame)
            out.append(frame)
        return out


def make() -> tuple[Notifier, Clock]:
    clock = Clock()
    return Notifier(SITE, clock), clock


def test_authenticate_returns_user_station_and_location() -> None:
    """A good logon returns the user, the station and the station's location."""
    n, _ = make()
    answer = n.authenticate("agent40", "demo", "IND-02")
    assert answer == {
        "user": {
            "id": "agent40",
            "displayName": SITE.users["agent40"].display_name,
            "extension": "1040",
            "location": "London",
            "workgroups": ["Sales"],
            "rights": ["view:Sales"],
        },
        "station": {"id": "IND-02", "location": "Indianapolis"},
        "location": "Indianapolis",
    }


def test_authenticate_without_station_uses_user_location() -> None:
    """Without a station the effective location is the user's own and station is null."""
    n, _ = make()
    answer = n.authenticate("agent40", "demo")
    assert answer["station"] is None
    assert answer["location"] == "London"


@pytest.mark.parametrize(("user", "password"), [("agent1", "wrong"), ("nobody", "demo")])
def test_bad_credentials_look_alike(user: str, password: str) -> None:
    """A wrong password and an unknown user fail the same way: logon-failed, bad-credentials."""
    n, _ = make()
    with pytest.raises(LogonFailed) as caught:
        n.authenticate(user, password)
    assert caught.value.payload() == {
        "code": "logon-failed",
        "message": "wrong user name or password",
        "reason": "bad-credentials",
    }


def test_unknown_station() -> None:
    """Good credentials at an unknown station fail with reason unknown-station."""
    n, _ = make()
    with pytest.raises(LogonFailed) as caught:
        n.authenticate("agent1", "demo", "NOWHERE")
    assert caught.value.extra == {"reason": "unknown-station"}


def test_successful_verifications_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated logons with the same password pay PBKDF2 once; a wrong one is never cached."""
    calls: list[str] = []
    real = auth.verify_password

    def counting(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)
    n, _ = make()
    for _ in range(5):
        n.authenticate("agent1", "demo")
    assert calls == ["demo"]
    for _ in range(2):
        with pytest.raises(LogonFailed):
            n.authenticate("agent1", "nope")
    assert calls == ["demo", "nope", "nope"]


def test_subscribe_returns_snapshot_and_unknown_topic_is_not_found() -> None:
    """Subscribe answers the topic snapshot; an unknown topic raises NotFound."""
    n, _ = make()
    link = FakeSubscriber()
    snap = n.subscribe("directory:Billing", link, 1)
    assert snap["name"] == "Billing"
    assert [e["id"] for e in snap["entries"]][:2] == ["agent3", "agent6"]
    assert n.subscribe("queue:Sales", link, 2) == {"queue": "Sales", "interactions": []}
    with pytest.raises(NotFound):
        n.subscribe("queue:Nope", link, 3)


@pytest.mark.parametrize("sub", [0, -1, 2**32, True, "1"])
def test_sub_ids_must_fit_a_request_id(sub: Any) -> None:
    """A sub id outside 1..2**32-1 (or not an int) is a bad request."""
    n, _ = make()
    with pytest.raises(BadRequest):
        n.subscribe("queue:Sales", FakeSubscriber(), sub)


def test_duplicate_sub_on_one_link_is_refused() -> None:
    """A link cannot reuse a live sub id, but another link may use the same number."""
    n, _ = make()
    a, b = FakeSubscriber(), FakeSubscriber()
    n.subscribe("queue:Sales", a, 7)
    with pytest.raises(BadRequest):
        n.subscribe("queue:Support", a, 7)
    n.subscribe("queue:Sales", b, 7)
    assert n.subscriber_count("queue:Sales") == 2


def test_publish_applies_delta_and_patches_request_id() -> None:
    """A QueueChanged publish updates the snapshot and reaches each sub with its own requestId."""
    n, _ = make()
    a, b = FakeSubscriber(), FakeSubscriber()
    n.subscribe("queue:Sales", a, 5)
    n.subscribe("queue:Sales", b, 9)
    call = {
        "id": "c1",
        "type": "call",
        "state": "Offering",
        "from": "x",
        "workgroup": "Sales",
        "arrived": 0,
    }
    assert n.publish("queue:Sales", *QUEUE_CHANGED, {"added": [call]}) == 2
    assert n.subscribe("queue:Sales", FakeSubscriber(), 1)["interactions"] == [call]
    (fa,), (fb,) = a.frames(), b.frames()
    assert (fa.kind, fa.object_type, fa.event_id, fa.request_id) == (Kind.NOTIFICATION, 173, 3, 5)
    assert fb.request_id == 9
    assert fa.payload == fb.payload
    assert fa.parsed() == {"queue": "Sales", "added": [call], "at": 0.0}
    assert a.sent[0][0] == 5


def test_publish_directory_change_and_other_events() -> None:
    """DirectoryChanged edits the directory state; other event types pass through unapplied."""
    n, _ = make()
    n.publish("directory:Sales", *DIRECTORY_CHANGED, {"removed": ["agent1"]})
    assert "agent1" not in n.topics["directory:Sales"].items
    link = FakeSubscriber()
    n.subscribe("directory:Sales", link, 3)
    assert n.publish("directory:Sales", *STATUS_CHANGED, {"removed": ["agent4"]}) == 1
    assert "agent4" in n.topics["directory:Sales"].items
    assert link.frames()[0].parsed() == {"removed": ["agent4"]}


@pytest.mark.parametrize(
    "payload",
    [{"added": [{"no": "id"}]}, {"changed": "x"}, {"removed": [{"id": 1}]}, {"queue": "Support"}],
)
def test_publish_refuses_malformed_change(payload: dict[str, Any]) -> None:
    """A change event whose delta is malformed, or names another queue, is a bad request."""
    n, _ = make()
    with pytest.raises(BadRequest):
        n.publish("queue:Sales", *QUEUE_CHANGED, payload)
    assert n.topics["queue:Sales"].items == {}


def test_publish_to_unknown_topic() -> None:
    """Publishing to a topic the site does not have raises NotFound."""
    n, _ = make()
    with pytest.raises(NotFound):
        n.publish("queue:Nope", *QUEUE_CHANGED, {})


def test_unsubscribe_and_link_lost_stop_events() -> None:
    """After unsubscribe or link loss no further event reaches the subscription."""
    n, _ = make()
    a, b = FakeSubscriber(), FakeSubscriber()
    n.subscribe("queue:Sales", a, 1)
    n.subscribe("queue:Sales", b, 1)
    assert n.unsubscribe(a, 1) is True
    assert n.unsubscribe(a, 1) is False
    n.link_lost(b)
    assert n.change_queue("Sales", added=[{"id": "c"}]) == 0
    assert a.sent == [] and b.sent == []
    assert n.subscriber_count("queue:Sales") == 0


def register(
    n: Notifier, link: FakeSubscriber, name: str = "bridge1", **info: Any
) -> dict[str, Any]:
    body = {
        "name": name,
        "fqdn": "localhost",
        "kind": "on-server",
        "location": "Indianapolis",
        "ports": {"tls": 1234, "ws": 1235, "wss": 1236},
        "accept": "default",
        "version": "0.1",
    }
    return n.register({**body, **info}, link, peer="127.0.0.1:5000")


def test_register_answer() -> None:
    """Register answers cic, site name, parameters, roster and the selection rule."""
    n, _ = make()
    answer = register(n, FakeSubscriber())
    assert answer["cic"] == {"name": "cic1", "role": "primary"}
    assert answer["site"] == "demo"
    assert answer["parameters"]["DirectoriestoCacheOnSMStartup"] == "Company Directory"
    assert answer["roster"] == [
        {
            "name": "bridge1",
            "fqdn": "localhost",
            "kind": "on-server",
            "location": "Indianapolis",
            "available": True,
            "ports": {"tls": 1234, "ws": 1235, "wss": 1236},
        }
    ]
    assert answer["selectionRule"] is None


def test_roster_availability_and_unlisted_bridges() -> None:
    """Unlisted bridges join the roster; maintenance or a lost link makes a bridge unavailable."""
    n, _ = make()
    assert n.roster()[0]["available"] is False
    b1, b2 = FakeSubscriber(), FakeSubscriber()
    register(n, b1)
    register(n, b2, name="edge", kind="off-server", accept="maintenance")
    assert [(r["name"], r["available"]) for r in n.roster()] == [("bridge1", True), ("edge", False)]
    n.link_lost(b1)
    assert n.roster()[0]["available"] is False
    assert n.is_registered(b1) is False


@pytest.mark.parametrize("info", [{"name": ""}, {"name": 3}, {"kind": "cloud"}])
def test_register_validates(info: dict[str, Any]) -> None:
    """Register without a usable name or with an unknown kind is a bad request."""
    n, _ = make()
    with pytest.raises(BadRequest):
        register(n, FakeSubscriber(), **info)


def test_register_twice_on_one_link_is_refused() -> None:
    """A link registers once; a second Register on it is a bad request."""
    n, _ = make()
    link = FakeSubscriber()
    register(n, link)
    with pytest.raises(BadRequest):
        register(n, link)


def test_sessions_reported_by_bridges_show_in_state() -> None:
    """SessionOpened/SessionClosed keep the per-bridge session list that state() reports."""
    n, clock = make()
    link = FakeSubscriber()
    register(n, link)
    n.subscribe("queue:Sales", link, 4)
    clock.advance(12)
    n.session_opened(link, {"sessionId": "s1", "user": "agent1", "station": "IND-01"})
    n.session_opened(link, {"sessionId": "s2", "user": "agent2", "station": None})
    n.session_closed(link, {"sessionId": "s2", "reason": "logout"})
    state = n.state()
    assert state["sessions"] == [
        {
            "sessionId": "s1",
            "user": "agent1",
            "station": "IND-01",
            "opened": 12.0,
            "bridge": "bridge1",
        }
    ]
    assert state["bridges"][0]["name"] == "bridge1"
    assert state["bridges"][0]["peer"] == "127.0.0.1:5000"
    assert state["bridges"][0]["connected"] is True
    assert state["bridges"][0]["sessions"] == 1
    assert state["topics"]["queue:Sales"] == {"subscribers": 1, "items": 0}
    assert (state["role"], state["site"]) == ("primary", "demo")
    n.link_lost(link)
    assert n.state()["sessions"] == []
    assert n.state()["bridges"][0]["connected"] is False


def test_unimplemented_forwarded_request() -> None:
    """A forwarded request the Notifier does not implement raises unknown-request."""
    n, _ = make()
    with pytest.raises(ProtocolError) as caught:
        n.handle_forwarded(177, 1, {"_session": {"id": "s", "user": "agent1"}})
    assert caught.value.code == "unknown-request"
    assert "GetResourceUri" in caught.value.message


def test_site_without_users_still_refuses_logons() -> None:
    """With no users at all, any logon fails as bad credentials (no crash on the timing check)."""
    site = Site.from_dict({"cic": {"name": "c"}, "locations": ["L"], "users": []})
    with pytest.raises(LogonFailed):
        Notifier(site, Clock()).authenticate("x", "y")
