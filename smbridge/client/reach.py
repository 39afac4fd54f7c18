"""Dialing a target over the way the user came in: TLS, or WebSocket through the proxy.

A target (:mod:`smbridge.roster.attempts`) is ``{"host", "port", "name"}`` and, for a
roster entry sent to a WebSocket client, ``uri``: the address at which that bridge is
reached through the public proxy (``wss://proxy/[extra/]<alias>/session``, see
:mod:`smbridge.roster.reach`). :func:`dialer` turns targets into connections:

- a target with a ``uri`` is dialed at that URI (its host's certificate checked);
- the host the user typed, or one of its raw addresses (``name`` None), is dialed
  with the typed scheme and path (``wss://<address>:<port>/<path>``), the typed host's
  name checked in the certificate;
- a roster entry without ``uri`` is dialed at its FQDN and TLS port when the user
  typed ``tls://``/``tcp://``; when the user came through a WebSocket proxy it cannot
  be reached (ClientError ``unreachable``), since its internal address means nothing
  from outside.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer

from smbridge.client.protocol import ClientError
from smbridge.client.uri import BridgeAddress, parse_bridge_uri

Dial = Callable[[dict[str, Any]], "defer.Deferred[Any]"]


def address_of(target: dict[str, Any], typed: BridgeAddress) -> tuple[BridgeAddress, str | None]:
    """What to dial for ``target`` and the certificate name to check (None: the URI's host).

    Raises ValueError for a ``uri`` that does not parse and ClientError ``unreachable``
    for a roster entry that a WebSocket client has no URI for.
    """
    uri = target.get("uri")
    if isinstance(uri, str) and uri:
        return parse_bridge_uri(uri), None
    host, port = str(target["host"]), int(target["port"])
    if target.get("name") is None:  # the typed host, or one of its raw addresses
        return BridgeAddress(typed.scheme, host, port, typed.path), typed.host
    if typed.websocket:
        raise ClientError(
            "unreachable",
            f"bridge {target.get('name')} has no URI for WebSocket clients in the roster",
        )
    scheme = "tcp" if typed.scheme == "tcp" else "tls"
    return BridgeAddress(scheme, host, port), None


def dialer(
    reactor: Any,
    typed: BridgeAddress,
    ca: Path | None,
    *,
    cert: Path | None = None,
    key: Path | None = None,
) -> Dial:
    """The keeper's and ``logon_anywhere``'s default ``dial`` for a typed address;
    ``cert``/``key``: a client certificate every connection presents."""
    from smbridge.client.session import connect

    def dial(target: dict[str, Any]) -> defer.Deferred[Any]:
        try:
            address, name = address_of(target, typed)
        except (ValueError, ClientError) as e:
            return defer.fail(e)
        return connect(reactor, address, ca=ca, hostname=name, cert=cert, key=key)

    return dial


def shown(target: dict[str, Any]) -> str:
    """A target for logs: its URI, else ``host:port``."""
    uri = target.get("uri")
    return uri if isinstance(uri, str) and uri else f"{target['host']}:{target['port']}"
