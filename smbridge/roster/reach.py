"""Roster entries a WebSocket client can dial: each gets a ``uri`` (PROTOCOL §1, §4.4). Pure.

A roster entry names a bridge by ``fqdn`` and ``ports`` — internal addresses that a
client on the internet, which came in through the reverse proxy, cannot reach. For
such a client (its connection's :class:`~smbridge.resources.Origin` has a base URI)
every roster the bridge sends it — CreateSession and ResumeSession replies, redirect,
GetServers, RosterChanged and Migrate — carries a ``uri`` per entry:

- through a proxy (the handshake had ``X-Forwarded-Proto``/``-Host``): the session's
  base URI with the WebSocket scheme (``https`` → ``wss``, ``http`` → ``ws``), then the
  bridge's public alias from ``SM HTTPS URL Base Map`` (its name where the map has
  none), then ``session``: ``wss://proxy/[extra/]<alias>/session``;
- straight to a bridge's tunnel (no forwarded headers; tests and labs): the entry's
  own tunnel, ``<ws|wss>://<fqdn>:<ports.ws|wss>/<name>/session``, when it has one.

Clients over TLS get the roster as it is. The client library dials ``uri`` when an
entry has one (:mod:`smbridge.client.reach`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from smbridge.resources import Origin
from smbridge.tunnel.route import ALIAS_MAP_PARAMETER, AliasMap, encode_segment, parse_alias_map

AliasOf = Callable[[str], "str | None"]


def session_uri(origin: Origin, entry: Mapping[str, Any], alias_of: AliasOf) -> str | None:
    """Where a client of ``origin`` dials the bridge of ``entry``; None when it cannot."""
    name = entry.get("name")
    if origin.base_uri is None or not isinstance(name, str) or not name:
        return None
    if origin.proxied:
        scheme, sep, rest = origin.base_uri.partition("://")
        ws = "wss" if scheme == "https" else "ws"
        server = alias_of(name) or name
        return f"{ws}://{rest}/{encode_segment(server)}/session" if sep else None
    if origin.transport not in ("ws", "wss"):
        return None
    ports = entry.get("ports")
    port = ports.get(origin.transport) if isinstance(ports, Mapping) else None
    host = entry.get("fqdn") or name
    if not isinstance(port, int) or not 0 < port < 65536 or not isinstance(host, str):
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{origin.transport}://{host}:{port}/{encode_segment(name)}/session"


def with_uris(
    roster: Sequence[Any], origin: Origin, alias_of: AliasOf
) -> list[dict[str, Any]] | Sequence[Any]:
    """``roster`` for a client of ``origin``: each entry copied with its ``uri`` added.

    A client without a base URI (TLS) gets ``roster`` itself, unchanged.
    """
    if origin.base_uri is None:
        return roster
    out: list[dict[str, Any]] = []
    for entry in roster:
        if not isinstance(entry, Mapping):
            continue
        uri = session_uri(origin, entry, alias_of)
        out.append({**entry, "uri": uri} if uri is not None else dict(entry))
    return out


class Aliases:
    """The alias map of the parameters in force, parsed again only when its text changes."""

    def __init__(self, parameters: Callable[[], Mapping[str, Any]]) -> None:
        self._parameters = parameters
        self._text: str | None = None
        self._map = AliasMap()

    def __call__(self, name: str) -> str | None:
        text = ""
        for key, value in self._parameters().items():
            if key.lower() == ALIAS_MAP_PARAMETER.lower():
                text = str(value)
                break
        if text != self._text:
            self._map, _ = parse_alias_map(text)  # the tunnel logs what it skips
            self._text = text
        return self._map.alias_of(name)
