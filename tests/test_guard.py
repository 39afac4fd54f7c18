"""The connection guard: its per-source window (a Clock), its parsing, the listener over sockets."""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from smbridge.counters import Counters
from smbridge.transports.guard import (
    LOOPBACK,
    ConnectionGuard,
    host_subnets,
    own_subnets_for,
    parse_ipv6_route_table,
    parse_route_table,
    parse_subnet,
    parse_trusted_sites,
)
from smbridge.transports.listener import GuardedFactory, SniffingFactory

OWN = (ipaddress.ip_network("10.0.0.0/8"),)
ROUTES = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "eth1\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    "eth1\t0000A8C0\t0100000A\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
)
ROUTES6 = (
    "fd000000000000000000000000000000 40 " + "0" * 32 + " 00 " + "0" * 32
    + " 00000100 00000001 00000000 00000001     eth0\n"
    "fe800000000000000000000000000000 40 " + "0" * 32 + " 00 " + "0" * 32
    + " 00000100 00000002 00000000 00000001     eth0\n"
    + "0" * 32 + " 00 " + "0" * 32 + " 00 fd000000000000000000000000000001"
    " 00000400 00000003 00000000 00000003     eth0\n"
    "00000000000000000000000000000001 80 " + "0" * 32 + " 00 " + "0" * 32
    + " 00000000 00000003 00000000 80200001       lo\n"
    "ff000000000000000000000000000000 08 " + "0" * 32 + " 00 " + "0" * 32
    + " 00000100 00000003 00000000 00000001     eth0\n"
)  # fmt: skip


def guard(limit: int = 3, window: float = 3.0) -> tuple[ConnectionGuard, Clock, Counters]:
    clock, counters = Clock(), Counters()
    return ConnectionGuard(clock, OWN, limit, window, counters), clock, counters


