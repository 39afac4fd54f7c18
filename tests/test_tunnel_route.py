"""Session URI decoding and the SM HTTPS URL Base Map alias map (pure, property-tested)."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smbridge.tunnel.route import (
    MAX_TARGET,
    AliasMap,
    KnownServers,
    Refusal,
    Route,
    SessionPath,
    client_base,
    decode,
    encode_path,
    parse_alias_map,
    percent_decode,
    split_session_path,
)

ALIASES, _ = parse_alias_map("ICServer1234|IC&ossm1|edge1")
KNOWN = KnownServers.of(["ossm1", "ossm1.corp.example", "ICServer1234"], ALIASES)
HEADERS = {"host": "proxy.example.com", "inin-client-type": "IceLib"}


def decide(target: str, headers: dict[str, str] | None = None, require: bool = True):
    return decode(target, HEADERS if headers is None else headers, "wss", KNOWN, require)


# --- the alias map --------------------------------------------------------------------
def test_alias_map_resolves_both_ways_ignoring_case() -> None:
    """Machine|alias pairs resolve machine->alias and alias->machine, case-insensitively."""
    aliases, problems = parse_alias_map(" ICServer1234 | IC & ossm1|edge1 &")
    assert problems == []
    assert aliases.alias_of("icserver1234") == "IC"
    assert aliases.machine_of("ic") == "ICServer1234"
    assert aliases.alias_of("OSSM1") == "edge1"
    assert aliases.alias_of("other") is None and aliases.machine_of("other") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("nopipe", "expected Machine|alias"),
        ("a|b|c", "expected Machine|alias"),
        ("a|", "names may hold"),
        ("a|b c", "names may hold"),
        ("a|x&a|y", "already has an alias"),
        ("a|x&b|x", "alias x is already used"),
        ("a|b&b|c", "both a machine and an alias"),
        ("b|c&a|b", "both a machine and an alias"),
    ],
)
def test_alias_map_skips_bad_entries_and_says_why(text: str, problem: str) -> None:
    """Malformed or ambiguous entries are skipped with a reason; the first entry wins."""
    aliases, problems = parse_alias_map(text)
    assert len(problems) == 1 and problem in problems[0]
    assert all(aliases.machine_of(a) is not None for a in aliases.by_alias)


def test_empty_alias_map() -> None:
    """No parameter gives an empty map and no problems."""
    assert parse_alias_map(None) == (AliasMap(), [])
    assert parse_alias_map("  & ") == (AliasMap(), [])


@given(st.text(max_size=200))
def test_alias_map_never_raises_and_stays_unambiguous(text: str) -> None:
    """Any text parses; every alias maps back to a machine whose alias it is."""
    aliases, problems = parse_alias_map(text)
    assert isinstance(problems, list)
    for alias, machine in aliases.by_alias.items():
        assert aliases.alias_of(machine) is not None
        assert aliases.alias_of(machine).lower() == alias  # type: ignore[union-attr]


# --- decoding -----------------------------------------------------------------------
def test_alias_with_extra_path() -> None:
    """The last two segments route; the rest, with scheme and host, is the base URI."""
    route = decide("/extra/path/IC/session")
    assert route == Route(
        "https://proxy.example.com/extra/path", "IC", "ICServer1234", "IC", "IceLib"
    )


@pytest.mark.parametrize(
    "target",
    ["/IC/session", "/ic/SESSION/", "//IC//Session", "/IC/session?x=1", "/IC/session/?a"],
)
def test_session_segment_any_case_and_trailing_slash(target: str) -> None:
    """``session`` matches in any case, with one trailing slash or a query; empty segments drop."""
    route = decide(target)
    assert isinstance(route, Route)
    assert (route.base_uri, route.machine, route.alias) == (
        "https://proxy.example.com",
        "ICServer1234",
        "IC",
    )


def test_private_name_maps_to_its_alias() -> None:
    """Dialing a machine's private name still gives its public alias for URIs."""
    route = decide("/ICServer1234/session")
    assert isinstance(route, Route)
    assert (route.server, route.machine, route.alias) == ("ICServer1234", "ICServer1234", "IC")


def test_bridge_names_without_alias() -> None:
    """The bridge's FQDN is served; a name without an alias has none."""
    route = decide("/ossm1.corp.example/session")
    assert isinstance(route, Route) and route.alias is None


@pytest.mark.parametrize(
    ("target", "status", "words"),
    [
        ("/IC/sessions", 404, "not a session path"),
        ("/session", 404, "not a session path"),
        ("/", 404, "not a session path"),
        ("/nobody/session", 404, "unknown server 'nobody'"),
        ("/IC%2Fsession", 404, "not a session path"),
        ("/a/../IC/session", 400, "dot segments"),
        ("/a/%2e%2E/IC/session", 400, "dot segments"),
        ("/./IC/session", 400, "dot segments"),
        ("/a%zz/IC/session", 400, "percent-encoding"),
        ("/a%ff/IC/session", 400, "not UTF-8"),
        ("/a%0d%0aX/IC/session", 400, "control characters"),
        ("/a b/IC/session", 400, "must be percent-encoded"),
        ("/caf\u00e9/IC/session", 400, "must be percent-encoded"),
        ("IC/session", 400, "starting with /"),
        ("/" + "a/" * 70 + "IC/session", 414, "segments"),
        ("/" + "a" * MAX_TARGET + "/IC/session", 414, "longer than"),
    ],
)
def test_refusals(target: str, status: int, words: str) -> None:
    """Malformed, wrong and unknown paths are refused with a status and a reason."""
    refusal = decide(target)
    assert isinstance(refusal, Refusal)
    assert refusal.status == status
    assert words in refusal.reason


