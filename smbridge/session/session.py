"""A client session and its lifecycle state machine.

The session outlives neither its timer nor its owner's decision to end it; the
connection it writes to is a :class:`Peer` that the transport layer supplies,
so the whole lifecycle is testable with a Clock and a list of written frames.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from smbridge.codec import Kind, encode
from smbridge.codec.catalog import SESSION_TERMINATED, TERMINATION_IMMINENT
from smbridge.codec.frames import dump_json
from smbridge.resources import Origin
from smbridge.session.timer import SessionTimer, TimerQueue


class Peer(Protocol):
    """What a session writes to: one client connection."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class State(enum.Enum):
    ACTIVE = "active"
    CLOSED = "closed"


class EndReason(enum.Enum):
    """Why a session ended; the first four are PROTOCOL's SessionTerminated reasons."""

    SHUTDOWN = "shutdown"
    LOGOUT = "logout"
    EXPIRED = "expired"
    UNEXPECTED = "unexpected"
    DISCONNECTED = "disconnected"  # the connection dropped (no notice can reach the client)


_TRANSITIONS: dict[State, set[State]] = {State.ACTIVE: {State.CLOSED}, State.CLOSED: set()}


class InvalidTransition(Exception):
    pass


@dataclass(slots=True)
class SessionInfo:
    """Who the session belongs to, as CreateSession and the Notifier described it."""

    user_id: str
    display_name: str = ""
    extension: str = ""
    station: str | None = None
    location: str | None = None
    client_id: str = ""
    client_app: str = ""
    client_version: str = ""
    workgroups: list[str] = field(default_factory=list)
    rights: list[str] = field(default_factory=list)


class Session:
    """One logged-on client session."""

    __slots__ = (
        "id",
        "resume_token",
        "info",
        "peer",
        "transport",
        "remote",
        "logon_time",
        "state",
        "topics",
        "origin",
        "_on_end",
        "timer",
        "identity",
    )

    def __init__(
        self,
        session_id: str,
        resume_token: str,
        info: SessionInfo,
        peer: Peer,
        timers: TimerQueue,
        timeout: int,
        notify_imminent: bool,
        on_end: Callable[[Session, EndReason], None],
        transport: str = "tls",
        remote: str = "",
    ) -> None:
        self.id = session_id
        self.resume_token = resume_token
        self.info = info
        self.peer: Peer | None = peer
        self.transport = transport
        self.remote = remote
        self.logon_time = timers.clock.seconds()
        self.state = State.ACTIVE
        self.topics: set[str] = set()
        self.origin = Origin(transport)  # how the client reached us (resource URIs)
        self._on_end = on_end
        self.timer = SessionTimer(timers, timeout, notify_imminent, self._imminent, self._expired)
        # The identity a forwarded request carries upstream, encoded once.
        self.identity = b'"_session":' + dump_json({"id": session_id, "user": info.user_id})

    def __repr__(self) -> str:
        return f"<Session {self.id} user={self.info.user_id} {self.state.value}>"

    @property
    def timeout(self) -> float:
        return self.timer.timeout

    def _transition(self, to: State) -> None:
        if to not in _TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.state.value} -> {to.value}")
        self.state = to

    def send(self, data: bytes) -> None:
        """Write one encoded frame to the client, if it is connected."""
        peer = self.peer
        if peer is not None:
            peer.send(data)

    def notify(self, message: tuple[int, int], body: dict[str, Any]) -> None:
        self.send(encode(Kind.NOTIFICATION, message[0], message[1], 0, body))

    def touch(self) -> None:
        """Activity: restart the session timer."""
        self.timer.touch()

    def end(self, reason: EndReason, notify: bool = True) -> None:
        """End the session once, telling a connected client why (SessionTerminated).

        ``notify=False`` is for DestroySession, whose reply already says it.
        """
        if self.state is State.CLOSED:
            return
        self._transition(State.CLOSED)
        self.timer.cancel()
        if notify and reason is not EndReason.DISCONNECTED:
            self.notify(SESSION_TERMINATED, {"reason": reason.value})
        self._on_end(self, reason)

    def _imminent(self, seconds_left: float) -> None:
        self.notify(TERMINATION_IMMINENT, {"secondsLeft": round(seconds_left)})

    def _expired(self) -> None:
        self.end(EndReason.EXPIRED)
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.close()
