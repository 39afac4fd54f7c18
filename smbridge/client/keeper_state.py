"""The keeper's states, their transitions and the events it tells the application.

Part of :class:`smbridge.client.keeper.SessionKeeper`; see that module's docstring.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Failures that say nothing about the session: the connection, not the bridge's answer.
CONNECTION_CODES = frozenset(
    {"connection-lost", "not-connected", "connect-timeout", "request-timeout", "bad-frame"}
)
# SessionTerminated reasons after which the keeper does not log on again.
FINAL_REASONS = frozenset({"logout", "expired"})


class State(enum.Enum):
    IDLE = "idle"
    CONNECTED = "connected"
    RESUMING = "resuming"
    RELOGGING = "relogging"
    MIGRATING = "migrating"
    ENDED = "ended"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.CONNECTED, State.ENDED}),
    State.CONNECTED: frozenset({State.RESUMING, State.RELOGGING, State.MIGRATING, State.ENDED}),
    State.RESUMING: frozenset({State.CONNECTED, State.RELOGGING, State.ENDED}),
    State.RELOGGING: frozenset({State.CONNECTED, State.RELOGGING, State.ENDED}),
    State.MIGRATING: frozenset({State.CONNECTED, State.RELOGGING, State.ENDED}),
    State.ENDED: frozenset(),
}


class InvalidTransition(Exception):
    pass


@dataclass(frozen=True)
class KeeperEvent:
    """What happened to the session, for the application.

    ``kind``: ``disconnected`` (the connection dropped; the keeper is on it),
    ``resumed`` (the same session is back; ``gap`` tells whether notifications were
    lost), ``relogged`` / ``migrated`` (a new session on ``server``),
    ``resynchronised`` (rebuild your view: ``snapshots`` maps each watch's topic to
    its fresh snapshot; with reason ``gap`` the snapshots follow as notifications),
    ``ended`` (for good: ``reason`` is ``logoff``, ``logon-failed``, ``no-bridge``,
    ``tenant-limit`` or ``terminated:<reason>``).
    """

    kind: str
    reason: str | None = None
    session_id: str | None = None
    server: dict[str, Any] | None = None
    gap: bool = False
    snapshots: dict[str, Any] = field(default_factory=dict)


EventListener = Callable[[KeeperEvent], object]
