"""The connection guard: too many connections from untrusted addresses (PROTOCOL §6).

Trusted are the addresses listed in the server parameter ``BridgeHostTrustedSites``
(pipe-separated single IP addresses: as the note says, the setting no longer takes
ranges, so an entry that is not one address is ignored with a warning) and every
address in the bridge's own subnets. Connections from anywhere else share one
sliding window: once ``limit`` of them were let in within the last ``window``
seconds, the next untrusted one is refused, whatever its address, until the
oldest of those leaves the window. Only admitted connections fill the window, so
at most ``limit`` untrusted connections per ``window`` seconds reach the TLS layer
even during a flood, and legitimate clients still get in at that rate; the window
holds at most ``limit`` timestamps, so a flood costs no memory.

Refusals are counted (``connections_refused``, reason ``guard``) and logged without
flooding the log: the first refusal after a quiet window is logged at once
(``listener.guard_refused``), then one summary per window with the count while
refusals go on (``listener.guard_summary``).

This module does no I/O: the clock is injected and the listener
(:mod:`smbridge.transports.listener`) asks :meth:`ConnectionGuard.admit` before it
builds a protocol. :func:`host_subnets` reads the host's connected networks (Linux's
routing tables) for the default own subnets.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.counters import Counters

TRUSTED_SITES = "BridgeHostTrustedSites"
DEFAULT_LIMIT = 20
DEFAULT_WINDOW = 3.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def parse_address(text: str) -> Address | None:
    """One IP address (an IPv4-mapped IPv6 address as IPv4); None if ``text`` is not one."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
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
    ) -> None:
        if limit < 0 or window <= 0:
            raise ValueError("the guard needs limit >= 0 (0: off) and window > 0")
        self.clock = clock
        self.own_subnets = tuple(own_subnets)
        # Plain attributes: a configuration reload may change them at run time.
        self.limit = limit  # 0: the guard is off
        self.window = window
        self.counters = counters if counters is not None else Counters()
        self.trusted: frozenset[Address] = frozenset()
        self._trusted_text: str | None = None
        self._admitted: deque[float] = deque()  # untrusted admissions within the window
        self.refused = 0  # total refusals
        self._suppressed = 0  # refusals since the last log line
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
        """Whether connections from ``host`` bypass the window (listed, or our subnet)."""
        address = parse_address(host)
        if address is None:
            return False  # not an IP peer (a UNIX socket...): the window applies
        if address in self.trusted:
            return True
        return any(address in net for net in self.own_subnets)

    # --- the window ---------------------------------------------------------------
    def admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may proceed; counts and logs refusals."""
        if self.limit <= 0 or self.is_trusted(host):
            return True
        now = self.clock.seconds()
        admitted = self._admitted
        while admitted and (admitted[0] <= now - self.window or len(admitted) > self.limit):
            admitted.popleft()  # out of the window (or beyond a lowered limit)
        if len(admitted) < self.limit:
            admitted.append(now)
            return True
        self._refuse(host)
        return False

    def _refuse(self, host: str) -> None:
        self.refused += 1
        self.counters.inc("connections_refused", reason="guard")
        if self._summary is not None:
            self._suppressed += 1
            return
        self.log.warn(
            "Refusing connections from untrusted addresses: more than {limit} within "
            "{window}s (first: {peer})",
            limit=self.limit,
            window=self.window,
            peer=host,
            event="listener.guard_refused",
        )
        self._summary = self.clock.callLater(self.window, self._summarize)

    def _summarize(self) -> None:
        count, self._suppressed = self._suppressed, 0
        if not count:
            self._summary = None  # a quiet window: the next refusal logs at once again
            return
        self.log.warn(
            "Refused {count} more connection(s) from untrusted addresses in {window}s",
            count=count,
            window=self.window,
            event="listener.guard_summary",
        )
        self._summary = self.clock.callLater(self.window, self._summarize)

    def stop(self) -> None:
        """Cancel the pending summary (the listener stops)."""
        if self._summary is not None and self._summary.active():
            self._summary.cancel()
        self._summary = None
