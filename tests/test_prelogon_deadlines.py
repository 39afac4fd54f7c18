"""Deadlines and the frame bound before logon (transports/prelogon.py), with a Clock."""

from __future__ import annotations

import struct
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from smbridge import pki
from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c
from smbridge.counters import Counters
from smbridge.testing import RouterHarness, decode_all
from smbridge.transports.connection import ClientConnection, ClientConnectionFactory
from smbridge.transports.listener import SniffingFactory, SniffingProtocol
from smbridge.transports.prelogon import Deadline, PrelogonLimits

PEER = IPv4Address("TCP", "192.0.2.7", 40000)


@cache
def tls_options() -> Any:
    """The listener's TLS options, from certificates minted once for this module."""
    files = pki.ensure_site_pki(Path(tempfile.mkdtemp(prefix="smbridge-prelogon-")))
    return pki.server_options(files.bridge)


class TcpTransport(StringTransport):
    """A StringTransport that takes the TCP options the listener sets."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def setTcpKeepAlive(self, enabled: int) -> None:
        pass


class DeadlineCore(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.counters = Counters()
        self.aborted: list[float] = []
        self.limits = PrelogonLimits(handshake=10, upgrade=5, logon=30)

    def deadline(self, stage: str = "handshake") -> Deadline:
        return Deadline(
            self.clock,
            self.limits,
            self.counters,
            lambda: self.aborted.append(self.clock.seconds()),
            stage,
        )

    def test_missed_stage_aborts_and_counts_its_reason(self) -> None:
        """A connection still in its handshake at 10 s is aborted and counted handshake-timeout."""
        self.deadline()
        self.clock.advance(9.9)
        self.assertEqual(self.aborted, [])
        self.clock.advance(0.1)
        self.assertEqual(self.aborted, [10.0])
        self.assertEqual(self.counters.get("connections_closed", reason="handshake-timeout"), 1)

    def test_each_stage_has_its_own_time_from_the_stage_before(self) -> None:
        """Handshake done at 4 s, upgrade at 8 s: the logon's 30 s run from 8 s."""
        d = self.deadline()
        self.clock.advance(4)
        d.enter("upgrade")
        self.clock.advance(4)
        d.enter("logon")
        self.clock.advance(29.9)
        self.assertEqual(self.aborted, [])
        self.clock.advance(0.1)
        self.assertEqual(self.aborted, [38.0])
        self.assertEqual(self.counters.get("connections_closed", reason="logon-timeout"), 1)

    def test_done_cancels_the_only_call(self) -> None:
        """Logging on cancels the deadline: nothing is pending in the clock afterwards."""
        d = self.deadline("logon")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d.done()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual((self.aborted, list(self.counters)), ([], []))


