"""What a logon no longer pays for, with the same outcome (issue 16 item 3, docs/benchmarks.md).

Each test pins that a shortcut on the logon path gives what the long way gave: the TLS
layer's interface declarations, the Notifier link's TLS, cached address parsing, the
resource URIs kept per origin, tenant limits read once, the log level filter, and the
lingering line that is not built when nothing would write it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, LogLevelFilterPredicate, LogPublisher, globalLogPublisher
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol
from zope.interface import Interface, alsoProvides, implementer, providedBy

from smbridge import logs
from smbridge.logs import AtLeast, LevelFiltering, written
from smbridge.resources import Origin
from smbridge.router.tenancy import BridgeTenancy
from smbridge.router.throttle import normalise_address, source_address
from smbridge.tenancy import TenantLimits
from smbridge.testing import RouterHarness
from smbridge.transports.guard import MAX_KNOWN_ADDRESSES, ConnectionGuard, parse_address
from smbridge.transports.resumption import TicketTLSFactory, TicketTLSProtocol
from smbridge.tunnel.route import parse_alias_map
from smbridge.tunnel.uris import MAX_MEMO, ServerNames, TableEight
from smbridge.upstream.tls import UnbufferedTLSFactory, wrap_client_tls


class _Keys:
    """A server connection creator that is never asked (the handshake is not driven)."""

    def serverConnectionForTLS(self, protocol: Any) -> Any:
        from OpenSSL import SSL

        return SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)


def _tls_over(transport: StringTransport) -> tuple[TicketTLSProtocol, Protocol]:
    from twisted.internet.interfaces import IOpenSSLServerConnectionCreator

    keys = _Keys()
    alsoProvides(keys, IOpenSSLServerConnectionCreator)
    inner = Protocol()
    tls = TicketTLSProtocol(TicketTLSFactory(keys, Factory.forProtocol(Protocol)), inner)
    tls.makeConnection(transport)
    return tls, inner


def test_tls_layer_provides_what_twisteds_own_does() -> None:
    """The client port's TLS layer declares its transport's interfaces as Twisted's would."""
    keys = _Keys()
    from twisted.internet.interfaces import IOpenSSLServerConnectionCreator

    alsoProvides(keys, IOpenSSLServerConnectionCreator)
    twisted_way = TLSMemoryBIOProtocol(TicketTLSFactory(keys, None), Protocol())
    TLSMemoryBIOProtocol.makeConnection(twisted_way, StringTransport())
    ours, inner = _tls_over(StringTransport())
    assert list(providedBy(ours)) == list(providedBy(twisted_way))
    assert inner.transport is ours and ours.connected
    second, _ = _tls_over(StringTransport())
    assert second.__provides__ is ours.__provides__  # type: ignore[attr-defined]


class IMarked(Interface):
    """An interface one transport declares for itself."""


def test_tls_layer_over_a_transport_with_its_own_declaration() -> None:
    """A transport that declares interfaces of its own is followed, not shared by others."""
    special = StringTransport()
    alsoProvides(special, IMarked)
    tls, _ = _tls_over(special)
    plain, _ = _tls_over(StringTransport())
    assert IMarked.providedBy(tls) and not IMarked.providedBy(plain)


@implementer(IStreamClientEndpoint)
class _Connecting:
    """An endpoint that connects the factory's protocol to a StringTransport at once."""

    def __init__(self) -> None:
        self.transport = StringTransport()

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(self.transport)
        return defer.succeed(protocol)


def test_link_tls_hands_back_the_link_over_plain_tls() -> None:
    """The link's endpoint fires with the link protocol, over TLS that writes at once."""
    below = _Connecting()
    endpoint = wrap_client_tls(optionsForClientTLS("notifier.example"), below)
    link = Protocol()
    connected: list[Any] = []
    endpoint.connect(Factory.forProtocol(lambda: link)).addCallback(connected.append)
    assert connected == [link]
    assert type(link.transport) is TLSMemoryBIOProtocol
    assert not isinstance(link.transport, BufferingTLSTransport)
    assert below.transport.value()[:1] == b"\x16"  # the ClientHello went out
    assert UnbufferedTLSFactory.protocol is TLSMemoryBIOProtocol


def test_address_parsing_is_cached_and_gives_the_same_answers() -> None:
    """Parsed peers are kept, bounded; the answers are those of a fresh parse."""
    assert [parse_address("::ffff:10.1.2.3"), parse_address("nope")] == [
        parse_address("10.1.2.3"),
        None,
    ]
    assert normalise_address("2001:db8::1") == normalise_address("2001:db8::2") == ("2001:db8::/64")
    assert source_address("192.0.2.7:51000") == source_address("192.0.2.7:51001") == ("192.0.2.7")
    assert parse_address.cache_info().maxsize == normalise_address.cache_info().maxsize == 4096


ALIASES, _ = parse_alias_map("ICServer1234|IC&ossm1|edge1")
TUNNEL = Origin("wss", "https://proxy.example.com/extra/path", "edge1", "edge1")


