"""Live reload: the bridge's configuration file re-read by POST /api/reload and SIGHUP,
and server parameters changed at the Notifier, all without dropping a TLS session."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.sender import parameters as p
from smbridge.testing import http_json, poll
from smbridge.testing.config_file import start_file_bridge

TOKEN = "reloaded-admin-token-0123"


class Reload(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-reload-"))
        self.config = yield start_file_bridge(self, reactor, self.work)
        self.site, self.bridge, self.file = self.config.site, self.config.bridge, self.config.file
        self.base = self.config.base
        self.client = yield connect(
            reactor, f"tls://localhost:{self.bridge.port}", ca=self.site.pki.ca
        )
        self.addCleanup(self.client.close)
        reply = yield self.client.logon("agent1", "demo")
        self.session_id = reply["sessionId"]

    @defer.inlineCallbacks
    def assert_session_alive(self):
        """The TLS session survived: same id, and a Heartbeat round trip works."""
        self.assertEqual([s.id for s in self.bridge.registry], [self.session_id])
        beat = yield self.client.heartbeat()
        self.assertTrue(beat["sessionUpdated"])

    @defer.inlineCallbacks
    def test_reload_applies_runtime_keys_and_reports_restart_keys(self):
        """POST /api/reload applies accept, timeouts and limits; a port change needs a restart."""
        self.config.write(
            accept="maintenance",
            **{"max-unread-seconds": 30, "session-timeout": 900, "max-watches": 50},
            port=4321,
        )
        code, body = yield http_json(reactor, "POST", f"{self.base}/api/reload")
        self.assertEqual(code, 200, body)
        self.assertEqual(
            sorted(body["applied"]),
            ["accept", "max-unread-seconds", "max-watches", "session-timeout"],
        )
        self.assertEqual(body["applied"]["accept"], {"from": "default", "to": "maintenance"})
        self.assertEqual(body["needsRestart"], ["port"])
        bridge = self.bridge
        self.assertEqual(bridge.router.accept_mode, "maintenance")
        self.assertEqual(bridge.connections.max_unread_seconds, 30)
        self.assertEqual(bridge.registry.policy.timeout, 900)
        self.assertEqual(bridge.router.watches.max_watches, 50)
        self.assertEqual(bridge.config.port, 0)  # still what runs
        self.assertEqual(bridge.config.identity.accept, "maintenance")
        yield self.assert_session_alive()
        code, again = yield http_json(reactor, "POST", f"{self.base}/api/reload")
        self.assertEqual((code, again["applied"], again["needsRestart"]), (200, {}, ["port"]))

    @defer.inlineCallbacks
    def test_an_invalid_file_is_refused_whole(self):
        """A bad value, an unknown key or bad YAML: 400 naming the key, and nothing changes."""
        cases = [
            ({"accept": "all", "max-unread-seconds": "lots"}, "max-unread-seconds"),
            ({"accept": "all", "max-unread-seconds": 99999}, "max-unread-seconds"),
            ({"accept": "all", "max-unread-secs": 5}, "max-unread-secs"),
            ({"accept": "sometimes"}, "accept"),
        ]
        for changes, key in cases:
            before = dict(self.config.settings)
            self.config.write(**changes)
            code, body = yield http_json(reactor, "POST", f"{self.base}/api/reload")
            self.assertEqual((code, body["key"]), (400, key), body)
            self.assertIn(key, body["error"])
            self.assertEqual(self.bridge.router.accept_mode, "default")
            self.assertEqual(self.bridge.connections.max_unread_seconds, 60)
            self.config.settings = before
        self.file.write_text("accept: [unclosed\n")
        code, body = yield http_json(reactor, "POST", f"{self.base}/api/reload")
        self.assertEqual((code, body["key"]), (400, None))
        self.assertIn("not valid YAML", body["error"])
        self.assertEqual(self.bridge.router.counters.get("reloads", outcome="refused"), 5)
        yield self.assert_session_alive()

    @defer.inlineCallbacks
    def test_sighup_rereads_the_file(self):
        """SIGHUP re-reads the file in the running process and applies it."""
        self.config.write(accept="all")
        os.kill(os.getpid(), signal.SIGHUP)
        yield poll(lambda: self.bridge.router.accept_mode == "all")
        self.assertEqual(self.bridge.router.counters.get("reloads", outcome="applied"), 1)
        yield self.assert_session_alive()

    @defer.inlineCallbacks
    def test_a_new_admin_token_applies_at_once(self):
        """A reload that adds an admin token file makes the API ask for that token."""
        token_file = self.work / "token"
        token_file.write_text(TOKEN + "\n")
        self.config.write(**{"admin-token-file": str(token_file)})
        code, body = yield http_json(reactor, "POST", f"{self.base}/api/reload")
        self.assertEqual(body["applied"]["admin-token-file"], {"from": "unset", "to": "set"})
        self.assertNotIn(TOKEN, str(body))
        code, _ = yield http_json(reactor, "GET", f"{self.base}/api/status")
        self.assertEqual(code, 401)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        code, _ = yield http_json(reactor, "GET", f"{self.base}/api/status", headers=auth)
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_server_parameters_from_the_notifier_apply_at_once(self):
        """Parameters changed at the Notifier's control API reach the running bridge's sender."""
        sender = self.bridge.connections.sender
        self.assertFalse(sender.limited)
        code, _ = yield http_json(
            reactor,
            "POST",
            f"{self.site.control_url}/api/parameters",
            {p.ENABLED: "Yes", p.TOTAL: "54321"},
        )
        self.assertEqual(code, 200)
        yield poll(lambda: sender.limited and sender.settings.total_bytes == 54321)
        code, status = yield http_json(reactor, "GET", f"{self.base}/api/status")
        self.assertEqual(status["sender"]["totalBytesPerInterval"], 54321)
        yield self.assert_session_alive()

    def test_reload_without_a_file_is_refused(self):
        """A bridge started without --config says there is nothing to re-read (409)."""
        from smbridge.admin.reload import ReloadRefused, read_config

        config = self.bridge.config
        from dataclasses import replace

        with self.assertRaises(ReloadRefused) as raised:
            read_config(replace(config, config_file=None))
        self.assertIn("without --config", raised.exception.message)


def test_the_docs_list_exactly_the_keys_applied_at_run_time():
    """docs/operations.md's "applied at once" table names every run-time key and no other."""
    import re

    from smbridge.admin.reload import RUNTIME_KEYS

    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    table = doc.split("| applied at once | how |", 1)[1].split("\n\n", 1)[0]
    first_cells = [row.split("|")[1] for row in table.strip().splitlines()[1:]]
    named = {name for cell in first_cells for name in re.findall(r"`([a-z-]+)`", cell)}
    named -= {"SMBRIDGE_ADMIN_TOKEN"}
    expected = set(RUNTIME_KEYS.values()) | {"session-timeout-floor"}
    assert named == expected
