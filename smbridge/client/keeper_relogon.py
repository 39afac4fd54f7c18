"""A fresh logon by the reconnect order when the session is gone (PROTOCOL §4.4).

A step of :class:`smbridge.client.keeper.SessionKeeper`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from smbridge.client.continued import gather
from smbridge.client.discovery import (
    Landing,
    resolve_quietly,
    try_in_order,
)
from smbridge.client.keeper_core import KeeperCore
from smbridge.client.keeper_state import CONNECTION_CODES, KeeperEvent, State
from smbridge.client.order import reconnect_plan
from smbridge.client.protocol import ClientError
from smbridge.client.session import BridgeClient
from smbridge.codec.catalog import QUEUE_CHANGED, WATCH_QUEUE
from smbridge.roster.attempts import attempt_groups

_QUEUE_PIECES = (QUEUE_CHANGED, "queue", "interactions")  # gather()'s WatchQueue arguments


class RelogonSteps(KeeperCore):
    """A fresh logon by the reconnect order when the session is gone (PROTOCOL §4.4)."""

    def _redirected(self, error: ClientError, leaving: str | None = None) -> list[dict[str, Any]]:
        """A redirect's roster as targets, ordered for the user, without ``leaving``."""
        groups = attempt_groups(error.body, self._host, self._port, self._addresses, self._rng)
        return [t for g in groups for t in g if leaving is None or t["name"] != leaving]

    @defer.inlineCallbacks
    def _relogon(self) -> Any:
        """Log on afresh by the reconnect order, round after round, until one takes it."""
        rounds = 0
        first_pass = 0
        while self.state is State.RELOGGING:
            if not self._addresses:
                self._addresses = yield resolve_quietly(self._resolve, self._host, self._port)
            groups = attempt_groups(
                self._roster, self._host, self._port, self._addresses, self._rng
            )
            plan = reconnect_plan(groups, self.top_tries, self.backoff, first_pass)
            first_pass = plan[-1].pass_number + 1 if plan else first_pass + 1
            try:
                landing = yield try_in_order(
                    plan,
                    self._dial,
                    self._logon,
                    clock=self._clock,
                    redirect=self._redirected,
                    site=self._host,
                    stopped=lambda: self.ended,
                )
            except ClientError as e:
                if self.ended:
                    return
                if e.code == "logon-failed":
                    self._end("logon-failed")
                    return
                rounds += 1
                if self.rounds is not None and rounds >= self.rounds:
                    self._end("no-bridge" if e.code != "tenant-limit" else "tenant-limit")
                    return
                if e.code == "tenant-limit":  # limits free up: the next round, after its pause
                    self.log.info(
                        "Tenant over its {limit} limit; trying again later",
                        limit=e.body.get("limit"),
                        event="keeper.tenant_limit",
                    )
                else:
                    self.log.info("No bridge took the logon; trying again", event="keeper.round")
                continue
            yield self._fresh(landing, "relogged")

    @defer.inlineCallbacks
    def _fresh(self, landing: Landing, kind: str, reason: str | None = None) -> Any:
        """A new session: attach it, hold its notifications, restore watches, then say so."""
        if self.ended:
            yield landing.client.logoff()
            return
        if self._cache is not None:
            self._cache.save(self._host, landing.reply)
        self._held = []
        self._delivered = 0
        self._attach(landing.client, landing.reply, landing.target)
        snapshots: dict[str, Any] = {}
        for message, body in self.watches.restore_requests():
            try:
                reply = yield landing.client.request(message, body)
                if message == WATCH_QUEUE:  # a large queue: its pieces (client/continued.py)
                    reply = yield gather(landing.client, reply, *_QUEUE_PIECES)
            except ClientError as e:
                if e.code in CONNECTION_CODES:
                    break
                topics = self.watches.topics_of(message, body)
                self.watches.discard(topics)
                self.log.warn(
                    "Could not restore {topics}: {error}",
                    topics=topics,
                    error=str(e),
                    event="keeper.watch_lost",
                )
                continue
            snapshots.update(self.watches.snapshots(message, body, reply))
        held, self._held = self._held, None
        if self.ended:
            return
        if not landing.client.protocol.connected:
            self.log.info("Connection lost while restoring watches", event="keeper.restore_lost")
            self._set(State.RELOGGING)  # loop again (or start the loop, after Migrate)
            if kind != "relogged":
                self._run(self._relogon())
            return
        self._set(State.CONNECTED)
        self.log.info(
            "New session {session} on {server} ({kind}), {n} watch(es) restored",
            session=landing.client.session_id,
            server=(self.server or {}).get("name"),
            kind=kind,
            n=len(snapshots),
            event=f"keeper.{kind}",
        )
        event = {"session_id": landing.client.session_id, "server": self.server}
        self._emit(KeeperEvent(kind, reason=reason, **event))
        self._emit(KeeperEvent("resynchronised", reason=kind, snapshots=snapshots, **event))
        client: BridgeClient = landing.client
        for frame in held:
            if client is not self.client:
                break
            self._deliver(frame)
            self._act_on(client, frame)