class GuardCore(SynchronousTestCase):
    def test_limit_within_window_then_refused(self) -> None:
        """The limit+1-th connection from one untrusted source within the window is refused."""
        g, clock, counters = guard(limit=3)
        verdicts = [g.admit("192.0.2.1") for _ in range(5)]
        self.assertEqual(verdicts, [True, True, True, False, False])
        self.assertEqual(counters.get("connections_refused", reason="guard"), 2)
        self.assertEqual(g.refused, 2)

    def test_window_slides(self) -> None:
        """Once a source's oldest admission leaves the window, one more from it gets in."""
        g, clock, _ = guard(limit=2, window=3.0)
        self.assertTrue(g.admit("192.0.2.1"))
        clock.advance(1.0)
        self.assertTrue(g.admit("192.0.2.1"))
        self.assertFalse(g.admit("192.0.2.1"))
        clock.advance(2.0)  # t=3: the first admission (t=0) is out of the window
        self.assertTrue(g.admit("192.0.2.1"))
        self.assertFalse(g.admit("192.0.2.1"))
        clock.advance(1.0)  # t=4: the second (t=1) is out too
        self.assertTrue(g.admit("192.0.2.1"))

    def test_refusals_do_not_fill_the_window(self) -> None:
        """A flood of refused connections does not keep the window closed past its length."""
        g, clock, _ = guard(limit=2, window=3.0)
        g.admit("192.0.2.9")
        g.admit("192.0.2.9")
        for _ in range(29):
            clock.advance(0.1)
            self.assertFalse(g.admit("192.0.2.9"))
        clock.advance(0.1)  # t=3.0
        self.assertTrue(g.admit("192.0.2.9"))

    def test_window_is_per_source(self) -> None:
        """Each untrusted source has its own window (issue 15: one source cannot lock out all)."""
        g, _, _ = guard(limit=1)
        self.assertEqual(
            [g.admit("192.0.2.1"), g.admit("198.51.100.7"), g.admit("192.0.2.1")],
            [True, True, False],
        )

    def test_own_subnet_and_trusted_sites_bypass(self) -> None:
        """Own-subnet and BridgeHostTrustedSites addresses get in even while the window is full."""
        g, _, counters = guard(limit=1)
        g.configure({"BridgeHostTrustedSites": "192.0.2.50 | 2001:db8::5"})
        self.assertTrue(g.admit("192.0.2.1"))
        self.assertFalse(g.admit("192.0.2.1"))
        trusted = ["10.1.2.3", "10.255.0.1", "192.0.2.50", "2001:db8::5", "::ffff:10.0.0.9"]
        self.assertEqual([g.admit(a) for a in trusted], [True] * 5)
        self.assertTrue(g.admit("127.0.0.1"))  # loopback is outside the configured subnet
        self.assertFalse(g.admit("127.0.0.1"))
        self.assertEqual(counters.get("connections_refused", reason="guard"), 2)

    def test_trusted_sites_follow_the_parameter(self) -> None:
        """A parameter change replaces the trusted set; removing an address untrusts it."""
        g, _, _ = guard(limit=1)
        g.configure({"BridgeHostTrustedSites": "192.0.2.50"})
        self.assertTrue(g.is_trusted("192.0.2.50"))
        g.configure({"BridgeHostTrustedSites": "192.0.2.51"})
        self.assertEqual((g.is_trusted("192.0.2.50"), g.is_trusted("192.0.2.51")), (False, True))
        g.configure({})
        self.assertEqual(g.trusted, frozenset())

    def test_ranges_are_ignored_with_a_warning(self) -> None:
        """Entries that are not one address (ranges, CIDR, names) are ignored with a warning."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        g, _, _ = guard()
        g.configure({"BridgeHostTrustedSites": "192.0.2.1|10.0.0.1-10.0.0.9|192.0.2.0/24|host"})
        self.assertEqual(g.trusted, frozenset({ipaddress.ip_address("192.0.2.1")}))
        bad = [e["entry"] for e in logged if e.get("event") == "listener.guard_bad_entry"]
        self.assertEqual(bad, ["10.0.0.1-10.0.0.9", "192.0.2.0/24", "host"])
        g.configure({"BridgeHostTrustedSites": "192.0.2.1|10.0.0.1-10.0.0.9|192.0.2.0/24|host"})
        again = [e for e in logged if e.get("event") == "listener.guard_bad_entry"]
        self.assertEqual(len(again), 3)  # an unchanged value is not warned about again

    def test_refusals_logged_once_then_one_summary_per_window(self) -> None:
        """A source's first refusal logs at once; then one summary line per window."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        g, clock, _ = guard(limit=1, window=3.0)
        g.admit("192.0.2.1")

        def events() -> list[tuple[str, Any]]:
            return [
                (e["event"], e.get("count", e.get("peer")))
                for e in logged
                if str(e.get("event", "")).startswith("listener.guard_")
                and e["event"] != "listener.guard_trusted"
            ]

        for _ in range(100):
            g.admit("192.0.2.1")
        self.assertEqual(events(), [("listener.guard_refused", "192.0.2.1")])
        clock.advance(1.0)
        for _ in range(50):
            g.admit("192.0.2.1")
        clock.advance(2.0)  # the first window ends: one summary of the 150 refused in it
        self.assertEqual(events()[1:], [("listener.guard_summary", 150)])
        clock.advance(3.0)  # a quiet window: no line, and the guard goes back to quiet
        self.assertEqual(len(events()), 2)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10.0)
        g.admit("192.0.2.1")  # the window is free again: admitted
        g.admit("192.0.2.1")  # the next refusal is logged at once
        self.assertEqual(events()[2:], [("listener.guard_refused", "192.0.2.1")])
        g.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_non_ip_peers_and_bad_settings(self) -> None:
        """A peer without an IP address counts as untrusted; a negative limit or window 0 fail."""
        g, _, _ = guard(limit=1)
        self.assertEqual((g.admit(""), g.admit("")), (True, False))
        with self.assertRaises(ValueError):
            ConnectionGuard(Clock(), OWN, -1, 3.0)
        with self.assertRaises(ValueError):
            ConnectionGuard(Clock(), OWN, 20, 0)

    def test_limit_changed_at_run_time(self) -> None:
        """A reload may change the limit: 0 turns the guard off, a lower one applies at once."""
        g, clock, _ = guard(limit=4)
        self.assertEqual([g.admit("192.0.2.1") for _ in range(3)], [True] * 3)
        g.limit = 2
        self.assertFalse(g.admit("192.0.2.1"))
        g.limit = 0
        self.assertEqual([g.admit("192.0.2.1") for _ in range(50)], [True] * 50)
        g.limit = 1
        clock.advance(3.0)
        self.assertEqual((g.admit("192.0.2.1"), g.admit("192.0.2.1")), (True, False))


