"""Resuming the same session after a dropped connection (PROTOCOL §4.5).

A step of :class:`smbridge.client.keeper.SessionKeeper`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from smbridge.client.discovery import retry_after
from smbridge.client.keeper_core import KeeperCore
from smbridge.client.keeper_state import CONNECTION_CODES, KeeperEvent, State
from smbridge.client.order import resume_delays
from smbridge.client.protocol import ClientError
from smbridge.client.session import BridgeClient, ResumeState


class ResumeSteps(KeeperCore):
    """Resuming the same session after a dropped connection (PROTOCOL §4.5)."""

    @defer.inlineCallbacks
    def _resume(self, old: BridgeClient) -> Any:
        state = old.resume_state
        if state is not None and self._target is not None:
            waited = False  # a logon-throttled pause stands in for the next one
            for delay in resume_delays(self.linger, self.resume_tries, self.backoff):
                if delay > 0 and not waited:
                    yield self._sleep(delay)
                waited = False
                try:
                    client = yield self._dial(self._target)
                except Exception as e:
                    self.log.info(
                        "Resume: cannot reach the bridge: {error}",
                        error=str(e),
                        event="keeper.resume_unreachable",
                    )
                    continue
                try:
                    reply = yield self._timed(
                        client,
                        client.resume(
                            ResumeState(state.session_id, state.resume_token, self._delivered)
                        ),
                    )
                except ClientError as e:
                    yield client.close()
                    if e.code == "logon-throttled":  # not a verdict: the same resume, later
                        yield self._sleep(retry_after(e.body))
                        waited = True
                        continue
                    if e.code in CONNECTION_CODES or e.retryable:
                        continue
                    self.log.info(
                        "Resume of {session} refused: {code} ({reason}); logging on afresh",
                        session=state.session_id,
                        code=e.code,
                        reason=e.reason,
                        event="keeper.resume_refused",
                    )
                    break
                if self.ended:
                    yield client.logoff()
                    return
                self._resumed(client, reply)
                return
        if not self.ended:
            self._set(State.RELOGGING)
            yield self._relogon()

    def _resumed(self, client: BridgeClient, reply: dict[str, Any]) -> None:
        assert self._target is not None
        self._attach(client, {**self.reply, **reply}, self._target)
        gap = reply.get("gap") is True
        position = client.received
        if not gap and position > self._delivered:
            self.log.warn(
                "Resume skipped notifications {first}..{last}",
                first=self._delivered + 1,
                last=position,
                event="keeper.resume_skip",
            )
            gap = True
        if gap:
            self._delivered = position
        self._set(State.CONNECTED)
        self.log.info(
            "Resumed session {session} at {position} (gap: {gap})",
            session=client.session_id,
            position=position,
            gap=gap,
            event="keeper.resumed",
        )
        self._emit(
            KeeperEvent("resumed", session_id=client.session_id, server=self.server, gap=gap)
        )
        if gap:
            snapshots = reply.get("snapshots")
            self._emit(
                KeeperEvent(
                    "resynchronised",
                    reason="gap",
                    session_id=client.session_id,
                    server=self.server,
                    gap=True,
                    snapshots=snapshots if isinstance(snapshots, dict) else {},
                )
            )
