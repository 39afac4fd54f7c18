"""Watch requests: queues, user status and workgroup statistics.

Each watch is a fan-out topic held for the session (``session.topics``); the
reply is the topic's snapshot. A session holds at most ``max_watches`` topics;
a request that would pass the limit is refused whole with ``too-many-watches``.
A multi-topic watch (WatchStatus) either holds all its topics or none.

The limit counts watches in flight too: a topic joins ``session.topics`` only once
its snapshot is in, which for the first watcher waits for the Notifier, so a
client that pipelines many watches in one read would otherwise pass every check
before any of them is held. :meth:`Watches.claim` checks the room and counts the
request's topics in :attr:`Watches.in_flight` (synchronously, in arrival order)
until its answer settles, whatever way it settles (held, refused, cancelled by an
unwatch, or the session ending).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from smbridge.codec import Frame
from smbridge.codec.pieces import PIECE_BYTES
from smbridge.errors import ProtocolError
from smbridge.router.continued import queue_reply
from smbridge.router.fanout import FanOut
from smbridge.router.fields import text, text_list
from smbridge.router.reply import Reply
from smbridge.router.tenancy import BridgeTenancy
from smbridge.session.session import Session, State
from smbridge.topics import queue_topic, statistics_topic, status_topic

T = TypeVar("T")


class TooManyWatches(ProtocolError):
    code = "too-many-watches"


class Watches:
    piece_bytes = PIECE_BYTES  # the largest piece of a watch reply (--piece-bytes)

    def __init__(self, fanout: FanOut, max_watches: int) -> None:
        self.fanout = fanout
        self.max_watches = max_watches
        # session id -> {topic: watch requests in flight for it}; empty entries removed.
        self.in_flight: dict[str, dict[str, int]] = {}
        self.tenancy = BridgeTenancy(self.taken)  # each tenant's watch limit (tenancy.py)

    def taken(self, session: Session) -> set[str]:
        """The topics the session holds or has a watch in flight for."""
        flying = self.in_flight.get(session.id)
        return session.topics | flying.keys() if flying else set(session.topics)

    def check_room(self, session: Session, topics: Iterable[str]) -> None:
        taken = self.taken(session)
        new = {t for t in topics if t not in taken}
        if len(taken) + len(new) > self.max_watches:
            raise TooManyWatches(
                f"this session holds or is waiting for {len(taken)} watches; "
                f"{len(new)} more would pass the limit of {self.max_watches}",
                limit=self.max_watches,
            )
        self.tenancy.check_room(session, len(taken), len(new))

    def claim(self, session: Session, topics: list[str]) -> _Claim:
        """Check the room for ``topics`` and count them in flight until the claim settles."""
        self.check_room(session, topics)
        flying = self.in_flight.setdefault(session.id, {})
        for t in topics:
            flying[t] = flying.get(t, 0) + 1
        self.tenancy.recount(session.id)
        return _Claim(self, session.id, topics)

    def _settle(self, session_id: str, topics: list[str]) -> None:
        flying = self.in_flight.get(session_id)
        if flying is None:
            return  # the session ended meanwhile (forget)
        for t in topics:
            left = flying.get(t, 0) - 1
            if left > 0:
                flying[t] = left
            else:
                flying.pop(t, None)
        if not flying:
            del self.in_flight[session_id]
        self.tenancy.recount(session_id)

    def forget(self, session: Session) -> set[str]:
        """The session ended: stop counting its watches in flight; return their topics."""
        return set(self.in_flight.pop(session.id, {}))

    def hold(self, session: Session, topic: str) -> defer.Deferred[dict[str, Any]]:
        """Watch ``topic`` for the session; fire with its snapshot."""

        def held(snapshot: dict[str, Any]) -> dict[str, Any]:
            if session.state is State.CLOSED:
                self.fanout.unwatch(topic, session)
            else:
                session.topics.add(topic)
            return snapshot

        return self.fanout.watch(topic, session).addCallback(held)

    def release(self, session: Session, topic: str) -> None:
        session.topics.discard(topic)
        self.fanout.unwatch(topic, session)
        self.tenancy.recount(session.id)

    # --- handlers ------------------------------------------------------------------
    def watch_queue(self, session: Session, frame: Frame) -> Reply:
        topic = queue_topic(text(frame.body or {}, "queue"))
        claim = self.claim(session, [topic])
        return claim.until(self.hold(session, topic).addCallback(queue_reply, self.piece_bytes))

    def unwatch_queue(self, session: Session, frame: Frame) -> Reply:
        self.release(session, queue_topic(text(frame.body or {}, "queue")))
        return {}

    def watch_status(self, session: Session, frame: Frame) -> Reply:
        users = text_list(frame.body or {}, "users", self.max_watches)
        topics = [status_topic(u) for u in users]
        already = self.taken(session).intersection(topics)  # not this request's to undo
        claim = self.claim(session, topics)
        waits = [self.hold(session, t) for t in topics]

        def all_held(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
            return {"users": snapshots}

        def some_failed(failure: Failure) -> Failure:
            for t in topics:  # all or nothing: let go of what this request took
                if t not in already:
                    self.release(session, t)
            if isinstance(failure.value, defer.FirstError):
                first: Failure = failure.value.subFailure
                return first
            return failure

        d = defer.gatherResults(waits, consumeErrors=True)
        return claim.until(d.addCallbacks(all_held, some_failed))

    def unwatch_status(self, session: Session, frame: Frame) -> Reply:
        for user in text_list(frame.body or {}, "users", self.max_watches):
            self.release(session, status_topic(user))
        return {}

    def watch_statistics(self, session: Session, frame: Frame) -> Reply:
        body = frame.body or {}
        topic = statistics_topic(text(body, "workgroup"))
        wanted = text_list(body, "stats", 1000) if body.get("stats") is not None else None
        claim = self.claim(session, [topic])

        def only_wanted(snapshot: dict[str, Any]) -> dict[str, Any]:
            if wanted is not None:
                stats = snapshot.get("stats", {})
                snapshot = {**snapshot, "stats": {k: stats[k] for k in wanted if k in stats}}
            return snapshot

        return claim.until(self.hold(session, topic).addCallback(only_wanted))

    def unwatch_statistics(self, session: Session, frame: Frame) -> Reply:
        self.release(session, statistics_topic(text(frame.body or {}, "workgroup")))
        return {}


class _Claim:
    """Topics counted in flight for one watch request, until its answer settles."""

    __slots__ = ("_watches", "_session_id", "_topics")

    def __init__(self, watches: Watches, session_id: str, topics: list[str]) -> None:
        self._watches = watches
        self._session_id = session_id
        self._topics = topics

    def until(self, d: defer.Deferred[T]) -> defer.Deferred[T]:
        """Settle the claim when ``d`` fires, with a result or a failure (passed on)."""

        def settle(result: T | Failure) -> T | Failure:
            self._watches._settle(self._session_id, self._topics)
            return result

        return d.addBoth(settle)
