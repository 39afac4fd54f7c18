"""The Notifier link over real TLS sockets: its own frame limit, backoff, and why it is down."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client import connect
from smbridge.codec import catalog as c
from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
from smbridge.router.router import BridgeIdentity
from smbridge.service import BridgeService
from smbridge.testing import free_port, http_json, poll, start_site
from smbridge.upstream.backoff import LinkBackoff

pytestmark = pytest.mark.integration


class LinkTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-link-"))
        self.logged = EventLoggingObserver()
        globalLogPublisher.addObserver(self.logged)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged)

    def events(self, key: str, **match: Any) -> list[Any]:
        return [
            e
            for e in self.logged
            if e.get("event") == key and all(e.get(k) == v for k, v in match.items())
        ]

    def link_warnings(self) -> list[Any]:
        return [
            e
            for e in self.logged
            if e["log_level"] >= LogLevel.warn and str(e.get("event", "")).startswith("upstream")
        ]

    def bridge(self, notifier_port: int, ca: Path, **options: Any) -> BridgeService:
        """A bridge (admin API on an ephemeral port) dialling 127.0.0.1:notifier_port."""
        files = pki.ensure_site_pki(self.work / "pki")
        config = BridgeConfig(
            identity=BridgeIdentity("sm9", "localhost"),
            tls=TLSFiles(files.bridge, files.bridge_client, ca),
            notifiers=(NotifierAddress("127.0.0.1", notifier_port),),
            notifier_name="localhost",
            port=0,
            interface="127.0.0.1",
            admin_port=0,
            **options,
        )
        bridge = BridgeService(config, reactor)
        bridge.startService()
        self.addCleanup(bridge.stopService)
        self.quicken(bridge)
        return bridge

    @staticmethod
    def quicken(bridge: BridgeService) -> None:
        """Retry every 0.05..0.3 s: the tests watch several retries, not the delays."""
        bridge.upstream.backoff = LinkBackoff(reactor, initial=0.05, max_delay=0.3)

    @defer.inlineCallbacks
    def status(self, bridge: BridgeService) -> Any:
        code, body = yield http_json(
            reactor, "GET", f"http://127.0.0.1:{bridge.admin_port}/api/status"
        )
        self.assertEqual(code, 200)
        return body["notifier"]

    @defer.inlineCallbacks
    def several_attempts(self, bridge: BridgeService, count: int = 4) -> Any:
        start = bridge.upstream.attempts
        yield poll(lambda: bridge.upstream.attempts >= start + count, deadline=20)


class LinkFrameLimit(LinkTestCase):
    @defer.inlineCallbacks
    def test_tiny_client_max_frame_leaves_the_link_up(self) -> Any:
        """--max-frame 1024 caps clients only: a 1024+ byte directory answer keeps the link up."""
        site = yield start_site(reactor, self.work, max_frame=1024)
        self.addCleanup(site.stop)
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        yield client.logon("agent1", "demo")
        answer = yield client.request(c.GET_DIRECTORY, {"name": "Company Directory"})
        self.assertGreater(len(json.dumps(answer)), 1024)
        yield client.logoff()
        yield client.close()
        upstream = site.bridge.upstream
        self.assertTrue(upstream.up)
        self.assertEqual(upstream.switchovers, 0)
        self.assertEqual(len(self.events("upstream.state", new="up")), 1)
        self.assertEqual(self.events("upstream.bad_frame"), [])

    @defer.inlineCallbacks
    def test_a_link_that_drops_right_after_up_is_redialled_a_bounded_number_of_times(self) -> Any:
        """A link limit the Notifier's frames exceed: in 8 s at most 6 Registers, not about 70."""
        site = yield start_site(reactor, self.work, wait_for_link=False, link_max_frame=1024)
        self.addCleanup(site.stop)
        upstream = site.bridge.upstream
        yield poll(lambda: upstream.switchovers >= 1, deadline=10)  # up, dropped, up again
        first = len(self.events("upstream.state", new="registering"))
        yield deferLater(reactor, 8.0, lambda: None)  # the measured interval itself
        registers = len(self.events("upstream.state", new="registering")) - first
        self.assertLessEqual(registers, 6)
        self.assertIn("bad frame", upstream.last_error or "")
        self.assertEqual(len(self.link_warnings()), 1, [w["reason"] for w in self.link_warnings()])


class LinkFailureReasons(LinkTestCase):
    @defer.inlineCallbacks
    def test_name_mismatch_is_reported_once_and_shown_in_status(self) -> Any:
        """Wrong --notifier-name: lastError names the name; one warning over several handshakes."""
        site = yield start_site(
            reactor, self.work, notifier_name="wrong.example", wait_for_link=False, admin_port=0
        )
        self.addCleanup(site.stop)
        self.quicken(site.bridge)
        yield self.several_attempts(site.bridge)
        shown = yield self.status(site.bridge)
        self.assertIn("wrong.example", shown["lastError"])
        self.assertIn("--notifier-name", shown["lastError"])
        (warning,) = self.link_warnings()
        self.assertEqual(warning["event"], "upstream.link.failed")
        self.assertEqual(warning["reason"], shown["lastError"])

    @defer.inlineCallbacks
    def test_untrusted_notifier_certificate_is_reported_once(self) -> Any:
        """A --ca that did not sign the Notifier's certificate: the verify failure, said once."""
        site = yield start_site(reactor, self.work / "site")
        self.addCleanup(site.stop)
        other = pki.ensure_site_pki(self.work / "other-ca")
        bridge = self.bridge(site.link_port, other.ca)
        yield self.several_attempts(bridge)
        shown = yield self.status(bridge)
        self.assertIn("certificate verify failed", shown["lastError"])
        self.assertIn("--ca", shown["lastError"])
        (warning,) = self.link_warnings()
        self.assertEqual(warning["reason"], shown["lastError"])

    @defer.inlineCallbacks
    def test_nothing_listening_is_reported_once_and_cleared_when_the_link_comes_up(self) -> Any:
        """Connection refused: lastError says so (one warning); a Notifier appears; it clears."""
        from twisted.internet.endpoints import SSL4ServerEndpoint

        from smbridge.notifier.demo import demo_site
        from smbridge.notifier.service import NotifierService

        port = free_port()
        files = pki.ensure_site_pki(self.work / "pki")
        bridge = self.bridge(port, files.ca)
        yield self.several_attempts(bridge)
        shown = yield self.status(bridge)
        self.assertIn(f"cannot connect to 127.0.0.1:{port}: connection refused", shown["lastError"])
        (warning,) = self.link_warnings()
        self.assertEqual(warning["reason"], shown["lastError"])
        notifier = NotifierService(
            demo_site(),
            reactor=reactor,
            trust=None,
            link_endpoint=SSL4ServerEndpoint(
                reactor, port, pki.server_options(files.notifier, files.ca), interface="127.0.0.1"
            ),
        )
        notifier.startService()
        self.addCleanup(notifier.stopService)
        yield poll(lambda: bridge.upstream.up, deadline=20)
        shown = yield self.status(bridge)
        self.assertIsNone(shown["lastError"])
        self.assertEqual(len(self.events("upstream.link.recovered")), 1)
        self.assertEqual(len(self.link_warnings()), 1)
