"""Accept or redirect (PROTOCOL §4.3): the pure decision, the router, the admin switch."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.client.protocol import ClientError
from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.roster.accept import Decision, decide
from smbridge.roster.selection import Resolved
from smbridge.router.router import BridgeIdentity
from smbridge.testing import RouterHarness, http_json, start_site

ANY = Resolved((), frozenset(), True)


def entry(name: str, kind: str, location: str, available: bool = True) -> dict[str, Any]:
    return {"name": name, "kind": kind, "location": location, "available": available}


OFF_UP = [entry("me", "on-server", "Indy"), entry("off1", "off-server", "Indy")]
OFF_DOWN = [entry("me", "on-server", "Indy"), entry("off1", "off-server", "Indy", False)]


def verdict(**kw: Any) -> Decision:
    args: dict[str, Any] = {
        "mode": "default",
        "kind": "on-server",
        "location": "Indy",
        "own_name": "me",
        "cic_role": "primary",
        "roster": OFF_DOWN,
        "rule": ANY,
        "loaded": False,
    }
    args.update(kw)
    return decide(**args)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, Decision(True)),
        ({"roster": OFF_UP}, Decision(False, "off-server-available")),
        ({"loaded": True}, Decision(False, "overloaded")),
        ({"kind": "off-server", "loaded": True, "roster": OFF_UP}, Decision(True)),
        ({"mode": "maintenance", "kind": "off-server"}, Decision(False, "maintenance")),
        ({"mode": "all", "roster": OFF_UP, "loaded": True}, Decision(True)),
        ({"mode": "all", "cic_role": "backup"}, Decision(False, "backup")),
        ({"kind": "off-server", "cic_role": "backup"}, Decision(False, "backup")),
        (
            {"kind": "off-server", "rule": Resolved((("Paris",),), frozenset(), False)},
            Decision(False, "excluded-location"),
        ),
        (
            {"kind": "off-server", "rule": Resolved((), frozenset({"Indy"}), True)},
            Decision(False, "excluded-location"),
        ),
        (
            # The only available off-server bridge is in a location the user may not use.
            {
                "roster": [entry("off1", "off-server", "Tokyo")],
                "rule": Resolved((("Indy",),), frozenset(), False),
            },
            Decision(True),
        ),
        (
            {
                "roster": [entry("off1", "off-server", "Tokyo")],
                "rule": Resolved((), frozenset({"Tokyo"}), True),
            },
            Decision(True),
        ),
    ],
)
def test_decision_table(kw: dict[str, Any], expected: Decision) -> None:
    """Each §4.3 case gives its accept or its redirect reason."""
    assert verdict(**kw) == expected


def on_server_harness(roster: list[dict[str, Any]], rule: Any = None) -> RouterHarness:
    h = RouterHarness()
    h.router.identity = BridgeIdentity("sm1", "sm1.example", kind="on-server", location="Indy")
    h.connector.registered["roster"] = roster
    h.connector.registered["selectionRule"] = rule
    return h


ROSTER = [
    entry("sm1", "on-server", "Indy"),
    entry("off-indy", "off-server", "Indy"),
    entry("off-london", "off-server", "London"),
    entry("on-london", "on-server", "London"),
]


def create(h: RouterHarness, answer: dict[str, Any], kind: int = Kind.RESPONSE) -> Any:
    conn, t = h.client()
    h.send(conn, c.CREATE_SESSION, 4, {"user": "agent1", "password": "demo"})
    (auth,) = h.upstream()
    h.notifier.answer(auth, answer, kind)
    return conn, t


AUTH_OK = {"user": {"id": "agent1"}, "location": "London"}


def switch(h: RouterHarness, mode: str) -> None:
    h.router.set_accept_mode(mode)
    (changed,) = h.upstream()  # BridgeChanged tells the Notifier
    assert changed.parsed() == {"accept": mode}


def test_on_server_redirects_with_the_roster_ordered_for_the_user() -> None:
    """An on-server bridge redirects after authentication, with the user's ordered roster."""
    h = on_server_harness(ROSTER)
    conn, t = create(h, AUTH_OK)
    assert h.upstream() == []  # no SessionOpened, no subscription
    (reply,) = h.received(t)
    body = reply.parsed()
    assert reply.kind == Kind.ERROR and reply.request_id == 4
    assert (body["code"], body["reason"]) == ("redirect", "off-server-available")
    assert body["groups"] == [["off-london", "on-london"], ["off-indy"]] or body["groups"] == [
        ["on-london", "off-london"],
        ["off-indy"],
    ]
    assert [e["name"] for e in body["roster"]][2] == "off-indy"
    assert body["location"] == "London" and body["selectionRule"] is None
    assert len(h.registry) == 0 and conn.session is None


def test_logon_failure_is_never_a_redirect() -> None:
    """On a bridge that would redirect, a logon failure still answers logon-failed."""
    h = on_server_harness(ROSTER)
    _, t = create(
        h, {"code": "logon-failed", "message": "no", "reason": "bad-credentials"}, Kind.ERROR
    )
    (reply,) = h.received(t)
    assert reply.parsed()["code"] == "logon-failed" and len(h.registry) == 0


