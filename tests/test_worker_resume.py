"""Cross-worker ResumeSession over real processes: two ``twistd smbridge`` workers (0/2, 1/2)
with one run directory and bridge name, different ports, and an in-process Notifier.

A client logs on at worker 0 and resumes at worker 1 (TLS and wss): worker 1 relays the
connection to worker 0 over its private Unix socket, and nothing is lost.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
import treq
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, UNIXClientEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from smbridge import pki
from smbridge.client.protocol import ClientError
from smbridge.client.session import BridgeClient, ResumeState, connect
from smbridge.codec import Frame
from smbridge.codec import catalog as c
from smbridge.testing import TwistdProcess, free_port, http_json, poll
from smbridge.transports.relay import reading_layer

QUEUE = "Sales"
# Both workers on one Notifier, which keeps one registration for the bridge with a link
# per worker (Register's worker/workers). False gives each worker a Notifier of its own:
# the relay never involves the Notifier, and the session's events come from worker 0's.
SHARED_NOTIFIER = True
UNREAD = 2  # --max-unread-seconds of the workers: a stalled client goes within seconds


class _Worker:
    def __init__(self, index: int, process: TwistdProcess, ports: dict[str, int]) -> None:
        self.index = index
        self.process = process
        self.ports = ports

    def tls(self) -> str:
        return f"tls://localhost:{self.ports['tls']}"

    def wss(self) -> str:
        return f"wss://localhost:{self.ports['wss']}/cic1/session"


@pytest.mark.integration
class WorkerResume(TestCase):
    """Two workers of one bridge; sessions resume on either."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smw-"))
        self.addCleanup(shutil.rmtree, self.work, True)  # after the processes are gone
        self.files = pki.ensure_site_pki(self.work / "pki")
        self.notifiers = []
        for _ in range(1 if SHARED_NOTIFIER else 2):
            notifier = self._notifier()
            notifier.startService()
            self.addCleanup(notifier.stopService)
            yield notifier.when_listening()
            self.notifiers.append(notifier)
        self.run_dir = self.work / "run"
        self.workers = [self._start(i) for i in range(2)]
        for worker in self.workers:
            yield worker.process.wait_for(lambda w=worker: "-> up" in w.process.output(), "link up")
        self.serial = 0

    def _notifier(self) -> Any:
        from smbridge.notifier.demo import demo_site
        from smbridge.notifier.service import NotifierService
        from smbridge.notifier.trust import CertificateTrust

        return NotifierService(
            demo_site(),
            reactor=reactor,
            trust=CertificateTrust(trusted_files=[self.files.bridge_client]),
            link_endpoint=SSL4ServerEndpoint(
                reactor,
                0,
                pki.server_options(self.files.notifier, self.files.ca),
                interface="127.0.0.1",
            ),
            control_endpoint=TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
        )

    def _start(self, index: int) -> _Worker:
        ports = {"tls": free_port(), "wss": free_port()}
        link = self.notifiers[index % len(self.notifiers)].link_port.getHost().port
        f = self.files
        args = ["smbridge", f"--notifier=127.0.0.1:{link}", "--notifier-name=localhost"]
        args += ["--name=sm1", "--fqdn=localhost", "--location=Indianapolis"]
        args += ["--interface=127.0.0.1", f"--port={ports['tls']}", "--ws-port=off"]
        args += [f"--wss-port={ports['wss']}", "--admin-port=off"]
        args += [f"--cert={f.bridge}", f"--client-cert={f.bridge_client}", f"--ca={f.ca}"]
        args += [f"--work-path={self.work / f'w{index}'}", f"--worker={index}/2"]
        args += [f"--run-dir={self.run_dir}", f"--max-unread-seconds={UNREAD}"]
        args += ["--log-level=debug"]  # the tests read the lingering line, a debug one
        (self.work / f"w{index}").mkdir()
        process = TwistdProcess(self.work, args, log_name=f"worker-{index}.log")
        self.addCleanup(process.kill)
        return _Worker(index, process, ports)

    # --- helpers ------------------------------------------------------------------------
    @defer.inlineCallbacks
    def _publish(self, count: int, pad: int = 0) -> Any:
        """Add ``count`` interactions to the queue (``pad`` bytes of note each); their ids."""
        port = self.notifiers[0].control_port.getHost().port  # worker 0's: the session's
        url = f"http://127.0.0.1:{port}/api/publish"
        ids = []
        for _ in range(count):
            self.serial += 1
            ident = f"relay-{self.serial}"
            added = [{"id": ident, "note": "x" * pad}] if pad else [{"id": ident}]
            change = {"queue": QUEUE, "added": added, "changed": [], "removed": []}
            body = {"objectType": 173, "eventId": 3, "topic": f"queue:{QUEUE}", "payload": change}
            code, _ = yield http_json(reactor, "POST", url, body)
            self.assertEqual(code, 200)
            ids.append(ident)
        return ids

    @defer.inlineCallbacks
    def _relays(self, index: int) -> Any:
        """Worker ``index``'s ``smbridge_relays_total`` by outcome (its private admin socket)."""
        path = str(self.run_dir / f"admin-{index}.sock")

        @implementer(IAgentEndpointFactory)
        class _Unix:
            def endpointForURI(self, uri: Any) -> Any:
                return UNIXClientEndpoint(reactor, path)

        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent.usingEndpointFactory(reactor, _Unix(), pool=pool)
        response = yield HTTPClient(agent).get("http://worker/metrics")
        text = yield treq.text_content(response)
        counts = {}
        for line in text.splitlines():
            if line.startswith("smbridge_relays_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                counts[outcome] = float(line.rsplit(" ", 1)[1])
        return counts

    @defer.inlineCallbacks
    def _client(self, uri: str) -> Any:
        client: BridgeClient = yield connect(reactor, uri, ca=self.files.ca)
        self.addCleanup(client.close)
        seen: list[str] = []

        def listener(name: str, frame: Frame) -> None:
            if name == "QueueChanged":
                seen.extend(i["id"] for i in frame.parsed().get("added", []))

        client.add_listener(listener)
        return client, seen

    @defer.inlineCallbacks
    def _logged_on_at_worker_0(self, user: str) -> Any:
        """A session at worker 0 watching the queue, one event received."""
        client, seen = yield self._client(self.workers[0].tls())
        reply = yield client.logon(user, "demo", client_id=f"relay-{user}")
        self.assertTrue(reply["sessionId"].startswith("sm1-w0-"), reply["sessionId"])
        yield client.watch_queue(QUEUE)
        first = yield self._publish(1)
        yield poll(lambda: seen[-1:] == first, 10)
        return client, seen

    @defer.inlineCallbacks
    def _resume_elsewhere(self, uri: str) -> Any:
        """Log on at worker 0, drop, miss 3 events, resume at ``uri`` (worker 1)."""
        old, _ = yield self._logged_on_at_worker_0("agent7")
        state = old.resume_state
        assert state is not None
        yield old.close()
        missed = yield self._publish(3)
        client, seen = yield self._client(uri)
        reply = yield client.resume(state)
        self.assertEqual((reply["resumed"], reply["gap"]), (True, False))
        self.assertEqual(reply["position"], state.received)
        yield poll(lambda: len(seen) >= 3, 10)
        self.assertEqual(seen, missed)  # exactly the missed ones, in order
        new = yield self._publish(1)
        yield poll(lambda: len(seen) >= 4, 10)
        self.assertEqual(seen, missed + new)
        self.assertEqual(client.received, state.received + 4)
        status = yield client.request(c.SET_STATUS, {"status": "Available"})  # forwarded
        self.assertIsInstance(status, dict)
        beat = yield client.heartbeat()
        self.assertIn("sessionUpdated", beat)
        self.assertEqual((yield self._relays(1)), {"relayed": 1.0})
        self.assertEqual((yield self._relays(0)), {"accepted": 1.0})
        yield client.logoff()
        for worker in self.workers:  # the session is gone from its worker, asked from both
            again, _ = yield self._client(worker.tls())
            with self.assertRaises(ClientError) as caught:
                yield again.resume(state)
            self.assertEqual(caught.exception.code, "unknown-session")

    # --- the stories --------------------------------------------------------------------
    def test_resume_at_another_worker_over_tls(self) -> Any:
        """Dropped at worker 0, resumed at worker 1 over TLS: gap false, exactly the missed
        events, then a new event, a forwarded request, a heartbeat and logout work."""
        return self._resume_elsewhere(self.workers[1].tls())

    def test_resume_at_another_worker_over_wss(self) -> Any:
        """The same through worker 1's wss tunnel: frames relayed one WebSocket message each."""
        return self._resume_elsewhere(self.workers[1].wss())

    @defer.inlineCallbacks
    def test_resume_while_attached_and_a_worker_that_does_not_exist(self) -> Any:
        """A resume at worker 1 takes the session over from its live connection at worker 0,
        which is closed, and nothing is lost. sm1-w7-... (2 workers) is unknown-session
        (no-such-worker), not relayed, and the connection goes on. run_dir is 0700, each
        worker's relay socket 0600."""
        old, _ = yield self._logged_on_at_worker_0("agent8")
        state = old.resume_state
        assert state is not None
        closed = old.closed
        client, seen = yield self._client(self.workers[1].tls())
        reply = yield client.resume(state)
        self.assertEqual((reply["gap"], reply["position"]), (False, state.received))
        yield closed
        new = yield self._publish(2)
        yield poll(lambda: len(seen) >= 2, 10)
        self.assertEqual(seen, new)
        yield client.logoff()

        client, _ = yield self._client(self.workers[1].tls())
        nowhere = ResumeState("sm1-w7-19a8f3c2d10-3f9c0a6b1d2e4f57", "x" * 32, 0)
        with self.assertRaises(ClientError) as caught:
            yield client.resume(nowhere)
        self.assertEqual(caught.exception.code, "unknown-session")
        self.assertEqual(caught.exception.body.get("reason"), "no-such-worker")
        reply = yield client.logon("agent9", "demo")
        self.assertTrue(reply["sessionId"].startswith("sm1-w1-"))
        yield client.logoff()

        self.assertEqual(stat.S_IMODE(os.stat(self.run_dir).st_mode), 0o700)
        for index in range(2):
            path = self.run_dir / f"worker-{index}.sock"
            self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    @defer.inlineCallbacks
    def test_a_slow_reader_at_the_owner_and_a_worker_that_is_down(self) -> Any:
        """A relayed client that reads nothing pauses the relay: worker 0, which holds the
        session, sees the slow reader and drops it (the session lingers); worker 1 holds
        nothing for it and closes the client. Then worker 0 is killed: a resume of its
        session at worker 1 is unknown-session (worker-down) and the connection goes on."""
        old, _ = yield self._logged_on_at_worker_0("agent10")
        state = old.resume_state
        assert state is not None
        yield old.close()
        client, _ = yield self._client(self.workers[1].tls())
        yield client.resume(state)
        closed = client.closed
        tcp = reading_layer(client.protocol.transport)
        tcp.stopReading()  # the client stops reading
        stalled = f":{tcp.getHost().port} has not read for"
        owner = self.workers[0].process
        for _ in range(60):  # 100 KB events until the owner gives up on the reader
            yield self._publish(1, pad=100_000)
            if stalled in owner.output():
                break
        yield owner.wait_for(lambda: stalled in owner.output(), "stall")
        yield owner.wait_for(lambda: "lingers for" in owner.output(), "linger")
        tcp.startReading()
        yield closed
        self.assertNotIn("has not read", self.workers[1].process.output())

        owner.kill()
        client, _ = yield self._client(self.workers[1].tls())
        with self.assertRaises(ClientError) as caught:
            yield client.resume(state)
        self.assertEqual(caught.exception.code, "unknown-session")
        self.assertEqual(caught.exception.body.get("reason"), "worker-down")
        version = yield client.get_version()
        self.assertEqual(version["server"], "smbridge")
