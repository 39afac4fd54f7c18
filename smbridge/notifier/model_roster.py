"""The reference Notifier's side of the bridges: their roster, its pushes, their sessions.

:class:`RosterSide` is part of :class:`smbridge.notifier.model.Notifier` (a mixin):
the pair's one roster of bridges (``roster``, pushed as RosterChanged to every
registered bridge when it changes), accept modes asked of a bridge or told by it,
retirements, and the sessions each bridge reports. Registration and a lost link stay
in the model, beside the topics they touch.
"""

from __future__ import annotations

from typing import Any

from smbridge.codec.catalog import LINK_ROSTER_CHANGED, LINK_SET_ACCEPT
from smbridge.codec.frames import Kind, encode
from smbridge.errors import BadRequest
from smbridge.notifier.actions import Actions
from smbridge.notifier.bridges import Bridges, Subscriber
from smbridge.notifier.pair import BACKUP, PRIMARY, Pair
from smbridge.notifier.pair_roster import PairRoster
from smbridge.notifier.site import Site


class RosterSide:
    """The bridges' roster and sessions; the attributes are the Notifier's."""

    site: Site
    registry: Bridges
    pair: Pair
    share: PairRoster
    cic_name: str
    actions: Actions
    _pushed_roster: list[dict[str, Any]] | None

    # --- bridges -------------------------------------------------------------------
    def cic(self) -> dict[str, str]:
        """This CIC server's name and its current role in the pair."""
        return {"name": self.cic_name, "role": self.pair.role}

    def is_registered(self, link: Subscriber) -> bool:
        return self.registry.is_registered(link)

    def bridge_changed(self, link: Subscriber, body: dict[str, Any]) -> None:
        """A bridge switched its accept mode at run time (BridgeChanged)."""
        if "accept" in body:
            self.registry.set_accept(link, body["accept"])
            self.push_roster()
            self.share.local_change()

    def retire_bridge(self, name: str) -> None:
        """Retire a bridge that is down (control API); pushed, told to the peer, saved.

        StoreError when the retirement could not be saved (it holds until a restart).
        """
        self.registry.retire(name)
        self.push_roster()
        self.share.local_change()
        self.share.save()

    def load_roster(self) -> None:
        """Read back what the roster file kept (bridges, retirements, the peer's half)."""
        self.registry.restore(self.share.load())

    def set_bridge_accept(self, name: str, accept: Any) -> None:
        """Tell a connected bridge to switch its accept mode (control API).

        The bridge answers with BridgeChanged, which updates its roster entry.
        """
        if accept not in ("default", "all", "maintenance"):
            raise BadRequest("accept must be one of default, all, maintenance")
        link = self.registry.link_of(name)
        link.send_event(0, encode(Kind.NOTIFICATION, *LINK_SET_ACCEPT, 0, {"accept": accept}))

    def push_roster(self, skip: Subscriber | None = None, force: bool = False) -> None:
        """Send RosterChanged to every registered bridge (but ``skip``) if the roster changed.

        ``force``: send it even so (the selection rules may have changed).
        """
        roster = self.roster()
        if roster == self._pushed_roster and not force:
            return
        self._pushed_roster = roster
        raw = encode(
            Kind.NOTIFICATION,
            *LINK_ROSTER_CHANGED,
            0,
            {"roster": roster, "selectionRule": self.site.selection_rules},
        )
        for link in self.registry.links():
            if link is not skip:
                link.send_event(0, raw)

    def roster(self) -> list[dict[str, Any]]:
        """The pair's one roster; on-server and pinned bridges name their server and its role."""
        if self.pair.peer is None:
            return self.registry.roster()  # no pair: no server to name
        roles = {self.cic_name: self.pair.role}
        peer = self.share.peer
        if peer is not None and peer.cic != self.cic_name:
            roles[peer.cic] = BACKUP if self.pair.role == PRIMARY else PRIMARY
        return self.registry.roster(roles)

    def session_opened(self, link: Subscriber, body: dict[str, Any]) -> None:
        self.registry.session_opened(link, body)

    def session_closed(self, link: Subscriber, body: dict[str, Any]) -> None:
        """Forget a session and give back the licenses it held."""
        session_id = str(body.get("sessionId"))
        self.registry.session_closed(link, session_id)
        self.actions.licenses.release_session(session_id)

    def session_station(self, session_id: str, station: str) -> None:
        self.registry.session_station(session_id, station)