class Parsing(SynchronousTestCase):
    def test_trusted_sites(self) -> None:
        """The parameter splits on pipes, trims, skips empty entries, maps IPv4-in-IPv6."""
        good, bad = parse_trusted_sites(" 192.0.2.1 || ::ffff:192.0.2.2|fe80::1%eth0|x ")
        self.assertEqual(
            good,
            frozenset(ipaddress.ip_address(a) for a in ("192.0.2.1", "192.0.2.2", "fe80::1")),
        )
        self.assertEqual(bad, ["x"])

    def test_subnet(self) -> None:
        """--own-subnet takes ADDR/PREFIX (host bits allowed) or one address."""
        self.assertEqual(parse_subnet("10.1.2.3/8"), ipaddress.ip_network("10.0.0.0/8"))
        self.assertEqual(parse_subnet("192.0.2.7"), ipaddress.ip_network("192.0.2.7/32"))
        with self.assertRaisesRegex(ValueError, "not a subnet"):
            parse_subnet("10.0.0.0/33")

    def test_route_table_gives_connected_networks(self) -> None:
        """Connected routes (no gateway, not default) of /proc/net/route are the host's subnets."""
        self.assertEqual(
            parse_route_table(ROUTES),
            [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("10.0.0.0/16")],
        )

    def test_default_own_subnets_follow_the_interface(self) -> None:
        """All interfaces own every connected net; one address owns its own; loopback always."""
        connected = parse_route_table(ROUTES)
        self.assertEqual(own_subnets_for("", connected), (*LOOPBACK, *connected))
        self.assertEqual(
            own_subnets_for("192.0.2.5", connected),
            (*LOOPBACK, ipaddress.ip_network("192.0.2.0/24")),
        )
        self.assertEqual(own_subnets_for("127.0.0.1", connected), LOOPBACK)

    def test_ipv6_route_table_gives_connected_networks(self) -> None:
        """Connected IPv6 routes count; default, gateway, local and multicast routes do not."""
        self.assertEqual(
            parse_ipv6_route_table(ROUTES6),
            [ipaddress.ip_network("fd00::/64"), ipaddress.ip_network("fe80::/64")],
        )

    def test_host_subnets_reads_both_tables(self) -> None:
        """host_subnets reads route and ipv6_route; a missing table gives nothing, no error."""
        proc = Path(tempfile.mkdtemp(prefix="smbridge-proc-"))
        self.assertEqual(host_subnets(proc), [])
        (proc / "route").write_text(ROUTES)
        (proc / "ipv6_route").write_text(ROUTES6)
        self.assertEqual(
            [str(n) for n in host_subnets(proc)],
            ["192.0.2.0/24", "10.0.0.0/16", "fd00::/64", "fe80::/64"],
        )


class Options(SynchronousTestCase):
    def _parse(self, *args: str) -> Any:
        from smbridge.tap import Options as BridgeOptions

        options = BridgeOptions()
        work = tempfile.mkdtemp(prefix="smbridge-tap-")
        options.parseOptions(["--demo", f"--work-path={work}", *args])
        return options.config

    def test_guard_flags(self) -> None:
        """--guard-limit, --guard-window and repeatable --own-subnet reach the config."""
        config = self._parse(
            "--guard-limit=5", "--guard-window=1.5", "--own-subnet=10.0.0.0/8",
            "--own-subnet=2001:db8::/32",
        )  # fmt: skip
        self.assertEqual((config.guard_limit, config.guard_window), (5, 1.5))
        self.assertEqual(
            config.own_subnets,
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
        )
        default = self._parse()
        self.assertEqual((default.guard_limit, default.guard_window), (20, 3.0))
        self.assertIsNone(default.own_subnets)

    def test_bad_guard_flags(self) -> None:
        """A bad subnet, a negative limit or a zero window stop twistd with a message."""
        from twisted.python.usage import UsageError

        for args, message in (
            (["--own-subnet=10.0.0.0/99"], "--own-subnet: not a subnet"),
            (["--guard-limit=-1"], "--guard-limit must be 0"),
            (["--guard-window=0"], "--guard-window must be"),
        ):
            with self.assertRaisesRegex(UsageError, message):
                self._parse(*args)


