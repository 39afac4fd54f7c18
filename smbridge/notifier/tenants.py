"""Per-tenant policies, checked before a session is created (GVP Resource Manager).

The Notifier sees every bridge's (and every worker's) Authenticate and
SessionOpened/SessionClosed, so it is the one place that can hold a tenant to its
limits site-wide: most concurrent sessions, most sessions per user and most new
logons per second (a token bucket of ``logonsPerSecond`` with ``logonBurst``
tokens). Watches are the bridge's to count (``smbridge.router.tenancy``).

A logon that passes Authenticate holds a **reservation** until its bridge says
SessionOpened (the reservation becomes the session), SessionClosed with the
reservation (the bridge gave up: a redirect, the hook refused, the client went),
or :data:`RESERVE_SECONDS` pass. Reservations count as sessions, so logons racing
each other cannot pass a limit together. A link drop forgets that bridge's
sessions and reservations (the bridge announces its live sessions again when it
is back). Limits change live (:meth:`TenantPolicies.set_site`): a lowered limit
ends nothing, it refuses new logons until use is under it.

Sans-IO: the clock is injected and read only through ``clock.seconds()``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smbridge.codec.catalog import (
    LINK_AUTHENTICATE,
    LINK_REGISTER,
    LINK_SESSION_CLOSED,
    LINK_SESSION_OPENED,
    MessageType,
)
from smbridge.codec.frames import Frame
from smbridge.notifier.site import Site
from smbridge.tenancy import (
    DEFAULT_TENANT,
    RateWindow,
    TenantLimit,
    TenantLimits,
    TokenBucket,
)

RESERVE_SECONDS = 15.0  # a logon's reservation lapses this long after Authenticate


@dataclass
class _Reservation:
    owner: Hashable
    tenant: str
    user: str
    expires: float


@dataclass
class _Open:
    owner: Hashable
    tenant: str
    user: str


class TenantPolicies:
    """Sessions, sessions per user and the logon rate of every tenant, site-wide."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, site: Site, reserve_seconds: float = RESERVE_SECONDS
    ) -> None:
        self.clock = clock
        self.reserve_seconds = reserve_seconds
        self.limits: dict[str, TenantLimits] = {}
        self.tenant_of: dict[str, str] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._rates: dict[str, RateWindow] = {}
        self._reservations: dict[str, _Reservation] = {}  # by id, oldest first
        self._waiting: dict[tuple[Hashable, str], dict[str, None]] = {}  # (owner, user) -> ids
        self._open: dict[str, _Open] = {}  # by session id
        self._tenant_use: Counter[str] = Counter()  # sessions + reservations
        self._user_use: Counter[str] = Counter()
        self.refusals: Counter[tuple[str, str]] = Counter()  # (tenant, limit)
        self._next = 0
        self.set_site(site)

    # --- configuration -------------------------------------------------------------
    def set_site(self, site: Site) -> bool:
        """Take the site's tenants and limits (at start and on ``PUT /api/site``).

        Answers whether any limit or membership changed. Existing sessions stay
        counted under the tenant they opened in.
        """
        now = self.clock.seconds()
        limits = {name: t.limits for name, t in site.tenants.items()}
        limits.setdefault(DEFAULT_TENANT, TenantLimits())
        tenant_of = {uid: t.name for t in site.tenants.values() for uid in t.users}
        changed = limits != self.limits or tenant_of != self.tenant_of
        self.limits, self.tenant_of = limits, tenant_of
        for name, lim in limits.items():
            bucket = self._buckets.get(name)
            if lim.logons_per_second is None:
                self._buckets.pop(name, None)
            elif bucket is None:
                self._buckets[name] = TokenBucket(lim.logons_per_second, lim.burst, now)
            else:
                bucket.reconfigure(lim.logons_per_second, lim.burst, now)
        return changed

    def tenant(self, user: str) -> str:
        return self.tenant_of.get(user, DEFAULT_TENANT)

    def limits_of(self, tenant: str) -> TenantLimits:
        return self.limits.get(tenant) or TenantLimits()

    # --- the link's messages (notifier/link.py) -------------------------------------
    def answered(self, owner: Hashable, key: MessageType, answer: dict[str, Any]) -> None:
        """Add the tenant to an Authenticate answer (or refuse it), the limits to Register's."""
        if key == LINK_AUTHENTICATE:
            answer["tenant"] = self.admit(owner, str(answer["user"]["id"]))
        elif key == LINK_REGISTER:
            answer["tenants"] = self.wire_limits()

    def notified(self, owner: Hashable, key: MessageType, frame: Frame) -> None:
        """Follow SessionOpened and SessionClosed (the latter may give up a reservation)."""
        if key == LINK_SESSION_OPENED:
            body = frame.parsed()
            self.opened(
                owner, str(body.get("sessionId")), str(body.get("user")), body.get("reservation")
            )
        elif key == LINK_SESSION_CLOSED:
            body = frame.parsed()
            self.closed(owner, body.get("sessionId"), body.get("reservation"))

    # --- logons --------------------------------------------------------------------
    def admit(self, owner: Hashable, user: str) -> dict[str, Any]:
        """Reserve a session for ``user``'s logon or raise :class:`TenantLimit`.

        Answers the ``tenant`` member of the Authenticate answer: its name, its
        limits and the reservation's id.
        """
        now = self.clock.seconds()
        self._expire(now)
        tenant = self.tenant(user)
        lim = self.limits_of(tenant)
        if lim.sessions is not None and self._tenant_use[tenant] >= lim.sessions:
            self._refuse(tenant, user, "sessions", lim.sessions, "too many sessions")
        if lim.sessions_per_user is not None and self._user_use[user] >= lim.sessions_per_user:
            self._refuse(
                tenant, user, "sessionsPerUser", lim.sessions_per_user, "this user has too many"
            )
        bucket = self._buckets.get(tenant)
        if bucket is not None and not bucket.take(now):
            assert lim.logons_per_second is not None
            self._refuse(
                tenant, user, "logonsPerSecond", lim.logons_per_second, "too many new logons"
            )
        self._next += 1
        rid = f"r{self._next}"
        self._reservations[rid] = _Reservation(owner, tenant, user, now + self.reserve_seconds)
        self._waiting.setdefault((owner, user), {})[rid] = None
        self._tenant_use[tenant] += 1
        self._user_use[user] += 1
        self._rates.setdefault(tenant, RateWindow()).add(now)
        return {"name": tenant, "limits": lim.to_wire(), "reservation": rid}

    def _refuse(self, tenant: str, user: str, limit: str, maximum: float, why: str) -> None:
        self.refusals[(tenant, limit)] += 1
        self.log.info(
            "Logon of {user} refused: tenant {tenant} at its {limit} limit ({max})",
            user=user,
            tenant=tenant,
            limit=limit,
            max=maximum,
            event="notifier.tenant.refused",
        )
        raise TenantLimit(tenant, limit, maximum, why)

    def opened(self, owner: Hashable, session_id: str, user: str, reservation: Any = None) -> None:
        """A bridge announced a session: its reservation (if any) becomes the session.

        Without a reservation id, the oldest reservation of that user on that link
        is taken; a session announced with none (a link back up) is counted as is.
        """
        if session_id in self._open:
            return
        self._expire(self.clock.seconds())
        res = self._reservations.get(reservation) if isinstance(reservation, str) else None
        if res is not None and (res.owner != owner or res.user != user):
            res = None  # not this session's: leave it
        if res is not None:
            self._take(reservation)
        else:
            waiting = self._waiting.get((owner, user))
            if waiting:
                res = self._take(next(iter(waiting)))  # that user's oldest on that link
        if res is not None:
            self._open[session_id] = _Open(owner, res.tenant, user)
            return  # its use was counted when reserved
        tenant = self.tenant(user)
        self._open[session_id] = _Open(owner, tenant, user)
        self._tenant_use[tenant] += 1
        self._user_use[user] += 1

    def closed(self, owner: Hashable, session_id: Any = None, reservation: Any = None) -> None:
        """A session ended, or a bridge gave up a logon it had a reservation for."""
        if isinstance(session_id, str):
            s = self._open.get(session_id)
            if s is not None and s.owner == owner:
                del self._open[session_id]
                self._release(s.tenant, s.user)
        if isinstance(reservation, str):
            r = self._reservations.get(reservation)
            if r is not None and r.owner == owner:
                self._take(reservation)
                self._release(r.tenant, r.user)

    def link_lost(self, owner: Hashable) -> None:
        """Forget the sessions and reservations of a bridge whose link dropped."""
        for sid in [sid for sid, s in self._open.items() if s.owner == owner]:
            s = self._open.pop(sid)
            self._release(s.tenant, s.user)
        for rid in [rid for rid, r in self._reservations.items() if r.owner == owner]:
            r = self._take(rid)
            self._release(r.tenant, r.user)

    def _take(self, rid: str) -> _Reservation:
        """Remove a reservation (from the index too) and return it."""
        r = self._reservations.pop(rid)
        key = (r.owner, r.user)
        waiting = self._waiting[key]
        del waiting[rid]
        if not waiting:
            del self._waiting[key]
        return r

    def _release(self, tenant: str, user: str) -> None:
        self._tenant_use[tenant] -= 1
        if self._tenant_use[tenant] <= 0:
            del self._tenant_use[tenant]
        self._user_use[user] -= 1
        if self._user_use[user] <= 0:
            del self._user_use[user]

    def _expire(self, now: float) -> None:
        late = []
        for rid, r in self._reservations.items():  # oldest first: stop at the first live one
            if r.expires > now:
                break
            late.append(rid)
        for rid in late:
            r = self._take(rid)
            self._release(r.tenant, r.user)
            self.log.info(
                "Reservation of {user} in tenant {tenant} lapsed without SessionOpened",
                user=r.user,
                tenant=r.tenant,
                event="notifier.tenant.lapsed",
            )

    # --- reading -------------------------------------------------------------------
    def use(self, tenant: str) -> dict[str, Any]:
        """Sessions (reservations included), the most any one user has, the logon rate."""
        now = self.clock.seconds()
        self._expire(now)
        users = {s.user for s in self._open.values() if s.tenant == tenant}
        users |= {r.user for r in self._reservations.values() if r.tenant == tenant}
        rate = self._rates.get(tenant)
        return {
            "sessions": self._tenant_use[tenant],
            "sessionsPerUser": max((self._user_use[u] for u in users), default=0),
            "logonsPerSecond": rate.rate(now) if rate else 0.0,
            "reserved": sum(1 for r in self._reservations.values() if r.tenant == tenant),
        }

    def state(self) -> list[dict[str, Any]]:
        """Every tenant's limits, site-wide use and refusals (``GET /api/tenants``)."""
        names = sorted(self.limits.keys() | self._tenant_use.keys())
        return [
            {
                "tenant": name,
                "users": sum(1 for t in self.tenant_of.values() if t == name)
                if name != DEFAULT_TENANT
                else None,
                "limits": self.limits_of(name).to_wire(),
                "use": self.use(name),
                "refusals": {lim: n for (t, lim), n in self.refusals.items() if t == name},
            }
            for name in names
        ]

    def wire_limits(self) -> dict[str, dict[str, Any]]:
        """Every tenant's limits (the Register answer and TenantsChanged)."""
        return {name: lim.to_wire() for name, lim in self.limits.items()}
