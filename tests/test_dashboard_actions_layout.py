"""The dashboard's layout in real headless Chromium at 1280 px: the sessions table stays in
its card, the chart reads in kB/s, the empty state has no placeholder, tenants render."""

from __future__ import annotations

import base64
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.admin import api
from smbridge.client import connect
from smbridge.testing import http_json, start_site
from smbridge.testing.dashboard import open_page, wait_dom

pytestmark = pytest.mark.integration

PLACEHOLDERS = ("—", "…", "undefined", "null", "NaN", "lorem", "TODO")
LIMITS = ("sessions", "sessionsPerUser", "logonsPerSecond", "watches")
TENANTS = [
    {
        "tenant": "acme",
        "limits": {"sessions": 100, "sessionsPerUser": 2, "logonsPerSecond": 5, "watches": 1000},
        "use": {"sessions": 3, "sessionsPerUser": 1, "logonsPerSecond": 0.4, "watches": 12},
    },
    {
        "tenant": "globex",
        "limits": {"sessions": 10, "sessionsPerUser": None, "logonsPerSecond": 1, "watches": None},
        "use": {"sessions": 10, "sessionsPerUser": 2, "logonsPerSecond": 0, "watches": 7},
    },
]


class DashboardLayout(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-dashboard-layout-"))
        self.site = yield start_site(reactor, self.work, admin_port=0)
        self.addCleanup(self.site.stop)
        self.base = f"http://127.0.0.1:{self.site.bridge.admin_port}"

    @defer.inlineCallbacks
    def screenshot(self, browser: Any, name: str) -> Any:
        """Save the page as PNG in the test's work directory and print where."""
        shot = yield browser.command(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        path = self.work / name
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"dashboard screenshot: {path}")

    @defer.inlineCallbacks
    def test_empty_state_units_and_tenants(self) -> Any:
        """No session: a plain sentence and no placeholder anywhere; the chart's axis and
        legend read kB/s; tenants with a limit render use / limit per key; none: hidden."""
        browser = yield open_page(self, f"{self.base}/")
        yield wait_dom(browser, "document.body.dataset.ready === 'yes'", "the first poll")
        code, status = yield http_json(reactor, "GET", f"{self.base}/api/status")
        shown = json.loads(
            (
                yield browser.evaluate(
                    "JSON.stringify({text: document.body.innerText,"
                    " empty: document.getElementById('sessions-empty').hidden,"
                    " emptyText: document.getElementById('sessions-empty').textContent,"
                    " table: document.getElementById('sessions-table').hidden,"
                    " placeholders: document.querySelectorAll('[placeholder]').length,"
                    " tenants: document.getElementById('tenants-card').hidden,"
                    " legend: document.querySelector('.legend').innerText,"
                    " title: document.getElementById('bandwidth-title').innerText,"
                    " ticks: document.getElementById('bandwidth').dataset.ticks})"
                )
            )
        )
        yield self.screenshot(browser, "empty.png")
        for word in PLACEHOLDERS:
            self.assertNotIn(word, shown["text"], word)
        self.assertEqual((shown["empty"], shown["table"]), (False, True))
        self.assertEqual(shown["emptyText"], "No sessions on this bridge.")
        self.assertEqual(shown["placeholders"], 0)
        # The site has no tenant limits (only the default tenant, unlimited): no card.
        self.assertEqual([t["limits"] for t in status["tenants"]], [dict.fromkeys(LIMITS)])
        self.assertTrue(shown["tenants"])
        self.assertIn("kB/s", shown["title"])
        self.assertEqual(re.findall(r"(high|medium|low) [\d.]+ kB/s", shown["legend"]),
                         ["high", "medium", "low"])  # fmt: skip
        ticks = json.loads(shown["ticks"])
        self.assertEqual(len(ticks), 5)
        for tick in ticks:
            self.assertRegex(tick, r"^\d+(\.\d+)? kB/s$")

        real_status = api.status
        self.patch(api, "status", lambda bridge: {**real_status(bridge), "tenants": TENANTS})
        rows = yield wait_dom(
            browser,
            "!document.getElementById('tenants-card').hidden &&"
            " document.querySelector('#tenants td[data-col=tenant]')?.textContent === 'acme' &&"
            " JSON.stringify([...document.querySelectorAll('#tenants tbody tr')].map(tr =>"
            "   Object.fromEntries([...tr.cells].map(td => [td.dataset.col, td.textContent]))))",
            "the tenants card",
        )
        heads = yield browser.evaluate(
            "[...document.querySelectorAll('#tenants thead th')].map(th => th.textContent)"
        )
        self.assertEqual(
            heads, ["Tenant", "sessions", "sessionsPerUser", "logonsPerSecond", "watches"]
        )
        self.assertEqual(
            json.loads(rows),
            [
                {
                    "tenant": "acme",
                    "sessions": "3 / 100",
                    "sessionsPerUser": "1 / 2",
                    "logonsPerSecond": "0.4 / 5",
                    "watches": "12 / 1000",
                },
                {
                    "tenant": "globex",
                    "sessions": "10 / 10",
                    "sessionsPerUser": "2 / no limit",
                    "logonsPerSecond": "0 / 1",
                    "watches": "7 / no limit",
                },
            ],
        )
        full = yield browser.evaluate(
            "document.querySelector('#tenants td[data-col=sessions][data-full]')?.textContent"
        )
        self.assertEqual(full, "10 / 10")  # at its limit: marked

    @defer.inlineCallbacks
    def test_the_sessions_table_fits_a_1280_px_screen(self) -> Any:
        """With sessions of long names, the page is no wider than 1280 px: the table scrolls
        inside its card, and every row's End button is in view."""
        for i in range(1, 7):
            client = yield connect(
                reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
            )
            self.addCleanup(client.close)
            yield client.logon(
                f"agent{i}",
                "demo",
                client_version="2026.11.3-build.123456",
                client_id=f"workstation-{i}-with-a-rather-long-client-identifier",
            )
        browser = yield open_page(self, f"{self.base}/", width=1280)
        yield wait_dom(
            browser,
            "document.querySelectorAll('#sessions tbody tr').length === 6",
            "six rows",
        )
        measured = json.loads(
            (
                yield browser.evaluate(
                    "(() => { const card = document.getElementById('sessions-table')"
                    "   .closest('.card').getBoundingClientRect();"
                    " const ends = [...document.querySelectorAll('#sessions button.end')]"
                    "   .map(b => b.getBoundingClientRect());"
                    " return JSON.stringify({page: document.documentElement.scrollWidth,"
                    "   body: document.body.scrollWidth, card: card.right,"
                    "   ends: ends.map(r => [r.left, r.right])}); })()"
                )
            )
        )
        yield self.screenshot(browser, "sessions-1280.png")
        self.assertLessEqual(measured["page"], 1280, measured)
        self.assertLessEqual(measured["body"], 1280, measured)
        self.assertLessEqual(measured["card"], 1280, measured)
        self.assertEqual(len(measured["ends"]), 6)
        for left, right in measured["ends"]:
            self.assertGreaterEqual(left, 0)
            self.assertLessEqual(right, measured["card"])