def test_resources_kept_per_origin_follow_every_change() -> None:
    """Resources kept per origin equal fresh ones, and change with the names or the host."""
    names = {"value": ServerNames("ICServer1234", ALIASES)}
    kept = TableEight(lambda: names["value"], "cic-host.corp")

    def fresh(origin: Origin) -> dict[str, Any]:
        return TableEight(lambda: names["value"], kept.direct_host).for_session(origin)

    direct = Origin("tls")
    first = kept.for_session(direct)
    first["server"] = "changed by the caller"
    assert kept.for_session(direct) == fresh(direct) and kept.for_session(TUNNEL) == fresh(TUNNEL)
    assert kept.for_session(direct)["httpsecure"] == "https://IC:8019/"
    names["value"] = ServerNames("ICServer9", parse_alias_map("")[0])  # a switchover
    assert kept.for_session(direct) == fresh(direct)
    assert kept.for_session(direct)["httpsecure"] == "https://cic-host.corp:8019/"  # no alias
    kept.direct_host = "other-host"
    names["value"] = ServerNames(None, parse_alias_map("")[0])
    assert kept.for_session(direct)["httpsecure"] == "https://other-host:8019/"
    for n in range(MAX_MEMO + 5):
        origin = Origin("wss", f"https://proxy{n}.example.com", "edge1", "edge1")
        assert kept.for_session(origin) == fresh(origin)
    assert len(kept._memo) <= MAX_MEMO


def test_tenant_limits_are_read_again_only_when_they_change() -> None:
    """The same limits in each Authenticate answer are read once; new ones at once."""
    tenancy = BridgeTenancy(lambda s: ())
    wire = {"sessions": 5, "watches": 9}
    tenancy.ticket({"tenant": {"name": "t1", "limits": dict(wire)}}, 0.0)
    first = tenancy.limits["t1"]
    tenancy.ticket({"tenant": {"name": "t1", "limits": dict(wire)}}, 1.0)
    assert tenancy.limits["t1"] is first and first == TenantLimits(sessions=5, watches=9)
    tenancy.ticket({"tenant": {"name": "t1", "limits": {"sessions": 6}}}, 2.0)
    assert tenancy.limits["t1"] == TenantLimits(sessions=6)
    tenancy.set_limits({"t1": {"sessions": 1}})  # TenantsChanged replaces them
    tenancy.ticket({"tenant": {"name": "t1", "limits": {"sessions": 6}}}, 3.0)
    assert tenancy.limits["t1"] == TenantLimits(sessions=6)


def test_level_predicate_decides_as_twisteds_does() -> None:
    """AtLeast gives LogLevelFilterPredicate's answer for every pair of levels."""
    levels = list(LogLevel.iterconstants())
    for least in levels:
        ours, twisted_way = AtLeast(least), LogLevelFilterPredicate(defaultLogLevel=least)
        for level in levels:
            event = {"log_level": level, "log_namespace": "smbridge.session.registry.X"}
            assert ours(event) == twisted_way(event)


def _lingering_events(h: RouterHarness, seen: list[dict[str, Any]]) -> list[str]:
    conn, _, _ = h.logon("agent1")
    conn.connectionLost(None)  # type: ignore[arg-type]
    return [e.get("event", "") for e in seen if e.get("event") == "session.lingering"]


def test_lingering_line_is_built_only_when_the_log_writes_debug() -> None:
    """Under --log-level info the debug line is not even emitted; at debug, or outside
    twistd, it is."""
    seen: list[dict[str, Any]] = []
    h = RouterHarness()
    assert written(LogLevel.debug)
    filtering = LevelFiltering(MultiService(), "info")
    filtering.startService()
    globalLogPublisher.addObserver(seen.append)  # added after: not behind the filter
    try:
        assert not written(LogLevel.debug) and written(LogLevel.info)
        assert _lingering_events(h, seen) == []
    finally:
        globalLogPublisher.removeObserver(seen.append)
        filtering.stopService()
    assert written(LogLevel.debug) and logs._least_written is None
    globalLogPublisher.addObserver(seen.append)
    try:
        assert _lingering_events(h, seen) == ["session.lingering"]
    finally:
        globalLogPublisher.removeObserver(seen.append)


def test_level_filtering_of_another_publisher_leaves_the_bridge_log_alone() -> None:
    """A LevelFiltering on a publisher of its own says nothing about twistd's log."""
    filtering = LevelFiltering(MultiService(), "error", publisher=LogPublisher())
    filtering.startService()
    try:
        assert written(LogLevel.debug)
    finally:
        filtering.stopService()


def test_own_subnet_answers_follow_a_new_subnet_list() -> None:
    """The guard's kept own-subnet answers are dropped when its subnets change."""
    guard = ConnectionGuard(Clock(), [ipaddress.ip_network("10.0.0.0/8")])
    assert [guard.is_trusted("10.1.2.3"), guard.is_trusted("192.0.2.1")] == [True, False]
    assert [guard.is_trusted("10.1.2.3"), guard.is_trusted("192.0.2.1")] == [True, False]
    guard.own_subnets = (ipaddress.ip_network("192.0.2.0/24"),)
    assert [guard.is_trusted("10.1.2.3"), guard.is_trusted("192.0.2.1")] == [False, True]
    for n in range(MAX_KNOWN_ADDRESSES + 3):
        guard.is_trusted(str(ipaddress.ip_address(0x0B000000 + n)))
    assert len(guard._in_own[1]) <= MAX_KNOWN_ADDRESSES