def test_alias_of_another_machine_is_unknown() -> None:
    """An alias that names a machine this bridge does not serve is refused (404)."""
    aliases, _ = parse_alias_map("elsewhere|other")
    known = KnownServers.of(["ossm1"], aliases)
    refusal = decode("/other/session", HEADERS, "wss", known)
    assert refusal == Refusal(404, "unknown server 'other'")


def test_client_type_required_by_default() -> None:
    """Without ININ-Client-Type the handshake is refused 403 unless the check is off."""
    assert decide("/IC/session", {"host": "p"}) == Refusal(403, "ININ-Client-Type header required")
    route = decide("/IC/session", {"host": "p"}, require=False)
    assert isinstance(route, Route) and route.client_type is None


def test_client_type_from_query_for_browsers() -> None:
    """A browser, which cannot set headers, may pass the client type as a query parameter."""
    route = decide("/IC/session?inin_client_type=Web%20Client", {"host": "p"})
    assert isinstance(route, Route) and route.client_type == "Web Client"
    assert decide("/IC/session?inin_client_type=", {"host": "p"}).status == 403  # type: ignore[union-attr]


def test_cic_unknown_before_the_link_comes_up() -> None:
    """Before registration only the bridge's own names are served; others get 503."""
    known = KnownServers.of(["ossm1"], AliasMap(), cic_known=False)
    assert decode("/IC/session", HEADERS, "wss", known).status == 503  # type: ignore[union-attr]
    assert isinstance(decode("/ossm1/session", HEADERS, "wss", known), Route)


# --- the client-facing base ---------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "scheme", "base"),
    [
        ({"host": "Bridge:8952"}, "wss", "https://bridge:8952"),
        ({"host": "bridge:8951"}, "ws", "http://bridge:8951"),
        (
            {"host": "b", "x-forwarded-proto": "https", "x-forwarded-host": "proxy"},
            "ws",
            "https://proxy",
        ),
        ({"host": "b", "x-forwarded-proto": "WSS, http"}, "ws", "https://b"),
        ({"host": "b", "x-forwarded-host": "p.example:443, inner"}, "ws", "http://p.example:443"),
        ({"host": "[::1]:8443"}, "wss", "https://[::1]:8443"),
    ],
)
def test_client_base(headers: dict[str, str], scheme: str, base: str) -> None:
    """Scheme and host come from the first forwarded entry, else the listener and Host."""
    assert client_base(headers, scheme) == base


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "b", "x-forwarded-proto": "gopher"},
        {"host": "evil.com/path"},
        {"host": "a b"},
        {"host": ""},
        {"host": "b", "x-forwarded-host": "x@y"},
        {"host": "b:99999"},
        {"host": "[nope]"},
        {"host": "a..b"},
    ],
)
def test_bad_forwarded_headers_are_refused(headers: dict[str, str]) -> None:
    """A scheme or host that would make a bad base URI is refused with 400."""
    refusal = client_base(headers, "wss")
    assert isinstance(refusal, Refusal) and refusal.status == 400


# --- properties ---------------------------------------------------------------------
segment_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12
).filter(lambda s: s not in (".", "..") and not any(0x7F <= ord(c) < 0xA0 for c in s))


@given(st.lists(segment_text, max_size=6))
def test_prefix_round_trips_through_encoding(prefix: list[str]) -> None:
    """Any prefix, encoded (``/`` inside a segment included), decodes to the same segments."""
    path = encode_path(prefix) + "/IC/session"
    decoded = split_session_path(path)
    assert decoded == SessionPath(tuple(prefix), "IC")
    route = decide(path)
    assert isinstance(route, Route)
    assert route.base_uri == "https://proxy.example.com" + encode_path(prefix)


@given(st.lists(segment_text, max_size=4), st.sampled_from(["/", "//", "/./", "/../"]))
def test_base_uri_never_climbs_or_holds_raw_specials(prefix: list[str], joint: str) -> None:
    """A decoded base URI holds no dot segment, no space, no control character, no ``%2F`` loss."""
    route = decide(encode_path(prefix) + joint + "IC/session")
    if isinstance(route, Route):
        path = route.base_uri.removeprefix("https://proxy.example.com")
        assert "/./" not in path + "/" and "/../" not in path + "/"
        assert all(33 <= ord(c) < 127 for c in path)
        assert decode(path + "/IC/session", HEADERS, "wss", KNOWN) == route
    else:
        assert joint in ("/./", "/../") and route.status == 400


@given(st.text(max_size=300))
def test_any_target_gets_a_route_or_a_clean_refusal(target: str) -> None:
    """Whatever the target, decoding never raises, and a refusal's reason is one printable line."""
    result = decide(target)
    if isinstance(result, Refusal):
        assert result.status in (400, 403, 404, 414, 503)
        assert result.reason and all(32 <= ord(c) < 127 for c in result.reason)
        assert len(result.reason) <= 200
    else:
        assert result.machine in ("ICServer1234", "ossm1", "ossm1.corp.example")


@given(st.text(alphabet=string.printable, max_size=40))
def test_percent_decode_inverts_quote(text: str) -> None:
    """Decoding a fully quoted segment gives the text back (or a refusal for control chars)."""
    result = percent_decode(quote(text, safe=""))
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        assert isinstance(result, Refusal)
    else:
        assert result == text


@given(st.integers(min_value=MAX_TARGET + 1, max_value=MAX_TARGET * 4))
def test_over_long_targets_are_refused(length: int) -> None:
    """Any target over the limit is refused 414 before anything else is looked at."""
    target = ("/" + "x" * length)[:length]
    assert decide(target, {}) == Refusal(414, f"request target longer than {MAX_TARGET} bytes")
