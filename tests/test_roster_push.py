"""Roster changes pushed: Notifier -> bridges (link RosterChanged) -> sessions (169,2)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.codec.frames import Decoder, Frame
from smbridge.errors import BadRequest, NotFound
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.testing import RouterHarness


class Link:
    """Collects the frames a Notifier sends to one bridge link."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_event(self, sub_id: int, frame: bytes) -> None:
        self.sent.append(frame)

    def rosters(self) -> list[dict[str, bool]]:
        out = []
        for raw in self.sent:
            (frame,) = Decoder().feed(raw)
            assert isinstance(frame, Frame)
            assert (frame.object_type, frame.event_id) == c.LINK_ROSTER_CHANGED
            out.append({e["name"]: e["available"] for e in frame.parsed()["roster"]})
        self.sent.clear()
        return out


def register(n: Notifier, link: Link, name: str, kind: str = "off-server") -> dict[str, Any]:
    info = {"name": name, "fqdn": name, "kind": kind, "location": "Indianapolis"}
    return n.register({**info, "ports": {"tls": 1}, "accept": "default"}, link)


def test_register_drop_and_accept_change_reach_the_other_bridges() -> None:
    """Each change of the roster reaches every other registered bridge once, at once."""
    n = Notifier(demo_site(), Clock())
    a, b = Link(), Link()
    register(n, a, "a", "on-server")
    assert a.sent == []  # the first bridge learns the roster from its Register answer
    answer = register(n, b, "b")
    assert {e["name"]: e["available"] for e in answer["roster"]}["a"] is True
    (seen,) = a.rosters()
    assert (seen["a"], seen["b"]) == (True, True) and b.sent == []
    n.bridge_changed(b, {"accept": "maintenance"})
    assert [r["b"] for r in a.rosters()] == [False] and b.rosters()[0]["b"] is False
    n.bridge_changed(b, {"accept": "maintenance"})  # no change, no push
    assert a.sent == [] and b.sent == []
    n.link_lost(a)
    (seen,) = b.rosters()
    assert seen["a"] is False and "a" in seen  # the entry stays, unavailable
    assert a.sent == []


def test_bridge_forwards_roster_changed_and_uses_it() -> None:
    """The bridge keeps the pushed roster (GetServers) and sends RosterChanged to sessions."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    roster = [{"name": "sm1", "kind": "off-server", "available": True}]
    h.notifier.event(c.LINK_ROSTER_CHANGED, 0, {"roster": roster, "selectionRule": None})
    (notice,) = h.received(t)
    assert notice.kind == Kind.NOTIFICATION
    assert (notice.object_type, notice.event_id) == c.ROSTER_CHANGED
    assert notice.parsed() == {"roster": roster, "selectionRule": None}
    h.send(conn, c.GET_SERVERS, 9)
    (servers,) = h.received(t)
    assert servers.parsed() == {"roster": roster, "selectionRule": None}


def test_accept_mode_change_is_told_to_the_notifier() -> None:
    """Switching the accept mode sends BridgeChanged upstream at once."""
    h = RouterHarness()
    h.router.set_accept_mode("maintenance")
    (changed,) = h.upstream()
    assert (changed.object_type, changed.event_id) == c.LINK_BRIDGE_CHANGED
    assert changed.kind == Kind.NOTIFICATION and changed.parsed() == {"accept": "maintenance"}


def test_retire_drops_a_down_bridge_and_refuses_a_connected_one() -> None:
    """Only a bridge that is down retires; the change is pushed; registering brings it back."""
    n = Notifier(demo_site(), Clock())
    a, b = Link(), Link()
    register(n, a, "a")
    register(n, b, "extra")
    a.rosters()
    with pytest.raises(BadRequest, match="connected"):
        n.retire_bridge("extra")
    with pytest.raises(NotFound):
        n.retire_bridge("nobody")
    n.link_lost(b)
    assert a.rosters()[0]["extra"] is False
    n.retire_bridge("extra")
    (seen,) = a.rosters()
    assert "extra" not in seen and "extra" not in {e["name"] for e in n.roster()}
    register(n, Link(), "extra")
    assert a.rosters()[0]["extra"] is True


def test_notifier_switches_a_bridge_accept_mode_over_the_link() -> None:
    """SetAccept from the Notifier switches the bridge's mode; it answers BridgeChanged."""
    n = Notifier(demo_site(), Clock())
    link = Link()
    register(n, link, "a")
    n.set_bridge_accept("a", "maintenance")
    (raw,) = link.sent
    (frame,) = Decoder().feed(raw)
    assert isinstance(frame, Frame)
    assert (frame.object_type, frame.event_id) == c.LINK_SET_ACCEPT
    h = RouterHarness()
    h.notifier.event(c.LINK_SET_ACCEPT, 0, frame.parsed())
    (changed,) = h.upstream()
    assert h.router.accept_mode == "maintenance"
    assert changed.parsed() == {"accept": "maintenance"}
