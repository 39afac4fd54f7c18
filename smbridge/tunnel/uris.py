"""Resource URIs of the note's Table 8, built for a session. Pure: no I/O.

A session that came through the WebSocket tunnel has a client-facing base URI
(``https://proxy/extra/path``, see route.py); its resources live behind the same
proxy, under the CIC server's public name:

    <base>/<CIC alias>/http/...           -> CIC server 8018 (HTTP)
    <base>/<CIC alias>/httpsecure/...     -> CIC server 8019 (HTTPS)
    <base>/<CIC alias>/recorder/...       -> 8106,  .../recordersecure/... -> 8107
    <base>/<CIC alias>/dialer/...         -> 8121,  .../dialersecure/...   -> 8122
    <base>/<CIC alias>/reporting/...      -> 8019 (the Internet Reporting Plugin)

The alias comes from ``SM HTTPS URL Base Map``; the private machine name is used only
where the map has no alias for it. A session over the TLS listener has no proxy in
front: its URIs point straight at the CIC server's ports (``https://<alias or
host>:8019/...``), the host being the alias of the CIC server, else the host the
bridge dials for the Notifier.

:class:`TableEight` implements :class:`smbridge.resources.ResourceProvider`; it reads
the CIC name and the alias map through a callable at each use, so a new Register
answer (after a reconnect or a switchover) takes effect at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from smbridge.errors import BadRequest
from smbridge.resources import Origin
from smbridge.tunnel.route import AliasMap, encode_segment


@dataclass(frozen=True)
class ResourceKind:
    port: int  # the internal port behind the proxy (and of direct URIs)
    secure: bool  # HTTPS on that port


KINDS: Mapping[str, ResourceKind] = {
    "http": ResourceKind(8018, False),
    "httpsecure": ResourceKind(8019, True),
    "recorder": ResourceKind(8106, False),
    "recordersecure": ResourceKind(8107, True),
    "dialer": ResourceKind(8121, False),
    "dialersecure": ResourceKind(8122, True),
    "reporting": ResourceKind(8019, True),
}
MAX_RESOURCE_PATH = 2048
_ESCAPE = re.compile(r"(%[0-9A-Fa-f]{2})")
_SAFE = "!$&'()*+,;=:@"


@dataclass(frozen=True)
class ServerNames:
    """What the Notifier told the bridge: its CIC server's name and the alias map."""

    cic: str | None
    aliases: AliasMap


def resource_path(path: str) -> str:
    """A client's resource path made safe to append: relative, encoded, no dot segments.

    Text is encoded as needed; ``%XX`` escapes already present are kept, so both
    ``status icons/Away.png`` and ``status%20icons/Away.png`` give the same URI. Empty
    segments are dropped; a query is kept, encoded the same way.
    """
    if len(path) > MAX_RESOURCE_PATH:
        raise BadRequest(f"path longer than {MAX_RESOURCE_PATH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadRequest("path holds control characters")
    raw, sep, query = path.partition("?")
    segments = [s for s in raw.split("/") if s]
    for segment in segments:
        if unquote(segment) in (".", ".."):
            raise BadRequest("dot segments (. and ..) are not allowed in a resource path")
    encoded = "/".join(_encode_keeping_escapes(s, _SAFE) for s in segments)
    return encoded + (sep + _encode_keeping_escapes(query, _SAFE + "/?") if sep else "")


def _encode_keeping_escapes(text: str, safe: str) -> str:
    parts = _ESCAPE.split(text)
    return "".join(p if i % 2 else quote(p, safe=safe) for i, p in enumerate(parts))


MAX_MEMO = 64  # origins whose CreateSession resources are kept (tunnel origins vary)


class TableEight:
    """Table 8 URIs for tunnel sessions, direct URIs for the others.

    A logon's ``resources`` are kept per origin while the CIC name, the alias map and
    the direct host stay the same (``ports`` are fixed when it is made), so a storm
    of logons does not build the same URIs again.
    """

    def __init__(
        self,
        names: Callable[[], ServerNames],
        direct_host: str,
        ports: Mapping[str, int] | None = None,
    ) -> None:
        self._names = names
        self.direct_host = direct_host
        self.ports = {kind: k.port for kind, k in KINDS.items()} | dict(ports or {})
        self._memo: dict[Origin, dict[str, Any]] = {}
        self._memo_for: tuple[str | None, AliasMap | None, str] = (None, None, "")

    def public_server(self, origin: Origin, names: ServerNames | None = None) -> str:
        """The server segment of tunnel URIs: the CIC server's alias, else its name."""
        names = names or self._names()
        return (
            names.aliases.alias_of(names.cic)
            or names.cic
            or origin.alias
            or origin.server
            or self.direct_host
        )

    def direct_server(self, names: ServerNames | None = None) -> str:
        names = names or self._names()
        return (
            names.aliases.alias_of(names.cic)
            or names.aliases.alias_of(self.direct_host)
            or self.direct_host
        )

    def roots(self, origin: Origin, names: ServerNames | None = None) -> dict[str, str]:
        """Every kind's root URI (ending in ``/``) for a session of this origin."""
        names = names or self._names()
        if origin.base_uri is not None:
            prefix = f"{origin.base_uri}/{encode_segment(self.public_server(origin, names))}"
            return {kind: f"{prefix}/{kind}/" for kind in KINDS}
        host = self.direct_server(names)
        host = f"[{host}]" if ":" in host else host
        return {
            kind: f"{'https' if k.secure else 'http'}://{host}:{self.ports[kind]}/"
            for kind, k in KINDS.items()
        }

    # --- ResourceProvider ------------------------------------------------------------
    def for_session(self, origin: Origin) -> dict[str, Any]:
        names = self._names()
        memo_for = self._memo_for
        if (
            memo_for[0] != names.cic
            or memo_for[1] is not names.aliases
            or memo_for[2] != self.direct_host
        ):
            self._memo = {}
            self._memo_for = (names.cic, names.aliases, self.direct_host)
        found = self._memo.get(origin)
        if found is None:
            tunnel = origin.base_uri is not None
            server = self.public_server(origin, names) if tunnel else self.direct_server(names)
            found = {"base": origin.base_uri, "server": server, **self.roots(origin, names)}
            if len(self._memo) >= MAX_MEMO:
                self._memo = {}
            self._memo[origin] = found
        return dict(found)  # the caller's own copy

    def uri(self, origin: Origin, kind: str, path: str) -> str:
        if kind not in KINDS:
            raise BadRequest(f"unknown resource kind {kind!r}; one of {', '.join(KINDS)}")
        return self.roots(origin)[kind] + resource_path(path)
