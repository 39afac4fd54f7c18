"""Tenants (GVP Resource Manager policies): the limits, their wire form, the refusal.

Shared by the reference Notifier (which enforces sessions, sessions per user and
the logon rate site-wide, ``smbridge.notifier.tenants``) and the bridge (which
enforces the watch limit per bridge and reports use, ``smbridge.router.tenancy``).
Pure: no clock is read here, every method that needs the time takes ``now``.

A limit of ``None`` means no limit. The wire form (Authenticate answer, Register
answer, TenantsChanged, ``/api/status``) names them ``sessions``,
``sessionsPerUser``, ``logonsPerSecond``, ``logonBurst`` and ``watches``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smbridge.errors import ProtocolError

DEFAULT_TENANT = "default"
LIMITS = ("sessions", "sessionsPerUser", "logonsPerSecond", "watches")
RATE_WINDOW = 10.0  # seconds over which the logons-per-second use is measured


class TenantLimit(ProtocolError):
    """A logon or watch over one of its tenant's limits (error ``tenant-limit``)."""

    code = "tenant-limit"

    def __init__(self, tenant: str, limit: str, maximum: float | int, reason: str) -> None:
        super().__init__(
            f"tenant {tenant!r} is at its {limit} limit ({_num(maximum)}): {reason}",
            tenant=tenant,
            limit=limit,
            max=maximum,
            reason=reason,
        )
        self.tenant = tenant
        self.limit = limit


def _num(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class TenantLimits:
    """One tenant's limits; ``None`` is no limit."""

    sessions: int | None = None
    sessions_per_user: int | None = None
    logons_per_second: float | None = None
    logon_burst: int | None = None  # None: the rate rounded up (at least 1)
    watches: int | None = None

    @property
    def burst(self) -> int:
        """The token bucket's size: ``logon_burst``, else the rate rounded up, at least 1."""
        if self.logon_burst is not None:
            return self.logon_burst
        return max(1, math.ceil(self.logons_per_second or 1))

    def to_wire(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "sessionsPerUser": self.sessions_per_user,
            "logonsPerSecond": self.logons_per_second,
            "logonBurst": self.burst if self.logons_per_second is not None else None,
            "watches": self.watches,
        }

    @classmethod
    def from_wire(cls, data: Any) -> TenantLimits:
        """Read the wire form leniently (what a Notifier sent): bad values are no limit."""
        if not isinstance(data, Mapping):
            return cls()

        def count(key: str) -> int | None:
            v = data.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None

        rate = data.get("logonsPerSecond")
        ok = isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0
        return cls(
            count("sessions"),
            count("sessionsPerUser"),
            float(rate) if ok and rate is not None else None,
            count("logonBurst"),
            count("watches"),
        )


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` kept; a logon takes one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        """Take a token if one is there."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def reconfigure(self, rate: float, burst: int, now: float) -> None:
        """A new rate and size; the tokens held stay (cut to the new size)."""
        self._refill(now)
        self.rate = rate
        self.burst = burst
        self.tokens = min(self.tokens, float(burst))


class RateWindow:
    """Events per second over the last :data:`RATE_WINDOW` seconds (the use figure)."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def add(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        return round(len(self._times) / RATE_WINDOW, 3)

    def _trim(self, now: float) -> None:
        times = self._times
        while times and times[0] <= now - RATE_WINDOW:
            times.popleft()


def limit_of(limits: TenantLimits, name: str) -> float | int | None:
    """The value of one of :data:`LIMITS` by its wire name."""
    return {
        "sessions": limits.sessions,
        "sessionsPerUser": limits.sessions_per_user,
        "logonsPerSecond": limits.logons_per_second,
        "watches": limits.watches,
    }[name]
