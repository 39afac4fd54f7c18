"""ResumeSession (PROTOCOL §4.5) and the session hook's request filter.

A dropped connection leaves its session lingering (Session.linger). ResumeSession
``{sessionId, resumeToken, received}`` on any connection without a session
reattaches it: the reply, then, written right after it, either every numbered
notification after ``received`` from the replay buffer (``gap: false``,
``position == received``) or, when the buffer no longer reaches back that far,
fresh snapshots of all the session's watches (``gap: true``; ``position`` is the
count before them, and they are numbered ``position + 1`` on). Each snapshot is
one notification of its topic's change type carrying the whole state and
``"reset": true`` (QueueChanged ``{queue, interactions, reset}``, StatusChanged
``{user, status, since, reset}``...), sorted by topic. A session still attached to another live
connection is taken over and the old connection closed.

Guessing resume tokens is throttled like guessing passwords (``throttle.py``): the
key is (sessionId, address) and the address; a refused attempt is
``logon-throttled`` before the token is compared; a matching token clears the key;
``unknown-session`` gives the count back (a restarted bridge's clients all meet it).
Every attempt let through is settled before :meth:`Resumer.resume` returns or raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from smbridge.codec import Frame, Kind, encode, encode_raw
from smbridge.codec.catalog import (
    DIRECTORY_CHANGED,
    GET_DIRECTORY,
    MY_INTERACTIONS_CHANGED,
    QUEUE_CHANGED,
    RESUME_SESSION,
    STATISTICS_CHANGED,
    STATUS_CHANGED,
    WATCH_QUEUE,
    WATCH_STATISTICS,
    WATCH_STATUS,
    MessageType,
)
from smbridge.codec.pieces import PIECE_BYTES
from smbridge.counters import Counters
from smbridge.errors import BadRequest, LogonFailed, ProtocolError
from smbridge.resources import Origin
from smbridge.router.continued import continued
from smbridge.router.fanout import FanOut
from smbridge.router.fields import text
from smbridge.router.throttle import Attempt
from smbridge.session.negotiate import heartbeat_interval
from smbridge.session.registry import SessionRegistry
from smbridge.session.session import Session, State
from smbridge.topics import (
    DIRECTORY_PREFIX,
    QUEUE_PREFIX,
    STATISTICS_PREFIX,
    STATUS_PREFIX,
    USER_PREFIX,
    directory_topic,
    queue_topic,
    statistics_topic,
    status_topic,
    user_topic,
)

if TYPE_CHECKING:
    from smbridge.transports.connection import ClientConnection


# The notification that carries a topic's whole state after a gap, by topic prefix.
RESET_MESSAGES: dict[str, MessageType] = {
    QUEUE_PREFIX: QUEUE_CHANGED,
    DIRECTORY_PREFIX: DIRECTORY_CHANGED,
    USER_PREFIX: MY_INTERACTIONS_CHANGED,
    STATUS_PREFIX: STATUS_CHANGED,
    STATISTICS_PREFIX: STATISTICS_CHANGED,
}


def reset_frames(snapshots: dict[str, dict[str, Any]], bound: int = PIECE_BYTES) -> list[bytes]:
    """One ``reset`` notification per topic snapshot (a large one in pieces), sorted by topic."""
    frames = []
    for topic in sorted(snapshots):
        prefix = topic.partition(":")[0] + ":"
        message = RESET_MESSAGES.get(prefix)
        if message is not None:  # a large one: first piece, then its tail (continued.py)
            first, rest = continued(message, snapshots[topic], {"reset": True}, bound)
            frames.append(encode_raw(Kind.NOTIFICATION, *message, 0, first))
            frames.extend(rest)
    return frames


class UnknownSession(ProtocolError):
    code = "unknown-session"


class Forbidden(ProtocolError):
    code = "forbidden"


def _received(body: dict[str, Any]) -> int:
    value = body.get("received")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest("received must be a whole number >= 0")
    return value


class Resumer:
    """Reattaches lingering (or stolen) sessions to a new connection."""

    log = Logger()
    piece_bytes = PIECE_BYTES  # the largest piece of a reset snapshot (--piece-bytes)

    def __init__(
        self,
        registry: SessionRegistry,
        fanout: FanOut,
        counters: Counters,
        describe: Callable[[Origin], dict[str, Any]],
    ) -> None:
        self.registry = registry
        self.fanout = fanout
        self.counters = counters
        self.describe = describe  # server, roster, cic: as in a CreateSession reply
        # The logon throttle's gate (Router.admit_logon); None: no throttling.
        self.gate: Callable[[ClientConnection, str, str], Attempt] | None = None
        # With --workers N: relays the connection when the id names another worker
        # (transports/relay.py; True: relayed). None: a single process.
        self.relay: Callable[[ClientConnection, Frame, str], bool] | None = None

    def _refuse(self, error: ProtocolError) -> ProtocolError:
        self.counters.inc("resumes", outcome="refused")
        return error

    def resume(self, conn: ClientConnection, frame: Frame) -> None:
        """Answer ResumeSession on ``conn``; raise a ProtocolError to refuse it."""
        body = frame.body or {}
        session_id = text(body, "sessionId")
        token = body.get("resumeToken")
        if not isinstance(token, str):
            raise self._refuse(BadRequest("resumeToken must be a string"))
        received = _received(body)
        if conn.session is not None:
            raise self._refuse(
                ProtocolError("this connection already has a session", code="session-exists")
            )
        if self.relay is not None:  # another worker's session: relayed there, resumed there
            try:
                if self.relay(conn, frame, session_id):
                    return
            except ProtocolError as e:
                raise self._refuse(e) from None
        try:
            attempt = self.gate(conn, "resume", session_id) if self.gate is not None else None
        except ProtocolError as e:
            raise self._refuse(e) from None
        try:
            session = self.registry.get(session_id)
            if session is not None and session.state is State.CLOSED:
                session = None
            matches = session is not None and self.registry.token_matches(session, token)
        except BaseException:
            if attempt is not None:
                attempt.abandoned()  # never judged; its place in flight is released
            raise
        if session is None:
            if attempt is not None:
                attempt.abandoned()
            raise self._refuse(UnknownSession(f"no session {session_id} on this bridge"))
        if not matches:
            if attempt is not None:
                attempt.failed()
            self.counters.inc("logon_failures")
            self.log.info(
                "Resume of {session_id} from {remote} refused: bad resume token",
                session_id=session_id,
                remote=conn.remote,
                event="session.resume_refused",
            )
            raise self._refuse(
                LogonFailed("the resume token does not match", reason="bad-resume-token")
            )
        if attempt is not None:
            attempt.succeeded()
        replay = session.replay
        if received > replay.count:
            raise self._refuse(
                BadRequest(f"received {received} but only {replay.count} notifications were sent")
            )
        self._take(session, conn)  # numbers what the old connection still held
        frames = replay.since(received)
        gap = frames is None
        position = replay.count if gap else received
        timeout = int(session.timeout)
        reply = {
            "sessionId": session.id,
            "resumed": True,
            "gap": gap,
            "position": position,
            "sessionTimeout": timeout,
            "heartbeatInterval": heartbeat_interval(timeout),
            **self.describe(conn.origin),
        }
        conn.send(encode(Kind.RESPONSE, *RESUME_SESSION, frame.request_id, reply))
        if frames is None:
            names = session.topics | {user_topic(session.info.user_id)}
            for data in reset_frames(self.fanout.snapshots(session, names), self.piece_bytes):
                session.send(data)  # numbered position + 1, ... as they are written
        else:
            conn.write_replayed(frames)  # numbered already: written as they are
        outcome = "gap" if gap else "resumed"
        self.counters.inc("resumes", outcome=outcome)
        self.log.info(
            "Session {session_id} resumed over {transport} from {remote} "
            "({outcome}: {count} notification(s) after {received})",
            session_id=session.id,
            transport=conn.kind,
            remote=conn.remote,
            outcome=outcome,
            count=0 if frames is None else len(frames),
            received=received,
            event="session.resumed",
        )

    def _take(self, session: Session, conn: ClientConnection) -> None:
        """Attach ``conn``; a still-attached older connection is detached and closed."""
        old: Any = session.peer
        if old is not None and old is not conn:
            if getattr(old, "session", None) is session:
                old.hand_back()  # its unwritten frames join the replay, numbered
                old.session = None
            old.close()
        session.attach(conn)
        conn.session = session
        session.origin = conn.origin
        session.transport = conn.kind
        session.remote = conn.remote
        session.touch()


# --- the session hook's filters (control.py), enforced per request ------------------
def requested_topics(key: MessageType, body: dict[str, Any]) -> list[str]:
    """The topics a watch request would hold (empty for other requests)."""
    if key == WATCH_QUEUE:
        return [queue_topic(str(body.get("queue", "")))]
    if key == WATCH_STATISTICS:
        return [statistics_topic(str(body.get("workgroup", "")))]
    if key == GET_DIRECTORY:
        return [directory_topic(str(body.get("name", "")))]
    if key == WATCH_STATUS:
        users = body.get("users")
        return [status_topic(str(u)) for u in users] if isinstance(users, list) else []
    return []


def check_allowed(session: Session, key: MessageType, frame: Frame) -> None:
    """Raise Forbidden when the session's control does not allow this request."""
    control = session.control
    if not control.restricted:
        return
    if not control.may_request(key):
        raise Forbidden("this session may not make this request")
    for topic in requested_topics(key, frame.body or {}):
        if not control.may_watch(topic):
            raise Forbidden(f"this session may not watch {topic}")
