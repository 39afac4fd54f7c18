"""One roster for a Notifier pair (sans-IO: clock, exchange and store path injected).

Each Notifier of a pair knows the bridges that registered on its own links. The
pair shows one roster: each side sends the other its **half** (the bridges it
knows, whether each is on a live link here, and every retirement it knows of)
and builds the roster from both halves (:func:`combine`):

- a bridge on a live link on either side is available there (this side's own
  record first);
- a bridge that is down on both sides is listed with what the side it last
  registered with knows (the latest ``registeredAt``);
- a retirement (``POST /api/bridges/retire`` on either side) is a time: it hides
  the bridge until it registers again later, on either side. Both sides keep
  every retirement they hear of, so it holds whichever side restarts.

A half travels in ``POST /api/pair/roster`` on the peer's control API (the same
channel as ``POST /api/role``); the answer is the peer's half, so one exchange
brings both sides up to date. This side sends its half after every change of it
(coalesced to one exchange per reactor turn) and, when an exchange failed or the
peer restarted, again after the next liveness probe the peer answers. Halves carry
``epoch`` (one per process start) and ``seq``, so a late answer never replaces a
newer half. When the peer has been silent for the detection time its bridges count
as down until it answers again (they come to this side anyway if it is primary).

Every bridge record carries the CIC server it registered with (``cic``); an
on-server or pinned bridge's roster entry shows it with that server's role in the
pair, so the roster's order (smbridge.roster.selection) can put the primary
server's bridge before the backup's, as the note says. What this side knows
(its bridges, the peer's last half, the retirements) is saved in a JSON file
(notifier/store.py) and read back at start.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.errors import BadRequest
from smbridge.notifier.store import StoreError, read_json, write_json

Exchange = Callable[[dict[str, Any]], "defer.Deferred[Any]"]  # send our half, get theirs


@dataclass(frozen=True)
class Known:
    """A bridge as one Notifier of the pair knows it."""

    name: str
    info: dict[str, Any]  # its Register body (name, fqdn, kind, location, ports, accept...)
    registered_at: float
    connected: bool  # on a live link of the Notifier that reported it
    cic: str  # the CIC server whose Notifier it registered with

    @property
    def accepting(self) -> bool:
        return self.connected and self.info.get("accept", "default") not in ("maintenance", False)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "info": self.info,
            "registeredAt": self.registered_at,
            "connected": self.connected,
            "cic": self.cic,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Known:
        """A Known from JSON; BadRequest when a field is missing or of the wrong type."""
        if not isinstance(raw, dict):
            raise BadRequest("each bridge must be an object")
        name, info, at = raw.get("name"), raw.get("info"), raw.get("registeredAt")
        if not isinstance(name, str) or not name or not isinstance(info, dict):
            raise BadRequest("a bridge needs a name and an info object")
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise BadRequest(f"bridge {name!r}: registeredAt must be a number")
        cic = raw.get("cic")
        return cls(name, dict(info), float(at), raw.get("connected") is True, str(cic or ""))


def _retired(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        for k, v in raw.items()
    ):
        raise BadRequest("retired must map bridge names to times")
    return {k: float(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Half:
    """What one Notifier of the pair tells the other."""

    epoch: str
    seq: int
    cic: str
    bridges: dict[str, Known]
    retired: dict[str, float]

    def to_wire(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "seq": self.seq,
            "cic": self.cic,
            "bridges": [k.to_wire() for k in self.bridges.values()],
            "retired": dict(self.retired),
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Half:
        epoch, seq, cic = raw.get("epoch"), raw.get("seq"), raw.get("cic")
        if not isinstance(epoch, str) or isinstance(seq, bool) or not isinstance(seq, int):
            raise BadRequest("a roster half needs epoch (string) and seq (integer)")
        if not isinstance(cic, str):
            raise BadRequest("cic must be a string")
        bridges = raw.get("bridges", [])
        if not isinstance(bridges, list):
            raise BadRequest("bridges must be a list")
        known = [Known.from_wire(b) for b in bridges]
        return cls(epoch, seq, cic, {k.name: k for k in known}, _retired(raw.get("retired", {})))

    def down(self) -> Half:
        """Every bridge off its link (the peer went silent, or was read from the file).

        Its ``seq`` is -1 so that the next half the peer sends replaces it, even
        one the peer had sent before.
        """
        bridges = {n: replace(k, connected=False) for n, k in self.bridges.items()}
        return replace(self, seq=-1, bridges=bridges)


def combine(
    own: Mapping[str, Known], peer: Mapping[str, Known], retired: Mapping[str, float]
) -> dict[str, Known]:
    """The pair's bridges: live anywhere wins, else the latest registration; retired left out."""
    out: dict[str, Known] = {}
    for name in [*own, *(n for n in peer if n not in own)]:
        candidates = [k for k in (own.get(name), peer.get(name)) if k is not None]
        live = [k for k in candidates if k.connected]
        best = live[0] if live else max(candidates, key=lambda k: k.registered_at)
        at = retired.get(name)
        if not live and at is not None and at >= best.registered_at:
            continue
        out[name] = best
    return out


