"""The sans-IO core of the reference Notifier: logons, topics, bridges.

:class:`Notifier` is what the link protocol and the control API drive with plain
method calls; it never touches a socket. Subscribers (one per bridge link) are
anything with ``send_event(sub_id, frame)``. A change event is encoded once and
only its requestId is patched per subscription (PROTOCOL: the same bytes reach
every watcher), so fan-out to a thousand subscriptions costs a thousand slices,
not a thousand JSON encodings.

Queue and directory state lives in :class:`smbridge.topics.TopicState`, the same
class the bridge uses for its copy, so both sides apply events identically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smbridge.codec.catalog import DIRECTORY_CHANGED, QUEUE_CHANGED, SET_STATUS, name_of
from smbridge.codec.frames import Kind, encode, with_request_id
from smbridge.errors import BadRequest, LogonFailed, NotFound, ProtocolError
from smbridge.notifier.passwords import hash_password, verify_password
from smbridge.notifier.site import BRIDGE_KINDS, Site
from smbridge.topics import (
    DIRECTORY_PREFIX,
    QUEUE_PREFIX,
    Item,
    TopicState,
    directory_topic,
    queue_topic,
)

MAX_SUB_ID = 0xFFFFFFFF  # a sub id travels in the requestId field (u32)
_AUTH_CACHE_LIMIT = 100_000


class Subscriber(Protocol):
    """One bridge link as the core sees it."""

    def send_event(self, sub_id: int, frame: bytes) -> None:
        """Write ``frame`` (an encoded notification whose requestId is already ``sub_id``)."""


def change_event_of(topic: str) -> tuple[int, int] | None:
    """The (objectType, eventId) whose payload is a change of ``topic``'s items."""
    if topic.startswith(QUEUE_PREFIX):
        return QUEUE_CHANGED
    if topic.startswith(DIRECTORY_PREFIX):
        return DIRECTORY_CHANGED
    return None


@dataclass
class BridgeRecord:
    """A bridge that registered on a link (kept, marked disconnected, after the link drops)."""

    name: str
    info: dict[str, Any]
    peer: str
    registered_at: float
    link: Subscriber | None
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.link is not None

    @property
    def accepting(self) -> bool:
        return self.connected and self.info.get("accept", "default") not in ("maintenance", False)


