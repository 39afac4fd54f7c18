"""The dashboard's Reload button in real headless Chromium: a bridge started from a
configuration file re-reads it, and the page shows the answer, applied or refused."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.service import BridgeService
from smbridge.tap import Options
from smbridge.testing import http_json, start_site
from smbridge.testing.dashboard import act, open_page, wait_dom

pytestmark = pytest.mark.integration


class DashboardReload(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-dashboard-reload-"))
        self.site = yield start_site(reactor, self.work / "site")
        self.addCleanup(self.site.stop)
        files = self.site.pki
        self.settings: dict[str, Any] = {
            "name": "sm2",
            "fqdn": "localhost",
            "location": "Indianapolis",
            "port": 0,
            "interface": "127.0.0.1",
            "notifier": [f"127.0.0.1:{self.site.link_port}"],
            "notifier-name": "localhost",
            "cert": str(files.bridge),
            "client-cert": str(files.bridge_client),
            "ca": str(files.ca),
            "work-path": str(self.work / "bridge"),
            "admin-port": 0,
            "ws-port": "off",
            "wss-port": "off",
            "accept": "default",
            "max-unread-seconds": 60,
        }
        self.file = self.work / "bridge.yaml"
        self.write()
        options = Options()
        options.parseOptions(["--config", str(self.file)])
        self.bridge = BridgeService(options.config, reactor)
        self.bridge.startService()
        self.addCleanup(self.bridge.stopService)
        yield self.bridge.when_ready()
        self.base = f"http://127.0.0.1:{self.bridge.admin_port}"

    def write(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.file.write_text(yaml.safe_dump(self.settings))

    @defer.inlineCallbacks
    def test_the_reload_answer_is_shown_on_the_page(self) -> Any:
        """Reload applies a changed accept (seen in the API) and shows what it applied and
        what needs a restart; a bad value is refused and the page names the key."""
        browser = yield open_page(self, f"{self.base}/")
        yield wait_dom(browser, "document.body.dataset.ready === 'yes'", "the first poll")
        self.write(accept="maintenance", port=4321)
        shown = yield act(browser, "#reload")
        self.assertEqual(shown["outcome"], "ok", shown)
        self.assertIn("accept: default → maintenance", shown["text"])
        self.assertIn("needs a restart: port", shown["text"])
        answer = json.loads(
            (yield browser.evaluate("document.getElementById('reload-answer').textContent"))
        )
        self.assertEqual(answer["applied"], {"accept": {"from": "default", "to": "maintenance"}})
        self.assertEqual((answer["needsRestart"], answer["file"]), (["port"], str(self.file)))
        code, status = yield http_json(reactor, "GET", f"{self.base}/api/status")
        self.assertEqual(status["acceptMode"], "maintenance")
        self.write(**{"max-unread-seconds": "lots"})
        shown = yield act(browser, "#reload")
        self.assertEqual(shown["outcome"], "bad", shown)
        self.assertIn("Reload refused (400)", shown["text"])
        self.assertIn("max-unread-seconds", shown["text"])
        answer = json.loads(
            (yield browser.evaluate("document.getElementById('reload-answer').textContent"))
        )
        self.assertEqual(answer["key"], "max-unread-seconds")
        self.assertEqual(self.bridge.connections.max_unread_seconds, 60)
