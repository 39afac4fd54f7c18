"""The ``tenants`` section of a site file: users grouped under limits (docs/site-file.md).

A user listed by no tenant belongs to the tenant ``default``, which has no limits
unless the file lists a tenant of that name (with or without users). Every problem
raises :class:`SiteError` naming the field, as the rest of the site file does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smbridge.notifier.site_types import SiteError, Tenant, User
from smbridge.tenancy import TenantLimits

LIMIT_KEYS = ("sessions", "sessionsPerUser", "logonsPerSecond", "logonBurst", "watches")


def parse_tenants(value: Any, users: Mapping[str, User]) -> dict[str, Tenant]:
    """Check the ``tenants`` list and build the tenants by name."""
    if not isinstance(value, list):
        raise SiteError(f"tenants: expected a list, got {type(value).__name__}")
    out: dict[str, Tenant] = {}
    owner: dict[str, str] = {}
    for i, t in enumerate(value):
        where = f"tenants[{i}]"
        if not isinstance(t, dict):
            raise SiteError(f"{where}: expected a mapping, got {type(t).__name__}")
        unknown = sorted(str(k) for k in t.keys() - {"name", "users", "limits"})
        if unknown:
            raise SiteError(f"{where}: unknown key(s) {', '.join(unknown)}")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise SiteError(f"{where}.name: expected a non-empty string, got {name!r}")
        if name in out:
            raise SiteError(f"tenants: duplicate name {name!r}")
        members = t.get("users", [])
        if not isinstance(members, list) or not all(isinstance(u, str) for u in members):
            raise SiteError(f"{where}.users: expected a list of user ids")
        for uid in members:
            if uid not in users:
                raise SiteError(f"{where}.users: unknown user {uid!r}")
            if uid in owner and owner[uid] != name:
                raise SiteError(f"{where}.users: {uid!r} is already in tenant {owner[uid]!r}")
            owner[uid] = name
        out[name] = Tenant(name, tuple(dict.fromkeys(members)), _limits(t.get("limits"), where))
    return out


def _limits(value: Any, where: str) -> TenantLimits:
    where = f"{where}.limits"
    if value is None:
        return TenantLimits()
    if not isinstance(value, dict):
        raise SiteError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value.keys() - set(LIMIT_KEYS))
    if unknown:
        raise SiteError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {LIMIT_KEYS})")

    def count(key: str, minimum: int) -> int | None:
        v = value.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise SiteError(f"{where}.{key}: expected an integer >= {minimum} or null, got {v!r}")
        return v

    rate = value.get("logonsPerSecond")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0
    ):
        raise SiteError(f"{where}.logonsPerSecond: expected a number > 0 or null, got {rate!r}")
    burst = count("logonBurst", 1)
    if burst is not None and rate is None:
        raise SiteError(f"{where}.logonBurst: only with logonsPerSecond")
    return TenantLimits(
        sessions=count("sessions", 0),
        sessions_per_user=count("sessionsPerUser", 1),
        logons_per_second=float(rate) if rate is not None else None,
        logon_burst=burst,
        watches=count("watches", 0),
    )
