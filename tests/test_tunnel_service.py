"""The WebSocket tunnel over real loopback sockets: real bridge, real Notifier, real TLS."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from smbridge import pki
from smbridge.client import ClientError, connect
from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c
from smbridge.config import TunnelSettings
from smbridge.testing import decode_all, http_json, poll, start_site
from smbridge.transports.batch import WriteBatcher
from smbridge.transports.connection import ClientConnectionFactory
from smbridge.tunnel.tunnel import BridgeNames, TunnelService, frame_header

pytestmark = pytest.mark.integration
ALIAS_MAP = {"SM HTTPS URL Base Map": "cic1|IC&sm1|edge1"}


class RawClient(WebSocketClientProtocol):
    """A WebSocket client that records every message, ping and the close code."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []
        self.pings = 0
        self.opened: defer.Deferred[RawClient] = defer.Deferred()
        self.closed: defer.Deferred[tuple[bool, int | None, str | None]] = defer.Deferred()

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(payload)

    def onPing(self, payload: bytes) -> None:
        self.pings += 1
        super().onPing(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(AssertionError(f"not opened: {reason}"))
        self.closed.callback((wasClean, code, reason))

    def frames(self) -> list[Any]:
        return [decode_all(m) for m in self.messages]


def raw_connect(url: str, port: int, headers: dict[str, str] | None = None) -> defer.Deferred:
    factory = WebSocketClientFactory(
        url, headers={"ININ-Client-Type": "test"} if headers is None else headers
    )
    factory.protocol = RawClient
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return endpoint.connect(factory).addCallback(lambda p: p.opened)


class Tunnel(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-tunnel-")),
            ws_port=0,
            wss_port=0,
            parameters=ALIAS_MAP,
            tunnel=TunnelSettings(ping_interval=1, ping_timeout=5, open_timeout=2),
            prelogon_max_frame=1 << 20,  # a 64-bit-length frame before logon (below)
        )
        self.addCleanup(self.site.stop)
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )

    def ws_url(self, path: str = "/extra/path/IC/session") -> str:
        return f"ws://127.0.0.1:{self.site.ws_port}{path}"

    @defer.inlineCallbacks
    def test_wss_session_behaves_like_tls(self):
        """Over wss a client logs on, watches a queue and gets its events, as over TLS."""
        client = yield connect(
            reactor,
            f"wss://127.0.0.1:{self.site.wss_port}/extra/path/IC/session",
            ca=self.site.pki.ca,
        )
        reply = yield client.logon("agent1", "demo")
        self.assertTrue(reply["sessionId"].startswith("sm1-"))
        self.assertEqual(
            reply["resources"]["httpsecure"],
            (f"https://127.0.0.1:{self.site.wss_port}/extra/path/IC/httpsecure/"),
        )
        (session,) = list(self.site.bridge.registry)
        self.assertEqual(
            (session.origin.transport, session.origin.base_uri, session.origin.alias),
            ("wss", f"https://127.0.0.1:{self.site.wss_port}/extra/path", "IC"),
        )
        events = []
        client.add_listener(lambda name, frame: events.append((name, frame.parsed())))
        snapshot = yield client.watch_queue("Sales")
        self.assertEqual(snapshot["queue"], "Sales")
        yield self.site.publish_queue(reactor, "Sales", [{"id": "call-1"}])
        yield poll(lambda: any(name == "QueueChanged" for name, _ in events))
        uri = yield client.get_resource_uri("httpsecure", "status icons/Away.png")
        self.assertEqual(
            uri,
            f"https://127.0.0.1:{self.site.wss_port}/extra/path/IC/httpsecure/status%20icons/Away.png",
        )
        yield client.logoff()
        self.assertEqual(len(self.site.bridge.registry), 0)

    @defer.inlineCallbacks
    def test_one_whole_frame_per_message_whatever_the_input_split(self):
        """Frames batched in one message or split across two each come back one per message."""
        ws = yield raw_connect(self.ws_url(), self.site.ws_port)
        requests = b"".join(encode(Kind.REQUEST, *c.GET_VERSION, rid, {}) for rid in (1, 2, 3))
        ws.sendMessage(requests[:5], isBinary=True)  # a frame split across messages
        ws.sendMessage(requests[5:], isBinary=True)  # ... and the rest batched in one
        yield poll(lambda: len(ws.messages) == 3)
        frames = ws.frames()
        self.assertEqual([len(f) for f in frames], [1, 1, 1])
        self.assertEqual([f[0].request_id for f in frames], [1, 2, 3])
        self.assertEqual(frames[0][0].parsed()["server"], "smbridge")
        ws.sendClose(1000)
        yield ws.closed

    @defer.inlineCallbacks
    def test_common_and_unusual_frames_mix_in_one_read(self):
        """Binary frames, a ping, a fragmented message and a 64-bit-length frame in one write
        are all understood: the fast path and Autobahn's parser take turns."""
        ws = yield raw_connect(self.ws_url(), self.site.ws_port)
        pongs = []
        ws.onPong = pongs.append
        key = b"\x11\x22\x33\x44"

        def frame(payload: bytes, opcode: int = 2, fin: bool = True) -> bytes:
            n = len(payload)
            first = (0x80 if fin else 0) | opcode
            if n < 126:
                head = bytes((first, 0x80 | n))
            elif n < 65536:
                head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
            else:
                head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
            return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

        def request(rid: int, body: dict) -> bytes:
            return encode(Kind.REQUEST, *c.GET_VERSION, rid, body)

        second = request(2, {})
        big = request(4, {"pad": "x" * 70000})
        data = (
            frame(request(1, {}))
            + frame(b"ping!", opcode=9)
            + frame(second[:7], fin=False)
            + frame(second[7:], opcode=0)
            + frame(request(3, {}))
            + frame(big)
            + frame(request(5, {}))
        )
        ws.transport.write(data)
        yield poll(lambda: len(ws.messages) == 5 and pongs)
        self.assertEqual([f[0].request_id for f in ws.frames()], [1, 2, 3, 4, 5])
        self.assertEqual(pongs, [b"ping!"])
        ws.sendClose(1000)
        yield ws.closed

    @defer.inlineCallbacks
    def test_text_message_closes_with_1003(self):
        """A text message closes the connection with code 1003."""
        ws = yield raw_connect(self.ws_url(), self.site.ws_port)
        ws.sendMessage(b"hello", isBinary=False)
        was_clean, code, _ = yield ws.closed
        self.assertEqual((was_clean, code), (True, 1003))

    @defer.inlineCallbacks
    def test_bad_frame_gets_an_error_then_1008(self):
        """A frame the codec rejects is answered bad-frame, then the socket closes (1008)."""
        ws = yield raw_connect(self.ws_url(), self.site.ws_port)
        ws.sendMessage(b"\x00\x00\x00\x0a\x09" + b"\x00" * 9, isBinary=True)  # version 9
        _, code, _ = yield ws.closed
        self.assertEqual(code, 1008)
        (frames,) = ws.frames()
        self.assertEqual(frames[0].parsed()["code"], "bad-frame")

    @defer.inlineCallbacks
    def test_message_over_the_size_limit_closes_with_1009(self):
        """A message larger than the largest frame (plus its length field) closes with 1009."""
        ws = yield raw_connect(self.ws_url(), self.site.ws_port)
        ws.sendMessage(b"\x00" * (self.site.bridge.config.max_frame + 5), isBinary=True)
        _, code, _ = yield ws.closed
        self.assertEqual(code, 1009)

    @defer.inlineCallbacks
    def test_pings_keep_an_idle_connection_alive(self):
        """The bridge pings an idle connection at its interval and the pong keeps it open."""
        ws = yield raw_connect(self.ws_url(), self.site.ws_port)
        yield poll(lambda: ws.pings >= 3, deadline=8)
        self.assertFalse(ws.closed.called)
        ws.sendClose(1000)
        yield ws.closed

    @defer.inlineCallbacks
    def test_open_handshake_timeout(self):
        """A connection that never completes its handshake is dropped after the open timeout."""
        lost: defer.Deferred[None] = defer.Deferred()

        class Silent(Protocol):
            def connectionLost(self, reason=None):
                lost.callback(None)

        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.site.ws_port), Silent())
        started = reactor.seconds()
        yield lost
        self.assertLess(reactor.seconds() - started, 5)

    @defer.inlineCallbacks
    def test_refusals_carry_status_and_reason(self):
        """Unknown server and wrong path are 404, a missing client type 403, each with a reason."""
        cases = [
            ("/extra/nobody/session", {"ININ-Client-Type": "t"}, 404, "unknown server 'nobody'"),
            (
                "/extra/IC/other",
                {"ININ-Client-Type": "t"},
                404,
                "not a session path: expected /[extra/]<Server>/session",
            ),
            ("/IC/session", {}, 403, "ININ-Client-Type header required"),
        ]
        for path, headers, status, reason in cases:
            with self.assertRaises(AssertionError):
                yield raw_connect(self.ws_url(path), self.site.ws_port, headers)
            line = yield self._status_line(path, headers)
            self.assertEqual(line, f"HTTP/1.1 {status} {reason}")

    @defer.inlineCallbacks
    def test_client_library_reports_a_refused_handshake(self):
        """The client's connect fails with handshake-refused, carrying the HTTP status."""
        with self.assertRaises(ClientError) as caught:
            yield connect(reactor, self.ws_url("/nobody/session"))
        self.assertEqual(
            (caught.exception.code, caught.exception.body["status"]), ("handshake-refused", 404)
        )
        self.assertIn("unknown server 'nobody'", str(caught.exception))

    @defer.inlineCallbacks
    def test_private_bridge_name_and_alias_both_work(self):
        """The bridge answers to its own name and to its alias; resources use the CIC alias."""
        for server in ("sm1", "EDGE1"):
            client = yield connect(reactor, self.ws_url(f"/{server}/session"))
            reply = yield client.logon("agent2", "demo")
            self.assertEqual(reply["resources"]["server"], "IC")
            self.assertEqual(reply["resources"]["base"], f"http://127.0.0.1:{self.site.ws_port}")
            yield client.logoff()

    @defer.inlineCallbacks
    def test_shutdown_tells_tunnel_sessions(self):
        """Stopping the bridge sends SessionTerminated(shutdown) and closes the WebSocket."""
        client = yield connect(reactor, self.ws_url())
        yield client.logon("agent3", "demo")
        reasons = []
        client.add_listener(lambda name, frame: reasons.append(frame.parsed().get("reason")))
        yield self.site.bridge.stopService()
        yield client.closed
        self.assertEqual(reasons, ["shutdown"])

    @defer.inlineCallbacks
    def _status_line(self, path: str, headers: dict[str, str]):
        got: defer.Deferred[bytes] = defer.Deferred()

        class Raw(Protocol):
            buf = b""

            def connectionMade(self):
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                self.transport.write(
                    (
                        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        f"Sec-WebSocket-Version: 13\r\n{head}\r\n"
                    ).encode()
                )

            def dataReceived(self, data):
                self.buf += data

            def connectionLost(self, reason=None):
                got.callback(self.buf)

        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.site.ws_port), Raw())
        data = yield got
        return data.split(b"\r\n")[0].decode()