class Notifier:
    """Authentication, pub/sub topics and the bridges registry of one site."""

    log = Logger()

    def __init__(self, site: Site, clock: IReactorTime) -> None:
        self.site = site
        self.clock = clock
        self.topics: dict[str, TopicState] = {}
        for queue in site.queues:
            self.topics[queue_topic(queue)] = TopicState.for_topic(queue_topic(queue))
        for name, entries in site.directories.items():
            topic = directory_topic(name)
            self.topics[topic] = TopicState.for_topic(topic, [e.to_wire() for e in entries])
        self.statuses = {uid: u.status for uid, u in site.users.items()}
        self.bridges: dict[str, BridgeRecord] = {}
        self._watchers: dict[str, dict[tuple[Subscriber, int], None]] = {t: {} for t in self.topics}
        self._subs: dict[Subscriber, dict[int, str]] = {}
        self._link_bridge: dict[Subscriber, str] = {}
        self._verified: set[tuple[str, bytes, str]] = set()
        self._dummy_hash: str | None = None

    # --- authentication ------------------------------------------------------------
    def authenticate(self, user: str, password: str, station: str | None = None) -> dict[str, Any]:
        """Check a logon; raise :class:`LogonFailed` with ``reason`` per the link contract."""
        u = self.site.users.get(user)
        if u is None:
            self._dummy_verify(password)
        if u is None or not self._verify(user, password, u.password_hash):
            self.log.info(
                "Logon of {user} refused: bad credentials",
                user=user,
                event="notifier.auth.refused",
                reason="bad-credentials",
            )
            raise LogonFailed("wrong user name or password", reason="bad-credentials")
        st = None
        if station:
            st = self.site.stations.get(station)
            if st is None:
                self.log.info(
                    "Logon of {user} refused: unknown station {station}",
                    user=user,
                    station=station,
                    event="notifier.auth.refused",
                    reason="unknown-station",
                )
                raise LogonFailed(f"unknown station {station!r}", reason="unknown-station")
        location = (st.location if st else None) or u.location or self.site.default_location
        self.log.debug("Logon of {user} accepted", user=user, event="notifier.auth.accepted")
        return {
            "user": {
                "id": u.id,
                "displayName": u.display_name,
                "extension": u.extension,
                "location": u.location or self.site.default_location,
                "workgroups": list(u.workgroups),
                "rights": list(u.rights),
            },
            "station": {"id": st.id, "location": st.location} if st else None,
            "location": location,
        }

    def _verify(self, user: str, password: str, stored: str) -> bool:
        # Cache successes only, keyed by a digest (never the password itself) and
        # the stored hash, so a changed password in the site invalidates the entry.
        key = (user, hashlib.sha256(password.encode("utf-8")).digest(), stored)
        if key in self._verified:
            return True
        if not verify_password(password, stored):
            return False
        if len(self._verified) >= _AUTH_CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(key)
        return True

    def _dummy_verify(self, password: str) -> None:
        """Spend the time a real check takes, so unknown users are not told apart by timing."""
        if self._dummy_hash is None:
            some = next(iter(self.site.users.values()), None)
            iterations = int(some.password_hash.split("$")[1]) if some else 1000
            self._dummy_hash = hash_password("", iterations=iterations)
        verify_password(password, self._dummy_hash)

    # --- topics --------------------------------------------------------------------
    def subscribe(self, topic: str, subscriber: Subscriber, sub_id: int) -> dict[str, Any]:
        """Send ``topic``'s change events to ``subscriber`` as ``sub_id``; return the snapshot."""
        state = self.topics.get(topic)
        if state is None:
            raise NotFound(f"no topic {topic!r}")
        if isinstance(sub_id, bool) or not isinstance(sub_id, int) or not 1 <= sub_id <= MAX_SUB_ID:
            raise BadRequest(f"sub must be an integer in 1..{MAX_SUB_ID}")
        subs = self._subs.setdefault(subscriber, {})
        if sub_id in subs:
            raise BadRequest(f"sub {sub_id} is already in use on this link")
        subs[sub_id] = topic
        self._watchers[topic][(subscriber, sub_id)] = None
        return state.snapshot()

    def unsubscribe(self, subscriber: Subscriber, sub_id: int) -> bool:
        """Stop ``sub_id``; True when it existed. No event for it is sent after this returns."""
        topic = self._subs.get(subscriber, {}).pop(sub_id, None)
        if topic is None:
            return False
        self._watchers[topic].pop((subscriber, sub_id), None)
        return True

    def publish(self, topic: str, object_type: int, event_id: int, payload: dict[str, Any]) -> int:
        """Send an event to every subscription of ``topic``; return how many were reached.

        When the event is the topic's change event its delta is checked and applied
        to the topic state first, so later snapshots include it.
        """
        state = self.topics.get(topic)
        if state is None:
            raise NotFound(f"no topic {topic!r}")
        if (object_type, event_id) == change_event_of(topic):
            payload = _checked_change(state, payload)
            state.apply(payload)
        return self._fan_out(topic, object_type, event_id, payload)

    def change_queue(
        self,
        queue: str,
        added: Sequence[Item] = (),
        changed: Sequence[Item] = (),
        removed: Sequence[Any] = (),
    ) -> int:
        """Apply a change made here (the traffic generator) and send the QueueChanged."""
        topic = queue_topic(queue)
        event = self.topics[topic].change(list(added), list(changed), list(removed))
        return self._fan_out(topic, *QUEUE_CHANGED, event)

    def queue_items(self, queue: str) -> list[Item]:
        return list(self.topics[queue_topic(queue)].items.values())

    def subscriber_count(self, topic: str) -> int:
        return len(self._watchers.get(topic, ()))

    def _fan_out(self, topic: str, object_type: int, event_id: int, payload: dict[str, Any]) -> int:
        watchers = self._watchers[topic]
        if not watchers:
            return 0
        raw = encode(Kind.NOTIFICATION, object_type, event_id, 0, payload)
        for subscriber, sub_id in list(watchers):
            try:
                subscriber.send_event(sub_id, with_request_id(raw, sub_id))
            except Exception:
                self.log.failure(
                    "Sending {topic} to a subscriber failed",
                    topic=topic,
                    event="notifier.topic.send-failed",
                )
        return len(watchers)

    # --- bridges -------------------------------------------------------------------
    def register(
        self, bridge_info: dict[str, Any], link: Subscriber, peer: str = ""
    ) -> dict[str, Any]:
        """Record a bridge that registered on ``link``; return the Register answer."""
        name = bridge_info.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("Register needs a non-empty string name")
        if bridge_info.get("kind", "off-server") not in BRIDGE_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(BRIDGE_KINDS)}")
        if link in self._link_bridge:
            raise BadRequest("this link is already registered")
        old = self.bridges.get(name)
        if old is not None and old.link is not None:
            self._link_bridge.pop(old.link, None)
            self.log.warn(
                "Bridge {bridge} registered again from {peer}; the older link is "
                "no longer its registration",
                bridge=name,
                peer=peer,
                event="notifier.bridge.replaced",
            )
        self.bridges[name] = BridgeRecord(name, dict(bridge_info), peer, self.clock.seconds(), link)
        self._link_bridge[link] = name
        self.log.info(
            "Bridge {bridge} registered from {peer}",
            bridge=name,
            peer=peer,
            event="notifier.bridge.registered",
        )
        return {
            "cic": {"name": self.site.cic.name, "role": self.site.cic.role},
            "site": self.site.name,
            "parameters": dict(self.site.parameters),
            "roster": self.roster(),
            "selectionRule": self.site.selection_rules,
        }

    def is_registered(self, link: Subscriber) -> bool:
        return link in self._link_bridge

    def link_lost(self, link: Subscriber) -> None:
        """Drop every subscription of ``link`` and mark its bridge disconnected."""
        for sub_id, topic in self._subs.pop(link, {}).items():
            self._watchers[topic].pop((link, sub_id), None)
        name = self._link_bridge.pop(link, None)
        if name is not None:
            record = self.bridges[name]
            record.link = None
            record.sessions.clear()
            self.log.info("Bridge {bridge} disconnected", bridge=name, event="notifier.bridge.lost")

    def roster(self) -> list[dict[str, Any]]:
        """The site's bridges (configured values win, ports as registered), then unlisted ones."""
        out = []
        for b in self.site.bridges:
            entry = b.to_wire()
            record = self.bridges.get(b.name)
            if record is not None and isinstance(record.info.get("ports"), dict):
                entry["ports"] = {**entry["ports"], **record.info["ports"]}
            entry["available"] = record is not None and record.accepting
            out.append(entry)
        listed = {b.name for b in self.site.bridges}
        for record in self.bridges.values():
            if record.name not in listed:
                info = record.info
                out.append(
                    {
                        "name": record.name,
                        "fqdn": info.get("fqdn", record.name),
                        "kind": info.get("kind", "off-server"),
                        "location": info.get("location"),
                        "ports": info.get("ports", {}),
                        "available": record.accepting,
                    }
                )
        return out

    def session_opened(self, link: Subscriber, body: dict[str, Any]) -> None:
        record = self._record(link)
        session_id = body.get("sessionId")
        if record is not None and isinstance(session_id, str):
            record.sessions[session_id] = {
                "sessionId": session_id,
                "user": body.get("user"),
                "station": body.get("station"),
                "opened": self.clock.seconds(),
            }

    def session_closed(self, link: Subscriber, body: dict[str, Any]) -> None:
        record = self._record(link)
        if record is not None:
            record.sessions.pop(str(body.get("sessionId")), None)

    def _record(self, link: Subscriber) -> BridgeRecord | None:
        name = self._link_bridge.get(link)
        return self.bridges[name] if name is not None else None

    # --- forwarded client requests -------------------------------------------------
    def handle_forwarded(
        self, object_type: int, event_id: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Answer a client request the bridge passed through (``_session`` names the user)."""
        session = body.get("_session")
        if (object_type, event_id) == SET_STATUS:
            if not isinstance(session, dict) or session.get("user") not in self.statuses:
                raise BadRequest("SetStatus needs _session.user naming a known user")
            status = body.get("status")
            if not isinstance(status, str) or not status:
                raise BadRequest("status must be a non-empty string")
            user = session["user"]
            self.statuses[user] = status
            self.log.info(
                "{user} set status {status}", user=user, status=status, event="notifier.status.set"
            )
            return {"user": user, "status": status}
        raise ProtocolError(
            f"the Notifier does not implement {name_of(object_type, event_id)}",
            code="unknown-request",
        )

    # --- control API ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """A JSON-ready view of the Notifier for ``GET /api/state``."""
        return {
            "role": self.site.cic.role,
            "cic": {"name": self.site.cic.name, "role": self.site.cic.role},
            "site": self.site.name,
            "bridges": [
                {
                    "name": r.name,
                    "peer": r.peer,
                    "connected": r.connected,
                    "accepting": r.accepting,
                    "kind": r.info.get("kind"),
                    "location": r.info.get("location"),
                    "version": r.info.get("version"),
                    "registeredAt": r.registered_at,
                    "sessions": len(r.sessions),
                }
                for r in self.bridges.values()
            ],
            "topics": {
                t: {"subscribers": len(self._watchers[t]), "items": len(s.items)}
                for t, s in self.topics.items()
            },
            "sessions": [
                dict(s, bridge=r.name) for r in self.bridges.values() for s in r.sessions.values()
            ],
        }


def _checked_change(state: TopicState, payload: dict[str, Any]) -> dict[str, Any]:
    """Validate a change event's delta; fill in the topic's name field when absent."""
    name = payload.get(state.key, state.name)
    if name != state.name:
        raise BadRequest(f"{state.key} is {name!r} but the topic is {state.name!r}")
    for part in ("added", "changed"):
        items = payload.get(part, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
            raise BadRequest(f"{part} must be a list of objects with an id")
    removed = payload.get("removed", [])
    if not isinstance(removed, list) or not all(isinstance(i, str | int) for i in removed):
        raise BadRequest("removed must be a list of ids")
    return {state.key: state.name, **payload}
