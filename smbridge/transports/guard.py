"""The connection guard: too many connections from untrusted addresses (PROTOCOL §6).

Trusted are the addresses listed in the server parameter ``BridgeHostTrustedSites``
(pipe-separated single IP addresses: as the note says, the setting no longer takes
ranges, so an entry that is not one address is ignored with a warning) and every
address in the bridge's own subnets. Connections from anywhere else go through two
sliding windows of ``window`` seconds, both filled by admitted connections only:

- **per source**: once ``limit`` connections from one source were let in within the
  window, the next one from that source is refused (reason ``guard``) until the
  oldest leaves the window. A source is one IPv4 address, or one IPv6 /64 (a
  host's usual allocation: changing the interface id does not buy a new window).
  One flooding source never delays another.
- **global ceiling**: once ``global_limit`` untrusted connections (all sources)
  were let in within the window, every untrusted connection is refused (reason
  ``guard-global``) until one leaves it. This bounds the TLS work an attacker
  spraying many addresses can cause; it is the only way one source's traffic can
  hold back another's.

Memory is bounded by the ceiling, even under address spraying: the per-source table
keeps only sources with an admission inside the window (expired ones are evicted,
oldest first, at each connect), and each admission is also in the global window, so
the table never holds more than ``global_limit`` sources nor more than
``global_limit`` timestamps in all. The table is capped at ``global_limit`` entries
as a safety net (a clock stepping back); dropping an entry then only forgets a
source while the ceiling is reached, so it cannot refuse anyone the ceiling would
let in.

Refusals are counted (``connections_refused``, reason ``guard`` or ``guard-global``)
and logged without flooding the log: each source's first refusal is logged
(``listener.guard_refused``; at most ``LOG_SOURCES_PER_WINDOW`` such lines per window),
then one summary per window while refusals go on (``listener.guard_summary``: the
number refused in that window, by reason); a window without refusals ends it.

This module does no I/O: the clock is injected and the listener
(:mod:`smbridge.transports.listener`) asks :meth:`ConnectionGuard.admit` before it
builds a protocol. :func:`host_subnets` reads the host's connected networks (Linux's
routing tables) for the default own subnets.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.counters import Counters

TRUSTED_SITES = "BridgeHostTrustedSites"
DEFAULT_LIMIT = 20
DEFAULT_WINDOW = 3.0
DEFAULT_GLOBAL_LIMIT = 2000  # untrusted connections per window from all sources together
MAX_GLOBAL_LIMIT = 100_000  # bounds the per-source table (a few MB at most)
IPV6_SOURCE_PREFIX = 64  # IPv6 peers count by their /64
MAX_KNOWN_ADDRESSES = 4096  # addresses whose own-subnet check is kept (is_trusted)
LOG_SOURCES_PER_WINDOW = 5  # first-refusal lines per window; the rest go in the summary
LOG_SOURCES_REMEMBERED = 1024  # sources whose first refusal was logged, per episode

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


# Each connection's peer is parsed (is_trusted, source_key): kept for the addresses seen
# most recently, as reconnecting clients come from the same few (bounded, pure).
@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """One IP address (an IPv4-mapped IPv6 address as IPv4); None if ``text`` is not one."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


Source = Address | Network | str


def source_key(host: str) -> Source:
    """What the per-source window counts ``host`` as: its IPv4 address or IPv6 /64.

    A peer that is not an IP address (a UNIX socket...) counts as its own text.
    """
    address = parse_address(host)
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        return ipaddress.IPv6Network(f"{address}/{IPV6_SOURCE_PREFIX}", strict=False)
    return address


def parse_trusted_sites(value: str) -> tuple[frozenset[Address], list[str]]:
    """The addresses of a ``BridgeHostTrustedSites`` value and the entries that are not one."""
    good: set[Address] = set()
    bad: list[str] = []
    for entry in value.split("|"):
        entry = entry.strip()
        if not entry:
            continue
        address = parse_address(entry)
        if address is None:
            bad.append(entry)
        else:
            good.add(address)
    return frozenset(good), bad