def test_excluded_location_uses_the_site_rule() -> None:
    """A user whose rule excludes the bridge's location is redirected, excluded-location."""
    rule = {"locations": {"London": {"excluded": ["Indy"]}}}
    h = on_server_harness([entry("sm1", "on-server", "Indy")], rule)
    _, t = create(h, AUTH_OK)
    (reply,) = h.received(t)
    body = reply.parsed()
    assert (body["reason"], body["roster"], body["selectionRule"]) == (
        "excluded-location",
        [],
        rule,
    )


def test_overloaded_and_maintenance_then_back_to_default() -> None:
    """Loaded on-server bridges redirect 'overloaded'; maintenance redirects; default accepts."""
    h = on_server_harness([entry("sm1", "on-server", "Indy")])
    h.router.loaded = lambda: True
    _, t = create(h, AUTH_OK)
    assert h.received(t)[0].parsed()["reason"] == "overloaded"
    assert h.router.accept_state() == (False, "overloaded")
    h.router.loaded = lambda: False
    switch(h, "maintenance")
    assert h.connector.registration["accept"] == "maintenance"
    _, t = create(h, AUTH_OK)
    assert h.received(t)[0].parsed()["reason"] == "maintenance"
    switch(h, "default")
    assert h.router.accept_state() == (True, "default")
    conn, t, reply = h.logon()
    assert reply["sessionId"].startswith("sm1-") and len(h.registry) == 1


def test_backup_side_bridge_redirects() -> None:
    """A bridge registered with the backup CIC server never accepts, even in mode all."""
    h = on_server_harness(ROSTER)
    h.connector.registered["cic"] = {"name": "cic2", "role": "backup"}
    switch(h, "all")
    _, t = create(h, AUTH_OK)
    assert h.received(t)[0].parsed()["reason"] == "backup"


def test_unknown_accept_mode_is_refused() -> None:
    """Only default, all and maintenance are accept modes."""
    h = RouterHarness()
    with pytest.raises(Exception, match="accept must be one of"):
        h.router.set_accept_mode("sometimes")
    assert h.router.accept_mode == "default"


class AcceptModeEndToEnd(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_admin_mode_switch_redirects_and_restores(self) -> None:
        """POST /api/mode maintenance makes logons redirect; default lets them in again."""
        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-accept-")), admin_port=0
        )
        self.addCleanup(site.stop)
        base = f"http://127.0.0.1:{site.bridge.admin_port}"
        code, answer = yield http_json(reactor, "POST", f"{base}/api/mode", {"accept": "x"})
        self.assertEqual(code, 400)
        code, answer = yield http_json(
            reactor, "POST", f"{base}/api/mode", {"accept": "maintenance"}
        )
        self.assertEqual(
            (code, answer["accepting"], answer["acceptReason"]), (200, False, "maintenance")
        )
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        try:
            yield client.logon("agent1", "demo")
        except ClientError as e:
            self.assertEqual((e.code, e.body["reason"]), ("redirect", "maintenance"))
        else:
            self.fail("logon in maintenance mode was accepted")
        code, status = yield http_json(reactor, "GET", f"{base}/api/status")
        self.assertEqual((status["accepting"], status["acceptMode"]), (False, "maintenance"))
        yield http_json(reactor, "POST", f"{base}/api/mode", {"accept": "default"})
        reply = yield client.logon("agent1", "demo")
        self.assertTrue(reply["sessionId"].startswith("sm1-"))
        yield client.logoff()

    @defer.inlineCallbacks
    def test_notifier_control_api_switches_the_bridge(self) -> None:
        """The Notifier's control API switches a bridge's mode; retire refuses a live bridge."""
        from smbridge.testing import poll

        site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix="smbridge-accept-")))
        self.addCleanup(site.stop)
        url = site.control_url
        code, answer = yield http_json(
            reactor, "POST", f"{url}/api/bridges/accept", {"name": "sm1", "accept": "maintenance"}
        )
        self.assertEqual((code, answer["sent"]), (200, True))
        yield poll(lambda: site.bridge.router.accept_mode == "maintenance")
        yield poll(lambda: not site.notifier.notifier.registry.records["sm1"].accepting)
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        try:
            yield client.logon("agent1", "demo")
        except ClientError as e:
            self.assertEqual((e.code, e.body["reason"]), ("redirect", "maintenance"))
        else:
            self.fail("logon in maintenance mode was accepted")
        yield client.close()
        code, _ = yield http_json(reactor, "POST", f"{url}/api/bridges/retire", {"name": "sm1"})
        self.assertEqual(code, 409)
        code, _ = yield http_json(reactor, "POST", f"{url}/api/bridges/retire", {"name": "zz"})
        self.assertEqual(code, 404)
        code, _ = yield http_json(
            reactor, "POST", f"{url}/api/bridges/accept", {"name": "sm1", "accept": "x"}
        )
        self.assertEqual(code, 400)
