"""Logon throttling end to end: real TLS, the real bridge, the real Notifier, two addresses."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.admin.metrics import bridge_registry, exposition
from smbridge.client import ClientError
from smbridge.client.protocol import BridgeProtocol
from smbridge.client.session import BridgeClient
from smbridge.codec import catalog as c
from smbridge.testing import start_site

FREE = 3
CONNECTIONS = 4  # concurrent guessing connections from one address
PIPELINE = 8  # CreateSessions in flight on each at once
GUESS_FOR = 6.0  # seconds the guessing goes on


@pytest.mark.integration
class LogonThrottleEndToEnd(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        work = Path(tempfile.mkdtemp(prefix="smbridge-throttle-"))
        self.site = yield start_site(reactor, work, logon_free_failures=FREE)
        self.addCleanup(self.site.stop)
        # Count the Notifier's password checks (what a guesser gets out of it).
        model = self.site.notifier.notifier
        self.checks: list[tuple[float, str, str]] = []
        real = model.authenticate

        def counting(user: str, password: str, station: str | None = None) -> Any:
            self.checks.append((reactor.seconds(), user, password))
            return real(user, password, station)

        model.authenticate = counting

    @defer.inlineCallbacks
    def _dial(self, source: str) -> Any:
        """A TLS connection to the bridge whose socket is bound to ``source``."""
        endpoint = wrapClientTLS(
            pki.client_options("localhost", self.site.pki.ca),
            HostnameEndpoint(reactor, "127.0.0.1", self.site.client_port, bindAddress=(source, 0)),
        )
        protocol = BridgeProtocol(tls=True)
        yield connectProtocol(endpoint, protocol)
        yield protocol.ready
        self.addCleanup(protocol.close)
        return protocol

    @defer.inlineCallbacks
    def _guess(self, protocol: BridgeProtocol, until: float, answers: list[Any]) -> Any:
        """Keep PIPELINE wrong-password CreateSessions in flight until ``until``."""
        n = 0

        def one() -> defer.Deferred[Any]:
            nonlocal n
            n += 1
            body = {"user": "agent1", "password": f"guess-{id(protocol)}-{n}"}
            return protocol.request(*c.CREATE_SESSION, body).addCallbacks(
                lambda reply: answers.append(("ok", reply)),
                lambda f: answers.append((f.value.code, f.value.body)),
            )

        while reactor.seconds() < until:
            yield defer.gatherResults([one() for _ in range(PIPELINE)])

    @defer.inlineCallbacks
    def test_guessing_is_throttled_and_the_user_logs_on_elsewhere(self) -> Any:
        """Guessing gets < 1 try/s through; from 127.0.0.2 the user logs on at once."""
        guessers = yield defer.gatherResults([self._dial("127.0.0.1") for _ in range(CONNECTIONS)])
        answers: list[Any] = []
        start = reactor.seconds()
        yield defer.gatherResults([self._guess(p, start + GUESS_FOR, answers) for p in guessers])
        elapsed = reactor.seconds() - start
        guesses = [ch for ch in self.checks if ch[2].startswith("guess-")]
        codes = [code for code, _ in answers]
        throttled = [body for code, body in answers if code == "logon-throttled"]
        # The first few failures are checked, then at most one per wait (1 s, 2 s, 4 s...).
        assert codes.count("logon-failed") == len(guesses)
        assert len(guesses) <= FREE + math.floor(math.log2(elapsed + 1)), (len(guesses), elapsed)
        assert (len(guesses) - FREE) / elapsed < 1.0
        assert len(throttled) > 100  # answered at full speed, without asking the Notifier
        assert all(isinstance(b["retryAfter"], int) and b["retryAfter"] >= 1 for b in throttled)
        assert set(codes) == {"logon-failed", "logon-throttled"}
        scrape = exposition(bridge_registry(self.site.bridge)).decode()
        assert f'smbridge_logons_throttled_total{{scope="user"}} {len(throttled)}.0' in scrape
        # The right password from the guessing address waits too (no oracle)...
        with pytest.raises(ClientError) as refused:
            yield guessers[0].request(*c.CREATE_SESSION, {"user": "agent1", "password": "demo"})
        assert refused.value.code == "logon-throttled"
        # ...while the user from another address logs on at once.
        before = len(self.checks)
        t0 = reactor.seconds()
        protocol = yield self._dial("127.0.0.2")
        client = BridgeClient(protocol, reactor)
        reply = yield client.logon("agent1", "demo", client_id="elsewhere")
        assert reply["user"]["id"] == "agent1"
        assert reactor.seconds() - t0 < 2.0
        assert len(self.checks) == before + 1
        print(
            f"\nthrottle e2e: {len(answers)} guesses in {elapsed:.1f}s from "
            f"{CONNECTIONS} connections x {PIPELINE} pipelined; {len(guesses)} reached the "
            f"Notifier; {len(throttled)} throttled; other address logged on in "
            f"{reactor.seconds() - t0:.3f}s"
        )
        yield client.logoff()
