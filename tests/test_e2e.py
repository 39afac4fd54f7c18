"""End to end over loopback: the real bridge, the real Notifier, the real client, real TLS."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge.client import ClientError, connect
from smbridge.codec import catalog as c
from smbridge.testing import http_json, poll, start_quiet_site, start_site


class EndToEnd(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.site = yield start_quiet_site(self, reactor, "smbridge-e2e-")

    def _connect(self):
        return connect(reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca)

    @defer.inlineCallbacks
    def _state(self):
        _, state = yield http_json(reactor, "GET", f"{self.site.control_url}/api/state")
        return state

    @defer.inlineCallbacks
    def _poll_state(self, predicate, deadline: float = 10.0):
        """Poll the Notifier's control API until ``predicate(state)`` holds."""
        waited = 0.0
        while True:
            state = yield self._state()
            if predicate(state):
                return state
            if waited >= deadline:
                raise AssertionError(f"Notifier state never matched: {state}")
            yield task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    @defer.inlineCallbacks
    def test_logon_watch_event_logoff(self):
        """Log on twice, watch Sales, get a published QueueChanged, log off; one upstream sub."""
        first = yield self._connect()
        second = yield self._connect()
        reply = yield first.logon("agent1", "demo", session_timeout=600)
        yield second.logon("agent2", "demo")
        self.assertTrue(reply["sessionId"].startswith("sm1-"))
        self.assertEqual(reply["sessionTimeout"], 600)
        self.assertEqual(reply["cic"]["role"], "primary")
        events = {"first": [], "second": []}
        first.add_listener(lambda name, frame: events["first"].append((name, frame.parsed())))
        second.add_listener(lambda name, frame: events["second"].append((name, frame.parsed())))
        snap1 = yield first.watch_queue("Sales")
        snap2 = yield second.watch_queue("Sales")
        self.assertEqual(snap1, snap2)
        self.assertEqual(snap1["queue"], "Sales")
        state = yield self._state()
        self.assertEqual(
            state["topics"]["queue:Sales"]["subscribers"], 1
        )  # one upstream subscription

        call = {
            "id": "e2e-call-1",
            "type": "call",
            "state": "Offering",
            "from": "+1 317 555 0100",
            "workgroup": "Sales",
            "arrived": 0,
        }
        code, published = yield http_json(
            reactor,
            "POST",
            f"{self.site.control_url}/api/publish",
            {
                "objectType": 173,
                "eventId": 3,
                "topic": "queue:Sales",
                "payload": {"queue": "Sales", "added": [call], "changed": [], "removed": []},
            },
        )
        self.assertEqual(code, 200)
        self.assertEqual(published["delivered"], 1)  # to the bridge, once
        yield poll(lambda: events["first"] and events["second"])
        for who in ("first", "second"):
            name, body = events[who][0]
            self.assertEqual(name, "QueueChanged")
            self.assertEqual(body["added"], [call])

        directory = yield first.get_directory("Company Directory")
        self.assertIn("agent1", [e["id"] for e in directory["entries"]])
        status = yield first.request(c.SET_STATUS, {"status": "Available"})
        self.assertEqual(status["status"], "Available")

        yield first.logoff()
        yield second.logoff()
        yield poll(lambda: len(self.site.bridge.registry) == 0)
        yield self._poll_state(
            lambda s: s["topics"].get("queue:Sales", {}).get("subscribers", 0) == 0
        )

    @defer.inlineCallbacks
    def test_wrong_password_is_refused(self):
        """A wrong password gets logon-failed with a reason, and no session is created."""
        client = yield self._connect()
        with self.assertRaises(ClientError) as caught:
            yield client.logon("agent1", "not-the-password")
        self.assertEqual(caught.exception.code, "logon-failed")
        self.assertEqual(caught.exception.reason, "bad-credentials")
        self.assertEqual(len(self.site.bridge.registry), 0)
        version = yield client.get_version()  # the connection is still usable
        self.assertEqual(version["server"], "smbridge")
        yield client.close()

    @defer.inlineCallbacks
    def test_notifier_down_answers_upstream_unavailable(self):
        """With the Notifier gone, requests get upstream-unavailable, never silence."""
        client = yield self._connect()
        yield client.logon("agent3", "demo")
        yield self.site.notifier.stopService()
        yield poll(lambda: not self.site.bridge.upstream.up)
        with self.assertRaises(ClientError) as caught:
            yield client.request(c.SET_STATUS, {"status": "Away"})
        self.assertEqual(caught.exception.code, "upstream-unavailable")
        self.assertTrue(caught.exception.retryable)
        beat = yield client.heartbeat()  # the session itself lives on the bridge
        self.assertTrue(beat["sessionUpdated"])
        yield client.logoff()


class NotifierIdentity(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_wrong_notifier_name_is_refused(self):
        """A Notifier whose certificate does not carry the expected name never gets the link."""
        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-e2e-")),
            notifier_name="cic9.example.com",
            wait_for_link=False,
        )
        self.addCleanup(site.stop)
        upstream = site.bridge.upstream
        yield poll(lambda: upstream.last_error is not None)
        self.assertFalse(upstream.up)
        self.assertIn("cic9.example.com", upstream.last_error)
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        with self.assertRaises(ClientError) as caught:
            yield client.logon("agent1", "demo")
        self.assertEqual(caught.exception.code, "upstream-unavailable")
        yield client.close()


class Registration(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_roster_carries_the_ports_really_bound(self):
        """A bridge listening on port 0 registers the ports it got, so the roster is reachable."""
        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-e2e-")), ws_port=0, wss_port=0
        )
        self.addCleanup(site.stop)
        entry = next(e for e in site.notifier.notifier.roster() if e["name"] == "sm1")
        tunnel = site.bridge.tunnel
        self.assertEqual(
            entry["ports"], {"tls": site.client_port, "ws": tunnel.ws_port, "wss": tunnel.wss_port}
        )
        self.assertNotIn(0, entry["ports"].values())
