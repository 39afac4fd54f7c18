"""The bridges registry of the reference Notifier: registrations, roster, sessions.

Bridges register on their link; a record stays (marked disconnected) after the
link drops, so the roster keeps listing it. Sessions are what bridges report with
SessionOpened/SessionClosed, forgotten when their bridge's link drops.

A bridge of several worker processes on one host (``twistd smbridge --workers N``)
registers once per worker, each on its own link, with ``worker`` (its index) and
``workers`` (N) in Register. They make **one** record: the bridge is connected
while any of its worker links is up, its sessions are counted over all of them, its
accept mode is one value, and a SetAccept for it goes to every worker link. A
register without ``workers`` (or with another N) replaces the record, as the same
name on a new link always did. In a pair
the roster also holds the bridges the other Notifier knows (``peer_bridges``,
notifier/pair_roster.py), and retirements are times shared by both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smbridge.codec.catalog import LINK_SET_ACCEPT
from smbridge.codec.frames import Kind, encode
from smbridge.errors import BadRequest, NotFound
from smbridge.notifier.pair_roster import Known, combine
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
    link: Subscriber | None  # a live link of the bridge (its first worker's), None: down
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    cic: str = ""  # the CIC server whose Notifier it registered with
    workers: int = 1  # worker processes the bridge runs (Register's ``workers``)
    links: dict[Subscriber, int] = field(default_factory=dict)  # live link -> worker index
    session_links: dict[str, Subscriber] = field(default_factory=dict)  # session -> its link

    def __post_init__(self) -> None:
        if self.link is not None and not self.links:
            self.links[self.link] = 0

    @property
    def connected(self) -> bool:
        return self.link is not None

    def drop_link(self, link: Subscriber) -> None:
        """Forget a worker link and the sessions opened on it."""
        self.links.pop(link, None)
        for session_id in [s for s, on in self.session_links.items() if on is link]:
            self.session_links.pop(session_id, None)
            self.sessions.pop(session_id, None)
        self.link = next(iter(self.links), None)
        if self.link is None:
            self.sessions.clear()
            self.session_links.clear()

    @property
    def accepting(self) -> bool:
        return self.connected and self.info.get("accept", "default") not in ("maintenance", False)

    def known(self) -> Known:
        return Known(self.name, dict(self.info), self.registered_at, self.connected, self.cic)


class _EveryLink:
    """Every worker link of one bridge as one Subscriber (a SetAccept reaches them all)."""

    def __init__(self, links: list[Subscriber]) -> None:
        self.links = links

    def send_event(self, sub_id: int, frame: bytes) -> None:
        for link in self.links:
            link.send_event(sub_id, frame)


def worker_of(bridge_info: dict[str, Any]) -> tuple[int, int]:
    """Register's ``worker`` and ``workers`` (0 and 1 when absent); BadRequest when wrong."""
    worker, workers = bridge_info.get("worker", 0), bridge_info.get("workers", 1)
    for value in (worker, workers):
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest("worker and workers must be integers")
    if not 0 <= worker < workers <= MAX_WORKERS:
        raise BadRequest(f"need 0 <= worker < workers <= {MAX_WORKERS}")
    return worker, workers


MAX_WORKERS = 64


