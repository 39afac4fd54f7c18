"""The keeper over wss: it dials the roster's ``uri`` through the proxy; throttling waits."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client.keeper import KeeperEvent, SessionKeeper, State
from smbridge.client.order import migrate_plan
from smbridge.client.protocol import ClientError
from smbridge.client.reach import address_of
from smbridge.client.testing import FakeSite
from smbridge.client.uri import BridgeAddress, parse_bridge_uri
from smbridge.roster.attempts import attempt_groups

PROXY = "wss://proxy.example/extra/edge1/session"
TYPED = parse_bridge_uri(PROXY)


def test_a_uri_target_is_dialed_as_is() -> None:
    """A target with a uri is dialed at that uri; its own host is the certificate name."""
    uri = "wss://proxy.example/x/edge2/session"
    target = {"host": "sm2.corp", "port": 3952, "name": "sm2", "uri": uri}
    address, name = address_of(target, TYPED)
    assert (str(address), name) == ("wss://proxy.example:8952/x/edge2/session", None)


def test_typed_host_and_its_raw_addresses_keep_the_typed_path() -> None:
    """The typed host's raw address is dialed with the typed scheme and path, its name checked."""
    address, name = address_of({"host": "192.0.2.7", "port": 443, "name": None}, TYPED)
    assert address == BridgeAddress("wss", "192.0.2.7", 443, "/extra/edge1/session")
    assert name == "proxy.example"


def test_roster_entry_without_uri_is_unreachable_over_a_proxy() -> None:
    """Over wss a roster entry without uri is not dialed (its fqdn is internal); over TLS it is."""
    target = {"host": "sm2.corp", "port": 3952, "name": "sm2"}
    with pytest.raises(ClientError) as caught:
        address_of(target, TYPED)
    assert caught.value.code == "unreachable"
    address, _ = address_of(target, parse_bridge_uri("tls://sm1.corp"))
    assert str(address) == "tls://sm2.corp:3952"


def test_targets_carry_the_roster_uri() -> None:
    """The reconnect groups and the Migrate plan keep each entry's uri."""
    roster = [{"name": "sm2", "fqdn": "sm2.corp", "available": True, "ports": {"tls": 3952},
               "uri": "wss://proxy.example/edge2/session"}]  # fmt: skip
    (group, *_) = attempt_groups({"roster": roster}, "proxy.example", 8952, [])
    assert group[0]["uri"] == "wss://proxy.example/edge2/session"
    (attempt,) = migrate_plan(roster, 8952, "sm1")
    assert attempt.target["uri"] == "wss://proxy.example/edge2/session"


class WssKeeperTests(SynchronousTestCase):
    """Bridges e1 and e2 behind one proxy; the user typed e1's public URI."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.site = FakeSite(self.clock)
        self.e1 = self.site.add("e1", port=8952, host="proxy.example")
        self.e2 = self.site.add("e2", host="e2.corp")  # internal: reached only by its uri
        self.e1.uri = PROXY
        self.e2.uri = "wss://proxy.example/extra/edge2/session"
        self.events: list[KeeperEvent] = []

    def keeper(self) -> SessionKeeper:
        keeper = SessionKeeper(
            None,
            PROXY,
            "alice",
            "demo",
            dial=self.site.dial,
            resolve=lambda host, port: defer.succeed([]),
            clock=self.clock,
        )
        keeper.add_event_listener(self.events.append)
        return keeper

    def started(self) -> SessionKeeper:
        keeper = self.keeper()
        d = keeper.start()
        self.clock.advance(0)
        self.successResultOf(d)
        return keeper

    def test_migrate_dials_the_uri_of_the_roster(self) -> None:
        """Migrate over wss: the keeper dials the other bridge's public uri and lands there."""
        keeper = self.started()
        self.site.dialed.clear()
        self.e1.migrate(self.e1.session_of("alice"), "drain")
        self.clock.advance(0)
        self.assertEqual(self.site.dialed, ["wss://proxy.example/extra/edge2/session"])
        self.assertEqual((keeper.state, keeper.server["name"]), (State.CONNECTED, "e2"))  # type: ignore[index]

    def test_resume_goes_back_to_the_typed_uri(self) -> None:
        """A dropped wss connection is resumed on the same target (the typed URI)."""
        keeper = self.started()
        first = keeper.session_id
        self.site.dialed.clear()
        self.e1.cut()
        self.clock.advance(0)
        self.assertEqual(self.site.dialed, ["proxy.example:8952"])
        self.assertEqual([e.kind for e in self.events], ["disconnected", "resumed"])
        self.assertEqual(keeper.session_id, first)

    def test_fresh_logon_follows_the_roster_uris(self) -> None:
        """When resume is refused, the fresh logon dials the roster's uris and lands on e2."""
        keeper = self.started()
        self.e1.resume_answer = "unknown-session"
        self.e1.accept = False
        self.site.dialed.clear()
        self.e1.cut()
        self.clock.advance(0)
        self.clock.advance(10)
        self.assertEqual(keeper.server["name"], "e2")  # type: ignore[index]
        self.assertIn("wss://proxy.example/extra/edge2/session", self.site.dialed)
        self.assertEqual([e.kind for e in self.events][-2:], ["relogged", "resynchronised"])

    def test_logon_throttled_waits_and_retries(self) -> None:
        """logon-throttled {retryAfter: 5}: no failure; the same bridge again 5 s later."""
        self.e1.throttle = [5.0]
        keeper = self.keeper()
        d = keeper.start()
        self.clock.advance(0)
        self.assertNoResult(d)
        self.assertEqual(self.site.dialed, ["proxy.example:8952"])
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        reply: dict[str, Any] = self.successResultOf(d)
        self.assertEqual(reply["server"]["name"], "e1")
        self.assertEqual(self.site.dialed, ["proxy.example:8952"] * 2)
        self.assertFalse(keeper.ended)

    def test_resume_throttled_waits_and_resumes_the_same_session(self) -> None:
        """ResumeSession answered logon-throttled {retryAfter: 3}: resumed 3 s later."""
        keeper = self.started()
        first = keeper.session_id
        self.e1.throttle = [3.0]
        self.site.dialed.clear()
        self.e1.cut()
        self.clock.advance(0)
        self.assertEqual(keeper.state, State.RESUMING)
        self.clock.advance(3)
        self.clock.advance(0)
        self.assertEqual(keeper.state, State.CONNECTED)
        self.assertEqual(self.site.dialed, ["proxy.example:8952"] * 2)
        self.assertEqual([e.kind for e in self.events], ["disconnected", "resumed"])
        self.assertEqual(keeper.session_id, first)
