"""The sans-IO core of the reference Notifier: logons, topics, bridges.

:class:`Notifier` is what the link protocol and the control API drive with plain
method calls; it never touches a socket. Subscribers (one per bridge link) are
anything with ``send_event(sub_id, frame)``. A change event is encoded once and
only its requestId is patched per subscription (PROTOCOL: the same bytes reach
every watcher), so fan-out to a thousand subscriptions costs a thousand slices,
not a thousand JSON encodings.

Every topic's state is a :class:`smbridge.topics.TopicState`, the same class the
bridge uses for its copy, so both sides apply events identically. Every change
event published here carries ``at`` (the clock when it was published). The model
operations live beside this core: :mod:`~smbridge.notifier.interactions` (calls,
chats, emails, statuses), :mod:`~smbridge.notifier.actions` (forwarded requests)
and :mod:`~smbridge.notifier.statistics` (workgroup statistics); the bridges'
roster is :mod:`~smbridge.notifier.model_roster`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smbridge.codec.catalog import (
    INTERACTION_CHANGED,
    LINK_PARAMETERS_CHANGED,
    QUEUE_CHANGED,
    MessageType,
)
from smbridge.codec.frames import Kind, encode_raw, with_request_id
from smbridge.codec.pieces import PIECE_BYTES, split_change
from smbridge.errors import BadRequest, NotFound
from smbridge.notifier.actions import Actions
from smbridge.notifier.auth import Authenticator
from smbridge.notifier.bridges import BridgeRecord, Bridges, Subscriber
from smbridge.notifier.interactions import Interactions
from smbridge.notifier.model_roster import RosterSide
from smbridge.notifier.pair import PRIMARY, ROLES, Pair
from smbridge.notifier.pair_roster import PairRoster
from smbridge.notifier.site import Site
from smbridge.notifier.statistics import Statistics
from smbridge.notifier.tenants import TenantPolicies
from smbridge.notifier.trust import CertificateTrust
from smbridge.topics import (
    PARAMETERS_TOPIC,
    QUEUE_PREFIX,
    STATUS_PREFIX,
    Item,
    ItemSetState,
    RecordState,
    TopicState,
    change_events,
    directory_topic,
    queue_topic,
    split_topic,
    statistics_topic,
    status_topic,
    user_topic,
)

MAX_SUB_ID = 0xFFFFFFFF  # a sub id travels in the requestId field (u32)


StatusListener = Callable[[str, str, str], None]  # (user, old status, new status)


class Notifier(RosterSide):
    """Authentication, pub/sub topics and the bridges registry of one site.

    The bridges' roster, its pushes and their sessions are :class:`RosterSide`'s
    (notifier/model_roster.py).
    """

    log = Logger()
    piece_bytes = PIECE_BYTES  # bound on one change event sent to a bridge

    def __init__(self, site: Site, clock: IReactorTime) -> None:
        self.site = site
        self.clock = clock
        self.topics: dict[str, TopicState] = {}
        self.queue_workgroups: dict[str, tuple[str, ...]] = {}
        for wg in site.workgroups.values():
            self.queue_workgroups[wg.queue] = (*self.queue_workgroups.get(wg.queue, ()), wg.name)
            self.topics[statistics_topic(wg.name)] = TopicState.for_topic(statistics_topic(wg.name))
        for queue in site.queues:
            self.topics[queue_topic(queue)] = TopicState.for_topic(queue_topic(queue))
        for name, entries in site.directories.items():
            topic = directory_topic(name)
            self.topics[topic] = TopicState.for_topic(topic, [e.to_wire() for e in entries])
        started = clock.seconds()
        for uid, user in site.users.items():
            self.topics[user_topic(uid)] = TopicState.for_topic(user_topic(uid))
            status = TopicState.for_topic(status_topic(uid))
            status.apply({"status": user.status, "since": started})
            self.topics[status_topic(uid)] = status
        self.topics[PARAMETERS_TOPIC] = TopicState.for_topic(PARAMETERS_TOPIC)
        self.topics[PARAMETERS_TOPIC].apply({"parameters": dict(site.parameters)})
        self.registry = Bridges(site, clock)
        self._pushed_roster: list[dict[str, Any]] | None = None  # the last RosterChanged sent
        role = site.cic.role if site.cic.role in ROLES else PRIMARY
        self.pair = Pair(clock, role)  # the service replaces it when started as a pair
        self.cic_name = site.cic.name
        self.ping_delay = 0.0  # seconds each link Ping answer waits (simulated load)
        self.trust: CertificateTrust | None = None  # None: any certificate the CA signed
        self.bridges: dict[str, BridgeRecord] = self.registry.records
        # The pair's one roster (notifier/pair_roster.py): the service wires the exchange.
        self.share = PairRoster(
            clock,
            self.registry.known,
            self.registry.retired,
            self.push_roster,
            lambda: self.cic_name,
        )
        self.registry.peer_bridges = self.share.peer_bridges
        self.auth = Authenticator(site)
        self.tenants = TenantPolicies(clock, site)  # checked by the link (notifier/link.py)
        self.status_listeners: list[StatusListener] = []
        self._watchers: dict[str, dict[tuple[Subscriber, int], None]] = {}
        self._subs: dict[Subscriber, dict[int, str]] = {}
        self.statistics = Statistics(self)
        self.interactions = Interactions(self)
        self.actions = Actions(self)

    def authenticate(self, user: str, password: str, station: str | None = None) -> dict[str, Any]:
        """Check a logon; raise :class:`LogonFailed` with ``reason`` per the link contract."""
        return self.auth.authenticate(user, password, station)

    # --- topics --------------------------------------------------------------------
    def subscribe(self, topic: str, subscriber: Subscriber, sub_id: int) -> dict[str, Any]:
        """Send ``topic``'s change events to ``subscriber`` as ``sub_id``; return the snapshot."""
        state = self.topic_state(topic)
        if isinstance(sub_id, bool) or not isinstance(sub_id, int) or not 1 <= sub_id <= MAX_SUB_ID:
            raise BadRequest(f"sub must be an integer in 1..{MAX_SUB_ID}")
        subs = self._subs.setdefault(subscriber, {})
        if sub_id in subs:
            raise BadRequest(f"sub {sub_id} is already in use on this link")
        subs[sub_id] = topic
        self._watchers.setdefault(topic, {})[(subscriber, sub_id)] = None
        return state.snapshot()

    def unsubscribe(self, subscriber: Subscriber, sub_id: int) -> bool:
        """Stop ``sub_id``; True when it existed. No event for it is sent after this returns."""
        topic = self._subs.get(subscriber, {}).pop(sub_id, None)
        if topic is None:
            return False
        self._drop_watcher(topic, (subscriber, sub_id))
        return True

    def _drop_watcher(self, topic: str, key: tuple[Subscriber, int]) -> None:
        watchers = self._watchers.get(topic)
        if watchers is not None:
            watchers.pop(key, None)
            if not watchers:
                del self._watchers[topic]

    def topic_state(self, topic: str) -> TopicState:
        """The state of ``topic``; :class:`NotFound` naming what does not exist."""
        state = self.topics.get(topic)
        if state is not None:
            return state
        try:
            prefix, name = split_topic(topic)
        except ValueError:
            raise NotFound(
                f"no topic {topic!r}: topics are queue:, directory:, user:, status:, "
                "statistics:<name> and parameters"
            ) from None
        kind = {"user:": "user", "status:": "user", "statistics:": "workgroup"}.get(
            prefix, prefix.rstrip(":")
        )
        raise NotFound(f"no {kind} {name!r} (topic {topic!r})")

    def queue_state(self, queue: str) -> ItemSetState:
        return self._items(queue_topic(queue))

    def user_state(self, user: str) -> ItemSetState:
        return self._items(user_topic(user))

    def status_state(self, user: str) -> RecordState:
        state = self.topics[status_topic(user)]
        assert isinstance(state, RecordState)
        return state

    def status_of(self, user: str) -> str:
        return str(self.status_state(user).record["status"])

    def _items(self, topic: str) -> ItemSetState:
        state = self.topics[topic]
        assert isinstance(state, ItemSetState)
        return state

    def queue_of(self, interaction_id: Any) -> str | None:
        """The queue where an interaction waits, if any (a look in each queue: there are few)."""
        for queue in self.site.queues:
            if interaction_id in self.queue_state(queue).items:
                return queue
        return None

    def publish(self, topic: str, object_type: int, event_id: int, payload: dict[str, Any]) -> int:
        """Send an event to every subscription of ``topic``; return how many were reached.

        When the event is one of the topic's change events it is checked, stamped
        with ``at`` and applied to the topic state first, so later snapshots include it.
        """
        state = self.topic_state(topic)
        message = (object_type, event_id)
        if message in change_events(topic):
            return self.emit(topic, message, _checked_change(state, message, payload, self.site))
        return self._fan_out(topic, object_type, event_id, payload)

    def emit(self, topic: str, message: MessageType, payload: dict[str, Any]) -> int:
        """Stamp, apply and send a change event made here; return how many subscriptions got it."""
        state = self.topics[topic]
        payload["at"] = self.clock.seconds()
        if topic.startswith(STATUS_PREFIX) and isinstance(state, RecordState):
            old = state.record.get("status")
            state.apply(payload, message)
            sent = self._fan_out(topic, *message, payload)
            new = state.record.get("status")
            if old != new:
                self._status_changed(state.name, str(old), str(new), state.record.get("since"))
            return sent
        state.apply(payload, message)
        sent = self._fan_out(topic, *message, payload)
        if topic.startswith(QUEUE_PREFIX):
            self.statistics.queue_changed(self.queue_workgroups.get(state.name, ()))
        return sent

    def _status_changed(self, user: str, old: str, new: str, since: Any) -> None:
        if not isinstance(since, int | float):
            since = self.clock.seconds()
        self.statistics.status_changed(user, old, new, float(since))
        for listener in list(self.status_listeners):
            listener(user, old, new)

    def change_queue(
        self,
        queue: str,
        added: Sequence[Item] = (),
        changed: Sequence[Item] = (),
        removed: Sequence[Any] = (),
    ) -> int:
        """Apply a change made here (the traffic generator) and send the QueueChanged."""
        payload = {
            "queue": queue,
            "added": list(added),
            "changed": list(changed),
            "removed": list(removed),
        }
        return self.emit(queue_topic(queue), QUEUE_CHANGED, payload)

    def queue_items(self, queue: str) -> list[Item]:
        return list(self.queue_state(queue).items.values())

    def subscriber_count(self, topic: str) -> int:
        return len(self._watchers.get(topic, ()))

    def _fan_out(self, topic: str, object_type: int, event_id: int, payload: dict[str, Any]) -> int:
        watchers = self._watchers.get(topic)
        if not watchers:
            return 0
        # A large change event (a site reload) goes as several valid ones (codec/pieces.py).
        raws = [
            encode_raw(Kind.NOTIFICATION, object_type, event_id, 0, piece)
            for piece in split_change(payload, self.piece_bytes)
        ]
        for subscriber, sub_id in list(watchers):
            try:
                for raw in raws:
                    subscriber.send_event(sub_id, with_request_id(raw, sub_id))
            except Exception:
                self.log.failure(
                    "Sending {topic} to a subscriber failed",
                    topic=topic,
                    event="notifier.topic.send-failed",
                )
        return len(watchers)

    # --- parameters ----------------------------------------------------------------
    @property
    def parameters(self) -> dict[str, str]:
        state = self.topics[PARAMETERS_TOPIC]
        assert isinstance(state, RecordState)
        return dict(state.record["parameters"])

    def set_parameters(self, changes: Mapping[str, str | None]) -> dict[str, str]:
        """Change server parameters (None removes one); publish ParametersChanged; answer all."""
        self.emit(PARAMETERS_TOPIC, LINK_PARAMETERS_CHANGED, {"parameters": dict(changes)})
        self.log.info(
            "Parameters changed: {names}",
            names=", ".join(changes),
            event="notifier.parameters.changed",
        )
        return self.parameters

    # --- bridges -------------------------------------------------------------------
    def register(
        self, bridge_info: dict[str, Any], link: Subscriber, peer: str = ""
    ) -> dict[str, Any]:
        """Record a bridge that registered on ``link``; return the Register answer.

        The backup of a pair refuses with ``not-primary`` naming the primary, unless
        the bridge is pinned to this server (``pinned: true``).
        """
        self.pair.check_register(pinned=bridge_info.get("pinned") is True)
        self.registry.register(bridge_info, link, peer, cic=self.cic_name)
        self.push_roster(skip=link)  # the registering bridge gets it in the answer
        self.share.local_change()
        return {
            "cic": self.cic(),
            "site": self.site.name,
            "parameters": self.parameters,
            "roster": self.roster(),
            "selectionRule": self.site.selection_rules,
        }

    def link_lost(self, link: Subscriber) -> None:
        """Drop every subscription of ``link`` and mark its bridge disconnected."""
        for sub_id, topic in self._subs.pop(link, {}).items():
            self._drop_watcher(topic, (link, sub_id))
        registered = self.registry.is_registered(link)
        self.registry.link_lost(link)
        if registered:
            self.push_roster()
            self.share.local_change()

    # --- forwarded client requests -------------------------------------------------
    def handle_forwarded(
        self, object_type: int, event_id: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Answer a client request the bridge passed through (``_session`` names the user)."""
        return self.actions.handle(object_type, event_id, body)

    # --- control API ---------------------------------------------------------------
    def _topics_state(self) -> dict[str, dict[str, int]]:
        """Queues, directories, statistics and parameters, and any other topic being watched."""
        out: dict[str, dict[str, int]] = {}
        for topic, state in self.topics.items():
            watched = len(self._watchers.get(topic, ()))
            per_user = topic.startswith(("user:", STATUS_PREFIX))
            if per_user and not watched:
                continue
            entry = {"subscribers": watched}
            if isinstance(state, ItemSetState):
                entry["items"] = len(state.items)
            out[topic] = entry
        return out

    def state(self) -> dict[str, Any]:
        """A JSON-ready view of the Notifier for ``GET /api/state``."""
        return {
            "role": self.pair.role,
            "cic": self.cic(),
            "pair": self.pair.state(),
            "load": {"pingDelayMs": round(self.ping_delay * 1000)},
            "site": self.site.name,
            "bridges": self.registry.state(),
            "roster": self.roster(),
            "pairRoster": self.share.state(),
            "topics": self._topics_state(),
            "parameters": self.parameters,
            "licenses": self.actions.licenses.state(),
            "sessions": self.registry.sessions(),
        }


def _checked_change(
    state: TopicState, message: MessageType, payload: dict[str, Any], site: Site
) -> dict[str, Any]:
    """Validate a published change event; fill in the topic's name field when absent."""
    if state.key:
        name = payload.get(state.key, state.name)
        if name != state.name:
            raise BadRequest(f"{state.key} is {name!r} but the topic is {state.name!r}")
        payload = {state.key: state.name, **payload}
    if isinstance(state, RecordState):
        return _checked_record(state, payload, site)
    if message == INTERACTION_CHANGED:
        item = payload.get("interaction")
        if not isinstance(item, dict) or "id" not in item:
            raise BadRequest("interaction must be an object with an id")
        return payload
    for part in ("added", "changed"):
        items = payload.get(part, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
            raise BadRequest(f"{part} must be a list of objects with an id")
    removed = payload.get("removed", [])
    if not isinstance(removed, list) or not all(isinstance(i, str | int) for i in removed):
        raise BadRequest("removed must be a list of ids")
    return payload


def _checked_record(state: RecordState, payload: dict[str, Any], site: Site) -> dict[str, Any]:
    if state.merge_field:
        merged = payload.get(state.merge_field, {})
        if not isinstance(merged, dict):
            raise BadRequest(f"{state.merge_field} must be an object")
    if state.key == "user" and "status" in payload and payload["status"] not in site.statuses:
        raise BadRequest(f"status must be one of: {', '.join(site.statuses)}")
    return payload
