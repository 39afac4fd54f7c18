"""NotifierService on real loopback sockets: the control API over HTTP and the TLS link."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import treq
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from smbridge import pki
from smbridge.codec.catalog import LINK_AUTHENTICATE, LINK_REGISTER, LINK_SUBSCRIBE, QUEUE_CHANGED
from smbridge.codec.frames import Decoder, Frame, Kind, encode
from smbridge.notifier.demo import demo_site
from smbridge.notifier.service import NotifierService
from smbridge.testing import SAMPLE_REGISTRATION, http_json

SITE = demo_site()
REGISTER = SAMPLE_REGISTRATION


class FrameClient(Protocol):
    """A raw link client: sends requests, hands back answers and notifications as they arrive."""

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.answers: dict[int, Deferred[Frame]] = {}
        self.events: list[Frame] = []
        self.event_waiters: list[Deferred[Frame]] = []
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            assert isinstance(frame, Frame)
            if frame.kind == Kind.NOTIFICATION:
                if self.event_waiters:
                    self.event_waiters.pop(0).callback(frame)
                else:
                    self.events.append(frame)
            else:
                self.answers.pop(frame.request_id).callback(frame)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.lost.callback(None)

    def request(self, msg: tuple[int, int], rid: int, body: dict[str, Any]) -> Deferred[Frame]:
        d: Deferred[Frame] = Deferred()
        self.answers[rid] = d
        self.transport.write(encode(Kind.REQUEST, *msg, rid, body))  # type: ignore[union-attr]
        return d

    def next_event(self) -> Deferred[Frame]:
        d: Deferred[Frame] = Deferred()
        if self.events:
            d.callback(self.events.pop(0))
        else:
            self.event_waiters.append(d)
        return d


class ServiceCase(TestCase):
    """Starts a NotifierService on 127.0.0.1:0 (traffic off) and stops it afterwards."""

    tls = False

    @inlineCallbacks
    def setUp(self) -> Any:
        # Not self.mktemp(): under pytest it would write into the working directory.
        work = Path(tempfile.mkdtemp(prefix="smbridge-notifier-"))
        self.addCleanup(shutil.rmtree, work, ignore_errors=True)
        self.pki = pki.ensure_site_pki(work)
        if self.tls:
            link = SSL4ServerEndpoint(
                reactor,
                0,
                pki.server_options(self.pki.notifier, self.pki.ca),
                interface="127.0.0.1",
            )
        else:
            link = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.service = NotifierService(
            SITE,
            reactor=reactor,
            link_endpoint=link,
            control_endpoint=TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
        )
        self.service.traffic.rate = 0.0
        self.service.startService()
        self.addCleanup(self.service.stopService)
        yield self.service.when_listening()
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)

    def url(self, path: str) -> str:
        assert self.service.control_port is not None
        return f"http://127.0.0.1:{self.service.control_port.getHost().port}{path}"

    @inlineCallbacks
    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = yield treq.request(method, self.url(path), data=data, pool=self.pool)
        content = yield response.json()
        return response.code, content


class ControlAPITests(ServiceCase):
    @inlineCallbacks
    def test_state(self) -> Any:
        """GET /api/state reports role, cic, site, topics with subscriber counts and traffic."""
        code, state = yield self.call("GET", "/api/state")
        self.assertEqual(code, 200)
        self.assertEqual(
            (state["role"], state["cic"]["name"], state["site"]), ("primary", "cic1", "demo")
        )
        self.assertEqual(state["topics"]["queue:Sales"], {"subscribers": 0, "items": 0})
        self.assertEqual(state["bridges"], [])
        self.assertEqual(state["sessions"], [])
        self.assertEqual(state["traffic"]["callsPerSecond"], 0.0)

    @inlineCallbacks
    def test_publish_applies_and_counts(self) -> Any:
        """POST /api/publish applies a QueueChanged and answers how many subscriptions got it."""
        body = {
            "objectType": 173,
            "eventId": 3,
            "topic": "queue:Billing",
            "payload": {"added": [{"id": "x1", "state": "Offering"}]},
        }
        code, answer = yield self.call("POST", "/api/publish", body)
        self.assertEqual((code, answer), (200, {"delivered": 0}))
        self.assertEqual(
            self.service.notifier.queue_items("Billing"), [{"id": "x1", "state": "Offering"}]
        )

    @inlineCallbacks
    def test_publish_repeat_sends_the_event_that_many_times(self) -> Any:
        """``repeat`` publishes the event N times (a benchmark's backlog); 0 or too many: a 400."""
        events: list[str] = []
        fan_out = self.service.notifier._fan_out

        def counted(topic: str, *rest: Any) -> int:
            if topic == "queue:Billing":
                events.append(rest[-1]["changed"][0]["id"])
            return fan_out(topic, *rest)  # type: ignore[arg-type]

        self.service.notifier._fan_out = counted  # type: ignore[method-assign]
        body = {
            "objectType": 173,
            "eventId": 3,
            "topic": "queue:Billing",
            "payload": {"changed": [{"id": "x1", "state": "Offering"}]},
            "repeat": 3,
        }
        code, answer = yield self.call("POST", "/api/publish", body)
        self.assertEqual((code, answer, events), (200, {"delivered": 0, "events": 3}, ["x1"] * 3))
        for bad in (0, 100_001, "3", True):
            code, answer = yield self.call("POST", "/api/publish", {**body, "repeat": bad})
            self.assertEqual(
                (code, answer), (400, {"error": "repeat must be an integer in 1..100000"})
            )
        self.assertEqual(len(events), 3)

    @inlineCallbacks
    def test_traffic_rate(self) -> Any:
        """POST /api/traffic sets the rate and answers the settings; a negative rate is a 400."""
        code, answer = yield self.call("POST", "/api/traffic", {"callsPerSecond": 2.5})
        self.assertEqual((code, answer["callsPerSecond"], answer["seed"]), (200, 2.5, 0))
        self.assertEqual(self.service.traffic.rate, 2.5)
        self.service.traffic.set_rate(0)
        code, answer = yield self.call("POST", "/api/traffic", {"callsPerSecond": -1})
        self.assertEqual((code, answer), (400, {"error": "callsPerSecond must be a number >= 0"}))

    @inlineCallbacks
    def test_errors_are_json(self) -> Any:
        """Unknown paths, wrong methods, bad JSON and unknown topics give JSON errors and codes."""
        results = []
        for method, path, body, raw in [
            ("GET", "/api/nope", None, None),
            ("POST", "/api/state", {}, None),
            ("GET", "/api/publish", None, None),
            ("POST", "/api/publish", None, b"{not json"),
            ("POST", "/api/publish", None, b"[1]"),
            (
                "POST",
                "/api/publish",
                {"objectType": 173, "eventId": 0, "topic": "queue:Sales"},
                None,
            ),
            (
                "POST",
                "/api/publish",
                {"objectType": 173, "eventId": 3, "topic": "queue:Nope"},
                None,
            ),
            (
                "POST",
                "/api/publish",
                {
                    "objectType": 173,
                    "eventId": 3,
                    "topic": "queue:Sales",
                    "payload": {"removed": "x"},
                },
                None,
            ),
        ]:
            code, content = yield self.call(method, path, body, raw)
            results.append((code, sorted(content)))
        self.assertEqual([c for c, _ in results], [404, 405, 405, 400, 400, 400, 404, 400])
        self.assertTrue(all(keys == ["error"] for _, keys in results))


class ControlAPIParametersAndTrafficTests(ServiceCase):
    @inlineCallbacks
    def test_parameters_set_removed_and_shown_in_state(self) -> Any:
        """POST /api/parameters sets and removes parameters, answers them all; state shows them."""
        watcher = _Watcher()
        self.service.notifier.subscribe("parameters", watcher, 5)
        code, answer = yield http_json(
            reactor,
            "POST",
            self.url("/api/parameters"),
            {"RestrictUserVisibility": "Yes", "TransferDialogDirectories": None},
        )
        self.assertEqual(code, 200)
        self.assertEqual(answer["parameters"]["RestrictUserVisibility"], "Yes")
        self.assertNotIn("TransferDialogDirectories", answer["parameters"])
        (event,) = watcher.frames
        self.assertEqual((event.object_type, event.event_id, event.request_id), (200, 8, 5))
        self.assertEqual(
            event.parsed()["parameters"],
            {"RestrictUserVisibility": "Yes", "TransferDialogDirectories": None},
        )
        self.assertIsInstance(event.parsed()["at"], float)
        code, state = yield http_json(reactor, "GET", self.url("/api/state"))
        self.assertEqual(state["parameters"], answer["parameters"])

    @inlineCallbacks
    def test_bad_parameters_are_400_and_change_nothing(self) -> Any:
        """Empty names, non-string values, an empty body or a non-object are 400 with a reason."""
        before = self.service.notifier.parameters
        results = []
        for body in [{"": "x"}, {"A": 1}, {"A": "ok", "B": ["x"]}, {}, ["A"]]:
            code, answer = yield http_json(reactor, "POST", self.url("/api/parameters"), body)
            results.append((code, answer["error"]))
        self.assertEqual(
            results,
            [
                (400, "parameter names must be non-empty strings"),
                (400, "parameter 'A': the value must be a string or null to remove it"),
                (400, "parameter 'B': the value must be a string or null to remove it"),
                (400, 'give at least one parameter: {"name": "value" or null}'),
                (400, "the body must be a JSON object"),
            ],
        )
        self.assertEqual(self.service.notifier.parameters, before)

    @inlineCallbacks
    def test_traffic_settings_all_or_nothing(self) -> Any:
        """POST /api/traffic changes several settings at once; one bad value keeps the old ones."""
        body = {"callsPerSecond": 0, "businessCallsPerSecond": 0, "handleSeconds": 30, "seed": 9}
        code, answer = yield http_json(reactor, "POST", self.url("/api/traffic"), body)
        self.assertEqual(code, 200)
        self.assertEqual(
            answer,
            {
                "callsPerSecond": 0.0,
                "businessCallsPerSecond": 0.0,
                "handleSeconds": 30.0,
                "followUpSeconds": 2.0,
                "maxQueueLength": 50,
                "seed": 9,
            },
        )
        bad = {"handleSeconds": 5, "seed": "nine"}
        code, answer = yield http_json(reactor, "POST", self.url("/api/traffic"), bad)
        self.assertEqual((code, answer), (400, {"error": "seed must be an integer"}))
        self.assertEqual(self.service.traffic.settings()["handleSeconds"], 30.0)
        code, state = yield http_json(reactor, "GET", self.url("/api/state"))
        self.assertEqual((state["traffic"]["seed"], state["traffic"]["running"]), (9, True))


class _Watcher:
    """A subscriber that keeps the frames it is sent."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def send_event(self, sub_id: int, frame: bytes) -> None:
        (f,) = Decoder().feed(frame)
        assert isinstance(f, Frame)
        self.frames.append(f)


class TLSLinkTests(ServiceCase):
    tls = True

    def connect(self, identity: Path | None) -> Deferred[FrameClient]:
        assert self.service.link_port is not None
        port = self.service.link_port.getHost().port
        endpoint = wrapClientTLS(
            pki.client_options("localhost", self.pki.ca, identity),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )
        return connectProtocol(endpoint, FrameClient())

    @inlineCallbacks
    def test_register_authenticate_subscribe_and_receive(self) -> Any:
        """A bridge with a client certificate registers, logs on and gets a published event."""
        client = yield self.connect(self.pki.bridge_client)
        self.addCleanup(lambda: (client.transport.loseConnection(), client.lost)[1])
        reg = yield client.request(LINK_REGISTER, 1, REGISTER)
        self.assertEqual((reg.kind, reg.parsed()["cic"]["name"]), (Kind.RESPONSE, "cic1"))
        auth = yield client.request(LINK_AUTHENTICATE, 2, {"user": "agent1", "password": "demo"})
        self.assertEqual(auth.parsed()["user"]["id"], "agent1")
        sub = yield client.request(LINK_SUBSCRIBE, 3, {"topic": "queue:Sales", "sub": 42})
        self.assertEqual(sub.parsed(), {"snapshot": {"queue": "Sales", "interactions": []}})

        code, answer = yield self.call(
            "POST",
            "/api/publish",
            {
                "objectType": 173,
                "eventId": 3,
                "topic": "queue:Sales",
                "payload": {"added": [{"id": "c9", "type": "call", "state": "Offering"}]},
            },
        )
        self.assertEqual((code, answer), (200, {"delivered": 1}))
        event = yield client.next_event()
        self.assertEqual(
            (event.object_type, event.event_id, event.request_id), (*QUEUE_CHANGED, 42)
        )
        self.assertEqual(event.parsed()["added"][0]["id"], "c9")

        code, state = yield self.call("GET", "/api/state")
        self.assertEqual([b["name"] for b in state["bridges"]], ["bridge1"])
        self.assertTrue(state["bridges"][0]["peer"].startswith("127.0.0.1:"))
        self.assertEqual(state["topics"]["queue:Sales"]["subscribers"], 1)

    @inlineCallbacks
    def test_client_without_certificate_is_refused(self) -> Any:
        """A TLS client without a client certificate is refused by the handshake, unanswered."""
        client = yield self.connect(None)
        answered: list[Frame] = []
        client.request(LINK_REGISTER, 1, REGISTER).addBoth(answered.append)
        yield client.lost
        assert client.reason is not None
        self.assertIsInstance(client.reason.value, SSL.Error)
        self.assertEqual(answered, [])
        self.assertEqual(self.service.notifier.bridges, {})