def parse_subnet(text: str) -> Network:
    """``ADDR/PREFIX`` or one address (its own /32 or /128); ValueError says what is wrong."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not a subnet (ADDR/PREFIX): {text!r}") from None


def parse_route_table(text: str) -> list[Network]:
    """The directly connected IPv4 networks in Linux's ``/proc/net/route`` text."""
    networks: list[Network] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest, gateway, mask = (int(fields[i], 16) for i in (1, 2, 7))
        except ValueError:
            continue
        if gateway != 0 or mask == 0:
            continue  # via a router, or the default route: not our subnet
        # The table is in host byte order (little-endian on the machines we run on).
        net = ipaddress.IPv4Address(dest.to_bytes(4, "little"))
        prefix = bin(mask).count("1")
        networks.append(ipaddress.ip_network(f"{net}/{prefix}", strict=False))
    return networks


def parse_ipv6_route_table(text: str) -> list[Network]:
    """The directly connected IPv6 networks in Linux's ``/proc/net/ipv6_route`` text."""
    networks: list[Network] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            dest = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            prefix, flags = int(fields[1], 16), int(fields[8], 16)
        except ValueError:
            continue
        # Skip the default route, routes via a gateway (RTF_GATEWAY), unreachable ones
        # (RTF_REJECT), the host's own addresses (RTF_LOCAL) and multicast.
        if prefix == 0 or flags & (0x0002 | 0x0200 | 0x80000000) or dest.is_multicast:
            continue
        networks.append(ipaddress.ip_network(f"{dest}/{prefix}", strict=False))
    return networks


def own_subnets_for(interface: str, connected: Iterable[Network]) -> tuple[Network, ...]:
    """The default own subnets of a listener bound to ``interface`` ("" = all).

    Loopback always counts. A listener on one address owns the connected networks
    holding that address; one on all addresses owns every connected network.
    """
    nets = list(LOOPBACK)
    bound = parse_address(interface) if interface else None
    for net in connected:
        if bound is None or bound.is_unspecified or bound in net:
            if net not in nets:
                nets.append(net)
    return tuple(nets)


def host_subnets(proc_net: Path = Path("/proc/net")) -> list[Network]:
    """The host's directly connected networks (none where Linux's tables are not readable)."""
    networks: list[Network] = []
    for name, parse in (("route", parse_route_table), ("ipv6_route", parse_ipv6_route_table)):
        try:
            networks += parse((proc_net / name).read_text())
        except OSError:
            pass
    return networks


