"""Fan-out: one upstream subscription per topic, shared by every watcher.

The first watcher of a topic subscribes upstream; later watchers are answered
from the bridge's own copy of the topic (kept by applying the same change
events), so a snapshot is always exactly the state before the next event that
watcher receives: events are handled one at a time, and a reply and the events
after it go through the same ordered connection buffer. The last watcher to
leave releases the subscription. Each upstream event is encoded once and the
same bytes are written to every watcher; for scoped topics (directories under
restricted visibility) once per group of watchers that see the same entries.

Runs: consecutive events of one topic are staged on the write batcher and handed
to each watcher as one joined piece (a :class:`~smbridge.transports.held.Run`),
so a burst of N events costs each watcher one call, not N. The run is handed out
before anything else can reach a client or change the watchers: before any other
frame is queued for any connection (every send path calls ``unstage``), before a
connection's mode changes (paused, limited, guarded, dropped), before an event of
another topic, before a watch, an unwatch or a snapshot, and at the end of the turn;
what a client receives, and in which order, is what it would have been event by
event. A run spans the turn, not one ``dataReceived``: one socket read of the link
is several TLS records, each its own ``dataReceived``, and one run for all of them
is a quarter of the calls per watcher (bench/fanout.py).

Reference counting: a topic is held while it has watchers, watchers waiting for
its first snapshot, or a pin (the bridge's own use: cached directories, server
parameters). Every way a watcher can leave goes through :meth:`unwatch`, which
also cancels a watch still waiting for its snapshot.

Grace: a user's own topic (``user:<id>``) whose last watcher leaves stays subscribed
for :attr:`FanOut.grace` seconds (``--user-topic-grace``; 0: released at once), its
copy kept current by the events, so a user who logs on again meanwhile is answered
from the copy and costs the link no Unsubscribe + Subscribe pair. A watch within the
grace cancels the release; a topic still waiting for its first snapshot is released
at once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.codec import Frame, Kind, encode, encode_raw
from smbridge.codec.catalog import LINK_SUBSCRIBE, LINK_UNSUBSCRIBE
from smbridge.errors import ProtocolError
from smbridge.router.visibility import filter_change, visible_entries
from smbridge.topics import USER_PREFIX, ItemSetState, TopicState
from smbridge.transports.batch import WriteBatcher
from smbridge.transports.held import Run

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from smbridge.upstream.connector import UpstreamConnector


class Watcher(Protocol):
    def send(self, data: bytes) -> None: ...


class WatchCancelled(ProtocolError):
    code = "cancelled"


def _run_sender(watcher: Watcher) -> Callable[[bytes, list[bytes]], None]:
    send_run: Callable[[bytes, list[bytes]], None] | None = getattr(watcher, "send_run", None)
    if send_run is not None:
        return send_run

    def frame_by_frame(run: bytes, frames: list[bytes]) -> None:
        for frame in frames:
            watcher.send(frame)

    return frame_by_frame


Snapshot = dict[str, Any]
ScopeOf = Callable[[Any], Hashable]  # watcher -> its visibility scope (None: sees all)


class Topic:
    __slots__ = (
        "name",
        "sub",
        "state",
        "watchers",
        "waiting",
        "pinned",
        "scoped",
        "expiry",
        "_runs",
    )

    def __init__(self, name: str, sub: int, scoped: bool) -> None:
        self.name = name
        self.sub = sub
        self.state: TopicState | None = None  # None until the first snapshot
        self.watchers: set[Watcher] = set()
        self.waiting: list[tuple[Watcher | None, defer.Deferred[Snapshot]]] = []
        self.pinned = False  # held by the bridge itself
        self.scoped = scoped  # events filtered per watcher scope (directories)
        self.expiry: IDelayedCall | None = None  # the end of its grace (nobody watching)
        self._runs: list[Callable[[bytes, list[bytes]], None]] | None = None

    def run_senders(self) -> list[Callable[[bytes, list[bytes]], None]]:
        """Each watcher's ``send_run`` (made again after the watchers change)."""
        runs = self._runs
        if runs is None:
            runs = self._runs = [_run_sender(watcher) for watcher in self.watchers]
        return runs

    def changed(self) -> None:
        self._runs = None

    @property
    def idle(self) -> bool:
        return not (self.watchers or self.waiting or self.pinned)


