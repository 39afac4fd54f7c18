"""The keeper logs on by client certificate: at start, on every fresh logon, never a password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client import reach
from smbridge.client.keeper import KeeperEvent, SessionKeeper, State
from smbridge.client.testing import FakeSite
from smbridge.client.uri import parse_bridge_uri

CERT, KEY = Path("/pki/agent1.pem"), Path("/pki/agent1.key")


class CertificateKeeper(SynchronousTestCase):
    """One fake bridge that maps a certificate logon to agent1."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.site = FakeSite(self.clock)
        self.e1 = self.site.add("e1")
        self.site.certificate_user = "agent1"
        self.events: list[KeeperEvent] = []

    def keeper(self, user: str = "") -> SessionKeeper:
        keeper = SessionKeeper(
            None,
            "tls://e1.example",
            user,
            cert=CERT,
            key=KEY,
            dial=self.site.dial,
            resolve=lambda host, port: defer.succeed([]),
            clock=self.clock,
        )
        keeper.add_event_listener(self.events.append)
        return keeper

    def test_every_logon_is_by_certificate(self) -> None:
        """start() and the fresh logon after the session is gone: auth certificate, no password."""
        keeper = self.keeper()
        d = keeper.start()
        self.clock.advance(0)
        reply: dict[str, Any] = self.successResultOf(d)
        first = reply["sessionId"]
        self.assertEqual(self.e1.session_of("agent1").id, first)
        self.e1.resume_answer = "unknown-session"
        self.e1.cut()
        self.clock.advance(0)
        self.assertEqual(keeper.state, State.CONNECTED)
        self.assertNotEqual(keeper.session_id, first)
        self.assertEqual(
            [e.kind for e in self.events], ["disconnected", "relogged", "resynchronised"]
        )
        self.assertEqual(len(self.site.logons), 2)
        for body in self.site.logons:
            self.assertEqual(body["auth"], "certificate")
            self.assertNotIn("user", body)  # the certificate names the user
        self.assertEqual(self.e1.requests.count("CreateSession"), 2)

    def test_named_user_is_sent_with_the_certificate(self) -> None:
        """A keeper given a user names it in the certificate logon (the bridge checks it)."""
        keeper = self.keeper("agent1")
        d = keeper.start()
        self.clock.advance(0)
        self.successResultOf(d)
        (body,) = self.site.logons
        self.assertEqual((body["auth"], body["user"]), ("certificate", "agent1"))

    def test_unmapped_certificate_ends_the_keeper(self) -> None:
        """A certificate logon refused logon-failed fails start() and ends the keeper."""
        self.site.certificate_user = None
        keeper = self.keeper()
        d = keeper.start()
        self.clock.advance(0)
        self.assertEqual(self.failureResultOf(d).value.body["reason"], "no-certificate")
        self.assertTrue(keeper.ended)


def test_the_default_dial_presents_the_certificate(monkeypatch: Any) -> None:
    """The keeper's default dial hands cert and key to connect() for every target."""
    calls: list[dict[str, Any]] = []

    def connect(reactor: Any, address: Any, **kw: Any) -> defer.Deferred[Any]:
        calls.append({"address": str(address), **kw})
        return defer.Deferred()

    import smbridge.client.session as session

    monkeypatch.setattr(session, "connect", connect)
    dial = reach.dialer(None, parse_bridge_uri("wss://proxy.example/edge1/session"), None,
                        cert=CERT, key=KEY)  # fmt: skip
    dial({"host": "proxy.example", "port": 8952, "name": None})
    dial({"host": "sm2", "port": 1, "name": "sm2", "uri": "wss://proxy.example/edge2/session"})
    assert [(c["cert"], c["key"]) for c in calls] == [(CERT, KEY)] * 2
    keeper = SessionKeeper(None, "tls://sm1.example", "", cert=CERT, key=KEY)
    keeper._dial({"host": "sm1.example", "port": 3952, "name": None})
    assert calls[-1]["address"] == "tls://sm1.example:3952"
    assert (calls[-1]["cert"], calls[-1]["key"]) == (CERT, KEY)
