"""Logging on anywhere in a site: the typed host, then the roster (PROTOCOL §4.4).

:func:`logon_anywhere` resolves the typed host to all its addresses, builds the
attempt order from the roster cache (:mod:`smbridge.roster.attempts`), tries each
target at most once, stops at ``logon-failed``, follows a ``redirect``'s roster when
there was no cache, and saves the roster after the logon succeeds.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger

from smbridge.client.protocol import ClientError
from smbridge.client.roster_cache import RosterCache
from smbridge.client.uri import parse_bridge_uri
from smbridge.roster.attempts import attempt_groups, logon_order

log = Logger()

Dial = Callable[[dict[str, Any]], "defer.Deferred[Any]"]


def resolve_all(host: str, port: int) -> defer.Deferred[list[str]]:
    """Every address of ``host`` (in a thread: getaddrinfo blocks), duplicates removed."""

    def lookup() -> list[str]:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    return threads.deferToThread(lookup)


@defer.inlineCallbacks
def logon_anywhere(
    reactor: Any,
    typed: str,
    user: str,
    password: str,
    *,
    cache: RosterCache | None = None,
    ca: Path | None = None,
    dial: Dial | None = None,
    resolve: Callable[[str, int], defer.Deferred[list[str]]] = resolve_all,
    rng: random.Random | None = None,
    **logon: Any,
) -> Any:
    """Log on at the typed ``tls://HOST[:PORT]`` or wherever the roster leads.

    Fires with ``(client, reply)``. Fails with the ``logon-failed`` ClientError at
    once (never tried elsewhere), or with ClientError ``no-bridge`` (``attempts``:
    what each target answered) when every target failed.
    """
    address = parse_bridge_uri(typed)
    host, port = address.host, address.port
    if dial is None:
        from smbridge.client.session import connect

        def dial(t: dict[str, Any]) -> defer.Deferred[Any]:
            # A raw address of the typed host presents the typed host's certificate.
            name = host if t["name"] is None else None
            uri = f"tls://{_bracket(t['host'])}:{t['port']}"
            return connect(reactor, uri, ca=ca, hostname=name)

    try:
        addresses = yield resolve(host, port)
    except Exception as e:  # an unresolvable host still gets its own attempt
        log.info(
            "Could not resolve {host}: {error}", host=host, error=str(e), event="client.resolve"
        )
        addresses = []
    cached = cache.load(host) if cache is not None else None
    order = logon_order(attempt_groups(cached, host, port, addresses, rng), host, port)
    attempts: list[dict[str, Any]] = []
    i = 0
    while i < len(order):  # bounded: each (host, port) is in the order once
        target = order[i]
        i += 1
        try:
            client = yield dial(target)
        except Exception as e:
            attempts.append({**target, "error": getattr(e, "code", type(e).__name__)})
            continue
        try:
            reply = yield client.logon(user, password, **logon)
        except ClientError as e:
            yield client.close()
            attempts.append({**target, "error": e.code, "reason": e.body.get("reason")})
            if e.code == "logon-failed":
                raise
            if e.code == "redirect" and cached is None:
                # The redirect's roster goes before what is left (raw addresses last).
                tried = {(t["host"], t["port"]) for t in order[:i]}
                rest = [t for g in attempt_groups(e.body, host, port, addresses, rng) for t in g]
                rest += order[i:]
                order = order[:i]
                for t in rest:
                    if (t["host"], t["port"]) not in tried:
                        tried.add((t["host"], t["port"]))
                        order.append(t)
            continue
        if cache is not None:
            cache.save(host, reply)
        log.info(
            "Logged on at {target} after {n} attempt(s)",
            target=f"{target['host']}:{target['port']}",
            n=len(attempts) + 1,
            event="client.logon_anywhere",
        )
        return client, reply
    raise ClientError("no-bridge", f"no bridge of {host} took the logon", {"attempts": attempts})


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
