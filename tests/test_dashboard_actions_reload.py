"""The dashboard's Reload button in real headless Chromium: a bridge started from a
configuration file re-reads it, and the page shows the answer, applied or refused."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.testing import http_json
from smbridge.testing.config_file import start_file_bridge
from smbridge.testing.dashboard import act, open_page, wait_dom

pytestmark = pytest.mark.integration


class DashboardReload(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-dashboard-reload-"))
        self.config = yield start_file_bridge(self, reactor, self.work)
        self.site, self.bridge, self.file = self.config.site, self.config.bridge, self.config.file
        self.base = self.config.base

    @defer.inlineCallbacks
    def test_the_reload_answer_is_shown_on_the_page(self) -> Any:
        """Reload applies a changed accept (seen in the API) and shows what it applied and
        what needs a restart; a bad value is refused and the page names the key."""
        browser = yield open_page(self, f"{self.base}/")
        yield wait_dom(browser, "document.body.dataset.ready === 'yes'", "the first poll")
        self.config.write(accept="maintenance", port=4321)
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
        self.config.write(**{"max-unread-seconds": "lots"})
        shown = yield act(browser, "#reload")
        self.assertEqual(shown["outcome"], "bad", shown)
        self.assertIn("Reload refused (400)", shown["text"])
        self.assertIn("max-unread-seconds", shown["text"])
        answer = json.loads(
            (yield browser.evaluate("document.getElementById('reload-answer').textContent"))
        )
        self.assertEqual(answer["key"], "max-unread-seconds")
        self.assertEqual(self.bridge.connections.max_unread_seconds, 60)
