"""Accept or redirect a new session, as a pure decision (PROTOCOL §4.3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smbridge.roster.selection import Resolved

ACCEPT_MODES = ("default", "all", "maintenance")

# Reasons a redirect carries.
BACKUP = "backup"
MAINTENANCE = "maintenance"
OFF_SERVER_AVAILABLE = "off-server-available"
OVERLOADED = "overloaded"
EXCLUDED_LOCATION = "excluded-location"


@dataclass(frozen=True)
class Decision:
    """Accept (``reason`` None) or redirect with ``reason``."""

    accept: bool
    reason: str | None = None


def off_server_available(
    roster: Sequence[Mapping[str, Any]], own_name: str, rule: Resolved | None = None
) -> bool:
    """Whether another off-server bridge is connected and accepting (and allowed by ``rule``).

    Counting only bridges the user's rule allows keeps an on-server bridge from
    redirecting a user to a roster with nowhere to go.
    """
    return any(
        e.get("kind") == "off-server"
        and e.get("available")
        and e.get("name") != own_name
        and (rule is None or rule.allows(str(e.get("location") or "")))
        for e in roster
    )


def decide(
    *,
    mode: str,
    kind: str,
    location: str,
    own_name: str,
    cic_role: str,
    roster: Sequence[Mapping[str, Any]],
    rule: Resolved,
    loaded: bool,
) -> Decision:
    """Whether this bridge takes a new session of a user under ``rule``.

    In order: a bridge on the backup CIC server never accepts; ``maintenance``
    takes no new sessions; ``all`` takes every one; a bridge in a location the
    rule does not allow redirects (``excluded-location``); an off-server bridge
    accepts; an on-server bridge redirects while another off-server bridge that
    the rule allows is available, and otherwise accepts unless the site is loaded (``overloaded``).
    """
    if cic_role == "backup":
        return Decision(False, BACKUP)
    if mode == "maintenance":
        return Decision(False, MAINTENANCE)
    if mode == "all":
        return Decision(True)
    if not rule.allows(location):
        return Decision(False, EXCLUDED_LOCATION)
    if kind != "on-server":
        return Decision(True)
    if off_server_available(roster, own_name, rule):
        return Decision(False, OFF_SERVER_AVAILABLE)
    if loaded:
        return Decision(False, OVERLOADED)
    return Decision(True)
