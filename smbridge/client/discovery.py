"""Logging on anywhere in a site: the typed host, then the roster (PROTOCOL §4.4).

:func:`logon_anywhere` resolves the typed host to all its addresses, builds the
attempt order from the roster cache (:mod:`smbridge.roster.attempts`), tries each
target at most once, stops at ``logon-failed``, follows a ``redirect``'s roster when
there was no cache, and saves the roster after the logon succeeds. The loop itself,
:func:`try_in_order`, also serves automatic reconnect and Migrate
(:mod:`smbridge.client.keeper`), whose plans come from :mod:`smbridge.client.order`.
Targets are dialed the way the user came in, TLS or WebSocket through the public
proxy (a roster entry's ``uri``), by :mod:`smbridge.client.reach`.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from smbridge.client.order import Attempt, key
from smbridge.client.protocol import ClientError
from smbridge.client.reach import dialer, shown
from smbridge.client.roster_cache import RosterCache
from smbridge.client.uri import BridgeAddress, parse_bridge_uri
from smbridge.roster.attempts import DEFAULT_TLS_PORT, attempt_groups, logon_order

log = Logger()

Dial = Callable[[dict[str, Any]], "defer.Deferred[Any]"]
THROTTLED_RETRIES = 3  # logon-throttled: the same target again, this many times at most
MAX_RETRY_AFTER = 300.0  # seconds; a longer retryAfter is capped
# Answers that hold at every bridge of the site (the Notifier decides them): the logon
# fails at once, no other bridge is tried. ``tenant-limit``: the user's tenant is over
# a limit (issue 18); the keeper's reconnect rounds retry it later, after their pauses.
SITE_WIDE_REFUSALS = frozenset({"logon-failed", "tenant-limit"})


def retry_after(body: dict[str, Any]) -> float:
    """The pause a ``logon-throttled`` answer asks for (1 s when it names none)."""
    value = body.get("retryAfter")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 1.0
    return float(min(max(value, 0.0), MAX_RETRY_AFTER))


def resolve_all(host: str, port: int) -> defer.Deferred[list[str]]:
    """Every address of ``host`` (in a thread: getaddrinfo blocks), duplicates removed."""

    def lookup() -> list[str]:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    return threads.deferToThread(lookup)


@dataclass
class Landing:
    """Where a logon succeeded: the client, the bridge's reply, the target dialed."""

    client: Any
    reply: dict[str, Any]
    target: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)


def default_dial(
    reactor: Any,
    typed_host: str,
    ca: Path | None,
    typed: BridgeAddress | None = None,
    *,
    cert: Path | None = None,
    key: Path | None = None,
) -> Dial:
    """Dial a target the way the user came in (``typed``; default ``tls://typed_host``).

    A target's ``uri`` (roster entries sent to WebSocket clients) is dialed as is; a
    raw address of the typed host is dialed with the typed scheme and path and presents
    the typed host's certificate (:mod:`smbridge.client.reach`). ``cert`` (and ``key``)
    is a client certificate presented on every connection (certificate logon).
    """
    typed = typed or BridgeAddress("tls", typed_host, DEFAULT_TLS_PORT)
    return dialer(reactor, typed, ca, cert=cert, key=key)


