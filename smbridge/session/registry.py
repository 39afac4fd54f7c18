"""The session registry: ids, resume tokens, lookup, and ending sessions."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smbridge.session.negotiate import TimeoutPolicy
from smbridge.session.session import EndReason, Peer, Session, SessionInfo
from smbridge.session.timer import TimerQueue

EndListener = Callable[[Session, EndReason], None]


class SessionRegistry:
    """Every live session of this bridge, by id.

    Ids are ``<node>-<random>``: unique across the site because node names are,
    and unguessable. Resume tokens carry 192 random bits and are never logged.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, node: str, policy: TimeoutPolicy) -> None:
        self.clock = clock
        self.node = node
        self.policy = policy
        self._sessions: dict[str, Session] = {}
        self.timers = TimerQueue(clock)  # one DelayedCall for every session's timer
        self._end_listeners: list[EndListener] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def on_end(self, listener: EndListener) -> None:
        """Call ``listener(session, reason)`` whenever a session ends."""
        self._end_listeners.append(listener)

    def create(
        self,
        info: SessionInfo,
        peer: Peer,
        timeout: int,
        notify_imminent: bool = True,
        transport: str = "tls",
        remote: str = "",
    ) -> Session:
        session_id = f"{self.node}-{secrets.token_hex(8)}"
        session = Session(
            session_id,
            secrets.token_urlsafe(24),
            info,
            peer,
            self.timers,
            timeout,
            notify_imminent,
            self._ended,
            transport=transport,
            remote=remote,
        )
        self._sessions[session_id] = session
        self.log.info(
            "Session {session_id} created for {user} "
            "(timeout {timeout}s, {transport} from {remote})",
            session_id=session_id,
            user=info.user_id,
            timeout=timeout,
            transport=transport,
            remote=remote,
            event="session.created",
        )
        return session

    def _ended(self, session: Session, reason: EndReason) -> None:
        self._sessions.pop(session.id, None)
        self.log.info(
            "Session {session_id} of {user} ended: {reason}",
            session_id=session.id,
            user=session.info.user_id,
            reason=reason.value,
            event="session.ended",
        )
        for listener in self._end_listeners:
            listener(session, reason)

    def end_all(self, reason: EndReason) -> None:
        for session in self:
            session.end(reason)
