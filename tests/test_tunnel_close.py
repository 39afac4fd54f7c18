"""The tunnel's closing handshake seen from a raw socket (RFC 6455 §5.5.1, §7.1.7).

A blocking socket client (in a thread, so the in-process bridge keeps running) writes
hand-made WebSocket frames and reads until the end of the stream, answering the
bridge's close as a well-behaved client does. Each case checks the close frame's
bytes and code arrive, that nothing sent before the close is lost, and that the TCP
connection ends with a FIN (``recv`` gives ``b""``), not a reset.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c
from smbridge.config import TunnelSettings
from smbridge.testing import decode_all, poll, start_site

pytestmark = pytest.mark.integration
ALIAS_MAP = {"SM HTTPS URL Base Map": "cic1|IC&sm1|edge1"}
TEXT, BINARY, CLOSE, PING = 1, 2, 8, 9
CLOSE_TIMEOUT = 4.0


def client_frame(payload: bytes, opcode: int = BINARY, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    key = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + struct.pack(">H", n)
    else:
        head = bytes((first, 0x80 | 127)) + struct.pack(">Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_frame(code: int | None, reason: bytes = b"") -> bytes:
    body = b"" if code is None else struct.pack(">H", code) + reason
    return client_frame(body, CLOSE)


@dataclass
class Ending:
    """What the client saw: the server's frames in order, and how the stream ended."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    end: str = ""  # "fin", "reset" or "timeout"
    seconds: float = 0.0  # from the last write to the end of the stream

    def close_code(self) -> int | None:
        closes = [payload for opcode, payload in self.frames if opcode == CLOSE]
        assert len(closes) == 1, f"expected one close frame, got {self.frames}"
        return struct.unpack(">H", closes[0][:2])[0] if closes[0] else None

    def messages(self) -> list[Any]:
        """The binary messages before the close, decoded as bridge frames."""
        out = []
        for opcode, payload in self.frames:
            if opcode == CLOSE:
                break
            if opcode == BINARY:
                out.extend(decode_all(payload))
        return out


class RawWebSocket:
    """A blocking WebSocket client that speaks in hand-made frames."""

    def __init__(
        self, port: int, path: str, ca: Path | None = None, receive_buffer: int = 0
    ) -> None:
        raw = socket.socket()
        if receive_buffer:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", port))
        if ca is not None:
            ctx = ssl.create_default_context(cafile=str(ca))
            raw = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock = raw
        self.sock.settimeout(10)
        self.buf = b""
        self.frames: list[tuple[int, bytes]] = []
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nININ-Client-Type: raw-test\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed during the handshake: {self.buf!r}")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _take(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        assert not buf[1] & 0x80, "server frames are not masked"
        n, head = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, head = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, head = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < head + n:
            return None
        self.buf = buf[head + n :]
        return buf[0] & 0x0F, buf[head : head + n]

    def read_until(self, count: int) -> list[tuple[int, bytes]]:
        """Read until the server has sent ``count`` non-ping frames in all."""
        while len([f for f in self.frames if f[0] != PING]) < count:
            frame = self._take()
            if frame is None:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"stream ended after {self.frames}")
                self.buf += chunk
            else:
                self.frames.append(frame)
        return self.frames

    def finish(self, reply_close: bool = True) -> Ending:
        """Read to the end of the stream, answering the server's close with one."""
        started = time.monotonic()
        ending = Ending(self.frames)
        answered = any(op == CLOSE for op, _ in self.frames)
        try:
            while True:
                frame = self._take()
                if frame is not None:
                    self.frames.append(frame)
                    if frame[0] == CLOSE and reply_close and not answered:
                        answered = True
                        self.sock.sendall(client_frame(frame[1][:2], CLOSE))
                    continue
                chunk = self.sock.recv(65536)
                if not chunk:
                    ending.end = "fin"
                    break
                self.buf += chunk
        except ConnectionResetError:
            ending.end = "reset"
        except TimeoutError:
            ending.end = "timeout"
        ending.seconds = time.monotonic() - started
        self.sock.close()
        return ending