@defer.inlineCallbacks
def try_in_order(
    plan: Sequence[Attempt],
    dial: Dial,
    logon: Callable[[Any], defer.Deferred[dict[str, Any]]],
    *,
    clock: IReactorTime | None = None,
    redirect: Callable[[ClientError], list[dict[str, Any]]] | None = None,
    site: str = "",
    stopped: Callable[[], bool] = lambda: False,
) -> Any:
    """Dial and log on along ``plan`` until one target takes the logon; fires with a Landing.

    ``logon-failed`` and ``tenant-limit`` fail at once (never tried elsewhere: the
    Notifier gives the same answer at every bridge). A ``redirect``, when
    ``redirect`` is given, puts the targets it returns that are neither tried nor
    still planned right after the current one. Every other failure moves on; when
    the plan is done the result is ClientError ``no-bridge`` (``attempts``: what
    each target answered). Pauses (``Attempt.delay``) run on ``clock``. Once
    ``stopped()`` is true no further target is dialed (ClientError ``stopped``).
    ``logon-throttled`` (the bridge slows down logons) is no verdict on the password:
    the same target is tried again after its ``retryAfter`` seconds (at most
    ``THROTTLED_RETRIES`` times, each pause capped at ``MAX_RETRY_AFTER``).
    """
    order = list(plan)
    attempts: list[dict[str, Any]] = []
    tried: set[tuple[str, int]] = set()
    throttled: dict[tuple[str, int], int] = {}
    i = 0
    while i < len(order):  # bounded: a redirect adds only targets never seen
        attempt = order[i]
        i += 1
        if attempt.delay > 0 and clock is not None:
            yield deferLater(clock, attempt.delay, lambda: None)
        if stopped():
            raise ClientError("stopped", "the logon was given up")
        target = attempt.target
        tried.add(key(target))
        try:
            client = yield dial(target)
        except Exception as e:
            attempts.append({**target, "error": getattr(e, "code", type(e).__name__)})
            continue
        try:
            reply = yield logon(client)
        except ClientError as e:
            yield client.close()
            attempts.append({**target, "error": e.code, "reason": e.body.get("reason")})
            if e.code in SITE_WIDE_REFUSALS:
                raise
            if e.code == "logon-throttled" and throttled.get(key(target), 0) < THROTTLED_RETRIES:
                throttled[key(target)] = throttled.get(key(target), 0) + 1
                order.insert(i, Attempt(retry_after(e.body), target, attempt.pass_number))
                log.info(
                    "Logon throttled at {target}; again in {delay}s",
                    target=shown(target),
                    delay=order[i].delay,
                    event="client.logon_throttled",
                )
                continue
            if e.code == "redirect" and redirect is not None:
                planned = tried | {key(a.target) for a in order[i:]}
                extra = []
                for t in redirect(e):
                    if key(t) not in planned:
                        planned.add(key(t))
                        extra.append(Attempt(0.0, t, attempt.pass_number))
                order[i:i] = extra
            continue
        log.info(
            "Logged on at {target} after {n} attempt(s)",
            target=shown(target),
            n=len(attempts) + 1,
            event="client.logon_anywhere",
        )
        return Landing(client, reply, target, attempts)
    raise ClientError("no-bridge", f"no bridge of {site} took the logon", {"attempts": attempts})


@defer.inlineCallbacks
def first_logon(
    reactor: Any,
    typed: str,
    logon: Callable[[Any], defer.Deferred[dict[str, Any]]],
    *,
    cache: RosterCache | None = None,
    ca: Path | None = None,
    dial: Dial | None = None,
    resolve: Callable[[str, int], defer.Deferred[list[str]]] = resolve_all,
    rng: random.Random | None = None,
    clock: IReactorTime | None = None,
) -> Any:
    """A first logon (§4.4): the typed host, the cached roster, its raw addresses; a Landing.

    Follows a ``redirect``'s roster when there was no cache; saves the roster after
    the logon succeeds. ``clock`` (default ``reactor``) times the pauses.
    """
    address = parse_bridge_uri(typed)
    host, port = address.host, address.port
    if dial is None:
        dial = default_dial(reactor, host, ca, address)
    addresses = yield resolve_quietly(resolve, host, port)
    cached = cache.load(host) if cache is not None else None
    order = logon_order(attempt_groups(cached, host, port, addresses, rng), host, port)

    def redirected(e: ClientError) -> list[dict[str, Any]]:
        return [t for g in attempt_groups(e.body, host, port, addresses, rng) for t in g]

    landing = yield try_in_order(
        [Attempt(0.0, t) for t in order],
        dial,
        logon,
        redirect=redirected if cached is None else None,
        site=host,
        clock=clock if clock is not None else reactor,
    )
    if cache is not None:
        cache.save(host, landing.reply)
    return landing


@defer.inlineCallbacks
def resolve_quietly(
    resolve: Callable[[str, int], defer.Deferred[list[str]]], host: str, port: int
) -> Any:
    """``resolve(host, port)``, or no addresses when it fails (logged)."""
    try:
        addresses = yield resolve(host, port)
    except Exception as e:  # an unresolvable host still gets its own attempt
        log.info(
            "Could not resolve {host}: {error}", host=host, error=str(e), event="client.resolve"
        )
        addresses = []
    return list(addresses)


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
    """Log on at the typed ``tls://HOST[:PORT]`` (or ``wss://`` URI) or where the roster leads.

    Fires with ``(client, reply)``. Fails with the ``logon-failed`` or ``tenant-limit``
    ClientError at once (never tried elsewhere), or with ClientError ``no-bridge`` (``attempts``:
    what each target answered) when every target failed.
    """
    landing = yield first_logon(
        reactor,
        typed,
        lambda client: client.logon(user, password, **logon),
        cache=cache,
        ca=ca,
        dial=dial,
        resolve=resolve,
        rng=rng,
    )
    return landing.client, landing.reply
