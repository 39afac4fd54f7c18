"""The session registry: ids, resume tokens, lookup, and ending sessions."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterator

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smbridge.session.control import SessionControl
from smbridge.session.negotiate import TimeoutPolicy
from smbridge.session.replay import DEFAULT_REPLAY_BYTES
from smbridge.session.session import EndReason, Peer, Session, SessionInfo, State
from smbridge.session.timer import TimerQueue

EndListener = Callable[[Session, EndReason], None]
DEFAULT_LINGER = 120.0


def new_session_id(node: str, now: float, worker: int | None = None) -> str:
    """``<node>-<milliseconds, hex>-<64 random bits, hex>``.

    The node name makes ids unique across the site (node names are), the time
    across restarts of the same node, and the random part unguessable. A worker of
    ``--workers N`` (``worker`` given) puts its index after the node,
    ``<node>-w<I>-<ms>-<random>``, so that any worker can tell which one holds the
    session (:func:`worker_of`).
    """
    if worker is None:
        return f"{node}-{int(now * 1000):x}-{secrets.token_hex(8)}"
    return f"{node}-w{worker}-{int(now * 1000):x}-{secrets.token_hex(8)}"


_HEX = frozenset("0123456789abcdef")
MAX_WORKER_DIGITS = 2  # --workers is at most 64


def worker_of(session_id: str, node: str) -> int | None:
    """The worker index in a session id of bridge ``node``; None if it names none.

    Only ``<node>-w<I>-<hex>-<hex>`` with ``I`` a plain decimal (no sign, no leading
    zero, at most two digits) names a worker; anything else (an id of a single-process
    bridge, another bridge's, garbage) is None and is looked up locally as usual.
    """
    prefix = node + "-w"
    if not session_id.startswith(prefix):
        return None
    parts = session_id[len(prefix) :].split("-")
    if len(parts) != 3:
        return None
    index, stamp, random_part = parts
    if not (0 < len(index) <= MAX_WORKER_DIGITS and index.isascii() and index.isdigit()):
        return None
    if index != str(int(index)):  # a leading zero: not how ids are written
        return None
    if not (stamp and random_part and _HEX.issuperset(stamp) and _HEX.issuperset(random_part)):
        return None
    return int(index)


def new_resume_token() -> str:
    """192 bits from the CSPRNG, URL-safe text. Never logged."""
    return secrets.token_urlsafe(24)


class SessionRegistry:
    """Every live session of this bridge (active or lingering), by id.

    Resume tokens are compared in constant time and never logged. Sessions are
    also indexed by (user, clientId), so a new logon from the same client
    replaces the session it left lingering (PROTOCOL §4.5).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        node: str,
        policy: TimeoutPolicy,
        linger: float = DEFAULT_LINGER,
        replay_bytes: int = DEFAULT_REPLAY_BYTES,
        worker: int | None = None,
    ) -> None:
        self.clock = clock
        self.node = node
        self.worker = worker  # this process's index among --workers N (None: a single one)
        self.policy = policy
        self.linger = linger  # seconds a dropped session waits for a resume (0: none)
        self.replay_bytes = replay_bytes  # per-session replay buffer limit
        self._sessions: dict[str, Session] = {}
        self._by_client: dict[tuple[str, str], set[str]] = {}
        self.timers = TimerQueue(clock)  # one DelayedCall for every session's timers
        self._end_listeners: list[EndListener] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def lingering(self) -> int:
        return sum(1 for s in self._sessions.values() if s.state is State.LINGERING)

    def client_index_size(self) -> int:
        """Entries in the (user, clientId) index (tests check nothing outlives its session)."""
        return len(self._by_client)

    @staticmethod
    def token_matches(session: Session, token: str) -> bool:
        """Constant-time comparison of a presented resume token."""
        return hmac.compare_digest(session.resume_token.encode(), token.encode())

    def on_end(self, listener: EndListener) -> None:
        """Call ``listener(session, reason)`` whenever a session ends."""
        self._end_listeners.append(listener)

    def lingering_for(self, user_id: str, client_id: str) -> list[Session]:
        """Lingering sessions of this user from this client (none without a clientId)."""
        if not client_id:
            return []
        ids = self._by_client.get((user_id, client_id), ())
        found = [self._sessions[i] for i in ids if i in self._sessions]
        return [s for s in found if s.state is State.LINGERING]

    def create(
        self,
        info: SessionInfo,
        peer: Peer,
        timeout: int,
        notify_imminent: bool = True,
        transport: str = "tls",
        remote: str = "",
        control: SessionControl | None = None,
    ) -> Session:
        session_id = new_session_id(self.node, self.clock.seconds(), self.worker)
        while session_id in self._sessions:  # 64 random bits: practically never
            session_id = new_session_id(self.node, self.clock.seconds(), self.worker)
        session = Session(
            session_id,
            new_resume_token(),
            info,
            peer,
            self.timers,
            timeout,
            notify_imminent,
            self._ended,
            transport=transport,
            remote=remote,
            replay_bytes=self.replay_bytes,
            control=control,
        )
        self._sessions[session_id] = session
        if info.client_id:
            self._by_client.setdefault((info.user_id, info.client_id), set()).add(session_id)
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
        key = (session.info.user_id, session.info.client_id)
        ids = self._by_client.get(key)
        if ids is not None:
            ids.discard(session.id)
            if not ids:
                del self._by_client[key]
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