def request(message: tuple[int, int], rid: int, body: dict[str, Any] | None = None) -> bytes:
    return encode(Kind.REQUEST, *message, rid, body or {})


class CloseHandshake(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.site = yield start_site(
            reactor,
            Path(tempfile.mkdtemp(prefix="smbridge-close-")),
            ws_port=0,
            wss_port=0,
            parameters=ALIAS_MAP,
            tunnel=TunnelSettings(ping_interval=0, close_timeout=CLOSE_TIMEOUT),
        )
        self.addCleanup(self.site.stop)

    def exchange(self, scenario: Any, wss: bool = False) -> defer.Deferred[Ending]:
        """Run ``scenario(ws) -> Ending`` in a thread against the ws (or wss) port."""

        def go() -> Ending:
            if wss:
                ws = RawWebSocket(self.site.wss_port, "/IC/session", self.site.pki.ca)
            else:
                ws = RawWebSocket(self.site.ws_port, "/IC/session")
            result: Ending = scenario(ws)
            return result

        return threads.deferToThread(go)

    def assert_clean(self, ending: Ending, code: int) -> None:
        self.assertEqual((ending.close_code(), ending.end), (code, "fin"), ending)
        self.assertLess(ending.seconds, CLOSE_TIMEOUT - 1, ending)

    @defer.inlineCallbacks
    def test_text_message_gets_1003_and_a_fin(self) -> Any:
        """A text message is answered by a close frame with 1003, then a FIN."""

        def scenario(ws: RawWebSocket) -> Ending:
            ws.send(client_frame(b"hello", TEXT))
            return ws.finish()

        for wss in (False, True):
            ending = yield self.exchange(scenario, wss)
            self.assert_clean(ending, 1003)

    @defer.inlineCallbacks
    def test_text_message_and_close_in_one_write(self) -> Any:
        """A text message with the client's close in the same read still gets 1003 and a FIN."""

        def scenario(ws: RawWebSocket) -> Ending:
            ws.send(client_frame(b"hello", TEXT) + close_frame(1000))
            return ws.finish(reply_close=False)

        ending = yield self.exchange(scenario)
        self.assert_clean(ending, 1003)

    @defer.inlineCallbacks
    def test_bad_frame_gets_the_error_then_1008_and_a_fin(self) -> Any:
        """A frame the codec rejects is answered bad-frame, then close 1008, then a FIN."""

        def scenario(ws: RawWebSocket) -> Ending:
            ws.send(client_frame(b"\x00\x00\x00\x0a\x09" + b"\x00" * 9))  # version 9
            return ws.finish()

        for wss in (False, True):
            ending = yield self.exchange(scenario, wss)
            self.assert_clean(ending, 1008)
            (error,) = ending.messages()
            self.assertEqual(error.parsed()["code"], "bad-frame")

    @defer.inlineCallbacks
    def test_bad_frame_and_close_in_one_write(self) -> Any:
        """A bad frame with the client's close behind it: bad-frame, 1008 and a FIN all arrive."""

        def scenario(ws: RawWebSocket) -> Ending:
            ws.send(client_frame(b"\x00\x00\x00\x0a\x09" + b"\x00" * 9) + close_frame(1000))
            return ws.finish(reply_close=False)

        ending = yield self.exchange(scenario)
        self.assert_clean(ending, 1008)
        (error,) = ending.messages()
        self.assertEqual(error.parsed()["code"], "bad-frame")

    @defer.inlineCallbacks
    def test_oversized_message_gets_1009_and_a_fin(self) -> Any:
        """A message over the size limit is answered with close 1009, then a FIN."""
        size = self.site.bridge.config.max_frame + 5

        def scenario(ws: RawWebSocket) -> Ending:
            ws.send(client_frame(b"\x00" * size))
            return ws.finish()

        for wss in (False, True):
            ending = yield self.exchange(scenario, wss)
            self.assert_clean(ending, 1009)

    @defer.inlineCallbacks
    def test_invalid_close_frames_are_answered_with_a_close_and_a_fin(self) -> Any:
        """A close with a reserved code, or a reason that is not UTF-8, gets 1002 or 1007
        at once, then a FIN (not a reset after the close timeout)."""
        cases = [(close_frame(999), 1002), (close_frame(1000, b"\xff\xfe"), 1007)]
        for frame, expected in cases:

            def scenario(ws: RawWebSocket, frame: bytes = frame) -> Ending:
                ws.send(frame)
                return ws.finish(reply_close=False)

            ending = yield self.exchange(scenario)
            self.assert_clean(ending, expected)

    @defer.inlineCallbacks
    def test_request_and_close_in_one_write(self) -> Any:
        """A request with the client's close behind it in one write is answered, then the close
        is echoed, then a FIN: over ws and wss."""

        def scenario(ws: RawWebSocket) -> Ending:
            ws.send(client_frame(request(c.GET_VERSION, 7)) + close_frame(1000))
            return ws.finish(reply_close=False)

        for wss in (False, True):
            ending = yield self.exchange(scenario, wss)
            self.assert_clean(ending, 1000)
            (reply,) = ending.messages()
            self.assertEqual((reply.kind, reply.request_id), (Kind.RESPONSE, 7))

    @defer.inlineCallbacks
    def test_destroy_session_and_close_in_one_write_gets_its_answer(self) -> Any:
        """A browser's ``ws.send(DestroySession); ws.close()``: the answer comes before the
        close frame, and the session is gone."""
        logon = {
            "user": "agent1",
            "password": "demo",
            "clientId": "raw",
            "clientApp": "raw",
            "clientVersion": "1",
        }

        def scenario(ws: RawWebSocket) -> Ending:
            ws.send(client_frame(request(c.CREATE_SESSION, 1, logon)))
            ws.read_until(1)
            ws.send(client_frame(request(c.DESTROY_SESSION, 2)) + close_frame(1000))
            return ws.finish(reply_close=False)

        for wss in (False, True):
            ending = yield self.exchange(scenario, wss)
            self.assert_clean(ending, 1000)
            replies = [(f.kind, f.request_id) for f in ending.messages()]
            self.assertEqual(replies, [(Kind.RESPONSE, 1), (Kind.RESPONSE, 2)])
            self.assertEqual(len(self.site.bridge.registry), 0)

    @defer.inlineCallbacks
    def test_client_that_never_answers_is_aborted_after_the_close_timeout(self) -> Any:
        """A client that never answers the bridge's close still receives the close frame and
        is cut after the close timeout (bounded, not held forever)."""

        def scenario(ws: RawWebSocket) -> Ending:
            ws.send(client_frame(b"hello", TEXT))
            ws.read_until(1)
            return ws.finish(reply_close=False)

        ending = yield self.exchange(scenario)
        self.assertEqual(ending.close_code(), 1003)
        self.assertIn(ending.end, ("fin", "reset"))
        self.assertLess(ending.seconds, CLOSE_TIMEOUT + 3)

    @defer.inlineCallbacks
    def test_client_that_stops_reading_is_aborted_after_the_close_timeout(self) -> Any:
        """A client that closes but never reads what is owed is aborted once the close
        timeout has passed, not held open for ever by an orderly close that cannot finish."""
        connections = self.site.bridge.tunnel.factories["ws"].app.connections
        requests = client_frame(request(c.GET_VERSION, 1) * 20000) + close_frame(1000)
        ws = yield threads.deferToThread(
            RawWebSocket, self.site.ws_port, "/IC/session", receive_buffer=4096
        )
        (conn,) = connections
        # Small buffers both ways, so the owed replies cannot all sit in the kernel.
        conn.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        yield threads.deferToThread(ws.send, requests)
        started = time.monotonic()
        yield poll(lambda: not connections, deadline=CLOSE_TIMEOUT + 5)
        self.assertGreater(time.monotonic() - started, CLOSE_TIMEOUT - 1)
        ending = yield threads.deferToThread(ws.finish, False)
        self.assertEqual(ending.end, "reset")
