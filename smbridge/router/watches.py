"""Watch requests: queues, user status and workgroup statistics.

Each watch is a fan-out topic held for the session (``session.topics``); the
reply is the topic's snapshot. A session holds at most ``max_watches`` topics;
a request that would pass the limit is refused whole with ``too-many-watches``.
A multi-topic watch (WatchStatus) either holds all its topics or none.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from smbridge.codec import Frame
from smbridge.errors import ProtocolError
from smbridge.router.fanout import FanOut
from smbridge.router.fields import text, text_list
from smbridge.router.reply import Reply
from smbridge.session.session import Session, State
from smbridge.topics import queue_topic, statistics_topic, status_topic


class TooManyWatches(ProtocolError):
    code = "too-many-watches"


class Watches:
    def __init__(self, fanout: FanOut, max_watches: int) -> None:
        self.fanout = fanout
        self.max_watches = max_watches

    def check_room(self, session: Session, topics: list[str]) -> None:
        new = [t for t in topics if t not in session.topics]
        if len(session.topics) + len(new) > self.max_watches:
            raise TooManyWatches(
                f"this session holds {len(session.topics)} watches; "
                f"{len(new)} more would pass the limit of {self.max_watches}",
                limit=self.max_watches,
            )

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

    # --- handlers ------------------------------------------------------------------
    def watch_queue(self, session: Session, frame: Frame) -> Reply:
        topic = queue_topic(text(frame.body or {}, "queue"))
        self.check_room(session, [topic])
        return self.hold(session, topic)

    def unwatch_queue(self, session: Session, frame: Frame) -> Reply:
        self.release(session, queue_topic(text(frame.body or {}, "queue")))
        return {}

    def watch_status(self, session: Session, frame: Frame) -> Reply:
        users = text_list(frame.body or {}, "users", self.max_watches)
        topics = [status_topic(u) for u in users]
        self.check_room(session, topics)
        already = {t for t in topics if t in session.topics}
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
        return d.addCallbacks(all_held, some_failed)

    def unwatch_status(self, session: Session, frame: Frame) -> Reply:
        for user in text_list(frame.body or {}, "users", self.max_watches):
            self.release(session, status_topic(user))
        return {}

    def watch_statistics(self, session: Session, frame: Frame) -> Reply:
        body = frame.body or {}
        topic = statistics_topic(text(body, "workgroup"))
        wanted = text_list(body, "stats", 1000) if body.get("stats") is not None else None
        self.check_room(session, [topic])

        def only_wanted(snapshot: dict[str, Any]) -> dict[str, Any]:
            if wanted is not None:
                stats = snapshot.get("stats", {})
                snapshot = {**snapshot, "stats": {k: stats[k] for k in wanted if k in stats}}
            return snapshot

        return self.hold(session, topic).addCallback(only_wanted)

    def unwatch_statistics(self, session: Session, frame: Frame) -> Reply:
        self.release(session, statistics_topic(text(frame.body or {}, "workgroup")))
        return {}
