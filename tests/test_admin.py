"""The admin API over real HTTP: status, health, the bearer token, JSON errors, and its options."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, reactor, task
from twisted.python import usage
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.tap import Options
from smbridge.testing import http_json, start_site

TOKEN = "s3cret-admin-token-123"


class AdminAPI(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def _site(self, **kw):
        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-admin-")), admin_port=0, **kw
        )
        self.addCleanup(site.stop)
        self.base = f"http://127.0.0.1:{site.bridge.admin_port}"
        return site

    @defer.inlineCallbacks
    def test_status_reports_identity_link_sessions_and_no_secrets(self):
        """Status names the bridge, the link, the sessions by transport; no token appears."""
        site = yield self._site()
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        reply = yield client.logon("agent1", "demo")
        code, status = yield http_json(reactor, "GET", f"{self.base}/api/status")
        self.assertEqual(code, 200)
        self.assertEqual((status["name"], status["kind"]), ("sm1", "off-server"))
        self.assertEqual(status["notifier"]["state"], "up")
        self.assertEqual(status["notifier"]["cic"]["role"], "primary")
        self.assertEqual(status["sessions"], {"total": 1, "byTransport": {"tls": 1}})
        self.assertNotIn(reply["resumeToken"], str(status))
        code, health = yield http_json(reactor, "GET", f"{self.base}/healthz")
        self.assertEqual((code, health["healthy"]), (200, True))
        yield client.logoff()

    @defer.inlineCallbacks
    def test_health_fails_without_the_notifier(self):
        """With the Notifier gone, /healthz answers 503 with the link's state."""
        site = yield self._site()
        yield site.notifier.stopService()
        for _ in range(200):
            if not site.bridge.upstream.up:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        code, health = yield http_json(reactor, "GET", f"{self.base}/healthz")
        self.assertEqual(code, 503)
        self.assertFalse(health["healthy"])
        self.assertIn("Notifier link is", health["reason"])

    @defer.inlineCallbacks
    def test_token_and_json_errors(self):
        """With a token every request needs it; unknown paths and methods get JSON errors."""
        yield self._site(admin_token=TOKEN)
        code, body = yield http_json(reactor, "GET", f"{self.base}/api/status")
        self.assertEqual(code, 401)
        self.assertIn("bearer token", body["error"])
        auth = {"Authorization": f"Bearer {TOKEN}"}
        code, status = yield http_json(reactor, "GET", f"{self.base}/api/status", headers=auth)
        self.assertEqual(code, 200)
        self.assertNotIn(TOKEN, str(status))
        code, body = yield http_json(reactor, "GET", f"{self.base}/api/nope", headers=auth)
        self.assertEqual((code, body["error"]), (404, "no such resource: /api/nope"))
        code, body = yield http_json(reactor, "POST", f"{self.base}/api/status", headers=auth)
        self.assertEqual(code, 405)


def _options(*args: str) -> Options:
    options = Options()
    options.parseOptions(["--demo", "--work-path", tempfile.mkdtemp(), *args])
    return options


def test_admin_off_loopback_needs_a_token(monkeypatch, tmp_path):
    """Binding the admin API off loopback without a token is refused; with one it is accepted."""
    monkeypatch.delenv("SMBRIDGE_ADMIN_TOKEN", raising=False)
    with pytest.raises(usage.UsageError, match="not loopback"):
        _options("--admin-interface", "0.0.0.0")
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = _options("--admin-interface", "0.0.0.0", "--admin-token-file", str(token)).config
    assert config is not None and config.admin_token == TOKEN
    assert TOKEN not in repr(config)
    token.write_text("short")
    with pytest.raises(usage.UsageError, match="at least 16"):
        _options("--admin-token-file", str(token))
    assert _options("--admin-port", "off").config.admin_port is None
