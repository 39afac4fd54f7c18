"""Migrate: a fresh logon on the notice's roster, then the old session destroyed (PROTOCOL §4.6).

A step of :class:`smbridge.client.keeper.SessionKeeper`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from smbridge.client.discovery import try_in_order
from smbridge.client.keeper_core import KeeperCore
from smbridge.client.keeper_state import State
from smbridge.client.order import migrate_plan
from smbridge.client.protocol import ClientError
from smbridge.client.session import BridgeClient


class MigrateSteps(KeeperCore):
    """Migrate: a fresh logon on the notice's roster, then the old session destroyed."""

    def _migrate(self, old: BridgeClient, body: dict[str, Any]) -> None:
        self._set(State.MIGRATING)
        self._run(self._migrating(old, body))

    @defer.inlineCallbacks
    def _migrating(self, old: BridgeClient, body: dict[str, Any]) -> Any:
        reason = str(body.get("reason", "migrate"))
        roster = body.get("roster")
        leaving = (self.server or {}).get("name")
        plan = migrate_plan(roster if isinstance(roster, list) else [], self._port, leaving)
        self.log.info(
            "Migrating session {session} ({reason}) to one of {n} bridge(s)",
            session=old.session_id,
            reason=reason,
            n=len(plan),
            event="keeper.migrate",
        )
        try:
            landing = yield try_in_order(
                plan,
                self._dial,
                self._logon,
                clock=self._clock,
                redirect=lambda e: self._redirected(e, leaving),
                site=self._host,
                stopped=lambda: self.ended,
            )
        except ClientError as e:
            if self.ended:
                return
            self.log.warn("Migrate failed: {error}", error=str(e), event="keeper.migrate_failed")
            if old.protocol.connected and old.session_id is not None:
                self._set(State.CONNECTED)  # stay where we are
            else:
                self._set(State.RELOGGING)
                yield self._relogon()
            return
        yield self._fresh(landing, "migrated", reason)
        if old is not self.client and old.protocol.connected:
            yield old.logoff()
