"""Resume under load over real TLS: the real bridge and Notifier, a raw client cut every 1-2 s."""

from __future__ import annotations

import random
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client.protocol import BridgeProtocol
from smbridge.codec import catalog as c
from smbridge.testing import http_json, poll, start_site

pytestmark = pytest.mark.integration

EVENTS = 120
QUEUE = "Support"


def _server_socket(conn: Any) -> socket.socket:
    """The accepted TCP socket under a bridge connection (TLS wraps it)."""
    layer = conn.transport
    for _ in range(4):
        handle = getattr(layer, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            return handle
        layer = getattr(layer, "transport", None)
    raise AssertionError("no TCP socket under the connection")


class ResumingClient:
    """A hand-made client: counts every notification it processes, resumes by hand."""

    def __init__(self, port: int, ca: Path) -> None:
        self.port = port
        self.ca = ca
        self.proto: BridgeProtocol | None = None
        self.received = 0
        self.ids: list[str] = []
        self.session: dict[str, Any] = {}
        self.resumes: list[dict[str, Any]] = []

    @defer.inlineCallbacks
    def dial(self) -> Any:
        endpoint = wrapClientTLS(
            pki.client_options("localhost", self.ca),
            HostnameEndpoint(reactor, "127.0.0.1", self.port),
        )
        proto = BridgeProtocol(tls=True)
        yield connectProtocol(endpoint, proto)
        yield proto.ready
        proto.add_listener(lambda frame, p=proto: self._note(p, frame))
        self.proto = proto
        return proto

    def _note(self, proto: BridgeProtocol, frame: Any) -> None:
        if proto is not self.proto:
            return  # a frame on a connection this client already gave up
        self.received += 1
        if (frame.object_type, frame.event_id) == c.QUEUE_CHANGED:
            self.ids.extend(item["id"] for item in frame.parsed().get("added", ()))

    def request(self, message: tuple[int, int], body: dict[str, Any]) -> Any:
        assert self.proto is not None
        return self.proto.request(*message, body)

    @defer.inlineCallbacks
    def cut_and_resume(self, while_away: Any) -> Any:
        """Abort the TCP connection (no DestroySession), run ``while_away``, dial, resume."""
        old, self.proto = self.proto, None
        assert old is not None and old.transport is not None
        old.transport.abortConnection()
        yield while_away()
        proto = yield self.dial()
        body = {
            "sessionId": self.session["sessionId"],
            "resumeToken": self.session["resumeToken"],
            "received": self.received,
        }
        d = proto.request(*c.RESUME_SESSION, body)

        def resumed(reply: dict[str, Any]) -> dict[str, Any]:
            # Synchronously, before the replayed frames behind the reply are processed.
            self.received = reply["position"]
            self.resumes.append(reply)
            return reply

        reply = yield d.addCallback(resumed)
        return reply


class ResumeUnderLoad(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        self.site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix="smbridge-resume-")))
        self.addCleanup(self.site.stop)
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )

    @defer.inlineCallbacks
    def _publish(self, n: int) -> Any:
        call = {"id": f"ev-{n:04d}", "type": "call", "state": "Offering", "workgroup": QUEUE}
        code, _ = yield self.site.publish_queue(reactor, QUEUE, [call])
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_every_event_exactly_once_in_order_across_cuts(self):
        """Events published every ~40 ms reach a client cut every 1-2 s exactly once, in order."""
        client = ResumingClient(self.site.client_port, self.site.pki.ca)
        yield client.dial()
        client.session = yield client.request(
            c.CREATE_SESSION, {"user": "agent1", "password": "demo", "clientId": "e2e"}
        )
        snapshot = yield client.request(c.WATCH_QUEUE, {"queue": QUEUE})
        (conn,) = self.site.bridge.connections.connections
        self.assertEqual(_server_socket(conn).getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        before = {i["id"] for i in snapshot["interactions"]}
        rng = random.Random(8)
        state = {"published": 0, "done": False}

        @defer.inlineCallbacks
        def publisher() -> Any:
            for n in range(EVENTS):
                yield self._publish(n)
                state["published"] = n + 1
                yield task.deferLater(reactor, 0.04, lambda: None)
            state["done"] = True

        publishing = publisher()
        session = self.site.bridge.registry.get(client.session["sessionId"])

        @defer.inlineCallbacks
        def away() -> Any:
            # Once the bridge has seen the drop, an event is sure to need replaying.
            yield poll(lambda: session.state.value == "lingering", deadline=10)
            yield self._publish(1000 + len(client.resumes))

        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        cuts = 0
        for _ in range(20):  # bounded: the publisher finishes long before
            if state["done"]:
                break
            yield task.deferLater(reactor, rng.uniform(1.0, 2.0), lambda: None)
            if state["done"]:
                break
            yield client.cut_and_resume(away)
            cuts += 1
        yield publishing
        expected = sorted(
            [f"ev-{n:04d}" for n in range(EVENTS)] + [f"ev-{1000 + n}" for n in range(cuts)]
        )
        yield poll(lambda: len(client.ids) >= EVENTS + cuts, deadline=15)
        self.assertGreaterEqual(cuts, 2)
        got = [i for i in client.ids if i not in before]
        self.assertEqual(sorted(got), expected)  # each exactly once
        ordered = [i for i in got if i < "ev-1000"]
        self.assertEqual(ordered, sorted(ordered))  # in publishing order
        replayed = [e["count"] for e in observer if e.get("event") == "session.resumed"]
        self.assertEqual(len(replayed), cuts)
        self.assertTrue(all(n >= 1 for n in replayed), replayed)
        self.assertEqual(len(client.resumes), cuts)
        self.assertTrue(all(r["resumed"] and not r["gap"] for r in client.resumes))
        self.assertEqual(client.received, session.replay.count)
        counters = self.site.bridge.router.counters
        self.assertEqual(counters.get("resumes", outcome="resumed"), cuts)
        assert client.proto is not None
        yield client.request(c.DESTROY_SESSION, {})
        self.assertIsNone(self.site.bridge.registry.get(client.session["sessionId"]))


class ResumeOverWebSocket(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_tls_session_resumes_over_the_ws_tunnel(self):
        """A session dropped on TLS resumes over ws:// and gets what it missed, in order."""
        from smbridge.client.uri import parse_bridge_uri
        from smbridge.client.ws import dial

        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-resume-ws-")), ws_port=0
        )
        self.addCleanup(site.stop)
        yield http_json(reactor, "POST", f"{site.control_url}/api/traffic", {"callsPerSecond": 0})
        client = ResumingClient(site.client_port, site.pki.ca)
        yield client.dial()
        client.session = yield client.request(
            c.CREATE_SESSION, {"user": "agent2", "password": "demo"}
        )
        yield client.request(c.WATCH_QUEUE, {"queue": QUEUE})
        session = site.bridge.registry.get(client.session["sessionId"])
        old, client.proto = client.proto, None
        assert old is not None and old.transport is not None
        old.transport.abortConnection()
        yield poll(lambda: session.state.value == "lingering", deadline=10)
        for n in range(5):
            call = {"id": f"ws-{n}", "type": "call", "state": "Offering", "workgroup": QUEUE}
            yield site.publish_queue(reactor, QUEUE, [call])
        yield poll(lambda: session.replay.count >= 5, deadline=10)
        address = parse_bridge_uri(f"ws://127.0.0.1:{site.ws_port}/cic1/session")
        proto, connecting = dial(reactor, address, ca=None, hostname=None, timeout=10)
        yield connecting
        yield proto.ready
        proto.add_listener(lambda frame, p=proto: client._note(p, frame))
        client.proto = proto
        reply = yield proto.request(
            *c.RESUME_SESSION,
            {
                "sessionId": client.session["sessionId"],
                "resumeToken": client.session["resumeToken"],
                "received": client.received,
            },
        )
        self.assertEqual((reply["resumed"], reply["gap"], reply["position"]), (True, False, 0))
        yield poll(lambda: len(client.ids) >= 5, deadline=10)
        self.assertEqual(client.ids, [f"ws-{n}" for n in range(5)])
        self.assertEqual(session.transport, "ws")
        (conn,) = site.bridge.connections.connections
        self.assertEqual(conn.kind, "ws")
        self.assertEqual(_server_socket(conn).getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 1)
        yield proto.request(*c.DESTROY_SESSION, {})