def merge_retired(*maps: Mapping[str, float]) -> dict[str, float]:
    """Every retirement of every map, the latest time per name."""
    out: dict[str, float] = {}
    for m in maps:
        for name, at in m.items():
            out[name] = max(at, out.get(name, at))
    return out


class PairRoster:
    """This side's link to the pair's one roster: halves, sync and the saved file.

    ``own`` gives this side's bridges (the registry's records) and ``retired`` is
    the registry's map of retirements, which this class updates in place with the
    peer's. ``changed`` is called whenever the combined roster may have changed.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        own: Callable[[], Iterable[Known]],
        retired: dict[str, float],
        changed: Callable[[], None],
        cic: Callable[[], str],
        path: Path | None = None,
    ) -> None:
        self.clock = clock
        self._own = own
        self.retired = retired
        self._changed = changed
        self._cic = cic
        self.path = path
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        self.peer: Half | None = None
        self.exchange: Exchange | None = None
        self.dirty = True  # our half has not reached the peer since it last changed
        self.failing = False
        self._push_call: IDelayedCall | None = None
        self._save_call: IDelayedCall | None = None
        self._in_flight = False
        self._again = False
        self._request: defer.Deferred[Any] | None = None
        self._stopped = False

    # --- the halves ----------------------------------------------------------------
    def half(self) -> Half:
        """This side's half as it stands."""
        own = {k.name: k for k in self._own()}
        return Half(self.epoch, self.seq, self._cic(), own, dict(self.retired))

    def peer_bridges(self) -> dict[str, Known]:
        return dict(self.peer.bridges) if self.peer is not None else {}

    def state(self) -> dict[str, Any]:
        """For ``GET /api/state``: what this side knows of the peer's half."""
        peer = self.peer
        return {
            "peer": peer.cic if peer is not None else None,
            "peerBridges": sorted(peer.bridges) if peer is not None else [],
            "peerLive": peer is not None and peer.seq >= 0,
            "retired": sorted(self.retired),
            "sent": not self.dirty and self.exchange is not None,
        }

    def receive(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Take the peer's half (the control API); answer ours. BadRequest when malformed."""
        half = Half.from_wire(raw)
        self._take(half)
        return self.half().to_wire()  # the peer has ours with this answer

    def _take(self, half: Half) -> None:
        old = self.peer
        if old is not None and old.epoch == half.epoch and half.seq <= old.seq:
            return  # a late answer: we hold a newer half from that process
        if old is None or old.epoch != half.epoch:
            self.log.info(
                "Pair roster: the peer {cic} sent its half ({count} bridges)",
                cic=half.cic,
                count=len(half.bridges),
                event="notifier.pair.roster_peer",
            )
        self.peer = half
        merged = merge_retired(self.retired, half.retired)
        self.retired.clear()
        self.retired.update(merged)
        self._changed()
        self.save_soon()

    def peer_lost(self) -> None:
        """The peer has been silent for the detection time: its bridges are down."""
        if self.peer is not None and self.peer.seq >= 0:
            live = any(k.connected for k in self.peer.bridges.values())
            self.peer = self.peer.down()
            if live:
                self._changed()
        self.dirty = True

    def peer_alive(self) -> None:
        """The peer answered a probe: send our half if it may not have it."""
        if self.dirty:
            self.push_soon()

    # --- sending -------------------------------------------------------------------
    def local_change(self) -> None:
        """Our half changed (a registration, a lost link, a retirement): tell the peer."""
        self.seq += 1
        self.dirty = True
        self.save_soon()
        self.push_soon()

    def push_soon(self) -> None:
        if self.exchange is None or self._stopped:
            return
        if self._in_flight:
            self._again = True
        elif self._push_call is None:
            self._push_call = self.clock.callLater(0, self._push)

    def _push(self) -> None:
        self._push_call = None
        if self.exchange is None:
            return
        self._in_flight, self._again = True, False
        self.seq += 1
        self.dirty = False
        d = self._request = self.exchange(self.half().to_wire())
        d.addCallbacks(self._answered, self._failed).addBoth(self._done)

    def _answered(self, answer: Any) -> None:
        if not isinstance(answer, dict):
            raise BadRequest("the peer's answer is not a roster half")
        if self.failing:
            self.failing = False
            self.log.info(
                "Pair roster: the peer has our half again", event="notifier.pair.roster_ok"
            )
        self._take(Half.from_wire(answer))

    def _failed(self, failure: Failure) -> None:
        self.dirty = True  # retried after the next probe the peer answers
        if not self.failing and not self._stopped:
            self.failing = True
            self.log.warn(
                "Pair roster: could not send our half to the peer: {error}",
                error=failure.getErrorMessage(),
                event="notifier.pair.roster_unreachable",
            )

    def _done(self, _: Any) -> None:
        self._in_flight = False
        self._request = None
        if self._again:
            self.push_soon()

    def start(self) -> None:
        self._stopped = False

    def stop(self) -> None:
        """Send nothing more (an exchange under way is cancelled); save what is pending."""
        self._stopped = True
        if self._push_call is not None and self._push_call.active():
            self._push_call.cancel()
        self._push_call = None
        if self._request is not None:
            self._request.cancel()
        if self._save_call is not None:
            self._save_later()  # cancels the call, writes now

    # --- the file ------------------------------------------------------------------
    def load(self) -> list[Known]:
        """Read the saved file: the peer's half and the retirements; return our bridges."""
        if self.path is None:
            return []
        try:
            data = read_json(self.path)
        except StoreError as e:
            self.log.error(
                "Pair roster: {error}", error=str(e), event="notifier.pair.roster_unreadable"
            )
            return []
        if data is None:
            return []
        try:
            self.retired.update(merge_retired(self.retired, _retired(data.get("retired", {}))))
            own = [Known.from_wire(b) for b in data.get("bridges", [])]
            peer = data.get("peer")
            if isinstance(peer, dict):
                self.peer = Half.from_wire(peer).down()
        except BadRequest as e:
            self.log.error(
                "Pair roster: {path} is not a roster file ({error}); starting empty",
                path=str(self.path),
                error=e.message,
                event="notifier.pair.roster_unreadable",
            )
            return []
        return [replace(k, connected=False) for k in own]

    def save_soon(self) -> None:
        if self.path is not None and self._save_call is None:
            self._save_call = self.clock.callLater(0, self._save_later)

    def _save_later(self) -> None:
        try:
            self.save()
        except StoreError:
            pass  # logged by save(); the next change tries again

    def save(self) -> None:
        """Write what this side knows now (StoreError when it cannot)."""
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        if self.path is None:
            return
        half = self.half()
        data = {
            "bridges": [replace(k, connected=False).to_wire() for k in half.bridges.values()],
            "retired": half.retired,
            "peer": self.peer.down().to_wire() if self.peer is not None else None,
        }
        try:
            write_json(self.path, data)
        except StoreError as e:
            self.log.error(
                "Pair roster: {error}", error=str(e), event="notifier.pair.roster_save_failed"
            )
            raise
