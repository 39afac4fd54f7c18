"""The limiter on a running bridge: parameters from the Notifier, live changes, admin status."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.sender import parameters as p
from smbridge.testing import http_json, poll, start_site


class LimiterOnABridge(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_parameters_reach_the_sender_live_and_show_in_status(self):
        """Site parameters enable the limiter; a live change applies; a bad one is refused."""
        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-sender-")),
            admin_port=0,
            parameters={p.ENABLED: "Yes", p.TOTAL: "80000"},
        )
        self.addCleanup(site.stop)
        sender = site.bridge.connections.sender
        yield poll(lambda: sender.limited)
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        self.addCleanup(client.close)
        yield client.logon("agent1", "demo")
        base = f"http://127.0.0.1:{site.bridge.admin_port}"
        code, status = yield http_json(reactor, "GET", f"{base}/api/status")
        self.assertEqual(code, 200)
        self.assertTrue(status["sender"]["limiterEnabled"])
        self.assertEqual(status["sender"]["totalBytesPerInterval"], 80000)
        self.assertGreater(status["sender"]["byPriority"]["high"]["sentBytes"], 0)  # the logon
        code, _ = yield http_json(
            reactor, "POST", f"{site.control_url}/api/parameters", {p.INTERVAL: "50"}
        )
        self.assertEqual(code, 200)
        yield poll(lambda: sender.errors != [])
        self.assertIn("between 100 and 5000", sender.errors[0])
        self.assertEqual(sender.settings.interval_ms, 1000)
        code, _ = yield http_json(
            reactor, "POST", f"{site.control_url}/api/parameters", {p.ENABLED: "No"}
        )
        yield poll(lambda: not sender.limited)
        code, status = yield http_json(reactor, "GET", f"{base}/api/status")
        self.assertFalse(status["sender"]["limiterEnabled"])
        yield client.logoff()
