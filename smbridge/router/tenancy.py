"""The bridge's side of tenants: each session's tenant, the watch limit, use against limit.

The Notifier holds tenants to their session, per-user and logon-rate limits
site-wide (``smbridge.notifier.tenants``); its Authenticate answer names the
session's tenant, the tenant's limits and a reservation. The bridge:

* gives the reservation back (SessionClosed ``{reservation}``) when it does not
  create the session after all (a redirect, the hook refused, the client went),
  so a redirected logon does not hold a place at the Notifier;
* holds each tenant to its **watch limit on this bridge**: the watches of all the
  tenant's sessions here (held or in flight) never pass ``watches``; a watch
  request that would is refused whole with ``tenant-limit`` (``limit: watches``);
* follows the limits live (Register answer ``tenants``, TenantsChanged) and
  reports this bridge's use against them (``/api/status``, ``/metrics``).

Pure: the time comes in as ``now``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from smbridge.errors import ProtocolError
from smbridge.session.session import Session
from smbridge.tenancy import (
    DEFAULT_TENANT,
    LIMITS,
    RateWindow,
    TenantLimit,
    TenantLimits,
    limit_of,
)


@dataclass
class Ticket:
    """One logon's tenant and its reservation at the Notifier, until a session is made."""

    tenant: str
    reservation: str | None
    opened: bool = False


