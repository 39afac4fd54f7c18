"""Graceful shutdown: Migrate when another bridge can take the user, else SessionTerminated."""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client.protocol import BridgeProtocol
from smbridge.codec import catalog as c
from smbridge.session.session import EndReason
from smbridge.testing import RouterHarness, TwistdProcess


def _sessions(h: RouterHarness) -> tuple[Any, Any, Any]:
    conn, t, _ = h.logon("agent1")
    gone, _, _ = h.logon("agent2")
    gone.connectionLost(None)  # agent2 lingers
    ended: list[EndReason] = []
    h.registry.on_end(lambda s, r: ended.append(r))
    return conn, t, ended


def test_shutdown_migrates_when_another_bridge_is_available():
    """Migrate {roster: available others, reason: shutdown} goes out; no SessionTerminated."""
    h = RouterHarness()
    conn, t, ended = _sessions(h)
    h.received(t)
    h.connector.registered["roster"] = [
        {"name": "sm1", "available": True, "location": "Indianapolis", "kind": "off-server"},
        {"name": "sm2", "available": True, "location": "Indianapolis", "kind": "off-server"},
        {"name": "sm3", "available": False, "location": "Indianapolis", "kind": "off-server"},
    ]
    assert h.router.shutdown() == (2, 0)
    frames = h.received(t)
    keys = [(f.object_type, f.event_id) for f in frames]
    assert keys == [c.MIGRATE]
    body = frames[0].parsed()
    assert body["reason"] == "shutdown" and [e["name"] for e in body["roster"]] == ["sm2"]
    assert ended == [EndReason.SHUTDOWN, EndReason.SHUTDOWN] and len(h.registry) == 0


def test_shutdown_terminates_when_no_other_bridge_is_available():
    """With only this bridge (or unavailable others) every session gets SessionTerminated."""
    h = RouterHarness()
    conn, t, ended = _sessions(h)
    h.received(t)
    h.connector.registered["roster"] = [{"name": "sm1", "available": True}, {"name": "sm9"}]
    assert h.router.shutdown() == (0, 2)
    frames = h.received(t)
    assert [f.parsed() for f in frames] == [{"reason": "shutdown"}]
    assert (frames[0].object_type, frames[0].event_id) == c.SESSION_TERMINATED
    assert len(h.registry) == 0 and h.clock.getDelayedCalls() == []


@pytest.mark.integration
class SignalShutdown(TestCase):
    """A real ``twistd -n smbridge --demo`` stopped by SIGTERM or SIGINT."""

    timeout = 90

    def _start(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-stop-"))
        args = ["smbridge", "--demo", "--shutdown-grace", "3"]
        for flag in ("port", "notifier-port", "control-port", "admin-port", "ws-port"):
            args += [f"--{flag}", "0"]
        for flag in ("wss-port", "notifier-http-port", "notifier-https-port"):
            args += [f"--{flag}", "off"]
        self.twistd = TwistdProcess(self.work, [*args, "--work-path", str(self.work)])
        self.proc = self.twistd.proc
        self.addCleanup(self.twistd.kill)
        self._wait_for = self.twistd.wait_for
        self._output = self.twistd.output

    @defer.inlineCallbacks
    def _stop_with(self, signum: int) -> Any:
        self._start()
        ports_file = self.work / "ports.json"
        yield self._wait_for(ports_file.exists, "ports.json")
        ports = json.loads(ports_file.read_text())
        endpoint = wrapClientTLS(
            pki.client_options("localhost", self.work / "pki" / "ca.pem"),
            HostnameEndpoint(reactor, "127.0.0.1", ports["client"]),
        )
        proto = BridgeProtocol(tls=True)
        yield connectProtocol(endpoint, proto)
        yield proto.ready
        notices: list[tuple[tuple[int, int], dict[str, Any]]] = []
        proto.add_listener(lambda f: notices.append(((f.object_type, f.event_id), f.parsed())))
        reply = yield proto.request(*c.CREATE_SESSION, {"user": "agent1", "password": "demo"})
        closed = proto.when_closed()
        started = time.monotonic()
        self.proc.send_signal(signum)
        yield closed
        yield self._wait_for(lambda: self.proc.poll() is not None, "exit", deadline=20)
        took = time.monotonic() - started
        self.assertIn((c.SESSION_TERMINATED, {"reason": "shutdown"}), notices)
        self.assertLess(took, 3 + 5)  # the grace, plus the reactor's own shutdown
        self.assertIn(self.proc.returncode, (0, -signum), self._output())
        output = self._output()
        self.assertIn("Server Shut Down.", output)
        self.assertIn("1 ended (SessionTerminated)", output)
        self.assertNotIn(reply["resumeToken"], output)
        self.assertNotIn("Traceback", output)

    def test_sigterm(self) -> Any:
        """SIGTERM: SessionTerminated {shutdown} reaches the client and twistd exits in time."""
        return self._stop_with(signal.SIGTERM)

    def test_sigint(self) -> Any:
        """SIGINT does the same as SIGTERM."""
        return self._stop_with(signal.SIGINT)
