"""Real external programs for the tunnel's tests: finding a binary, polling, Chromium.

* :func:`start_chromium` runs headless Chromium with a fresh profile and drives it
  through the DevTools protocol over a WebSocket (Autobahn). The browser trusts only
  the test proxy's key (``--ignore-certificate-errors-spki-list``), not every
  certificate.
* :func:`need_binary` skips a test when a binary is absent, unless ``CI`` is set, where
  it fails: CI installs nginx and chromium (``.ci/run``).

Nothing here knows nginx or the bridge (testing.py, which re-exports these names).
Waiting is by polling with a deadline on the reactor; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from smbridge.testing import free_port as free_port  # re-exported (tunnel.testing)
from smbridge.testing import stop_process

CHROMIUM = "/usr/bin/chromium"


def need_binary(path: str, what: str) -> str:
    """``path`` if it is an executable; else skip the test (fail under ``CI``)."""
    import pytest

    if os.access(path, os.X_OK):
        return path
    found = shutil.which(Path(path).name)
    if found:
        return found
    message = f"{what} is not installed ({path}); .ci/run installs it with apt-get"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@defer.inlineCallbacks
def poll(reactor: Any, predicate: Callable[[], Any], what: str, deadline: float = 15.0) -> Any:
    """Fire with ``predicate()``'s first true value; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"no {what} within {deadline}s")
        yield task.deferLater(reactor, 0.02, lambda: None)


class DevToolsError(Exception):
    pass


@dataclass
class Chromium:
    """A headless Chromium subprocess and one page driven over the DevTools protocol."""

    proc: subprocess.Popen[bytes]
    profile: Path
    devtools: Any = None  # the DevToolsProtocol
    session: str | None = None  # the page's flat session id
    console: list[str] = field(default_factory=list)

    def command(self, method: str, params: dict[str, Any] | None = None) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = self.devtools.command(method, params or {}, self.session)
        return d

    @defer.inlineCallbacks
    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        reply = yield self.command(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            raise DevToolsError(json.dumps(reply["exceptionDetails"])[:500])
        return reply["result"].get("value")

    def stop(self) -> None:
        if self.devtools is not None and self.devtools.transport is not None:
            self.devtools.transport.abortConnection()
        stop_process(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)


def _devtools_protocol() -> Any:
    from autobahn.twisted.websocket import WebSocketClientProtocol

    class DevToolsProtocol(WebSocketClientProtocol):
        """Commands out with ids, answers matched back; console messages collected."""

        def __init__(self) -> None:
            super().__init__()
            self.next_id = 1
            self.pending: dict[int, defer.Deferred[Any]] = {}
            self.opened: defer.Deferred[Any] = defer.Deferred()
            self.console: list[str] = []

        def onOpen(self) -> None:
            self.opened.callback(self)

        def command(self, method: str, params: dict[str, Any], session: str | None) -> Any:
            message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
            if session:
                message["sessionId"] = session
            d: defer.Deferred[Any] = defer.Deferred()
            self.pending[self.next_id] = d
            self.next_id += 1
            self.sendMessage(json.dumps(message).encode())  # type: ignore[no-untyped-call]
            return d

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            message = json.loads(payload)
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            d = self.pending.pop(message.get("id", -1), None)
            if d is None:
                return
            if "error" in message:
                d.errback(DevToolsError(json.dumps(message["error"])))
            else:
                d.callback(message.get("result", {}))

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            if not self.opened.called:
                self.opened.errback(DevToolsError(f"DevTools closed: {reason}"))
            pending, self.pending = self.pending, {}
            for d in pending.values():
                d.errback(DevToolsError(f"DevTools closed: {reason}"))

    return DevToolsProtocol


@defer.inlineCallbacks
def start_chromium(
    reactor: Any, url: str, trust_spki: str | None = None, chromium: str = CHROMIUM
) -> Any:
    """Start headless Chromium, open ``url`` in a new page; fires with a :class:`Chromium`.

    ``trust_spki`` (base64 SHA-256 of a public key) makes the browser accept that one
    test certificate; no other certificate error is ignored.
    """
    from autobahn.twisted.websocket import WebSocketClientFactory
    from twisted.internet.endpoints import TCP4ClientEndpoint

    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    ]
    if trust_spki:
        argv.append(f"--ignore-certificate-errors-spki-list={trust_spki}")
    log = (profile / "chromium.log").open("wb")
    proc = subprocess.Popen([*argv, "about:blank"], stdout=log, stderr=subprocess.STDOUT)
    browser = Chromium(proc, profile)
    try:
        active = profile / "DevToolsActivePort"

        def endpoint() -> tuple[int, str] | None:
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited {proc.returncode}")
            lines = active.read_text().split() if active.exists() else []
            return (int(lines[0]), lines[1]) if len(lines) >= 2 else None

        port, path = yield poll(reactor, endpoint, "DevTools endpoint", deadline=30)
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}")
        factory.protocol = _devtools_protocol()
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        devtools = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        yield devtools.opened
        browser.devtools = devtools
        browser.console = devtools.console
        target = yield devtools.command("Target.createTarget", {"url": "about:blank"}, None)
        attached = yield devtools.command(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, None
        )
        browser.session = attached["sessionId"]
        yield browser.command("Runtime.enable")
        yield browser.command("Page.enable")
        yield browser.command("Page.navigate", {"url": url})
    except Exception:
        browser.stop()
        raise
    return browser


# --- a whole internet path: site + Table 8 stand-ins + nginx -------------------------
