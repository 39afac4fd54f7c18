"""PUT /api/site on a running Notifier: refused whole when invalid, else live at the bridge."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.notifier.demo import demo_site_dict
from smbridge.testing import http_json, poll, start_site

pytestmark = pytest.mark.integration
SMALL = "Bridge Message Bandwidth Limiter Small Message Limit Bytes"


class SiteReplace(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix="smbridge-site-")))
        self.addCleanup(self.site.stop)
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )
        self.url = f"{self.site.control_url}/api/site"

    @defer.inlineCallbacks
    def test_an_invalid_site_is_refused_whole_naming_the_entry(self) -> Any:
        """Unknown location in a rule, duplicate bridge names, not a site: 400, nothing changes."""
        before = self.site.notifier.notifier.site
        unknown = demo_site_dict()
        unknown["selectionRules"] = {"default": ["Atlantis"]}
        unknown["parameters"][SMALL] = "3000"  # a valid change in the same file: not applied
        code, answer = yield http_json(reactor, "PUT", self.url, unknown)
        self.assertEqual(code, 400)
        self.assertIn("selectionRules.default", answer["error"])
        self.assertIn("Atlantis", answer["error"])
        twice = demo_site_dict()
        twice["bridges"] = twice["bridges"] * 2
        code, answer = yield http_json(reactor, "PUT", self.url, twice)
        self.assertEqual(code, 400)
        self.assertIn("bridge1", answer["error"])
        code, answer = yield http_json(reactor, "PUT", self.url, ["not", "a", "site"])
        self.assertEqual(
            (code, answer["error"]), (400, "the body must be a site (a YAML or JSON mapping)")
        )
        self.assertIs(self.site.notifier.notifier.site, before)
        self.assertNotIn(SMALL, self.site.bridge.router.parameters())

    @defer.inlineCallbacks
    def test_a_valid_site_reaches_the_running_bridge(self) -> Any:
        """Parameters, directory entries and a new user take effect at once, without a restart."""
        data = demo_site_dict()
        data["parameters"][SMALL] = "3000"
        data["users"][0]["displayName"] = "Ada Lovelace"
        rules = {"locations": {"London": {"prioritized": ["<This Location>"], "others": False}}}
        data["selectionRules"] = rules
        newcomer = {**data["users"][1], "id": "agent999", "extension": "1999"}
        data["users"].append(newcomer)
        body = yaml.safe_dump(data).encode()  # the site file as it is on disk
        import treq
        from twisted.web.client import HTTPConnectionPool

        response = yield treq.put(
            self.url, data=body, pool=HTTPConnectionPool(reactor, persistent=False)
        )
        answer = yield response.json()
        self.assertEqual(response.code, 200, answer)
        self.assertIn("parameters", answer["changed"])
        self.assertIn("directory:Company Directory", answer["changed"])
        self.assertIn("roster", answer["changed"])
        self.assertEqual(answer["needsRestart"], [])
        router = self.site.bridge.router
        registered = router.upstream.registered
        yield poll(lambda: registered.get("selectionRule") == rules, deadline=10)  # pushed
        yield poll(lambda: router.parameters().get(SMALL) == "3000", deadline=10)
        self.assertEqual(self.site.bridge.connections.sender.settings.small_message_bytes, 3000)
        cache = router.fanout.state("directory:Company Directory")
        yield poll(lambda: cache.items["agent1"]["displayName"] == "Ada Lovelace", deadline=10)
        self.assertNotIn("agent999", cache.items)  # the directory lists its members by id
        client = yield connect(
            reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
        )
        reply = yield client.logon("agent999", "demo")  # a user the old site did not have
        self.assertEqual(reply["user"]["id"], "agent999")
        yield client.logoff()