class BridgeTenancy:
    """Tenants as this bridge sees them: limits, sessions, watches."""

    log = Logger()

    def __init__(self, taken: Callable[[Session], Iterable[str]]) -> None:
        self._taken = taken  # the topics a session holds or waits for (Watches.taken)
        self.limits: dict[str, TenantLimits] = {}
        # Per tenant: the wire form its limits were last read from, and what it gave.
        self._read: dict[str, tuple[Any, TenantLimits]] = {}
        self._sessions: dict[str, Session] = {}
        self._tenant_of: dict[str, str] = {}
        self._watch_n: dict[str, int] = {}
        self.sessions: Counter[str] = Counter()
        self.user_sessions: Counter[tuple[str, str]] = Counter()
        self.watches: Counter[str] = Counter()
        self._rates: dict[str, RateWindow] = {}
        self.refusals: Counter[tuple[str, str]] = Counter()  # (tenant, limit)

    # --- limits --------------------------------------------------------------------
    def set_limits(self, wire: Any) -> None:
        """Every tenant's limits as the Notifier sent them (Register, TenantsChanged)."""
        if isinstance(wire, dict):
            self.limits = {str(k): TenantLimits.from_wire(v) for k, v in wire.items()}

    # --- logons --------------------------------------------------------------------
    def ticket(self, auth: dict[str, Any], now: float) -> Ticket:
        """The tenant of a logon the Notifier accepted (its Authenticate answer)."""
        t = auth.get("tenant")
        if not isinstance(t, dict):
            return Ticket(DEFAULT_TENANT, None)
        name = str(t.get("name") or DEFAULT_TENANT)
        if "limits" in t:
            self.limits[name] = self._limits_from(name, t["limits"])
        self._rates.setdefault(name, RateWindow()).add(now)
        rid = t.get("reservation")
        return Ticket(name, rid if isinstance(rid, str) else None)

    def _limits_from(self, name: str, wire: Any) -> TenantLimits:
        """``TenantLimits.from_wire(wire)``, not read again while each logon sends the same."""
        read = self._read.get(name)
        if read is not None and read[0] == wire and self.limits.get(name) is read[1]:
            return read[1]
        limits = TenantLimits.from_wire(wire)
        self._read[name] = (wire, limits)
        return limits

    def opened(self, session: Session, ticket: Ticket) -> None:
        """The logon made ``session``: count it under its tenant."""
        ticket.opened = True
        sid = session.id
        self._sessions[sid] = session
        self._tenant_of[sid] = ticket.tenant
        self.sessions[ticket.tenant] += 1
        self.user_sessions[(ticket.tenant, session.info.user_id)] += 1

    def abandoned(self, ticket: Ticket) -> dict[str, Any] | None:
        """The SessionClosed body that gives a reservation back, if the logon made no session."""
        if ticket.opened or ticket.reservation is None:
            return None
        ticket.opened = True  # once
        return {"reservation": ticket.reservation, "reason": "not-created"}

    def closed(self, session: Session) -> None:
        sid = session.id
        tenant = self._tenant_of.pop(sid, None)
        self._sessions.pop(sid, None)
        if tenant is None:
            return
        _down(self.sessions, tenant, 1)
        _down(self.user_sessions, (tenant, session.info.user_id), 1)
        _down(self.watches, tenant, self._watch_n.pop(sid, 0))

    def refused(self, error: ProtocolError) -> None:
        """Count a logon the Notifier refused ``tenant-limit`` (its payload names both)."""
        if error.code == TenantLimit.code:
            tenant, limit = error.extra.get("tenant"), error.extra.get("limit")
            self._count(str(tenant), str(limit), None)

    def _count(self, tenant: str, limit: str, user: str | None) -> None:
        """Count a refusal; log the 1st, 2nd, 4th, 8th... of each (tenant, limit)."""
        self.refusals[(tenant, limit)] += 1
        n = self.refusals[(tenant, limit)]
        if n & (n - 1) == 0:
            self.log.info(
                "Tenant {tenant} at its {limit} limit: refusal {n} (user {user})",
                tenant=tenant,
                limit=limit,
                n=n,
                user=user or "-",
                event="router.tenant.refused",
            )

    def tenant(self, session: Session) -> str | None:
        return self._tenant_of.get(session.id)

    # --- watches -------------------------------------------------------------------
    def check_room(self, session: Session, taken: int, new: int) -> None:
        """Refuse ``new`` more watches when the tenant's total on this bridge would pass."""
        tenant = self._tenant_of.get(session.id)
        if tenant is None or not new:
            return
        cap = self.limits.get(tenant, TenantLimits()).watches
        if cap is None:
            return
        others = self.watches[tenant] - self._watch_n.get(session.id, 0)
        if others + taken + new > cap:
            self._count(tenant, "watches", session.info.user_id)
            raise TenantLimit(
                tenant,
                "watches",
                cap,
                f"the tenant's sessions hold {others + taken} watches on this bridge; "
                f"{new} more would pass it",
            )

    def recount(self, session_id: str) -> None:
        """Bring the session's watch count (and its tenant's) up to date."""
        session = self._sessions.get(session_id)
        if session is None:
            return
        n = len(set(self._taken(session)))
        tenant = self._tenant_of[session_id]
        self.watches[tenant] += n - self._watch_n.get(session_id, 0)
        self._watch_n[session_id] = n
        if self.watches[tenant] <= 0:
            del self.watches[tenant]

    # --- reading -------------------------------------------------------------------
    def status(self, now: float) -> list[dict[str, Any]]:
        """Each tenant's limits and this bridge's use of them (``/api/status``)."""
        names = sorted(self.limits.keys() | self.sessions.keys() | self.watches.keys())
        out = []
        for name in names:
            lim = self.limits.get(name, TenantLimits())
            per_user = [n for (t, _), n in self.user_sessions.items() if t == name]
            rate = self._rates.get(name)
            use = {
                "sessions": self.sessions[name],
                "sessionsPerUser": max(per_user, default=0),
                "logonsPerSecond": rate.rate(now) if rate else 0.0,
                "watches": self.watches[name],
            }
            out.append(
                {"tenant": name, "limits": {k: limit_of(lim, k) for k in LIMITS}, "use": use}
            )
        return out


def _down(counter: Counter[Any], key: Any, n: int) -> None:
    counter[key] -= n
    if counter[key] <= 0:
        del counter[key]