class Bridges:
    """Bridge records by name, and which link each registration lives on."""

    log = Logger()

    def __init__(self, site: Site, clock: IReactorTime) -> None:
        self.site = site
        self.clock = clock
        self.records: dict[str, BridgeRecord] = {}
        # name -> when it was retired: left out of the roster until it registers later
        self.retired: dict[str, float] = {}
        self._link_bridge: dict[Subscriber, str] = {}
        self.peer_bridges: Callable[[], Mapping[str, Known]] = dict  # the pair's other half

    def restore(self, known: list[Known]) -> None:
        """Take back the bridges saved before a restart (all down) that are not here now."""
        for k in known:
            if k.name not in self.records:
                self.records[k.name] = BridgeRecord(
                    k.name, dict(k.info), "", k.registered_at, None, cic=k.cic
                )

    def known(self) -> list[Known]:
        """This side's bridges, as its half of the pair's roster."""
        return [r.known() for r in self.records.values()]

    def register(
        self, bridge_info: dict[str, Any], link: Subscriber, peer: str = "", cic: str = ""
    ) -> None:
        """Record a bridge that registered on ``link``; BadRequest when the Register is wrong."""
        name = bridge_info.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("Register needs a non-empty string name")
        if bridge_info.get("kind", "off-server") not in BRIDGE_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(BRIDGE_KINDS)}")
        if link in self._link_bridge:
            raise BadRequest("this link is already registered")
        worker, workers = worker_of(bridge_info)
        old = self.records.get(name)
        if old is not None and old.connected and workers > 1 and old.workers == workers:
            self._join(old, dict(bridge_info), link, worker, peer)
            return
        if old is not None:
            for old_link in list(old.links):
                self._link_bridge.pop(old_link, None)
        if old is not None and old.link is not None:
            self.log.warn(
                "Bridge {bridge} registered again from {peer}; the older link is "
                "no longer its registration",
                bridge=name,
                peer=peer,
                event="notifier.bridge.replaced",
            )
        now = self.clock.seconds()
        record = BridgeRecord(name, dict(bridge_info), peer, now, link, cic=cic, workers=workers)
        record.links = {link: worker}
        self.records[name] = record
        self.retired.pop(name, None)
        self._link_bridge[link] = name
        self.log.info(
            "Bridge {bridge} registered from {peer}",
            bridge=name,
            peer=peer,
            worker=worker if workers > 1 else None,
            event="notifier.bridge.registered",
        )

    def _join(
        self, record: BridgeRecord, info: dict[str, Any], link: Subscriber, worker: int, peer: str
    ) -> None:
        """Another worker of a registered bridge: one more link of the same record."""
        for other, index in list(record.links.items()):
            if index == worker:  # the same worker again (it restarted): the new link wins
                record.drop_link(other)
                self._link_bridge.pop(other, None)
        mode = record.info.get("accept", "default")  # the bridge's one accept mode stays
        if info.get("accept", "default") != mode:  # told right after its Register answer
            frame = encode(Kind.NOTIFICATION, *LINK_SET_ACCEPT, 0, {"accept": mode})
            self.clock.callLater(0, link.send_event, 0, frame)
        info["accept"] = mode
        record.info = info
        record.links[link] = worker
        record.link = next(iter(record.links))
        self._link_bridge[link] = record.name
        self.log.info(
            "Bridge {bridge}: worker {worker} of {workers} registered from {peer}",
            bridge=record.name,
            worker=worker,
            workers=record.workers,
            peer=peer,
            event="notifier.bridge.worker_registered",
        )

    def is_registered(self, link: Subscriber) -> bool:
        return link in self._link_bridge

    def combined(self) -> dict[str, Known]:
        """Every bridge of the pair's roster (this side's and the peer's), retired ones left out."""
        own = {name: r.known() for name, r in self.records.items()}
        return combine(own, self.peer_bridges(), self.retired)

    def retire(self, name: str) -> None:
        """Leave a bridge that is down (on both sides of a pair) out of the roster.

        It comes back when it registers again, on either side.
        """
        known = self.combined().get(name)
        listed = any(b.name == name for b in self.site.bridges)
        if known is None and not listed:
            raise NotFound(f"no bridge {name!r} in the roster")
        if known is not None and known.connected:
            raise BadRequest(f"bridge {name!r} is connected; only a bridge that is down retires")
        self.records.pop(name, None)
        self.retired[name] = self.clock.seconds()
        self.log.info("Bridge {bridge} retired", bridge=name, event="notifier.bridge.retired")

    def link_of(self, name: str) -> Subscriber:
        """The link of a connected bridge; NotFound otherwise."""
        record = self.records.get(name)
        if record is None or record.link is None:
            raise NotFound(f"bridge {name!r} is not connected")
        if len(record.links) > 1:
            return _EveryLink(list(record.links))
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
            worker = record.links.get(link)
            record.drop_link(link)
            if record.connected:
                self.log.info(
                    "Bridge {bridge}: worker {worker} disconnected ({live} still up)",
                    bridge=name,
                    worker=worker,
                    live=len(record.links),
                    event="notifier.bridge.worker_lost",
                )
                return
            self.log.info("Bridge {bridge} disconnected", bridge=name, event="notifier.bridge.lost")

    def roster(self, roles: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """The site's bridges (configured values win, ports as registered), then unlisted ones.

        ``roles`` (a pair only) maps CIC server names to their roles: an on-server
        or pinned bridge's entry then names the server it registered with (``cic``).
        """
        known = self.combined()
        roles = roles or {}
        out = []
        for b in self.site.bridges:
            k = known.get(b.name)
            if k is None and b.name in self.retired:
                continue
            entry = b.to_wire()
            if k is not None and isinstance(k.info.get("ports"), dict):
                entry["ports"] = {**entry["ports"], **k.info["ports"]}
            entry["available"] = k is not None and k.accepting
            out.append(_with_cic(entry, k, roles))
        listed = {b.name for b in self.site.bridges}
        for name in sorted(known):
            if name in listed:
                continue
            k = known[name]
            entry = {
                "name": name,
                "fqdn": k.info.get("fqdn", name),
                "kind": k.info.get("kind", "off-server"),
                "location": k.info.get("location"),
                "ports": k.info.get("ports", {}),
                "available": k.accepting,
            }
            out.append(_with_cic(entry, k, roles))
        return out

    def session_opened(self, link: Subscriber, body: dict[str, Any]) -> None:
        record = self._record(link)
        session_id = body.get("sessionId")
        if record is not None and isinstance(session_id, str):
            record.session_links[session_id] = link
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
            record.session_links.pop(session_id, None)

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
                "cic": r.cic,
                "sessions": len(r.sessions),
                "workers": r.workers,
                "workersUp": len(r.links),
            }
            for r in self.records.values()
        ]

    def sessions(self) -> list[dict[str, Any]]:
        return [dict(s, bridge=r.name) for r in self.records.values() for s in r.sessions.values()]

    def _record(self, link: Subscriber) -> BridgeRecord | None:
        name = self._link_bridge.get(link)
        return self.records[name] if name is not None else None


def _with_cic(entry: dict[str, Any], k: Known | None, roles: Mapping[str, str]) -> dict[str, Any]:
    """Name the CIC server (and its role) of an on-server or pinned bridge."""
    if k is None or not k.cic or not roles:
        return entry
    if entry.get("kind") == "on-server" or k.info.get("pinned") is True:
        cic = {"name": k.cic}
        if k.cic in roles:
            cic["role"] = roles[k.cic]
        entry["cic"] = cic
    return entry
