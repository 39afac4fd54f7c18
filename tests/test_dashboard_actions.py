"""The dashboard's actions clicked in real headless Chromium against a real bridge, a real
Notifier and real clients: accept mode, drain and its cancel, ending a session, the token."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.testing import Recorder, http_json, poll, start_site
from smbridge.testing.dashboard import act, open_page, wait_dom

pytestmark = pytest.mark.integration

TOKEN = "dashboard-actions-token-0123"


class DashboardActions(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        work = Path(tempfile.mkdtemp(prefix="smbridge-dashboard-actions-"))
        self.site = yield start_site(reactor, work, admin_port=0)
        self.addCleanup(self.site.stop)
        self.base = f"http://127.0.0.1:{self.site.bridge.admin_port}"
        self.clients: dict[str, Any] = {}
        self.events: dict[str, Recorder] = {}
        self.ids: dict[str, str] = {}
        for user, station in (("agent1", "IND-01"), ("agent2", None)):
            client = yield connect(
                reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
            )
            self.addCleanup(client.close)
            self.events[user] = Recorder(client)
            reply = yield client.logon(user, "demo", station=station)
            self.clients[user] = client
            self.ids[user] = reply["sessionId"]

    @defer.inlineCallbacks
    def page(self) -> Any:
        browser = yield open_page(self, f"{self.base}/")
        yield wait_dom(
            browser,
            "document.body.dataset.ready === 'yes' &&"
            " document.querySelectorAll('#sessions tbody tr').length === 2",
            "the two sessions",
        )
        return browser

    @defer.inlineCallbacks
    def api_status(self) -> Any:
        code, status = yield http_json(reactor, "GET", f"{self.base}/api/status")
        self.assertEqual(code, 200)
        return status

    @defer.inlineCallbacks
    def test_the_accept_mode_is_switched_from_the_page(self) -> Any:
        """Each mode button switches the mode the API reports; the page marks the one in force."""
        browser = yield self.page()
        for mode, accepting in (("maintenance", False), ("all", True), ("default", True)):
            shown = yield act(browser, f"#mode-{mode}")
            self.assertEqual(shown["outcome"], "ok", shown)
            self.assertIn(f"Accept mode is now {mode}", shown["text"])
            status = yield self.api_status()
            self.assertEqual((status["acceptMode"], status["accepting"]), (mode, accepting))
            pressed = yield wait_dom(
                browser,
                f"document.getElementById('mode-{mode}').getAttribute('aria-pressed') === 'true'"
                " && [...document.querySelectorAll('#mode-buttons button')]"
                "   .filter(b => b.getAttribute('aria-pressed') === 'true').length",
                "the mode marked",
            )
            self.assertEqual(pressed, 1)
        badge = yield browser.evaluate("document.getElementById('accept').dataset.accepting")
        self.assertEqual(badge, "true")

    @defer.inlineCallbacks
    def test_a_drain_is_started_cancelled_and_run_from_the_page(self) -> Any:
        """A slow drain is started (confirmed) and cancelled; a quick one sends every client
        its Migrate; the API shows each step."""
        browser = yield self.page()
        yield browser.evaluate("document.getElementById('drain-spread').value = '600'; true")
        shown = yield act(browser, "#drain-start", confirm=False)
        self.assertEqual(shown["outcome"], "cancelled")
        status = yield self.api_status()
        self.assertEqual((status["acceptMode"], status["drain"]["active"]), ("default", False))
        shown = yield act(browser, "#drain-start", confirm=True)
        self.assertEqual(shown["outcome"], "ok", shown)
        self.assertIn("2 session(s)", shown["text"])
        self.assertIn("600 s", shown["text"])
        status = yield self.api_status()
        self.assertEqual(status["drain"], {"active": True, "pending": 2})
        self.assertEqual(status["acceptMode"], "maintenance")
        yield wait_dom(
            browser,
            "document.getElementById('drain-state').textContent.includes('2 Migrate')",
            "the drain's state",
        )
        shown = yield act(browser, "#drain-cancel")
        self.assertEqual(shown["outcome"], "ok", shown)
        self.assertIn("2 Migrate(s) not sent", shown["text"])
        status = yield self.api_status()
        self.assertEqual(status["drain"], {"active": False, "pending": 0})
        self.assertEqual([r.of("Migrate") for r in self.events.values()], [[], []])
        yield browser.evaluate("document.getElementById('drain-spread').value = '0'; true")
        shown = yield act(browser, "#drain-start", confirm=True)
        self.assertEqual(shown["outcome"], "ok", shown)
        yield poll(lambda: all(r.of("Migrate") for r in self.events.values()))
        for recorder in self.events.values():
            self.assertEqual(recorder.of("Migrate")[0]["reason"], "drain")

    @defer.inlineCallbacks
    def test_a_session_is_ended_after_a_confirmation(self) -> Any:
        """End on a row asks first: Keep changes nothing; End session sends the client
        SessionTerminated logout and the row goes, in the API and on the page."""
        browser = yield self.page()
        row = f"#sessions tr[data-session-id={json.dumps(self.ids['agent1'])}] button.end"
        shown = yield act(browser, row, confirm=False)
        self.assertEqual(shown["outcome"], "cancelled")
        asked = yield browser.evaluate("document.getElementById('confirm-text').textContent")
        self.assertIn(self.ids["agent1"], asked)
        self.assertIn("agent1", asked)
        self.assertEqual(len(self.site.bridge.registry), 2)
        closed = self.clients["agent1"].closed
        shown = yield act(browser, row, confirm=True)
        self.assertEqual(shown["outcome"], "ok", shown)
        self.assertIn(f"Session {self.ids['agent1']} of agent1 ended", shown["text"])
        yield closed
        self.assertEqual(self.clients["agent1"].terminated_reason, "logout")
        self.assertIsNone(self.clients["agent2"].terminated_reason)
        code, body = yield http_json(reactor, "GET", f"{self.base}/api/sessions")
        self.assertEqual([s["userId"] for s in body["sessions"]], ["agent2"])
        users = yield wait_dom(
            browser,
            "document.querySelectorAll('#sessions tbody tr').length === 1 &&"
            " [...document.querySelectorAll('#sessions td[data-col=userId]')]"
            "   .map(td => td.textContent)",
            "one row left",
        )
        self.assertEqual(users, ["agent2"])

    @defer.inlineCallbacks
    def test_with_a_token_actions_fail_clearly_until_it_is_given(self) -> Any:
        """With an admin token, an action without it is refused with a clear message and
        changes nothing; after the token is entered the same click works."""
        self.site.bridge.config = dataclasses.replace(self.site.bridge.config, admin_token=TOKEN)
        browser = yield open_page(self, f"{self.base}/")
        yield wait_dom(
            browser, "document.getElementById('token-form').hidden === false", "the token form"
        )
        shown = yield act(browser, "#mode-maintenance")
        self.assertEqual(shown["outcome"], "bad")
        self.assertIn("needs its token", shown["text"])
        self.assertEqual(self.site.bridge.router.accept_mode, "default")
        yield browser.evaluate(
            "document.getElementById('token').value = 'not-the-token-0000000';"
            "document.getElementById('token-form').requestSubmit(); true"
        )
        shown = yield act(browser, "#mode-maintenance")
        self.assertEqual(shown["outcome"], "bad")
        self.assertIn("needs its token", shown["text"])
        yield browser.evaluate(
            f"document.getElementById('token').value = {json.dumps(TOKEN)};"
            "document.getElementById('token-form').requestSubmit(); true"
        )
        yield wait_dom(
            browser,
            "document.body.dataset.ready === 'yes' &&"
            " document.querySelectorAll('#sessions tbody tr').length === 2",
            "the sessions after the token",
        )
        shown = yield act(browser, "#mode-maintenance")
        self.assertEqual(shown["outcome"], "ok", shown)
        self.assertEqual(self.site.bridge.router.accept_mode, "maintenance")
        kept = yield browser.evaluate(
            "JSON.stringify({session: sessionStorage.getItem('smbridge-admin-token'),"
            " cookie: document.cookie, local: localStorage.length})"
        )
        self.assertEqual(json.loads(kept), {"session": TOKEN, "cookie": "", "local": 0})
