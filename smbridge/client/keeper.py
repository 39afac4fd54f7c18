"""One logical session that survives dropped connections and Migrate (PROTOCOL §4.4-4.6).

:class:`SessionKeeper` logs on like :func:`~smbridge.client.logon_anywhere` and then
keeps the session going without the application's help:

- **Dropped connection**: ResumeSession on the same bridge, a few times with a
  growing pause within the linger time (:func:`~smbridge.client.order.resume_delays`).
  It sends ``received``, the number of notification frames it has seen; the bridge
  replays the rest, so listeners get every notification exactly once and in order.
  With ``gap: true`` the bridge could not replay and sends fresh snapshots: the
  keeper says ``resynchronised`` (reason ``gap``) before them.
- **Session gone** (``unknown-session``, ``logon-failed``/``bad-resume-token``, or
  every resume attempt failed): a fresh logon by the reconnect order
  (:func:`~smbridge.client.order.reconnect_plan`: the top group ``top_tries`` times,
  then the full list), then every watch the application holds is re-issued and
  ``resynchronised`` (reason ``relogged``) carries their snapshots. A
  ``logon-failed`` answer stops it (``ended``); nothing else does. ``tenant-limit``
  (the tenant is full, site-wide) ends that plan at once; the next one follows after
  its pause, as limits free up.
- **Migrate**: a fresh logon on the first bridge of the notice's roster that takes
  it (each once; redirects followed), watches restored (``migrated``, then
  ``resynchronised``), then DestroySession of the old session.

The typed URI may be ``tls://`` (or ``tcp://``) or ``wss://`` (or ``ws://``) through
the public proxy: resumes go back to the URI the session was on, and a roster sent to
a WebSocket client names each bridge by a ``uri`` through the same proxy, which the
fresh logons and Migrate dial (:mod:`smbridge.client.reach`). ``logon-throttled`` is
no logon failure: the same bridge is tried again after ``retryAfter``.

A heartbeat unanswered for ``heartbeat_timeout`` seconds (default 60) counts as a
dropped connection, so a network that dies silently is noticed too; a CreateSession
or ResumeSession unanswered for ``request_timeout`` seconds (default 30) counts as a
failed attempt.

With ``cert`` (and ``key``) every connection presents that client certificate and
every logon is a certificate logon (``auth: certificate``, no password).

The password is kept in memory, for these automatic logons only; it is never
written anywhere nor logged, and neither is the resume token. Requests made while
the keeper reconnects wait for the session to be back.
"""

from __future__ import annotations

from smbridge.client.keeper_core import KeeperCore
from smbridge.client.keeper_migrate import MigrateSteps
from smbridge.client.keeper_relogon import RelogonSteps
from smbridge.client.keeper_resume import ResumeSteps
from smbridge.client.keeper_state import (
    CONNECTION_CODES,
    FINAL_REASONS,
    EventListener,
    InvalidTransition,
    KeeperEvent,
    State,
)

__all__ = [
    "CONNECTION_CODES",
    "FINAL_REASONS",
    "EventListener",
    "InvalidTransition",
    "KeeperCore",
    "KeeperEvent",
    "SessionKeeper",
    "State",
]


class SessionKeeper(MigrateSteps, RelogonSteps, ResumeSteps):
    """A session that outlives its connections; see the module docstring.

    The parts live in their own modules: the state and events (keeper_state), the
    public API and connections (keeper_core), resume (keeper_resume), a fresh logon by
    the reconnect order (keeper_relogon) and Migrate (keeper_migrate).
    """
