"""Table 8 resource URIs built for a session (pure, property-tested)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smbridge.errors import BadRequest
from smbridge.resources import Origin
from smbridge.tunnel.route import parse_alias_map
from smbridge.tunnel.uris import KINDS, ServerNames, TableEight, resource_path

ALIASES, _ = parse_alias_map("ICServer1234|IC&ossm1|edge1")
TUNNEL = Origin("wss", "https://proxy.example.com/extra/path", "edge1", "edge1")
DIRECT = Origin("tls")


def provider(cic: str | None = "ICServer1234", aliases=ALIASES, **ports: int) -> TableEight:
    return TableEight(lambda: ServerNames(cic, aliases), "cic-host.corp", ports)


def test_every_table_8_kind_for_a_tunnel_session() -> None:
    """A tunnel session's resources are under its base URI and the CIC server's alias."""
    resources = provider().for_session(TUNNEL)
    base = "https://proxy.example.com/extra/path/IC"
    assert resources == {
        "base": "https://proxy.example.com/extra/path",
        "server": "IC",
        "http": f"{base}/http/",
        "httpsecure": f"{base}/httpsecure/",
        "recorder": f"{base}/recorder/",
        "recordersecure": f"{base}/recordersecure/",
        "dialer": f"{base}/dialer/",
        "dialersecure": f"{base}/dialersecure/",
        "reporting": f"{base}/reporting/",
    }
    assert "ICServer1234" not in str(resources)


def test_private_name_only_without_an_alias() -> None:
    """With no alias for the CIC server its name is used, as the note says."""
    uri = provider(aliases=parse_alias_map("")[0]).uri(TUNNEL, "http", "a.png")
    assert uri == "https://proxy.example.com/extra/path/ICServer1234/http/a.png"


def test_before_registration_the_dialed_alias_is_used() -> None:
    """Until the CIC name is known, URIs use the alias the client dialed."""
    assert provider(cic=None, aliases=parse_alias_map("")[0]).uri(TUNNEL, "http", "x") == (
        "https://proxy.example.com/extra/path/edge1/http/x"
    )


def test_direct_session_points_at_the_cic_ports() -> None:
    """A TLS session's URIs go straight to the CIC server's Table 8 ports, by its alias."""
    p = provider(httpsecure=18019)
    assert p.uri(DIRECT, "httpsecure", "/status-icons/Away.png") == (
        "https://IC:18019/status-icons/Away.png"
    )
    assert p.uri(DIRECT, "recorder", "r") == "http://IC:8106/r"
    no_alias = TableEight(lambda: ServerNames("cic1", parse_alias_map("")[0]), "::1")
    assert no_alias.uri(DIRECT, "dialersecure", "d") == "https://[::1]:8122/d"
    assert no_alias.for_session(DIRECT)["base"] is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("status icons/Do Not Disturb.png", "status%20icons/Do%20Not%20Disturb.png"),
        ("status%20icons/Away.png", "status%20icons/Away.png"),
        ("/a//b/", "a/b"),
        ("a%2Fb", "a%2Fb"),
        ("50%", "50%25"),
        ("q?x=1&y=a b", "q?x=1&y=a%20b"),
        ("", ""),
    ],
)
def test_resource_path_encoding(path: str, expected: str) -> None:
    """Paths are encoded once: existing escapes stay, text is escaped, empty segments drop."""
    assert resource_path(path) == expected


@pytest.mark.parametrize("path", ["../etc/passwd", "a/./b", "a/%2e%2e/b", "a\r\nb", "x" * 3000])
def test_bad_resource_paths(path: str) -> None:
    """Dot segments, control characters and over-long paths are bad requests."""
    with pytest.raises(BadRequest):
        resource_path(path)


def test_unknown_kind() -> None:
    """A kind outside Table 8 is a bad request that lists the kinds."""
    with pytest.raises(BadRequest, match="unknown resource kind 'ftp'; one of http"):
        provider().uri(TUNNEL, "ftp", "x")


@given(st.sampled_from(sorted(KINDS)), st.text(max_size=80))
def test_built_uris_stay_under_their_kind_root(kind: str, path: str) -> None:
    """Any accepted path yields a URI under its kind's root, with no dot segment and no space."""
    p = provider()
    try:
        uri = p.uri(TUNNEL, kind, path)
    except BadRequest:
        return
    root = p.roots(TUNNEL)[kind]
    assert uri.startswith(root)
    parts = urlsplit(uri)
    segments = parts.path.split("/")
    assert all(unquote(s) not in (".", "..") for s in segments)
    assert not any(c.isspace() or ord(c) < 33 or ord(c) > 126 for c in uri)
