"""A client session and its lifecycle state machine (docs/lifecycle.md).

States: ``active`` (a connection is attached), ``lingering`` (the connection
dropped without DestroySession; the session waits ``linger`` seconds for a
ResumeSession) and ``closed``. Every notification frame written toward the
session is numbered and kept in its :class:`ReplayBuffer`, connected or not.
The session outlives neither its timers nor its owner's decision to end it; the
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
from smbridge.session.certificate import CertificateIdentity
from smbridge.session.control import SessionControl
from smbridge.session.replay import DEFAULT_REPLAY_BYTES, ReplayBuffer, Run
from smbridge.session.timer import SessionTimer, TimerQueue

_NOTIFICATION = int(Kind.NOTIFICATION)


class Peer(Protocol):
    """What a session writes to: one client connection."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class State(enum.Enum):
    ACTIVE = "active"
    LINGERING = "lingering"
    CLOSED = "closed"


class EndReason(enum.Enum):
    """Why a session ended; the first four are PROTOCOL's SessionTerminated reasons."""

    SHUTDOWN = "shutdown"
    LOGOUT = "logout"
    EXPIRED = "expired"
    UNEXPECTED = "unexpected"
    DISCONNECTED = "disconnected"  # dropped and not resumed within the linger time


_TRANSITIONS: dict[State, set[State]] = {
    State.ACTIVE: {State.LINGERING, State.CLOSED},
    State.LINGERING: {State.ACTIVE, State.CLOSED},
    State.CLOSED: set(),
}


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
    # The client certificate it logged on with (Glacier2's SSLInfo); None: a password.
    certificate: CertificateIdentity | None = None


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
        "replay",
        "linger_timer",
        "control",
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
        replay_bytes: int = DEFAULT_REPLAY_BYTES,
        control: SessionControl | None = None,
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
        self.replay = ReplayBuffer(replay_bytes)
        self.linger_timer: SessionTimer | None = None
        self.control = control or SessionControl()  # what the session hook allows
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
        """Write one encoded frame to the client, or keep it for a resume.

        With a connection, the connection numbers the notification when it writes
        it (session/replay.py); without one (lingering), it is numbered and kept now.
        """
        peer = self.peer
        if peer is not None:
            peer.send(data)
        elif data[5] == _NOTIFICATION:
            self.replay.append(data)

    def send_run(self, run: Run, frames: list[bytes]) -> None:
        """Like :meth:`send` for the fan-out's run: ``frames`` (notifications) joined in ``run``."""
        peer = self.peer
        if peer is None:
            self.replay.append_run(run)  # kept whole (session/replay.py)
            return
        try:
            send_run = peer.send_run  # type: ignore[attr-defined]
        except AttributeError:  # a peer without runs (a test's): frame by frame
            for frame in frames:
                peer.send(frame)
            return
        send_run(run)

    def notify(self, message: tuple[int, int], body: dict[str, Any]) -> None:
        self.send(encode(Kind.NOTIFICATION, message[0], message[1], 0, body))

    def touch(self) -> None:
        """Activity: restart the session timer."""
        self.timer.touch()

    def linger(self, seconds: float) -> None:
        """The connection dropped: wait ``seconds`` for a resume, then end (disconnected)."""
        self.peer = None
        if self.state is not State.ACTIVE:
            return
        if seconds <= 0:
            self.end(EndReason.DISCONNECTED)
            return
        self._transition(State.LINGERING)
        self.linger_timer = SessionTimer(
            self.timer.queue, seconds, False, _no_notice, self._linger_expired
        )

    def attach(self, peer: Peer) -> None:
        """A connection took the session (CreateSession's or a resume's): it is active."""
        if self.state is State.LINGERING:
            self._transition(State.ACTIVE)
        self._stop_lingering()
        self.peer = peer

    def _stop_lingering(self) -> None:
        timer, self.linger_timer = self.linger_timer, None
        if timer is not None:
            timer.cancel()

    def _linger_expired(self) -> None:
        self.linger_timer = None
        self.end(EndReason.DISCONNECTED)

    def end(self, reason: EndReason, notify: bool = True) -> None:
        """End the session once, telling a connected client why (SessionTerminated).

        ``notify=False`` is for DestroySession, whose reply already says it.
        """
        if self.state is State.CLOSED:
            return
        self._transition(State.CLOSED)
        self.timer.cancel()
        self._stop_lingering()
        if notify and reason is not EndReason.DISCONNECTED:
            self.notify(SESSION_TERMINATED, {"reason": reason.value})
        self.replay.clear()
        self._on_end(self, reason)

    def _imminent(self, seconds_left: float) -> None:
        self.notify(TERMINATION_IMMINENT, {"secondsLeft": round(seconds_left)})

    def _expired(self) -> None:
        self.end(EndReason.EXPIRED)
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.close()


def _no_notice(seconds_left: float) -> None:
    """The linger timer gives no imminent notice."""