class FanOut:
    log = Logger()

    def __init__(
        self,
        upstream: UpstreamConnector,
        scope_of: ScopeOf | None = None,
        batcher: WriteBatcher | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.upstream = upstream
        # Seconds a user's own topic stays subscribed after its last watcher left (0: none);
        # the grace is timed on ``clock`` (the connector's, unless given).
        self.grace = 0.0
        self.clock: IReactorTime | None = clock or getattr(upstream, "clock", None)
        # Where runs of events are staged (the connections' batcher, by default the
        # link's); None: every event goes to its watchers at once.
        if batcher is None:
            batcher = getattr(getattr(upstream, "link_factory", None), "batcher", None)
        self.batcher = batcher
        self._run_topic: Topic | None = None
        self._run: list[bytes] = []
        self.scope_of: ScopeOf = scope_of or (lambda watcher: None)
        self.topics: dict[str, Topic] = {}
        self._by_sub: dict[int, Topic] = {}
        self._next_sub = 0
        self._listeners: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        # Fires once the last re-subscription (after the link came back) is answered.
        self.resubscribed: defer.Deferred[None] = defer.succeed(None)
        upstream.on_up(self.resubscribe_all)
        self._stopped = False  # the bridge is stopping: no more graces
        on_stop = getattr(upstream, "on_stop", None)
        if on_stop is not None:
            on_stop(self.end_graces)

    # --- watching ----------------------------------------------------------------
    def watch(self, name: str, watcher: Watcher | None) -> defer.Deferred[Snapshot]:
        """Add a watcher (``None``: pin the topic for the bridge) and fire with a snapshot."""
        self.unstage()
        topic = self.topics.get(name)
        if topic is None:
            self._next_sub += 1
            topic = Topic(name, self._next_sub, scoped=name.startswith("directory:"))
            self.topics[name] = self._by_sub[topic.sub] = topic
            self._subscribe(topic)
        elif topic.expiry is not None:  # watched again within its grace
            topic.expiry.cancel()
            topic.expiry = None
        if topic.state is None:
            d: defer.Deferred[Snapshot] = defer.Deferred()
            topic.waiting.append((watcher, d))
            return d
        self._add(topic, watcher)
        return defer.succeed(topic.state.snapshot())

    def state(self, name: str) -> TopicState | None:
        topic = self.topics.get(name)
        return topic.state if topic is not None else None

    def watching(self, name: str, watcher: Watcher) -> bool:
        topic = self.topics.get(name)
        return topic is not None and watcher in topic.watchers

    def _add(self, topic: Topic, watcher: Watcher | None) -> None:
        if watcher is None:
            topic.pinned = True
        else:
            topic.watchers.add(watcher)
            topic.changed()

    def unwatch(self, name: str, watcher: Watcher) -> bool:
        """Remove a watcher, or cancel its pending watch; release the topic when idle."""
        self.unstage()
        topic = self.topics.get(name)
        if topic is None:
            return False
        found = watcher in topic.watchers
        topic.watchers.discard(watcher)
        topic.changed()
        cancelled = [d for w, d in topic.waiting if w is watcher]
        if cancelled:
            topic.waiting = [(w, d) for w, d in topic.waiting if w is not watcher]
        if topic.idle and topic.expiry is None:
            self._idle(topic)
        for d in cancelled:
            d.errback(WatchCancelled(f"the watch of {name} was cancelled"))
        return found or bool(cancelled)

    def drop(self, watcher: Watcher, names: set[str]) -> None:
        """A watcher went away: leave every topic it watched."""
        for name in list(names):
            self.unwatch(name, watcher)

    def on_change(self, name: str, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(event)`` after each change event of topic ``name`` is applied."""
        self._listeners.setdefault(name, []).append(listener)

    # --- upstream ----------------------------------------------------------------------
    def _subscribe(self, topic: Topic) -> None:
        d = self.upstream.request(LINK_SUBSCRIBE, {"topic": topic.name, "sub": topic.sub})
        d.addCallbacks(
            lambda reply: self._subscribed(topic, reply),
            lambda f: self._subscribe_failed(topic, f),
        )

    def _subscribed(self, topic: Topic, reply: dict[str, Any]) -> None:
        if self._by_sub.get(topic.sub) is not topic:
            return  # released meanwhile
        self.unstage()
        try:
            state = TopicState.from_snapshot(topic.name, reply.get("snapshot", {}))
        except (KeyError, TypeError, ValueError) as e:
            self._subscribe_failed(topic, Failure(ProtocolError(f"bad snapshot: {e}")))
            return
        topic.state = state
        waiting, topic.waiting = topic.waiting, []
        for watcher, _ in waiting:
            self._add(topic, watcher)
        for _, d in waiting:
            d.callback(state.snapshot())
        self.log.debug(
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

    def _idle(self, topic: Topic) -> None:
        """Nobody holds ``topic``: release it, or for a user's topic start its grace."""
        if (
            self.grace > 0
            and not self._stopped
            and self.clock is not None
            and topic.state is not None
            and topic.name.startswith(USER_PREFIX)
        ):
            topic.expiry = self.clock.callLater(self.grace, self._expired, topic)
        else:
            self._release(topic)

    def end_graces(self) -> None:
        """The bridge stops: release every topic held only by its grace, grant no more."""
        self._stopped = True
        for topic in [t for t in self.topics.values() if t.expiry is not None]:
            self._release(topic)

    def _expired(self, topic: Topic) -> None:
        topic.expiry = None
        if topic.idle and self._by_sub.get(topic.sub) is topic:
            self._release(topic)

    def _release(self, topic: Topic) -> None:
        self._forget(topic)
        if self.upstream.up:
            self.upstream.request(LINK_UNSUBSCRIBE, {"sub": topic.sub}).addErrback(lambda f: None)
        self.log.debug("Released {topic}", topic=topic.name, event="fanout.released")

    def _forget(self, topic: Topic) -> None:
        if topic.expiry is not None:
            topic.expiry.cancel()
            topic.expiry = None
        if self.topics.get(topic.name) is topic:
            del self.topics[topic.name]
        self._by_sub.pop(topic.sub, None)

    # --- events --------------------------------------------------------------------
    def event(self, frame: Frame) -> None:
        """An upstream change event for subscription ``frame.request_id``."""
        topic = self._by_sub.get(frame.request_id)
        if topic is None or topic.state is None:
            return
        body = frame.parsed()
        message = (frame.object_type, frame.event_id)
        if topic.watchers:
            if topic.scoped:
                self.unstage()
                self._deliver_scoped(topic, frame, body)
            else:
                raw = encode_raw(Kind.NOTIFICATION, *message, 0, frame.payload)
                batcher = self.batcher
                if batcher is None:
                    for watcher in topic.watchers:
                        watcher.send(raw)
                else:
                    if self._run_topic is not topic:
                        self.unstage()  # another topic's run goes first
                        self._run_topic = topic
                        batcher.stage(self._hand_out)
                    self._run.append(raw)
        topic.state.apply(body, message)
        for listener in self._listeners.get(topic.name, ()):
            listener(body)

    def unstage(self) -> None:
        """Hand the staged run of events to its watchers now (if one is staged)."""
        if self._run_topic is not None and self.batcher is not None:
            self.batcher.unstage()

    def _hand_out(self) -> None:
        """The batcher's call: each watcher of the run's topic gets the run, in one piece."""
        topic, frames = self._run_topic, self._run
        self._run_topic, self._run = None, []
        if topic is None or not frames:
            return
        failed = 0
        run = Run.of(frames)  # a run of one event too: its watchers' cheapest path
        for send_run in topic.run_senders():
            try:
                send_run(run, frames)
            except Exception:  # one watcher's failure is not the others' (nor the caller's)
                failed += 1
                if failed == 1:
                    self.log.failure("Handing out a run failed", event="fanout.run_failed")

    def _deliver_scoped(self, topic: Topic, frame: Frame, body: dict[str, Any]) -> None:
        groups: dict[Any, list[Watcher]] = {}
        scope_of = self.scope_of
        for watcher in topic.watchers:
            groups.setdefault(scope_of(watcher), []).append(watcher)
        state = topic.state
        assert isinstance(state, ItemSetState)
        touched = [e.get("id") for e in body.get("changed", ())] + list(body.get("removed", ()))
        before = {i: state.items[i] for i in touched if i in state.items}
        for scope, watchers in groups.items():
            part = filter_change(scope, body, before)
            if part is None:
                continue
            if part is body:
                raw = encode_raw(
                    Kind.NOTIFICATION, frame.object_type, frame.event_id, 0, frame.payload
                )
            else:
                raw = encode(Kind.NOTIFICATION, frame.object_type, frame.event_id, 0, part)
            for watcher in watchers:
                watcher.send(raw)

    def resubscribe_all(self) -> defer.Deferred[None]:
        """After the link came (back) up: subscribe again to every topic held.

        The returned Deferred (also kept as :attr:`resubscribed`) fires once every
        re-subscription is answered, its copy replaced by the fresh snapshot or kept
        when the Notifier refused (logged).
        """
        self.unstage()
        answers = []
        for topic in list(self.topics.values()):
            if topic.state is not None:
                d = self.upstream.request(LINK_SUBSCRIBE, {"topic": topic.name, "sub": topic.sub})
                d.addCallbacks(
                    lambda reply, t=topic: self._resubscribed(t, reply),
                    lambda f, t=topic: self._subscribe_failed(t, f),
                )
                answers.append(d)
        done = defer.gatherResults(answers, consumeErrors=True)
        self.resubscribed = done.addBoth(lambda _: None)
        return self.resubscribed

    def snapshots(self, watcher: Watcher, names: Iterable[str]) -> dict[str, Snapshot]:
        """The current snapshot of each named topic ``watcher`` watches (scoped: filtered)."""
        self.unstage()
        out: dict[str, Snapshot] = {}
        for name in names:
            topic = self.topics.get(name)
            if topic is None or topic.state is None or watcher not in topic.watchers:
                continue
            snapshot = topic.state.snapshot()
            if topic.scoped:
                scope: Any = self.scope_of(watcher)
                entries = visible_entries(scope, snapshot.get("entries", ()))
                snapshot = {**snapshot, "entries": entries}
            out[name] = snapshot
        return out

    def _resubscribed(self, topic: Topic, reply: dict[str, Any]) -> None:
        if self._by_sub.get(topic.sub) is topic:
            self.unstage()
            topic.state = TopicState.from_snapshot(topic.name, reply.get("snapshot", {}))
