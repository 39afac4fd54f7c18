"""Decoding a WebSocket session URI (PROTOCOL §1; the note's Table 8). Pure: no I/O.

A client dials ``wss://proxy/[extra/path/]<Server>/session``. Only the last two
path segments route: the last must be ``session`` (any case, one trailing slash
allowed) and the one before names this bridge, its CIC server, or an alias of
either from the ``SM HTTPS URL Base Map`` server parameter
(``Machine|alias&Machine2|alias2``). The segments before them, with the scheme and
host the client used (``X-Forwarded-Proto`` / ``X-Forwarded-Host`` / ``Host``), form
the session's base URI, from which further URIs are built (see uris.py).

The path is split on ``/`` *before* percent-decoding, so an encoded ``/`` (``%2F``)
stays inside its segment and is encoded again in the base URI. Empty segments are
dropped (as nginx merges slashes); ``.`` and ``..`` segments, in any encoding, are
refused rather than resolved, so a base URI never climbs out of its prefix.

Every refusal carries an HTTP status and a one-line, printable-ASCII reason, which
the adapter puts in the handshake's status line: 400 malformed, 403 no
``ININ-Client-Type``, 404 wrong path or unknown server, 414 path too long, 503 the
CIC server's name is not known yet (the Notifier link never came up).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from smbridge.resources import Origin

MAX_TARGET = 2048  # bytes of request target (path and query) accepted
MAX_SEGMENTS = 64
SESSION = "session"
CLIENT_TYPE_HEADER = "inin-client-type"  # header names arrive lower-cased
# Browsers cannot set headers on a WebSocket; they may send the client type as a query
# parameter instead (nginx's site config forwards it as the header; see docs/tunnel.md).
CLIENT_TYPE_PARAM = "inin_client_type"
ALIAS_MAP_PARAMETER = "SM HTTPS URL Base Map"

# RFC 3986 pchar, minus pct-encoded (handled apart): unreserved, sub-delims, ":" and "@".
_PCHAR = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@"
)
_HEX = frozenset("0123456789abcdefABCDEF")
_SEGMENT_SAFE = "!$&'()*+,;=:@"  # kept as is when a segment is encoded again (quote adds -._~)
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._~-]{0,252})$")  # machine names and aliases
_HOST = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]{2,45})\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})))"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


@dataclass(frozen=True)
class Refusal:
    """The handshake is refused with ``status`` and a one-line ``reason``."""

    status: int
    reason: str


@dataclass(frozen=True)
class SessionPath:
    """A session path split into its parts, every segment percent-decoded."""

    prefix: tuple[str, ...]  # the extra segments before <Server>/session
    server: str  # the server segment as dialed


@dataclass(frozen=True)
class AliasMap:
    """``SM HTTPS URL Base Map``: machine names and their public aliases, both ways.

    Lookups ignore case (host names do); answers keep the spelling of the parameter.
    """

    by_machine: Mapping[str, str] = field(default_factory=dict)  # lower machine -> alias
    by_alias: Mapping[str, str] = field(default_factory=dict)  # lower alias -> machine

    def alias_of(self, machine: str | None) -> str | None:
        return self.by_machine.get(machine.lower()) if machine else None

    def machine_of(self, alias: str) -> str | None:
        return self.by_alias.get(alias.lower())


def parse_alias_map(text: str | None) -> tuple[AliasMap, list[str]]:
    """Parse ``Machine|alias&Machine2|alias2``; returns the map and what was skipped, and why.

    Entries are trimmed; empty entries are ignored. An entry is skipped when it has no
    single ``|``, when a side is not a plain name (letters, digits, ``-._~``), or when it
    would make a name ambiguous (a machine mapped twice, an alias used twice, or a name
    that is both one machine's alias and another machine). The first entry wins.
    """
    by_machine: dict[str, str] = {}
    by_alias: dict[str, str] = {}
    problems: list[str] = []
    for raw in (text or "").split("&"):
        entry = raw.strip()
        if not entry:
            continue
        parts = [p.strip() for p in entry.split("|")]
        if len(parts) != 2:
            problems.append(f"{_show(entry)}: expected Machine|alias")
            continue
        machine, alias = parts
        if not _NAME.match(machine) or not _NAME.match(alias):
            problems.append(f"{_show(entry)}: names may hold letters, digits and -._~ only")
            continue
        m, a = machine.lower(), alias.lower()
        if m in by_machine:
            problems.append(f"{_show(entry)}: {machine} already has an alias")
        elif a in by_alias:
            problems.append(f"{_show(entry)}: alias {alias} is already used")
        elif (a in by_machine and a != m) or (m in by_alias and by_alias[m].lower() != m):
            problems.append(f"{_show(entry)}: a name cannot be both a machine and an alias")
        else:
            by_machine[m] = alias
            by_alias[a] = machine
    return AliasMap(by_machine, by_alias), problems


@dataclass(frozen=True)
class KnownServers:
    """The names the tunnel answers to: this bridge's, its CIC server's, and their aliases."""

    names: frozenset[str]  # lower-cased machine names (bridge name, bridge FQDN, CIC name)
    aliases: AliasMap = AliasMap()
    cic_known: bool = True  # False until the Notifier link has registered once

    @classmethod
    def of(
        cls, names: Iterable[str | None], aliases: AliasMap, cic_known: bool = True
    ) -> KnownServers:
        return cls(frozenset(n.lower() for n in names if n), aliases, cic_known)

    def resolve(self, server: str) -> tuple[str, str | None] | None:
        """``(machine, public alias or None)`` for a server segment, or None when unknown."""
        machine = self.aliases.machine_of(server)
        if machine is not None:
            if machine.lower() not in self.names:
                return None  # the alias of some other machine: the proxy routed it wrongly
            return machine, self.aliases.alias_of(machine)
        if server.lower() in self.names:
            return server, self.aliases.alias_of(server)
        return None


@dataclass(frozen=True)
class Route:
    """A session URI this bridge serves, decoded."""

    base_uri: str  # client-facing http(s)://host[/extra/path], no trailing slash
    server: str  # the server segment as dialed
    machine: str  # the machine it names
    alias: str | None  # its public alias, when the map has one
    client_type: str | None
    proxied: bool = False  # the base came from X-Forwarded-Proto/-Host (see roster/reach.py)

    def origin(self, transport: str) -> Origin:
        return Origin(transport, self.base_uri, self.server, self.alias, self.proxied)


def decode(
    target: str,
    headers: Mapping[str, str],
    listener_scheme: str,
    known: KnownServers,
    require_client_type: bool = True,
) -> Route | Refusal:
    """Decide on one handshake: the request target, its headers (lower-case names), the
    scheme of the listener it arrived on (``ws`` or ``wss``), and the names served."""
    if len(target) > MAX_TARGET:
        return Refusal(414, f"request target longer than {MAX_TARGET} bytes")
    raw_path, _, query = target.partition("?")
    client_type = _client_type(headers, query)
    if require_client_type and not client_type:
        return Refusal(403, "ININ-Client-Type header required")
    path = split_session_path(raw_path)
    if isinstance(path, Refusal):
        return path
    if not known.cic_known and path.server.lower() not in known.names:
        return Refusal(503, "not connected to the CIC server yet; try again shortly")
    resolved = known.resolve(path.server)
    if resolved is None:
        return Refusal(404, f"unknown server {_show(path.server)}")
    base = client_base(headers, listener_scheme)
    if isinstance(base, Refusal):
        return base
    machine, alias = resolved
    proxied = any(_first(headers.get(h)) for h in ("x-forwarded-host", "x-forwarded-proto"))
    return Route(base + encode_path(path.prefix), path.server, machine, alias, client_type, proxied)


# What decode reads besides the target (lower-case names), for Decisions' key.
DECISION_HEADERS = (CLIENT_TYPE_HEADER, "host", "x-forwarded-host", "x-forwarded-proto")


class Decisions:
    """:func:`decode` with its accepted answers kept: clients reconnect with identical
    requests. An answer is reused for the same target, the same values of the headers
    decode reads, the same ``require_client_type``, and the same ``known`` object (a
    new one, after the names served change, starts afresh). Refusals are decoded each
    time. At most ``limit`` answers are kept, for targets up to ``max_target`` long.
    """

    def __init__(self, limit: int = 256, max_target: int = 512) -> None:
        self.limit = limit
        self.max_target = max_target
        self._kept: dict[tuple[str | bool | None, ...], Route] = {}
        self._known: KnownServers | None = None

    def __len__(self) -> int:
        return len(self._kept)

    def decide(
        self,
        target: str,
        headers: Mapping[str, str],
        listener_scheme: str,
        known: KnownServers,
        require_client_type: bool = True,
    ) -> tuple[Route | Refusal, bool]:
        """(the decision, whether it was decoded now rather than reused)."""
        if known is not self._known:
            self._kept.clear()
            self._known = known
        key: tuple[str | bool | None, ...] = (target, listener_scheme, require_client_type)
        key += tuple(headers.get(h) for h in DECISION_HEADERS)
        route = self._kept.get(key)
        if route is not None:
            return route, False
        decision = decode(target, headers, listener_scheme, known, require_client_type)
        if isinstance(decision, Route) and len(target) <= self.max_target:
            if len(self._kept) >= self.limit:
                self._kept.clear()
            self._kept[key] = decision
        return decision, True


def split_session_path(raw_path: str) -> SessionPath | Refusal:
    """Split a raw (still percent-encoded) path into prefix, server and ``session``."""
    if not raw_path.startswith("/"):
        return Refusal(400, "the request target must be a path starting with /")
    segments: list[str] = []
    for raw in raw_path.split("/"):
        if not raw:
            continue  # empty segments (and the trailing slash) are dropped
        segment = percent_decode(raw)
        if isinstance(segment, Refusal):
            return segment
        if segment in (".", ".."):
            return Refusal(400, "dot segments (. and ..) are not allowed in the path")
        segments.append(segment)
        if len(segments) > MAX_SEGMENTS:
            return Refusal(414, f"path has more than {MAX_SEGMENTS} segments")
    if len(segments) < 2 or segments[-1].lower() != SESSION:
        return Refusal(404, "not a session path: expected /[extra/]<Server>/session")
    return SessionPath(tuple(segments[:-2]), segments[-2])


def percent_decode(raw: str) -> str | Refusal:
    """Decode one raw path segment strictly: pchar or ``%XX``, UTF-8, no control characters."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                return Refusal(400, "bad percent-encoding in the path")
            out.append(int(pair, 16))
            i += 3
        elif c in _PCHAR:
            out.append(ord(c))
            i += 1
        else:
            return Refusal(400, f"character {_show(c)} must be percent-encoded in the path")
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(400, "percent-encoded bytes in the path are not UTF-8")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        return Refusal(400, "control characters are not allowed in the path")
    return text


def encode_segment(segment: str) -> str:
    """Percent-encode one path segment (``/`` included), UTF-8, keeping sub-delims."""
    return quote(segment, safe=_SEGMENT_SAFE)


def encode_path(segments: Iterable[str]) -> str:
    """``/a/b`` from segments; empty for none."""
    return "".join("/" + encode_segment(s) for s in segments)


def client_base(headers: Mapping[str, str], listener_scheme: str) -> str | Refusal:
    """``http(s)://host[:port]`` as the client sees it, from the forwarded headers or Host.

    The WebSocket scheme maps to the HTTP one (``wss`` → ``https``), because the URIs
    built on the base are HTTP resources. Only the first (client-side) entry of a
    comma-separated forwarded header counts.
    """
    proto = _first(headers.get("x-forwarded-proto")).lower()
    if proto:
        scheme = _SCHEMES.get(proto)
        if scheme is None:
            return Refusal(400, f"bad X-Forwarded-Proto {_show(proto)}")
    else:
        scheme = _SCHEMES.get(listener_scheme, "https")
    forwarded = _first(headers.get("x-forwarded-host"))
    host = forwarded or (headers.get("host") or "").strip()
    match = _HOST.match(host)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        which = "X-Forwarded-Host" if forwarded else "Host"
        return Refusal(400, f"bad {which} header {_show(host)}")
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            return Refusal(400, f"bad IPv6 address in {_show(host)}")
    elif ".." in match["name"] or match["name"].endswith(("-", ".-")):
        return Refusal(400, f"bad host name {_show(host)}")
    return f"{scheme}://{host.lower()}"


def _client_type(headers: Mapping[str, str], query: str) -> str | None:
    value = (headers.get(CLIENT_TYPE_HEADER) or "").strip()
    if value:
        return value[:100]
    for pair in query.split("&"):
        name, _, raw = pair.partition("=")
        if name == CLIENT_TYPE_PARAM:
            decoded = percent_decode(raw.replace("+", "%20"))
            if isinstance(decoded, str) and decoded.strip():
                return decoded.strip()[:100]
    return None


def _first(value: str | None) -> str:
    return (value or "").split(",")[0].strip()


def _show(text: str, limit: int = 60) -> str:
    """Quote untrusted text for a one-line, printable-ASCII reason."""
    shown = ascii(text[:limit])
    return shown + ("..." if len(text) > limit else "")
