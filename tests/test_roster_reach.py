"""Roster entries that a tunnel client can dial: a ``uri`` built from its base URI and alias."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.testing import StringTransport

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.resources import Origin
from smbridge.roster.drain import Drainer
from smbridge.roster.reach import Aliases, session_uri, with_uris
from smbridge.testing import RouterHarness, decode_all
from smbridge.transports.connection import ClientConnection
from smbridge.tunnel.route import KnownServers, Route, decode, parse_alias_map

BASE_MAP = "sm1|edge1&sm2|edge2&cic1|IC"
PROXIED = Origin("wss", "https://proxy.example.com/extra/path", "edge1", "edge1", True)
DIRECT = Origin("wss", "https://10.0.0.41:8952", "sm1", None, False)


def entry(name: str, wss: int | None = 8952, available: bool = True) -> dict[str, Any]:
    return {"name": name, "fqdn": f"{name}.corp", "kind": "off-server",
            "location": "Indianapolis", "available": available,
            "ports": {"tls": 3952, "ws": None, "wss": wss}}  # fmt: skip


ROSTER = [entry("sm1"), entry("sm2"), entry("sm3-no-alias")]


def alias_of(name: str) -> str | None:
    return parse_alias_map(BASE_MAP)[0].alias_of(name)


def test_proxied_client_gets_the_public_base_and_alias() -> None:
    """Through a proxy: wss://proxy/extra/<alias>/session; no alias: the bridge's name."""
    uris = [e.get("uri") for e in with_uris(ROSTER, PROXIED, alias_of)]
    assert uris == [
        "wss://proxy.example.com/extra/path/edge1/session",
        "wss://proxy.example.com/extra/path/edge2/session",
        "wss://proxy.example.com/extra/path/sm3-no-alias/session",
    ]
    plain = Origin("ws", "http://proxy:8080", "edge1", "edge1", True)
    assert session_uri(plain, ROSTER[1], alias_of) == "ws://proxy:8080/edge2/session"


def test_direct_tunnel_client_gets_each_bridges_own_tunnel() -> None:
    """Straight to a bridge's tunnel: each entry's fqdn and wss port; none without the port."""
    out = with_uris([entry("sm2"), entry("sm4", wss=None)], DIRECT, alias_of)
    assert [e.get("uri") for e in out] == ["wss://sm2.corp:8952/sm2/session", None]
    assert "uri" not in out[1]


def test_tls_client_gets_the_roster_unchanged() -> None:
    """A client over TLS (no base URI) gets the very roster, without uri."""
    assert with_uris(ROSTER, Origin("tls"), alias_of) is ROSTER


def test_handshake_with_forwarded_headers_is_proxied() -> None:
    """The tunnel marks a route proxied only when X-Forwarded-Proto or -Host came with it."""
    known = KnownServers.of(["sm1"], parse_alias_map(BASE_MAP)[0])
    headers = {"host": "10.0.0.41:8952", "inin-client-type": "t"}
    direct = decode("/edge1/session", headers, "wss", known)
    forwarded = {**headers, "x-forwarded-host": "proxy", "x-forwarded-proto": "https"}
    proxied = decode("/x/edge1/session", forwarded, "wss", known)
    assert isinstance(direct, Route) and isinstance(proxied, Route)
    assert direct.origin("wss").proxied is False
    assert proxied.origin("wss") == Origin("wss", "https://proxy/x", "edge1", "edge1", True)


def test_aliases_follow_the_parameter_text() -> None:
    """The alias lookup reads the parameters in force and follows a new map at once."""
    params: dict[str, Any] = {"SM HTTPS URL Base Map": "sm2|edge2"}
    aliases = Aliases(lambda: params)
    assert aliases("SM2") == "edge2"
    params["SM HTTPS URL Base Map"] = "sm2|other"
    assert aliases("sm2") == "other"


# --- the router: every roster a tunnel client receives ----------------------------------
def tunnel_logon(h: RouterHarness, user: str) -> tuple[ClientConnection, StringTransport, Any]:
    conn, transport = h.client()
    conn.origin = PROXIED
    h.send(conn, c.CREATE_SESSION, 1, {"user": user, "password": "demo"})
    (auth,) = h.upstream()
    h.notifier.answer(auth, {"user": {"id": user}, "station": None, "location": "Indianapolis"})
    for frame in h.upstream():
        if (frame.object_type, frame.event_id) == c.LINK_SUBSCRIBE:
            h.serve(frame, {"user": user, "interactions": []})
    (reply,) = h.received(transport)
    return conn, transport, reply.parsed()


def harness() -> RouterHarness:
    h = RouterHarness(parameters={"SM HTTPS URL Base Map": BASE_MAP})
    h.connector.registered["roster"] = ROSTER
    return h


def uris(roster: list[dict[str, Any]]) -> dict[str, str | None]:
    return {e["name"]: e.get("uri") for e in roster}


def test_logon_reply_resume_and_get_servers_carry_uris() -> None:
    """CreateSession, ResumeSession and GetServers replies give a tunnel client dialable URIs."""
    h = harness()
    conn, transport, reply = tunnel_logon(h, "agent1")
    base = "wss://proxy.example.com/extra/path"
    assert uris(reply["roster"])["sm2"] == f"{base}/edge2/session"
    h.send(conn, c.GET_SERVERS, 2)
    (servers,) = h.received(transport)
    assert uris(servers.parsed()["roster"])["sm1"] == f"{base}/edge1/session"
    conn.connectionLost(None)  # type: ignore[arg-type]
    again, t2 = h.client()
    again.origin = PROXIED
    resume = {"sessionId": reply["sessionId"], "resumeToken": reply["resumeToken"], "received": 0}
    h.send(again, c.RESUME_SESSION, 3, resume)
    (resumed,) = h.received(t2)
    assert resumed.kind == Kind.RESPONSE, resumed.parsed()
    assert uris(resumed.parsed()["roster"])["sm2"] == f"{base}/edge2/session"
    _, tls, tls_reply = h.logon("agent2")
    assert all("uri" not in e for e in tls_reply["roster"])


def test_roster_changed_and_migrate_carry_uris_per_session() -> None:
    """RosterChanged and a drain's Migrate carry URIs for tunnel sessions, none for TLS ones."""
    h = harness()
    _, tunnel, _ = tunnel_logon(h, "agent1")
    _, tls, _ = h.logon("agent2")
    tunnel.clear()
    tls.clear()
    h.router.roster_changed({"roster": [*ROSTER, entry("sm5")]})
    (changed,) = h.received(tunnel)
    assert uris(changed.parsed()["roster"])["sm5"] == (
        "wss://proxy.example.com/extra/path/sm5/session"
    )
    (plain,) = h.received(tls)
    assert all("uri" not in e for e in plain.parsed()["roster"])
    Drainer(h.clock, h.router, random.Random(1)).start(0)
    h.clock.advance(0)
    (migrate,) = [
        f.parsed() for f in decode_all(tunnel.value()) if (f.object_type, f.event_id) == c.MIGRATE
    ]
    assert uris(migrate["roster"]) == {
        "sm2": "wss://proxy.example.com/extra/path/edge2/session",
        "sm3-no-alias": "wss://proxy.example.com/extra/path/sm3-no-alias/session",
        "sm5": "wss://proxy.example.com/extra/path/sm5/session",
    }