class ListenerDeadlines(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = RouterHarness()
        self.app = ClientConnectionFactory(self.h.router, self.h.batcher)
        self.app.prelogon = PrelogonLimits(handshake=10, upgrade=10, logon=30, max_frame=4096)
        self.sniff = SniffingFactory(self.app, tls_options(), allow_cleartext=True)

    def accept(self) -> tuple[SniffingProtocol, TcpTransport]:
        proto = self.sniff.buildProtocol(PEER)
        assert proto is not None
        transport = TcpTransport(peerAddress=PEER)
        proto.makeConnection(transport)
        return proto, transport

    def counted(self, reason: str) -> int:
        return self.h.router.counters.get("connections_closed", reason=reason)

    def conn(self, proto: SniffingProtocol) -> ClientConnection:
        inner: Any = proto._inner
        assert isinstance(inner, ClientConnection)
        return inner

    def test_silent_connection_closed_at_the_handshake_deadline(self) -> None:
        """A peer that sends nothing is aborted after the handshake time, and counted."""
        _, transport = self.accept()
        self.h.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.h.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counted("handshake-timeout"), 1)

    def test_half_client_hello_closed_at_the_handshake_deadline(self) -> None:
        """Half a TLS ClientHello (no handshake completes) is aborted at the handshake time."""
        proto, transport = self.accept()
        proto.dataReceived(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.h.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counted("handshake-timeout"), 1)

    def test_tls_done_then_silent_closed_at_the_logon_deadline(self) -> None:
        """After the TLS handshake (at 3 s) the logon time runs: closed at 33 s, logon-timeout."""
        proto, transport = self.accept()
        conn = self.app.connection("tls")
        conn.makeConnection(transport)
        proto._inner = conn
        assert proto._deadline is not None
        conn.before_logon(proto._deadline, PrelogonLimits())
        self.h.clock.advance(3)
        conn.handshakeCompleted()
        self.h.clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        self.h.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counted("logon-timeout"), 1)

    def test_get_version_does_not_count_as_logging_on(self) -> None:
        """GetVersion answered every 10 s still leaves the connection closed at the logon time."""
        proto, transport = self.accept()
        for rid in (1, 2, 3):
            proto.dataReceived(encode(Kind.REQUEST, *c.GET_VERSION, rid, {}))
            self.h.clock.advance(0)
            self.assertFalse(transport.disconnecting)
            self.h.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counted("logon-timeout"), 1)
        versions = [f for f in decode_all(transport.value()) if f.kind == Kind.RESPONSE]
        self.assertEqual(len(versions), 3)

    def test_logon_cancels_the_deadline_and_lifts_the_frame_bound(self) -> None:
        """After CreateSession succeeds the connection stays past the deadline and takes
        frames up to --max-frame again."""
        proto, transport = self.accept()
        conn = self.logon(proto)
        self.assertIsNotNone(conn.session)
        self.assertEqual(conn.decoder.max_frame, self.app.max_frame)
        self.assertIsNone(conn.prelogon)
        self.h.clock.advance(300)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(
            list(
                self.h.router.counters.get("connections_closed", reason=r)
                for r in ("handshake-timeout", "logon-timeout")
            ),
            [0, 0],
        )

    def logon(self, proto: SniffingProtocol) -> ClientConnection:
        proto.dataReceived(
            encode(Kind.REQUEST, *c.CREATE_SESSION, 1, {"user": "agent1", "password": "demo"})
        )
        (auth,) = self.h.upstream()
        self.h.notifier.answer(
            auth, {"user": {"id": "agent1"}, "station": None, "location": "Indianapolis"}
        )
        for frame in self.h.upstream():
            if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
                self.h.serve(frame, {"user": "agent1", "interactions": []})
        self.h.clock.advance(0)
        return self.conn(proto)

    def test_large_frame_before_logon_refused_when_its_length_is_read(self) -> None:
        """A 1 MiB frame declared before logon is bad-frame and closed once its header is in,
        with nothing of its payload buffered."""
        proto, transport = self.accept()
        header = struct.pack(">IBBHHI", 1 << 20, 1, 1, 168, 1, 9)
        proto.dataReceived(header + b"{")
        self.h.clock.advance(0)
        (error,) = decode_all(transport.value())
        body = error.parsed()
        self.assertEqual((error.request_id, body["code"]), (9, "bad-frame"))
        self.assertIn("before logon a frame may have at most 4096 bytes", body["message"])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.conn(proto).decoder.buffered, 0)
        self.assertEqual(self.counted("prelogon-frame-too-large"), 1)

    def test_large_frame_refused_byte_by_byte_at_its_length(self) -> None:
        """Fed one byte at a time, a too-large length is refused at its fourth byte."""
        proto, transport = self.accept()
        header = struct.pack(">IBBHHI", 1 << 20, 1, 1, 168, 1, 9)
        fed = 0
        while not transport.disconnecting:
            proto.dataReceived(header[fed : fed + 1])
            fed += 1
        self.assertEqual(fed, 4)
        self.h.clock.advance(0)
        (error,) = decode_all(transport.value())
        self.assertEqual(error.parsed()["code"], "bad-frame")
        self.assertEqual(self.counted("prelogon-frame-too-large"), 1)

    def test_large_frame_after_logon_is_taken(self) -> None:
        """After logon a 100 KB request is decoded and answered (not bad-frame)."""
        proto, transport = self.accept()
        self.logon(proto)
        transport.clear()
        proto.dataReceived(encode(Kind.REQUEST, *c.GET_VERSION, 7, {"pad": "x" * 100_000}))
        self.h.clock.advance(0)
        (reply,) = decode_all(transport.value())
        self.assertEqual((reply.kind, reply.request_id), (Kind.RESPONSE, 7))

    def test_a_resumed_session_ends_the_deadline_too(self) -> None:
        """Whatever attaches a session (ResumeSession sets it the same way) ends the deadline."""
        proto, transport = self.accept()
        proto.dataReceived(encode(Kind.REQUEST, *c.GET_VERSION, 1, {}))
        conn = self.conn(proto)
        self.h.clock.advance(0)
        conn.session = object()  # type: ignore[assignment]  # as Resumer._take does
        self.assertIsNone(conn.prelogon)
        conn.session = None  # logged off again: the connection is not a stranger any more
        self.h.clock.advance(100)
        self.assertFalse(transport.disconnecting)

    def test_no_limits_no_deadline(self) -> None:
        """A factory without prelogon limits (unit fakes, benches) runs no deadline."""
        self.app.prelogon = None
        proto, transport = self.accept()
        self.assertIsNone(proto._deadline)
        self.h.clock.advance(1000)
        self.assertFalse(transport.disconnecting)


