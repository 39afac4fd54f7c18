"""The bridges registry of the reference Notifier: registrations, roster, sessions.

Bridges register on their link; a record stays (marked disconnected) after the
link drops, so the roster keeps listing it. Sessions are what bridges report with
SessionOpened/SessionClosed, forgotten when their bridge's link drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smbridge.errors import BadRequest, NotFound
from smbridge.notifier.site import BRIDGE_KINDS, Site


class Subscriber(Protocol):
    """One bridge link as the core sees it."""

    def send_event(self, sub_id: int, frame: bytes) -> None:
        """Write ``frame`` (an encoded notification whose requestId is already ``sub_id``)."""


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


class Bridges:
    """Bridge records by name, and which link each registration lives on."""

    log = Logger()

    def __init__(self, site: Site, clock: IReactorTime) -> None:
        self.site = site
        self.clock = clock
        self.records: dict[str, BridgeRecord] = {}
        self.retired: set[str] = set()  # names left out of the roster until they register
        self._link_bridge: dict[Subscriber, str] = {}

    def register(self, bridge_info: dict[str, Any], link: Subscriber, peer: str = "") -> None:
        """Record a bridge that registered on ``link``; BadRequest when the Register is wrong."""
        name = bridge_info.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("Register needs a non-empty string name")
        if bridge_info.get("kind", "off-server") not in BRIDGE_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(BRIDGE_KINDS)}")
        if link in self._link_bridge:
            raise BadRequest("this link is already registered")
        old = self.records.get(name)
        if old is not None and old.link is not None:
            self._link_bridge.pop(old.link, None)
            self.log.warn(
                "Bridge {bridge} registered again from {peer}; the older link is "
                "no longer its registration",
                bridge=name,
                peer=peer,
                event="notifier.bridge.replaced",
            )
        self.records[name] = BridgeRecord(name, dict(bridge_info), peer, self.clock.seconds(), link)
        self.retired.discard(name)
        self._link_bridge[link] = name
        self.log.info(
            "Bridge {bridge} registered from {peer}",
            bridge=name,
            peer=peer,
            event="notifier.bridge.registered",
        )

    def is_registered(self, link: Subscriber) -> bool:
        return link in self._link_bridge

    def retire(self, name: str) -> None:
        """Leave a bridge that is down out of the roster until it registers again."""
        record = self.records.get(name)
        listed = any(b.name == name for b in self.site.bridges)
        if record is None and not listed:
            raise NotFound(f"no bridge {name!r} in the roster")
        if record is not None and record.connected:
            raise BadRequest(f"bridge {name!r} is connected; only a bridge that is down retires")
        self.records.pop(name, None)
        self.retired.add(name)
        self.log.info("Bridge {bridge} retired", bridge=name, event="notifier.bridge.retired")

    def link_of(self, name: str) -> Subscriber:
        """The link of a connected bridge; NotFound otherwise."""
        record = self.records.get(name)
        if record is None or record.link is None:
            raise NotFound(f"bridge {name!r} is not connected")
        return record.link

    def links(self) -> list[Subscriber]:
        """The links of every registered bridge."""
        return list(self._link_bridge)

    def set_accept(self, link: Subscriber, accept: Any) -> None:
        """Record the accept mode a registered bridge switched to (BridgeChanged)."""
        record = self._record(link)
        if record is None:
            return
        if accept not in ("default", "all", "maintenance"):
            raise BadRequest("accept must be one of default, all, maintenance")
        record.info["accept"] = accept
        self.log.info(
            "Bridge {bridge} accept mode {accept}",
            bridge=record.name,
            accept=accept,
            event="notifier.bridge.accept",
        )

    def link_lost(self, link: Subscriber) -> None:
        """Mark the link's bridge disconnected and forget its sessions."""
        name = self._link_bridge.pop(link, None)
        if name is not None:
            record = self.records[name]
            record.link = None
            record.sessions.clear()
            self.log.info("Bridge {bridge} disconnected", bridge=name, event="notifier.bridge.lost")

    def roster(self) -> list[dict[str, Any]]:
        """The site's bridges (configured values win, ports as registered), then unlisted ones."""
        out = []
        for b in self.site.bridges:
            if b.name in self.retired:
                continue
            entry = b.to_wire()
            record = self.records.get(b.name)
            if record is not None and isinstance(record.info.get("ports"), dict):
                entry["ports"] = {**entry["ports"], **record.info["ports"]}
            entry["available"] = record is not None and record.accepting
            out.append(entry)
        listed = {b.name for b in self.site.bridges}
        for record in self.records.values():
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

    def session_closed(self, link: Subscriber, session_id: str) -> None:
        record = self._record(link)
        if record is not None:
            record.sessions.pop(session_id, None)

    def session_station(self, session_id: str, station: str) -> None:
        """Record a session's new station (ChangeStation), wherever its bridge is."""
        for record in self.records.values():
            if session_id in record.sessions:
                record.sessions[session_id]["station"] = station

    def state(self) -> list[dict[str, Any]]:
        return [
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
            for r in self.records.values()
        ]

    def sessions(self) -> list[dict[str, Any]]:
        return [dict(s, bridge=r.name) for r in self.records.values() for s in r.sessions.values()]

    def _record(self, link: Subscriber) -> BridgeRecord | None:
        name = self._link_bridge.get(link)
        return self.records[name] if name is not None else None
