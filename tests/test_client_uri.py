"""Bridge URI parsing (smbridge.client.uri)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smbridge.client.uri import BridgeAddress, parse_bridge_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("tls://bridge.example.com", BridgeAddress("tls", "bridge.example.com", 3952)),
        ("tls://bridge:4000", BridgeAddress("tls", "bridge", 4000)),
        ("TLS://Bridge.Example.COM/", BridgeAddress("tls", "bridge.example.com", 3952)),
        ("tcp://10.0.0.5", BridgeAddress("tcp", "10.0.0.5", 3952)),
        ("tls://[::1]:3953", BridgeAddress("tls", "::1", 3953)),
        ("tls://[2001:DB8:0:0::1]", BridgeAddress("tls", "2001:db8::1", 3952)),
        ("ws://proxy", BridgeAddress("ws", "proxy", 8951)),
        ("wss://proxy/cic/CIC1/session", BridgeAddress("wss", "proxy", 8952, "/cic/CIC1/session")),
        ("wss://[::1]:9443/a/session?x=1", BridgeAddress("wss", "::1", 9443, "/a/session?x=1")),
    ],
)
def test_valid_uris(uri: str, expected: BridgeAddress) -> None:
    """Each scheme gets its default port, IPv6 loses its brackets and ws keeps its path."""
    assert parse_bridge_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("bridge:3952", "has no scheme"),
        ("http://bridge", "unsupported scheme 'http://'"),
        ("tls://", "has no host"),
        ("tls://:3952", "has no host"),
        ("tls://bridge:", "is not a number"),
        ("tls://bridge:http", "is not a number"),
        ("tls://bridge:0", "outside 1..65535"),
        ("tls://bridge:70000", "outside 1..65535"),
        ("tls://::1", "must be in brackets"),
        ("tls://[::1", "unclosed '['"),
        ("tls://[bridge]:1", "is not an IPv6 address"),
        ("tls://[::1]x", "unexpected 'x'"),
        ("tls://user@bridge", "user information"),
        ("tls://bridge/session", "take no path"),
        ("tls://bad_host-.example", "not a valid host name"),
        ("tls://two words", "not a valid host name"),
        ("wss://proxy/s#frag", "#fragment"),
    ],
)
def test_invalid_uris(uri: str, fragment: str) -> None:
    """Bad URIs raise ValueError whose message names the problem."""
    with pytest.raises(ValueError, match=None) as info:
        parse_bridge_uri(uri)
    assert fragment in str(info.value)


def test_address_properties() -> None:
    """``tls`` is true for encrypted schemes and ``str`` rebuilds a URI with brackets."""
    address = parse_bridge_uri("wss://[::1]/x/session")
    assert (address.tls, address.websocket) == (True, True)
    assert str(address) == "wss://[::1]:8952/x/session"
    assert parse_bridge_uri("tcp://h").tls is False


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: ipaddress.IPv6Address(a).compressed)
_paths = st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True), max_size=3).map(
    lambda parts: "".join("/" + p for p in parts) + "/session"
)


@given(
    scheme=st.sampled_from(["tls", "tcp", "ws", "wss"]),
    host=st.one_of(_hostnames, _ipv4, _ipv6),
    port=st.integers(1, 65535),
    path=_paths,
)
def test_round_trip(scheme: str, host: str, port: int, path: str) -> None:
    """Formatting an address and parsing it back gives the same address."""
    address = BridgeAddress(scheme, host, port, path if scheme in ("ws", "wss") else "")
    assert parse_bridge_uri(str(address)) == address


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    """Any string either parses to a port in range or raises ValueError, never anything else."""
    try:
        address = parse_bridge_uri(text)
    except ValueError as e:
        assert str(e)
    else:
        assert 1 <= address.port <= 65535 and address.host


@given(st.sampled_from(["tls", "tcp", "ws", "wss"]), _hostnames)
def test_default_ports(scheme: str, host: str) -> None:
    """Without a port each scheme uses its documented default."""
    defaults = {"tls": 3952, "tcp": 3952, "ws": 8951, "wss": 8952}
    assert parse_bridge_uri(f"{scheme}://{host}").port == defaults[scheme]