def parse(work: Path, *args: str) -> Any:
    from smbridge.tap import Options

    options = Options()
    options.parseOptions(["--demo", "--work-path", str(work), *args])
    return options.config


def test_defaults_reach_the_service(tmp_path: Path) -> None:
    """By default: 10 s handshake, 10 s upgrade, 30 s logon, 64 KiB frames, 64 fds reserved."""
    from smbridge.service import BridgeService

    config = parse(tmp_path)
    bridge = BridgeService(config, Clock())
    assert bridge.connections.prelogon == PrelogonLimits(10.0, 10.0, 30.0, 65536)
    assert bridge.reserve.reserve == 64


def test_options_and_yaml_file_set_them(tmp_path: Path) -> None:
    """The options set the deadlines, the frame bound and the reserve; a YAML file too."""
    config = parse(
        tmp_path,
        "--handshake-timeout=2",
        "--upgrade-timeout=3",
        "--logon-timeout=4",
        "--prelogon-max-frame=8192",
        "--fd-reserve=100",
    )
    assert (config.handshake_timeout, config.tunnel.open_timeout, config.logon_timeout) == (
        2.0,
        3.0,
        4.0,
    )
    assert (config.prelogon_max_frame, config.fd_reserve) == (8192, 100)
    file = tmp_path / "bridge.yaml"
    file.write_text("handshake-timeout: 5\nlogon-timeout: 6\nprelogon-max-frame: 4096\n")
    config = parse(tmp_path, f"--config={file}")
    assert (config.handshake_timeout, config.logon_timeout, config.prelogon_max_frame) == (
        5.0,
        6.0,
        4096,
    )


def test_bad_values_are_refused_naming_the_option(tmp_path: Path) -> None:
    """Out-of-range deadlines, frame bounds and reserves are refused at start-up."""
    import pytest
    from twisted.python import usage

    for flag, value in (
        ("--handshake-timeout", "0"),
        ("--upgrade-timeout", "9999"),
        ("--logon-timeout", "-1"),
        ("--prelogon-max-frame", "100"),
        ("--fd-reserve", "-1"),
    ):
        with pytest.raises(usage.UsageError, match=flag):
            parse(tmp_path, f"{flag}={value}")


def test_reload_applies_them_to_the_next_stage(tmp_path: Path) -> None:
    """A reload changes the logon time and the reserve of the running bridge."""
    from smbridge.admin.reload import RUNTIME_KEYS, _apply
    from smbridge.service import BridgeService

    bridge = BridgeService(parse(tmp_path), Clock())
    new = parse(tmp_path, "--logon-timeout=7", "--fd-reserve=9", "--handshake-timeout=3")
    for field in ("logon_timeout", "fd_reserve", "handshake_timeout"):
        assert field in RUNTIME_KEYS
        _apply(bridge, field, new)
    assert bridge.connections.prelogon is not None
    assert (bridge.connections.prelogon.logon, bridge.connections.prelogon.handshake) == (7, 3)
    assert bridge.reserve.reserve == 9
