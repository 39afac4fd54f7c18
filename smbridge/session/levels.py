"""Timeout levels (GVP's inactivity timers at several levels): the most specific wins.

The configured session timeout T may be set in the Notifier's server parameters
at four levels, besides the bridge's own ``--session-timeout`` (source
``default``)::

    Session Timeout                      the whole site            -> "site"
    Session Timeout/Location/<name>      users in that location    -> "location:<name>"
    Session Timeout/Workgroup/<name>     members of that workgroup -> "workgroup:<name>"
    Session Timeout/User/<id>            one user                  -> "user:<id>"

User beats workgroup beats location beats site beats default. When a user is in
several workgroups that set one, the first in the user's workgroup list wins.
Values are whole seconds; a value that is not a number, or is under the floor
Tmin, is ignored (logged) and the next level applies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from twisted.logger import Logger

from smbridge.session.negotiate import TimeoutPolicy
from smbridge.session.session import SessionInfo

SITE_KEY = "Session Timeout"
LOCATION_KEY = "Session Timeout/Location/"
WORKGROUP_KEY = "Session Timeout/Workgroup/"
USER_KEY = "Session Timeout/User/"
MAX_TIMEOUT = 7 * 24 * 3600

log = Logger(namespace="smbridge.session.levels")


def _candidates(info: SessionInfo) -> Iterator[tuple[str, str]]:
    """(parameter name, source) from the most specific level to the least."""
    yield USER_KEY + info.user_id, f"user:{info.user_id}"
    for workgroup in info.workgroups:
        yield WORKGROUP_KEY + workgroup, f"workgroup:{workgroup}"
    if info.location:
        yield LOCATION_KEY + info.location, f"location:{info.location}"
    yield SITE_KEY, "site"


def _seconds(value: Any, floor: int) -> int | None:
    try:
        seconds = int(str(value).strip())
    except ValueError:
        return None
    if not floor <= seconds <= MAX_TIMEOUT:
        return None
    return seconds


def policy_for(
    base: TimeoutPolicy, parameters: Mapping[str, Any], info: SessionInfo
) -> TimeoutPolicy:
    """The policy for one new session: T from the most specific level that sets it."""
    for name, source in _candidates(info):
        value = parameters.get(name)
        if value is None:
            continue
        seconds = _seconds(value, base.floor)
        if seconds is None:
            log.warn(
                "Ignoring server parameter {name}={value!r}: "
                "expected whole seconds from {floor} to {most}",
                name=name,
                value=value,
                floor=base.floor,
                most=MAX_TIMEOUT,
                event="session.bad_timeout_parameter",
            )
            continue
        return replace(base, timeout=seconds, source=source)
    return base
