"""Parsing of bridge URIs (pure; no I/O).

A client names a bridge as ``tls://HOST[:PORT]`` (the usual case, port 3952),
``tcp://HOST[:PORT]`` (clear text, for bridges started with ``--allow-cleartext``)
or ``ws://`` / ``wss://HOST[:PORT]/[extra/]Server/session`` (the WebSocket tunnel,
ports 8951/8952, usually through the public proxy). IPv6 literals go in brackets:
``tls://[::1]:3952``.

The parser is hand-written rather than built on ``urllib.parse`` because that
module accepts far too much (user info, bare IPv6, ports like ``+80``) and its
errors do not tell a user what to type instead.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DEFAULT_PORTS: dict[str, int] = {"tls": 3952, "tcp": 3952, "ws": 8951, "wss": 8952}
_EXAMPLE = "tls://HOST[:PORT]"
# RFC 1123 host names, plus "_" which internal DNS zones use in practice.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class BridgeAddress:
    """Where a bridge listens: ``host`` is bare (no brackets), ``path`` is kept for ws."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def tls(self) -> bool:
        """True when the transport is encrypted (``tls`` and ``wss``)."""
        return self.scheme in ("tls", "wss")

    @property
    def websocket(self) -> bool:
        return self.scheme in ("ws", "wss")

    @property
    def netloc(self) -> str:
        """``host:port`` with brackets around an IPv6 literal."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"


def parse_bridge_uri(uri: str) -> BridgeAddress:
    """Parse ``uri``; raise ``ValueError`` with a message that says what is wrong."""
    text = uri.strip()
    if "://" not in text:
        raise ValueError(f"bridge URI {uri!r} has no scheme; expected {_EXAMPLE}")
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        known = ", ".join(f"{s}://" for s in DEFAULT_PORTS)
        raise ValueError(f"unsupported scheme {scheme + '://'!r} in {uri!r}; use one of {known}")
    if "#" in rest:
        raise ValueError(f"bridge URI {uri!r} must not have a #fragment")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if scheme in ("tls", "tcp") and path not in ("", "/"):
        raise ValueError(f"{scheme}:// URIs take no path or query: {uri!r}")
    if scheme in ("tls", "tcp"):
        path = ""
    host, port = _split_authority(authority, uri)
    return BridgeAddress(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], path)


def _split_authority(authority: str, uri: str) -> tuple[str, int | None]:
    if not authority:
        raise ValueError(f"bridge URI {uri!r} has no host; expected {_EXAMPLE}")
    if "@" in authority:
        raise ValueError(f"bridge URI {uri!r} must not carry user information (user@)")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {uri!r}; IPv6 literals look like [::1]:3952")
        host, after = authority[1:end], authority[end + 1 :]
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ValueError(f"{host!r} in {uri!r} is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise ValueError(f"unexpected {after!r} after ']' in {uri!r}")
        return host, _port(after[1:], uri) if after else None
    if authority.count(":") > 1:
        raise ValueError(f"IPv6 address in {uri!r} must be in brackets, like tls://[::1]:3952")
    host, sep, port_text = authority.partition(":")
    _check_host(host, uri)
    return host.lower(), _port(port_text, uri) if sep else None


def _check_host(host: str, uri: str) -> None:
    if not host:
        raise ValueError(f"bridge URI {uri!r} has no host; expected {_EXAMPLE}")
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{host!r} in {uri!r} is not a valid host name or IPv4 address")


def _port(text: str, uri: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"port {text!r} in {uri!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {uri!r} is outside 1..65535")
    return port
