"""Logon throttling: failed logons from one source slow down (docs/protocol.md §4.1).

Two kinds of key, each with its own count of failures:

* ``(user, address)`` (CreateSession) or ``(sessionId, address)`` (ResumeSession):
  one source guessing one user's password or one session's resume token. A
  success deletes the key, so the user's own good logon is never held back, and
  another address has other keys: an attacker cannot lock a user out from
  everywhere.
* ``address`` alone: one source spraying many users (more free failures, since an
  office behind one NAT address shares it).

After ``free`` failures of a key, each further attempt from it must wait a growing
delay: the failure numbered ``free + j`` (j >= 0) makes the next attempt wait
``min(base * 2**j, max_delay)`` seconds. An attempt inside the wait is refused
(``logon-throttled`` with ``retryAfter``) *before* the Notifier is asked, so a
throttled guess learns nothing. Each key also forgets one failure per
``max_delay`` seconds spent outside its wait (so an office's occasional typos never
add up), which adds at most ``D = ceil(T / max_delay) + 1`` to the bounds below; a
partly forgotten failure counts whole.

The user key counts an attempt when it is let through, not when its answer comes:
pipelined or concurrent guesses at one user cannot slip past while the first is
being checked, so it gets at most ``free + floor(log2(T / base + 1)) + D``
attempts through in ``T`` seconds. :meth:`Attempt.succeeded` deletes it,
:meth:`Attempt.abandoned` (the Notifier never judged: link down, unknown session)
takes the count back, :meth:`Attempt.failed` keeps it.

The address key counts *failures* only, when they are answered
(:meth:`Attempt.failed`): good logons still in flight do not count, so a reconnect
storm from one NAT address is not held back. Instead it bounds the attempts in
flight (let through, not yet settled) from the address: at most
``address_max_pending`` while it has fewer than ``address_free_failures``
failures, one at a time once it has that many. Every attempt is settled exactly
once (succeeded, failed or abandoned), which releases its place. So an address
spraying many users gets at most ``address_free + address_max_pending +
floor(log2(T / base + 1)) + D`` failed attempts through in ``T`` seconds.

A key with no failures counted, no wait and nothing in flight is forgotten; the
table holds at most ``max_entries`` keys (the least recently used goes first,
preferring one with nothing in flight; an attempt releases its place in the entry
it was counted in, so an evicted entry never skews a new one), and long names are
keyed by their digest, so a flood of made-up names costs bounded memory.

Pure: the clock is injected, nothing is logged here (the router logs, rate-limited by
:class:`LogBudget`).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from twisted.internet.interfaces import IReactorTime

from smbridge.errors import ProtocolError

Key = tuple[str, ...]
MAX_NAME = 64  # longer names (user, sessionId) are keyed by their digest
SWEEP = 8  # expired entries looked at per attempt


@dataclass(frozen=True)
class ThrottleSettings:
    """How fast failed logons slow down (``--logon-*`` options, docs/configuration.md)."""

    free_failures: int = 5  # per (user, address) before the first wait
    address_free_failures: int = 20  # per address, whatever the user
    max_delay: float = 60.0  # the longest wait; also: one failure forgotten per this
    max_entries: int = 100_000  # keys held at most (least recently used evicted)
    base_delay: float = 1.0  # the first wait
    address_max_pending: int = 512  # per address, attempts let through and not yet answered

    def __post_init__(self) -> None:
        if self.free_failures < 1 or self.address_free_failures < 1:
            raise ValueError("free failures must be at least 1")
        if self.address_max_pending < 1:
            raise ValueError("at least 1 attempt per address must be allowed in flight")
        if not self.base_delay <= self.max_delay:
            raise ValueError("the largest delay must be at least the first one")
        if self.max_entries < 2:
            raise ValueError("the throttle needs room for at least 2 keys")


class LogonThrottled(ProtocolError):
    """Too many failed logons from this source: try again in ``retryAfter`` seconds."""

    code = "logon-throttled"


@dataclass(frozen=True)
class Throttled:
    """An attempt refused without asking the Notifier."""

    retry_after: int  # whole seconds, at least 1
    scope: str  # "user" (the user or session key) or "address"
    first: bool  # the first refusal in this wait, or while this address is full (log it)


class _Entry:
    __slots__ = ("at", "full_reported", "last_admit", "level", "next_at", "pending", "reported")

    def __init__(self, now: float) -> None:
        self.level = 0.0  # failures counted (decays)
        self.at = now  # when level was last brought up to date
        self.next_at = 0.0  # no attempt before this
        self.last_admit = now
        self.reported = False  # this wait's first refusal was reported
        self.pending = 0  # address keys: attempts let through, not yet settled
        self.full_reported = False  # a refusal for too many in flight was reported


def name_key(name: str) -> str:
    """``name`` itself, or its digest when long (bounded memory per key)."""
    if len(name) <= MAX_NAME:
        return name
    data = name.encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(data).hexdigest()


# Parsed for each logon from the connection's host: kept for the hosts seen most
# recently (bounded, pure), so a reconnect storm does not parse its few addresses again.
@functools.lru_cache(maxsize=4096)
def normalise_address(text: str) -> str:
    """An IP address as a key: IPv4 as is, IPv6 by its /64 (one site's prefix)."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return name_key(text.strip())
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _host(hostport: str) -> str:
    host, sep, port = hostport.rpartition(":")
    return host if sep and (port.isdigit() or not port) else hostport


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def source_address(remote: str, trusted_proxy: Callable[[str], bool] = is_loopback) -> str:
    """The throttle's address for a connection's ``remote`` text.

    ``host:port`` for a direct client; ``REAL via host:port`` for the tunnel (REAL
    from the proxy's ``X-Real-IP`` / ``X-Forwarded-For``). REAL is believed only
    when the TCP peer is a trusted proxy; otherwise anyone could pick a fresh
    address per guess, so the TCP peer is the address.
    """
    real, via, direct = remote.rpartition(" via ")  # the last: the tunnel added it
    if via:
        peer = _host(direct)
        return normalise_address(real if trusted_proxy(peer) else peer)
    return normalise_address(_host(remote))


class Attempt:
    """One attempt let through; settle it once with its outcome (later calls do nothing)."""

    __slots__ = ("_in", "_settled", "_throttle", "address_key", "user_key")

    def __init__(
        self, throttle: LogonThrottle, user_key: Key, address_key: Key, counted_in: _Entry
    ) -> None:
        self._throttle = throttle
        self.user_key = user_key
        self.address_key = address_key
        self._in = counted_in  # the address entry holding this attempt's place in flight
        self._settled = False

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._throttle._release(self.address_key, self._in)
        return True

    def succeeded(self) -> None:
        """The credentials were right: clear the user key; the address counts nothing."""
        if self._settle():
            self._throttle._entries.pop(self.user_key, None)

    def failed(self) -> None:
        """The credentials were wrong: the user count stays, the address counts a failure."""
        if self._settle():
            throttle = self._throttle
            throttle._count(self.address_key, throttle.settings.address_free_failures)

    def abandoned(self) -> None:
        """Never judged (the Notifier unreachable, an unknown session): take the count back."""
        if self._settle():
            self._throttle._forgive(self.user_key)


class LogonThrottle:
    """The table of keys and their waits; ask :meth:`attempt` before each logon."""

    def __init__(self, clock: IReactorTime, settings: ThrottleSettings | None = None) -> None:
        self.clock = clock
        self.settings = settings or ThrottleSettings()
        # Whether a tunnel connection's TCP peer is a proxy whose X-Real-IP is believed.
        self.trusted_proxy: Callable[[str], bool] = is_loopback
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self.evicted = 0  # keys dropped to keep the table bounded

    def __len__(self) -> int:
        return len(self._entries)

    def address_of(self, remote: str) -> str:
        return source_address(remote, self.trusted_proxy)

    def in_flight(self, remote: str) -> int:
        """Attempts from ``remote``'s address let through and not yet settled."""
        entry = self._entries.get(("address", self.address_of(remote)))
        return 0 if entry is None else entry.pending

    def attempt(self, kind: str, name: str, remote: str) -> Attempt | Throttled:
        """Let an attempt by ``name`` (a user, a sessionId) from ``remote`` through, or not.

        ``kind`` separates the families (``user``, ``resume``); ``remote`` is the
        connection's remote text (:func:`source_address`).
        """
        now = self.clock.seconds()
        address = self.address_of(remote)
        user_key: Key = (kind, name_key(name), address)
        address_key: Key = ("address", address)
        self._sweep(now)
        waits: list[tuple[float, str, _Entry]] = []
        for key, scope in ((user_key, "user"), (address_key, "address")):
            entry = self._current(key, now)
            if entry is not None and entry.next_at > now:
                waits.append((entry.next_at - now, scope, entry))
        if waits:
            wait, scope, entry = max(waits, key=lambda w: w[0])
            first = not entry.reported
            entry.reported = True
            return Throttled(max(1, math.ceil(wait)), scope, first)
        s = self.settings
        place = self._entries.get(address_key)
        if place is not None and place.pending >= self._max_pending(place):
            first = not place.full_reported
            place.full_reported = True
            return Throttled(1, "address", first)
        self._count(user_key, s.free_failures)
        place = self._current(address_key, now) or self._add(address_key, now)
        place.pending += 1
        return Attempt(self, user_key, address_key, place)

    # --- the table ------------------------------------------------------------------
    def _free(self, key: Key) -> int:
        s = self.settings
        return s.address_free_failures if key[0] == "address" else s.free_failures

    def _delay(self, over: int) -> float:
        s = self.settings
        return min(s.base_delay * 2.0 ** min(over, 64), s.max_delay)

    def _decay(self, entry: _Entry, now: float) -> None:
        # Forgetting starts once the wait is over: a prompt guesser meets 1, 2, 4... s.
        elapsed = now - max(entry.at, entry.next_at)
        if elapsed > 0:
            entry.level = max(0.0, entry.level - elapsed / self.settings.max_delay)
        entry.at = max(entry.at, now)

    def _over(self, entry: _Entry, free: int) -> int:
        """Failures counted past the free ones (a partly forgotten one counts whole)."""
        return math.ceil(entry.level - 1e-9) - free

    def _max_pending(self, entry: _Entry) -> int:
        """Attempts an address may have in flight: one at a time once past its free failures."""
        s = self.settings
        return 1 if self._over(entry, s.address_free_failures) >= 0 else s.address_max_pending

    def _expired(self, entry: _Entry, now: float) -> bool:
        """Nothing left to remember (an entry with attempts in flight never is)."""
        self._decay(entry, now)
        return entry.level <= 0 and entry.next_at <= now and entry.pending == 0

    def _current(self, key: Key, now: float) -> _Entry | None:
        """The key's entry brought up to date (and made most recent); None if none."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._expired(entry, now):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _add(self, key: Key, now: float) -> _Entry:
        """A new entry for ``key``, evicting to stay within ``max_entries``."""
        while len(self._entries) >= self.settings.max_entries:
            self._evict()
        entry = self._entries[key] = _Entry(now)
        return entry

    def _evict(self) -> None:
        """Drop the least recently used key; among the oldest few, one with nothing in flight."""
        victim = next(iter(self._entries))
        for key, entry in islice(self._entries.items(), SWEEP):
            if entry.pending == 0:
                victim = key
                break
        del self._entries[victim]  # its attempts in flight still release their own entry
        self.evicted += 1

    def _count(self, key: Key, free: int) -> None:
        """Count one failure (at admission for a user key, when answered for an address)."""
        now = self.clock.seconds()
        entry = self._current(key, now) or self._add(key, now)
        entry.level += 1
        entry.last_admit = now
        over = self._over(entry, free)
        if over >= 0:
            entry.next_at = now + self._delay(over)
            entry.reported = False

    def _release(self, key: Key, entry: _Entry) -> None:
        """An attempt counted in flight in ``entry`` (``key``'s, unless evicted) is settled."""
        entry.pending -= 1
        if entry.pending == 0:
            entry.full_reported = False
            if self._entries.get(key) is entry and self._expired(entry, self.clock.seconds()):
                del self._entries[key]

    def _forgive(self, key: Key) -> None:
        """Take one counted attempt back (and shorten the wait it caused)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        now = self.clock.seconds()
        self._decay(entry, now)
        entry.level = max(0.0, entry.level - 1)
        over = self._over(entry, self._free(key))
        if over < 0:
            entry.next_at = 0.0
        else:
            entry.next_at = min(entry.next_at, entry.last_admit + self._delay(over))
        if self._expired(entry, now):
            del self._entries[key]

    def _sweep(self, now: float) -> None:
        """Drop a few forgotten keys from the least recently used end."""
        for _ in range(SWEEP):
            if not self._entries:
                return
            key, entry = next(iter(self._entries.items()))
            if not self._expired(entry, now):
                return
            del self._entries[key]


class LogBudget:
    """At most ``lines`` log lines per ``window`` seconds; the rest are counted."""

    def __init__(self, clock: IReactorTime, lines: int = 10, window: float = 60.0) -> None:
        self.clock = clock
        self.lines = lines
        self.window = window
        self._start = -math.inf
        self._used = 0
        self.suppressed = 0  # not logged since the last line that was

    def take(self) -> int | None:
        """None: do not log; else log, mentioning this many suppressed before it."""
        now = self.clock.seconds()
        if now - self._start >= self.window:
            self._start, self._used = now, 0
        if self._used >= self.lines:
            self.suppressed += 1
            return None
        self._used += 1
        skipped, self.suppressed = self.suppressed, 0
        return skipped
