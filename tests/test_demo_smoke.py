"""Smoke test: ``twistd -n smbridge --demo`` as a real subprocess, logged on to with the client."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.testing import TwistdProcess, http_json

pytestmark = pytest.mark.integration


class DemoSmoke(TestCase):
    timeout = 90

    def setUp(self):
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-demo-"))
        args = ["smbridge", "--demo"]
        for flag in ("port", "notifier-port", "control-port", "admin-port", "ws-port"):
            args += [f"--{flag}", "0"]
        for flag in ("wss-port", "notifier-http-port", "notifier-https-port"):
            args += [f"--{flag}", "0"]
        self.twistd = TwistdProcess(self.work, [*args, "--work-path", str(self.work)])
        self.proc = self.twistd.proc
        self.addCleanup(self.twistd.kill)
        self._wait_for = self.twistd.wait_for
        self._output = self.twistd.output

    @defer.inlineCallbacks
    def test_demo_runs_and_accepts_a_logon(self):
        """The demo starts, writes its ports, serves logon and watches, and shuts down cleanly."""
        ports_file = self.work / "ports.json"
        yield self._wait_for(ports_file.exists, "ports.json")
        ports = json.loads(ports_file.read_text())
        for pem in ("ca.pem", "bridge.pem", "bridge-client.pem", "notifier.pem"):
            self.assertTrue((self.work / "pki" / pem).exists(), pem)
        self.assertEqual((self.work / "pki" / "bridge.pem").stat().st_mode & 0o777, 0o600)

        client = yield connect(
            reactor, f"tls://localhost:{ports['client']}", ca=self.work / "pki" / "ca.pem"
        )
        reply = yield client.logon("supervisor1", "demo")
        self.assertTrue(reply["sessionId"])
        snapshot = yield client.watch_queue("Support")
        code, status = yield http_json(
            reactor, "GET", f"http://127.0.0.1:{ports['admin']}/api/status"
        )
        self.assertEqual((code, status["name"], status["sessions"]["total"]), (200, "bridge1", 1))
        self.assertIsInstance(status["tunnel"]["usesNvx"], bool)
        self.assertEqual(snapshot["queue"], "Support")
        directory = yield client.get_directory("Company Directory")
        ids = {entry["id"] for entry in directory["entries"]}
        self.assertTrue({"agent1", "agent50", "supervisor1"} <= ids)
        # The demo's resource host serves the direct URIs the bridge gives TLS sessions.
        uri, icon = yield client.download("httpsecure", "status-icons/Available.png")
        self.assertEqual(
            uri, f"https://127.0.0.1:{ports['notifier_httpsecure']}/status-icons/Available.png"
        )
        self.assertTrue(icon.startswith(b"\x89PNG"))
        # The WebSocket tunnel of the demo, dialed directly (no proxy in front).
        tunnel = yield connect(
            reactor, f"wss://localhost:{ports['wss']}/cic1/session", ca=self.work / "pki" / "ca.pem"
        )
        ws_reply = yield tunnel.logon("agent1", "demo")
        self.assertEqual(ws_reply["resources"]["base"], f"https://localhost:{ports['wss']}")
        yield tunnel.logoff()

        terminated = []
        client.add_listener(lambda name, frame: terminated.append((name, frame.parsed())))
        self.proc.send_signal(signal.SIGTERM)
        yield client.closed
        self.assertIn(("SessionTerminated", {"reason": "shutdown"}), terminated)
        yield self._wait_for(lambda: self.proc.poll() is not None, "exit")
        # twistd re-raises SIGTERM after a clean shutdown, so the status is -SIGTERM.
        self.assertIn(self.proc.returncode, (0, -signal.SIGTERM), self._output())
        output = self._output()
        self.assertIn("Server Shut Down.", output)
        self.assertNotIn(reply["resumeToken"], output)
        self.assertNotIn('"password"', output)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_demo_ready_lists_every_url_and_each_answers(self):
        """Demo ready lists the client, ws, wss, dashboard and control URLs; each one answers."""
        import re

        import treq
        from twisted.web.client import HTTPConnectionPool

        ports_file = self.work / "ports.json"
        yield self._wait_for(lambda: "Demo ready" in self._output(), "Demo ready")
        ports = json.loads(ports_file.read_text())
        line = next(line for line in self._output().splitlines() if "Demo ready" in line)
        urls = re.findall(r"(?:tls|wss?|https?)://[^\s;,]+", line)
        self.assertEqual(
            urls,
            [
                f"tls://localhost:{ports['client']}",
                f"ws://localhost:{ports['ws']}/cic1/session",
                f"wss://localhost:{ports['wss']}/cic1/session",
                f"http://127.0.0.1:{ports['admin']}/",
                f"http://127.0.0.1:{ports['control']}/api/state",
            ],
        )
        for url in urls[:3]:  # the client port and the tunnel URIs: a logon on each
            client = yield connect(reactor, url, ca=self.work / "pki" / "ca.pem")
            reply = yield client.logon("agent2", "demo")
            self.assertTrue(reply["sessionId"], url)
            yield client.logoff()
        for url in urls[3:]:  # the dashboard and the Notifier's control API
            pool = HTTPConnectionPool(reactor, persistent=False)
            response = yield treq.get(url, pool=pool)
            body = yield treq.content(response)
            self.assertEqual(response.code, 200, url)
            self.assertTrue(body, url)
