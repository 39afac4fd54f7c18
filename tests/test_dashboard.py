"""The dashboard in real headless Chromium against a real bridge with real sessions."""

from __future__ import annotations

import base64
import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.sender import parameters as p
from smbridge.testing import http_json, start_site
from smbridge.testing.dashboard import wait_dom
from smbridge.tunnel.testing import CHROMIUM, need_binary, start_chromium

pytestmark = pytest.mark.integration

COLUMNS = [
    "sessionId",
    "userId",
    "userName",
    "clientVersion",
    "extension",
    "logonTime",
    "clientId",
    "station",
    "transport",
    "remote",
    "state",
]


class DashboardInChromium(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.chromium_path = need_binary(CHROMIUM, "chromium")
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-dashboard-"))
        self.site = yield start_site(
            reactor,
            self.work,
            admin_port=0,
            ws_port=0,
            parameters={p.ENABLED: "Yes", p.TOTAL: "200000"},
        )
        self.addCleanup(self.site.stop)
        self.base = f"http://127.0.0.1:{self.site.bridge.admin_port}"
        self.clients = []
        for uri, user, station in (
            (f"tls://localhost:{self.site.client_port}", "agent1", "IND-01"),
            (f"ws://localhost:{self.site.ws_port}/cic1/session", "agent2", None),
        ):
            client = yield connect(reactor, uri, ca=self.site.pki.ca)
            self.addCleanup(client.close)
            yield client.logon(user, "demo", station=station, client_version="4.2.0")
            yield client.watch_queue("Sales")
            self.clients.append(client)

    def wait_dom(self, browser, expression: str, what: str, deadline: float = 30):
        """Poll a DOM expression until it is truthy; fail with the console if not."""
        return wait_dom(browser, expression, what, deadline)

    @defer.inlineCallbacks
    def test_dashboard_shows_the_bridge_sessions_and_bandwidth(self):
        """Identity, link, limiter and every session row match the API; sort and filter work."""
        browser = yield start_chromium(reactor, f"{self.base}/", chromium=self.chromium_path)
        self.addCleanup(browser.stop)
        yield browser.command(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )
        yield self.wait_dom(
            browser,
            "document.body.dataset.ready === 'yes' && "
            "document.querySelectorAll('#sessions tbody tr').length === 2",
            "two session rows",
        )
        code, status = yield http_json(reactor, "GET", f"{self.base}/api/status")
        code, sessions = yield http_json(reactor, "GET", f"{self.base}/api/sessions")
        shown = json.loads(
            (
                yield browser.evaluate(
                    "JSON.stringify({"
                    " name: document.getElementById('name').textContent,"
                    " accept: document.getElementById('accept').dataset.accepting,"
                    " mode: document.getElementById('accept-mode').textContent,"
                    " server: document.getElementById('notifier-server').textContent,"
                    " role: document.getElementById('notifier-role').textContent,"
                    " switchovers: document.getElementById('notifier-switchovers').textContent,"
                    " count: document.getElementById('session-count').textContent,"
                    " limiter: document.getElementById('limiter-enabled').textContent,"
                    " total: document.getElementById('limiter-total').textContent,"
                    " safeguard: document.getElementById('safeguard-state').textContent,"
                    " rows: [...document.querySelectorAll('#sessions tbody tr')].map(tr =>"
                    "   Object.fromEntries([...tr.cells]"
                    "     .map(td => [td.dataset.col, td.textContent])))"
                    "})"
                )
            )
        )
        self.assertEqual(shown["name"], status["name"])
        self.assertEqual((shown["accept"], shown["mode"]), ("true", "default"))
        self.assertEqual(shown["server"], status["notifier"]["server"])
        self.assertEqual(shown["role"], "primary")
        self.assertEqual(shown["switchovers"], "0")
        self.assertEqual(shown["count"], "2")
        self.assertEqual((shown["limiter"], shown["total"]), ("enabled", "200000"))
        self.assertEqual(shown["safeguard"], "off")
        api_rows = {r["sessionId"]: r for r in sessions["sessions"]}
        self.assertEqual({r["sessionId"] for r in shown["rows"]}, set(api_rows))
        for row in shown["rows"]:
            expected = api_rows[row["sessionId"]]
            for column in COLUMNS:
                value = expected[column]
                self.assertEqual(row[column], "" if value is None else str(value), column)
        self.assertEqual(sorted(r["transport"] for r in shown["rows"]), ["tls", "ws"])
        # Sorting: user id descending after two clicks; filtering by text.
        order = yield browser.evaluate(
            "(() => { const th = document.querySelector('th[data-sort=userId]');"
            " th.click(); th.click();"
            " return [...document.querySelectorAll('#sessions td[data-col=userId]')]"
            "   .map(td => td.textContent); })()"
        )
        self.assertEqual(order, ["agent2", "agent1"])
        filtered = yield browser.evaluate(
            "(() => { const f = document.getElementById('filter'); f.value = 'IND-01';"
            " f.dispatchEvent(new Event('input'));"
            " return [...document.querySelectorAll('#sessions td[data-col=userId]')]"
            "   .map(td => td.textContent); })()"
        )
        self.assertEqual(filtered, ["agent1"])
        # The bandwidth chart: per-second history by priority, drawn on the canvas.
        for client in self.clients:
            yield client.get_directory("Company Directory")
        samples = yield self.wait_dom(
            browser,
            "Number(document.getElementById('bandwidth').dataset.total) > 0 &&"
            " Number(document.getElementById('bandwidth').dataset.samples)",
            "bandwidth samples",
        )
        code, bandwidth = yield http_json(reactor, "GET", f"{self.base}/api/bandwidth")
        self.assertGreaterEqual(len(bandwidth["samples"]), samples)
        painted = yield browser.evaluate(
            "(() => { const c = document.getElementById('bandwidth');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 0; i < d.length; i += 4) {"
            "   if (d[i] === 0xd9 && d[i+1] === 0x48 && d[i+2] === 0x0f) n++; }"
            " return n; })()"
        )
        self.assertGreater(painted, 0)  # high-priority bytes are drawn in their colour
        yield browser.evaluate(
            "(() => { const f = document.getElementById('filter'); f.value = '';"
            " f.dispatchEvent(new Event('input')); return true; })()"
        )
        shot = yield browser.command("Page.captureScreenshot", {"format": "png"})
        path = self.work / "dashboard.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"dashboard screenshot: {path}")
        self.assertTrue(path.read_bytes().startswith(b"\x89PNG"))

    @defer.inlineCallbacks
    def test_static_files_need_no_token_but_the_api_does(self):
        """With a token the page loads and asks for it; data needs the token."""
        self.site.bridge.config = dataclasses.replace(
            self.site.bridge.config, admin_token="dashboard-token-0123456"
        )
        browser = yield start_chromium(reactor, f"{self.base}/", chromium=self.chromium_path)
        self.addCleanup(browser.stop)
        yield self.wait_dom(
            browser,
            "document.getElementById('token-form')?.hidden === false",
            "the token form",
        )
        yield browser.evaluate(
            "document.getElementById('token').value = 'dashboard-token-0123456';"
            "document.getElementById('token-form').requestSubmit(); true"
        )
        count = yield self.wait_dom(
            browser,
            "document.body.dataset.ready === 'yes' &&"
            " document.querySelectorAll('#sessions tbody tr').length",
            "rows after the token",
        )
        self.assertEqual(count, 2)
