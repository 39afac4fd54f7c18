"""Fan-out: one upstream subscription per topic, shared by every watcher.

The first watcher of a topic subscribes upstream; later watchers are answered
from the bridge's own copy of the topic (kept by applying the same change
events), so a snapshot is always exactly the state before the next event that
watcher receives: events are handled one at a time, and a reply and the events
after it go through the same ordered connection buffer. The last watcher to
leave releases the subscription. Each upstream event is encoded once and the
same bytes are written to every watcher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.codec import Frame, Kind, encode_raw
from smbridge.codec.catalog import LINK_SUBSCRIBE, LINK_UNSUBSCRIBE
from smbridge.errors import ProtocolError
from smbridge.topics import TopicState

if TYPE_CHECKING:
    from smbridge.upstream.connector import UpstreamConnector


class Watcher(Protocol):
    def send(self, data: bytes) -> None: ...


class Topic:
    __slots__ = ("name", "sub", "state", "watchers", "waiting", "pinned")

    def __init__(self, name: str, sub: int) -> None:
        self.name = name
        self.sub = sub
        self.state: TopicState | None = None  # None until the first snapshot
        self.watchers: set[Watcher] = set()
        self.waiting: list[tuple[Watcher | None, defer.Deferred[dict[str, Any]]]] = []
        self.pinned = False  # held by the bridge itself (directory cache)

    @property
    def idle(self) -> bool:
        return not (self.watchers or self.waiting or self.pinned)


class FanOut:
    log = Logger()

    def __init__(self, upstream: UpstreamConnector) -> None:
        self.upstream = upstream
        self.topics: dict[str, Topic] = {}
        self._by_sub: dict[int, Topic] = {}
        self._next_sub = 0
        upstream.on_up(self.resubscribe_all)

    def watch(self, name: str, watcher: Watcher | None) -> defer.Deferred[dict[str, Any]]:
        """Add a watcher (``None``: pin the topic for the bridge) and fire with a snapshot."""
        topic = self.topics.get(name)
        if topic is None:
            self._next_sub += 1
            topic = self.topics[name] = self._by_sub[self._next_sub] = Topic(name, self._next_sub)
            self._subscribe(topic)
        if topic.state is None:
            d: defer.Deferred[dict[str, Any]] = defer.Deferred()
            topic.waiting.append((watcher, d))
            return d
        self._add(topic, watcher)
        return defer.succeed(topic.state.snapshot())

    def state(self, name: str) -> TopicState | None:
        topic = self.topics.get(name)
        return topic.state if topic is not None else None

    def _add(self, topic: Topic, watcher: Watcher | None) -> None:
        if watcher is None:
            topic.pinned = True
        else:
            topic.watchers.add(watcher)

    def unwatch(self, name: str, watcher: Watcher) -> bool:
        """Remove a watcher; release the subscription when nobody is left."""
        topic = self.topics.get(name)
        if topic is None or watcher not in topic.watchers:
            return False
        topic.watchers.discard(watcher)
        if topic.idle:
            self._release(topic)
        return True

    def _subscribe(self, topic: Topic) -> None:
        d = self.upstream.request(LINK_SUBSCRIBE, {"topic": topic.name, "sub": topic.sub})
        d.addCallbacks(
            lambda reply: self._subscribed(topic, reply), lambda f: self._subscribe_failed(topic, f)
        )

    def _subscribed(self, topic: Topic, reply: dict[str, Any]) -> None:
        if self._by_sub.get(topic.sub) is not topic:
            return  # released meanwhile
        try:
            topic.state = TopicState.from_snapshot(topic.name, reply.get("snapshot", {}))
        except (KeyError, TypeError, ValueError) as e:
            self._subscribe_failed(topic, Failure(ProtocolError(f"bad snapshot: {e}")))
            return
        waiting, topic.waiting = topic.waiting, []
        for watcher, _ in waiting:
            self._add(topic, watcher)
        for _, d in waiting:
            d.callback(topic.state.snapshot())
        self.log.info(
            "Subscribed to {topic} for {watchers} watcher(s)",
            topic=topic.name,
            watchers=len(topic.watchers),
            event="fanout.subscribed",
        )

    def _subscribe_failed(self, topic: Topic, failure: Failure) -> None:
        if topic.state is not None:
            # A re-subscription after reconnect failed: keep serving the copy we have.
            self.log.warn(
                "Re-subscribing {topic} failed: {error}",
                topic=topic.name,
                error=failure.getErrorMessage(),
                event="fanout.resubscribe_failed",
            )
            return
        self._forget(topic)
        waiting, topic.waiting = topic.waiting, []
        for _, d in waiting:
            d.errback(failure)

    def _release(self, topic: Topic) -> None:
        self._forget(topic)
        if self.upstream.up:
            self.upstream.request(LINK_UNSUBSCRIBE, {"sub": topic.sub}).addErrback(lambda f: None)
        self.log.info("Released {topic}", topic=topic.name, event="fanout.released")

    def _forget(self, topic: Topic) -> None:
        if self.topics.get(topic.name) is topic:
            del self.topics[topic.name]
        self._by_sub.pop(topic.sub, None)

    def drop(self, watcher: Watcher, names: set[str]) -> None:
        """A watcher went away: leave every topic it watched."""
        for name in names:
            self.unwatch(name, watcher)

    def event(self, frame: Frame) -> None:
        """An upstream change event for subscription ``frame.request_id``."""
        topic = self._by_sub.get(frame.request_id)
        if topic is None or topic.state is None:
            return
        topic.state.apply(frame.parsed())
        if topic.watchers:
            raw = encode_raw(Kind.NOTIFICATION, frame.object_type, frame.event_id, 0, frame.payload)
            for watcher in topic.watchers:
                watcher.send(raw)

    def resubscribe_all(self) -> None:
        """After the link came (back) up: subscribe again to every topic held."""
        for topic in list(self.topics.values()):
            if topic.state is not None:
                d = self.upstream.request(LINK_SUBSCRIBE, {"topic": topic.name, "sub": topic.sub})
                d.addCallbacks(
                    lambda reply, t=topic: self._resubscribed(t, reply),
                    lambda f, t=topic: self._subscribe_failed(t, f),
                )

    def _resubscribed(self, topic: Topic, reply: dict[str, Any]) -> None:
        if self._by_sub.get(topic.sub) is topic:
            topic.state = TopicState.from_snapshot(topic.name, reply.get("snapshot", {}))