class ConnectionGuard:
    """Decides per new connection whether it may proceed (before any TLS work)."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        own_subnets: Iterable[Network],
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        counters: Counters | None = None,
        global_limit: int = DEFAULT_GLOBAL_LIMIT,
    ) -> None:
        if limit < 0 or window <= 0 or global_limit < 1:
            raise ValueError(
                "the guard needs limit >= 0 (0: off), window > 0 and global_limit >= 1"
            )
        self.clock = clock
        self.own_subnets = tuple(own_subnets)
        # Plain attributes: a configuration reload may change them at run time.
        self.limit = limit  # per source; 0: the guard is off
        self.window = window
        self.global_limit = global_limit
        self.counters = counters if counters is not None else Counters()
        self.trusted: frozenset[Address] = frozenset()
        self._in_own: tuple[tuple[Network, ...], dict[Address, bool]] = (self.own_subnets, {})
        self._trusted_text: str | None = None
        self._admitted: deque[float] = deque()  # untrusted admissions within the window
        # Per source: its admissions within the window, ordered by its latest admission
        # (the least recently admitted source first, so expired ones are evicted in order).
        self.sources: OrderedDict[Source, deque[float]] = OrderedDict()
        self.refused = 0  # total refusals
        self._window_refused: dict[str, int] = {}  # refusals in this log window, by reason
        self._window_lines = 0  # first-refusal lines logged in this log window
        self._logged: set[Source] = set()  # sources whose first refusal was logged
        self._summary: IDelayedCall | None = None

    # --- trust ------------------------------------------------------------------
    def configure(self, parameters: Mapping[str, Any]) -> None:
        """Follow ``BridgeHostTrustedSites`` in the server parameters (a router listener)."""
        text = str(parameters.get(TRUSTED_SITES) or "")
        if text == self._trusted_text:
            return
        self._trusted_text = text
        self.trusted, bad = parse_trusted_sites(text)
        for entry in bad:
            self.log.warn(
                "{parameter}: ignoring {entry!r}: not one IP address (ranges are not taken)",
                parameter=TRUSTED_SITES,
                entry=entry,
                event="listener.guard_bad_entry",
            )
        self.log.info(
            "Connection guard: {count} trusted address(es) besides {subnets}",
            count=len(self.trusted),
            subnets=", ".join(str(n) for n in self.own_subnets) or "no own subnet",
            event="listener.guard_trusted",
        )

    def is_trusted(self, host: str) -> bool:
        """Whether connections from ``host`` bypass the windows (listed, or our subnet)."""
        address = parse_address(host)
        if address is None:
            return False  # not an IP peer (a UNIX socket...): the windows apply
        if address in self.trusted:
            return True
        # Our subnets, checked once per address while they stay the same (a reconnect
        # storm comes from a few addresses; bounded).
        known = self._in_own
        if known[0] is not self.own_subnets or len(known[1]) >= MAX_KNOWN_ADDRESSES:
            known = self._in_own = (self.own_subnets, {})
        inside = known[1].get(address)
        if inside is None:
            inside = known[1][address] = any(address in net for net in self.own_subnets)
        return inside

    # --- the windows --------------------------------------------------------------
    def admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may proceed; counts and logs refusals."""
        return self.decide(host) is None

    def decide(self, host: str) -> str | None:
        """None to let a new connection from ``host`` in, else the refusal's reason.

        The reason is ``guard`` (its source is over ``limit``) or ``guard-global``
        (all sources together are over ``global_limit``); refusals are counted and
        logged, admissions enter both windows.
        """
        if self.limit <= 0 or self.is_trusted(host):
            return None
        now = self.clock.seconds()
        horizon = now - self.window
        self._expire(horizon)
        key = source_key(host)
        times = self.sources.get(key)
        if times is not None:
            while times and times[0] <= horizon:
                times.popleft()  # this source's own expired admissions
            if not times:  # only after a clock step back: start the source afresh
                del self.sources[key]
                times = None
        if times is not None and len(times) >= self.limit:
            reason = "guard"
        elif len(self._admitted) >= self.global_limit:
            reason = "guard-global"
        else:
            if times is None:
                times = self.sources[key] = deque()
                while len(self.sources) > self.global_limit:
                    self.sources.popitem(last=False)  # the safety net (see the module doc)
            else:
                self.sources.move_to_end(key)
            times.append(now)
            self._admitted.append(now)
            return None
        self._refuse(host, key, reason)
        return reason

    def _expire(self, horizon: float) -> None:
        """Drop global admissions at or before ``horizon`` and the sources without a later one."""
        admitted, sources = self._admitted, self.sources
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        while sources:
            key, times = next(iter(sources.items()))
            if times[-1] > horizon:
                break
            del sources[key]

    def held_timestamps(self) -> int:
        """How many admission times the guard holds (global window and every source)."""
        return len(self._admitted) + sum(len(t) for t in self.sources.values())

    # --- logging without flooding ---------------------------------------------------
    def _refuse(self, host: str, key: Source, reason: str) -> None:
        self.refused += 1
        self.counters.inc("connections_refused", reason=reason)
        self._window_refused[reason] = self._window_refused.get(reason, 0) + 1
        if self._summary is None:
            self._summary = self.clock.callLater(self.window, self._summarize)
        if key in self._logged or self._window_lines >= LOG_SOURCES_PER_WINDOW:
            return
        self._window_lines += 1
        if len(self._logged) < LOG_SOURCES_REMEMBERED:
            self._logged.add(key)
        limit = self.limit if reason == "guard" else self.global_limit
        self.log.warn(
            "Refusing connections from {peer}: more than {limit} within {window}s ({scope})",
            peer=host,
            limit=limit,
            window=self.window,
            reason=reason,
            scope="from this source" if reason == "guard" else "from all untrusted sources",
            event="listener.guard_refused",
        )

    def _summarize(self) -> None:
        counts, self._window_refused = self._window_refused, {}
        self._window_lines = 0
        count = sum(counts.values())
        if not count:
            # A quiet window ends the episode: the next refusal logs at once again.
            self._summary = None
            self._logged.clear()
            return
        self.log.warn(
            "Refused {count} connection(s) from untrusted addresses in {window}s: "
            "{guard} over a source's limit, {guard_global} over the global ceiling",
            count=count,
            window=self.window,
            guard=counts.get("guard", 0),
            guard_global=counts.get("guard-global", 0),
            event="listener.guard_summary",
        )
        self._summary = self.clock.callLater(self.window, self._summarize)

    def stop(self) -> None:
        """Cancel the pending summary (the listener stops)."""
        if self._summary is not None and self._summary.active():
            self._summary.cancel()
        self._summary = None