class Factories(SynchronousTestCase):
    def test_refused_connection_gets_no_protocol(self) -> None:
        """buildProtocol returns None for a refused peer, so Twisted closes the socket unread."""
        g, _, _ = guard(limit=1)
        sniff = SniffingFactory.__new__(SniffingFactory)
        sniff.guard = g
        addr = IPv4Address("TCP", "192.0.2.1", 4000)
        self.assertIsNotNone(sniff.buildProtocol(addr))
        self.assertIsNone(sniff.buildProtocol(addr))
        self.assertIsNotNone(sniff.buildProtocol(IPv4Address("TCP", "10.0.0.1", 4000)))

    def test_guarded_factory_wraps_any_factory(self) -> None:
        """GuardedFactory asks the guard first, then the wrapped factory builds the protocol."""
        g, _, _ = guard(limit=1)
        wrapped = GuardedFactory(Factory.forProtocol(Protocol), g)
        addr = IPv4Address("TCP", "192.0.2.1", 4000)
        self.assertIsInstance(wrapped.buildProtocol(addr), Protocol)
        self.assertIsNone(wrapped.buildProtocol(addr))


def client_hello() -> bytes:
    """A real TLS ClientHello, as a TLS client's first flight."""
    conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    conn.set_connect_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    return conn.bio_read(65536)


class Recorder(Protocol):
    """Sends a ClientHello and records every byte the server sends back until it closes."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(client_hello())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class GuardOverSockets(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_sixth_connection_refused_before_tls(self) -> Any:
        """Limit 5, 127.0.0.1 untrusted: the 6th connection gets no ServerHello until trusted."""
        from smbridge.testing import http_json, poll, start_site

        work = Path(tempfile.mkdtemp(prefix="smbridge-guard-"))
        site = yield start_site(reactor, work, own_subnets=OWN, guard_limit=5, guard_window=600.0)
        self.addCleanup(site.stop)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", site.client_port)
        admitted = []
        for _ in range(5):
            p = yield endpoint.connect(Factory.forProtocol(Recorder))
            admitted.append(p)
        # The admitted ones get the bridge's ServerHello (a TLS handshake record).
        yield poll(lambda: all(p.received for p in admitted), deadline=20)
        self.assertEqual({p.received[:1] for p in admitted}, {b"\x16"})
        sixth = yield endpoint.connect(Factory.forProtocol(Recorder))
        yield sixth.lost
        self.assertEqual(sixth.received, b"")
        counters = site.bridge.router.counters
        self.assertEqual(counters.get("connections_refused", reason="guard"), 1)
        # Trusting 127.0.0.1 through the server parameter (no restart) lets it in again.
        url = f"{site.control_url}/api/parameters"
        code, _ = yield http_json(reactor, "POST", url, {"BridgeHostTrustedSites": "127.0.0.1"})
        self.assertEqual(code, 200)
        yield poll(lambda: site.bridge.guard.is_trusted("127.0.0.1"), deadline=20)
        seventh = yield endpoint.connect(Factory.forProtocol(Recorder))
        yield poll(lambda: seventh.received, deadline=20)
        self.assertEqual(seventh.received[:1], b"\x16")
        seventh.transport.loseConnection()
        yield seventh.lost
        for p in admitted:
            p.transport.loseConnection()
            yield p.lost

    @defer.inlineCallbacks
    def test_the_websocket_tunnel_listener_is_guarded_too(self) -> Any:
        """Limit 2 over the TLS and wss ports together: the third, on wss, gets nothing."""
        from smbridge.testing import poll, start_site

        work = Path(tempfile.mkdtemp(prefix="smbridge-guard-ws-"))
        site = yield start_site(
            reactor, work, own_subnets=OWN, guard_limit=2, guard_window=600.0, wss_port=0
        )
        self.addCleanup(site.stop)
        tls = TCP4ClientEndpoint(reactor, "127.0.0.1", site.client_port)
        wss = TCP4ClientEndpoint(reactor, "127.0.0.1", site.wss_port)
        admitted = [
            (yield tls.connect(Factory.forProtocol(Recorder))),
            (yield wss.connect(Factory.forProtocol(Recorder))),
        ]
        yield poll(lambda: all(p.received for p in admitted), deadline=20)
        self.assertEqual({p.received[:1] for p in admitted}, {b"\x16"})
        third = yield wss.connect(Factory.forProtocol(Recorder))
        yield third.lost
        self.assertEqual(third.received, b"")
        counters = site.bridge.router.counters
        self.assertEqual(counters.get("connections_refused", reason="guard"), 1)
        for p in admitted:
            p.transport.loseConnection()
            yield p.lost