class WssRaw(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_wss_listener_speaks_tls_with_the_bridge_certificate(self):
        """The wss port presents the bridge's certificate; a WebSocket opens over it."""
        site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-wss-")),
            wss_port=0,
            parameters=ALIAS_MAP,
        )
        self.addCleanup(site.stop)
        self.assertIsNone(site.bridge.tunnel.ws)
        factory = WebSocketClientFactory(
            f"wss://localhost:{site.wss_port}/IC/session", headers={"ININ-Client-Type": "t"}
        )
        factory.protocol = RawClient
        endpoint = wrapClientTLS(
            pki.client_options("localhost", site.pki.ca),
            TCP4ClientEndpoint(reactor, "127.0.0.1", site.wss_port),
        )
        ws = yield endpoint.connect(factory)
        yield ws.opened
        ws.sendMessage(encode(Kind.REQUEST, *c.GET_VERSION, 9, {}), isBinary=True)
        yield poll(lambda: ws.messages)
        self.assertEqual(ws.frames()[0][0].request_id, 9)
        ws.sendClose(1000)
        yield ws.closed


class Units(SynchronousTestCase):
    def test_frame_header_lengths(self):
        """Headers use the 7-bit, 16-bit and 64-bit length forms at their boundaries."""
        self.assertEqual(frame_header(125), b"\x82\x7d")
        self.assertEqual(frame_header(126), b"\x82\x7e\x00\x7e")
        self.assertEqual(frame_header(65535), b"\x82\x7e\xff\xff")
        self.assertEqual(frame_header(65536), b"\x82\x7f" + (65536).to_bytes(8, "big"))

    def test_nvx_is_reported_and_logged_at_start(self):
        """The tunnel service records whether Autobahn's NVX is in use and logs it at start."""
        import autobahn.websocket

        from smbridge.service import server_endpoint

        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = MemoryReactorClock()
        app = ClientConnectionFactory(None, WriteBatcher(clock))  # type: ignore[arg-type]
        names = BridgeNames(lambda: None, dict, ("sm1",))
        service = TunnelService(
            app, names, TunnelSettings(), clock, server_endpoint(clock, 0, "127.0.0.1"), None
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(service.uses_nvx, autobahn.websocket.USES_NVX)
        self.assertTrue(service.uses_nvx, "this installation should run with NVX")
        (event,) = [e for e in observer if e.get("event") == "tunnel.nvx"]
        self.assertEqual(event["uses_nvx"], service.uses_nvx)
        self.assertEqual([p[0] for p in clock.tcpServers], [0])
