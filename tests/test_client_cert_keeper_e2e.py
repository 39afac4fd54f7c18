"""A certificate keeper end to end: real TLS and wss, the real bridge and Notifier."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client.keeper import SessionKeeper, State
from smbridge.client.order import Backoff
from smbridge.session.session import EndReason
from smbridge.session.session import State as SessionState
from smbridge.testing import poll
from smbridge.testing.cli import spawn_client
from smbridge.testing.client_certs import start_cert_site
from smbridge.testing.keeper import KeeperListener

pytestmark = pytest.mark.integration
QUEUE = "Sales"


class CertificateKeeperSite(TestCase):
    """A site mapping agent1's certificate by subject; TLS and wss ports ask for one."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-cert-keeper-"))
        self.certs, self.site = yield start_cert_site(reactor, self.work)
        self.addCleanup(self.site.stop)
        self.heard = KeeperListener()
        self.events, self.ids = self.heard.events, self.heard.ids

    def keeper(self, uri: str) -> SessionKeeper:
        files = self.certs.clients["agent1"]
        keeper = SessionKeeper(
            reactor,
            uri,
            "",
            ca=self.certs.ca,
            cert=files.cert,
            key=files.key,
            client_id="cert-keeper",
            resolve=lambda host, port: defer.succeed([]),
            backoff=Backoff(0.2, 1.5, 1.0),
        )
        self.heard.attach(keeper)
        self.addCleanup(lambda: keeper.logoff() if not keeper.ended else None)
        return keeper

    @defer.inlineCallbacks
    def publish(self, call_id: str) -> Any:
        call = {"id": call_id, "type": "call", "state": "Offering", "workgroup": QUEUE}
        code, _ = yield self.site.publish_queue(reactor, QUEUE, [call])
        self.assertEqual(code, 200)

    def session(self, keeper: SessionKeeper) -> Any:
        return self.site.bridge.registry.get(keeper.session_id)

    @defer.inlineCallbacks
    def story(self, uri: str) -> Any:
        """Log on by certificate, resume after a drop, log on by it again once the session ends."""
        keeper = self.keeper(uri)
        reply = yield keeper.start()
        self.assertEqual((reply["auth"], reply["user"]["id"]), ("certificate", "agent1"))
        first = keeper.session_id
        yield keeper.watch_queue(QUEUE)
        session = self.session(keeper)
        self.assertEqual(session.info.certificate.subject, "CN=agent1,O=smbridge")
        assert keeper.client is not None
        keeper.client.protocol.transport.abortConnection()  # the connection drops
        yield poll(lambda: "resumed" in [e.kind for e in self.events], deadline=20)
        self.assertEqual(keeper.session_id, first)
        self.assertIs(self.session(keeper), session)
        self.assertEqual(session.state, SessionState.ACTIVE)
        yield self.publish(f"{uri[:3]}-1")
        yield poll(lambda: f"{uri[:3]}-1" in self.ids)

        session.end(EndReason.UNEXPECTED, notify=False)  # the session is gone...
        keeper.client.protocol.transport.abortConnection()  # ...and the connection with it
        yield poll(lambda: "resynchronised" in [e.kind for e in self.events], deadline=20)
        kinds = ["disconnected", "resumed", "disconnected", "relogged", "resynchronised"]
        self.assertEqual([e.kind for e in self.events], kinds)
        self.assertEqual(keeper.state, State.CONNECTED)
        self.assertNotEqual(keeper.session_id, first)
        fresh = self.session(keeper)
        self.assertEqual(fresh.info.certificate.subject, "CN=agent1,O=smbridge")
        self.assertEqual(fresh.info.user_id, "agent1")
        self.assertIn(f"queue:{QUEUE}", self.events[-1].snapshots)
        yield self.publish(f"{uri[:3]}-2")
        yield poll(lambda: f"{uri[:3]}-2" in self.ids)
        yield keeper.logoff()
        self.assertTrue(keeper.ended)

    def test_tls_keeper_resumes_and_relogs_by_certificate(self) -> Any:
        """Over tls://: logon, resume and the fresh logon are all by the client certificate."""
        return self.story(f"tls://127.0.0.1:{self.site.client_port}")

    def test_wss_keeper_resumes_and_relogs_by_certificate(self) -> Any:
        """Over wss:// (the tunnel asks for the certificate too): the same story."""
        return self.story(f"wss://127.0.0.1:{self.site.wss_port}/cic1/session")

    @defer.inlineCallbacks
    def test_cli_keep_with_a_certificate(self) -> Any:
        """``smbridge client --keep --cert --key`` logs on by certificate and resumes a drop."""
        files = self.certs.clients["agent1"]
        args = [f"tls://127.0.0.1:{self.site.client_port}", "--cert", str(files.cert),
                "--key", str(files.key), "--ca", str(self.certs.ca), "--keep",
                "--watch", f"queue:{QUEUE}"]  # fmt: skip
        client = spawn_client(self, reactor, args, self.work)
        proc, transport, printed = client.proc, client.transport, client.printed
        yield poll(lambda: printed(f"queue {QUEUE}:"), deadline=30)
        (session,) = list(self.site.bridge.registry)
        self.assertEqual(session.info.certificate.subject, "CN=agent1,O=smbridge")
        session.peer.close()  # the bridge drops the connection; the session lingers
        yield poll(lambda: printed("resumed session"), deadline=30)
        transport.signalProcess("TERM")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.err)
        yield poll(lambda: not list(self.site.bridge.registry))
