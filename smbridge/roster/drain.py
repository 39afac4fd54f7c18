"""Moving clients to other bridges: the Migrate notice and the drain (PROTOCOL §4.6).

Drain (the admin API) and graceful shutdown both ask clients to log on elsewhere
now with ``Migrate {roster, reason}``; the client library then logs on to the
first bridge of that roster that takes it and restores its watches without
asking the user.

:class:`Drainer` spreads the drain out: ``start(spread)`` first switches the accept
mode to ``maintenance`` (so that no new session lands here while the old ones
leave), then gives every current session its own moment, drawn uniformly from
``[0, spread)`` seconds, so that thousands of clients do not log on elsewhere in
the same instant. At its moment a session gets a Migrate whose roster is ordered
for its user (:func:`roster_for`); a session that ended before its moment is
skipped. Every other session gets its Migrate, even with an empty roster when no
other bridge is available to its user (counted in ``stranded``): that client has
nowhere to go and stays. The drainer closes nothing itself: clients leave on their
own, and a client that ignores the notice stays until the admin stops the bridge.
One DelayedCall serves the whole schedule; the clock and the random source are
injected (tests use ``Clock`` and a seeded ``random.Random``).
"""

from __future__ import annotations

import bisect
import random
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.codec import Kind, encode
from smbridge.codec.catalog import MIGRATE
from smbridge.counters import Counters
from smbridge.resources import Origin
from smbridge.roster.selection import Resolved, order_roster
from smbridge.session.registry import SessionRegistry
from smbridge.session.session import Session, State

DEFAULT_SPREAD = 30.0


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Registered(Protocol):
    @property
    def registered(self) -> dict[str, Any]: ...


class DrainBridge(Protocol):
    """What the drain needs of the bridge (the ``Router`` satisfies it; service.py wires it).

    The roster sits below the router and never imports it.
    """

    @property
    def registry(self) -> SessionRegistry: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def upstream(self) -> _Registered:
        """The link: ``registered`` is what the Notifier answered (roster, rule)."""
        ...

    @property
    def identity(self) -> _Named:
        """This bridge (its ``name`` is left out of the roster)."""
        ...

    def set_accept_mode(self, mode: str) -> None: ...
    def user_rule(self, location: str | None) -> Resolved: ...
    def client_roster(self, roster: list[Any], origin: Origin) -> Any: ...


def migrate_frame(roster: list[dict[str, Any]], reason: str) -> bytes:
    """The encoded Migrate notification: where to go, best first, and why."""
    return encode(Kind.NOTIFICATION, *MIGRATE, 0, {"roster": roster, "reason": reason})


def roster_for(router: DrainBridge, session: Session) -> list[dict[str, Any]]:
    """The roster for one session's Migrate: ordered for its user, only bridges to go to.

    This bridge and unavailable bridges are left out; the rest is ordered by the
    user's selection rule (``router.user_rule``, groups flattened, excluded locations
    dropped). No host addresses: the client adds those of the host it typed. A
    client that came through the WebSocket tunnel gets a ``uri`` per entry that it
    can dial (the public base URI and alias; ``router.client_roster``, reach.py).
    """
    roster = router.upstream.registered.get("roster") or []
    others = [
        e
        for e in roster
        if isinstance(e, dict) and e.get("name") != router.identity.name and e.get("available")
    ]
    groups = order_roster(others, router.user_rule(session.info.location), (), router.rng)
    return list(router.client_roster([e for group in groups for e in group], session.origin))


class Drainer:
    """Sends every current session a Migrate, at random moments spread over a period."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, router: DrainBridge, rng: random.Random | None = None
    ) -> None:
        self.clock = clock
        self.router = router
        self.rng = rng or random.Random()
        self.reason = "drain"
        self._schedule: list[tuple[float, int, str]] = []  # (due, tie-break, session id)
        self._call: IDelayedCall | None = None
        self.sent = 0  # Migrates sent in the current (or last) drain
        self.skipped = 0  # sessions that had ended before their moment
        self.stranded = 0  # of those sent, Migrates with an empty roster (nowhere to go)

    @property
    def active(self) -> bool:
        """Whether Migrates are still to be sent."""
        return bool(self._schedule)

    @property
    def pending(self) -> int:
        """How many sessions still wait for their Migrate."""
        return len(self._schedule)

    def start(self, spread: float = DEFAULT_SPREAD, reason: str = "drain") -> int:
        """Switch to maintenance and schedule one Migrate per current session; their count.

        Starting again while a drain runs replaces it: every current session gets
        a new moment within the new spread.
        """
        if spread < 0:
            raise ValueError("spread must be 0 or more seconds")
        self._cancel_call()
        self.router.set_accept_mode("maintenance")
        self.reason = reason
        self.sent = self.skipped = self.stranded = 0
        now = self.clock.seconds()
        schedule = [
            (now + self.rng.uniform(0, spread) if spread else now, n, session.id)
            for n, session in enumerate(self.router.registry)
        ]
        schedule.sort()
        self._schedule = schedule
        self.log.info(
            "Draining: {count} session(s) get Migrate ({reason}) over {spread}s",
            count=len(schedule),
            reason=reason,
            spread=spread,
            event="roster.drain_started",
        )
        self._arm()
        return len(schedule)

    def cancel(self) -> int:
        """Stop sending Migrates; the number not sent. The accept mode stays as it is."""
        left = len(self._schedule)
        self._cancel_call()
        self._schedule = []
        if left:
            self.log.info(
                "Drain cancelled: {left} session(s) not told (sent {sent})",
                left=left,
                sent=self.sent,
                event="roster.drain_cancelled",
            )
        return left

    def _cancel_call(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        self._call = None
        if not self._schedule:
            return
        delay = max(0.0, self._schedule[0][0] - self.clock.seconds())
        self._call = self.clock.callLater(delay, self._due)

    def _due(self) -> None:
        self._call = None
        now = self.clock.seconds() + 1e-9  # what float rounding of delay + now may miss
        cut = bisect.bisect_right(self._schedule, (now, float("inf"), ""))
        due, self._schedule = self._schedule[:cut], self._schedule[cut:]
        registry = self.router.registry
        for _, _, session_id in due:
            session = registry.get(session_id)
            if session is None or session.state is State.CLOSED:
                self.skipped += 1
                continue
            roster = roster_for(self.router, session)
            if not roster:
                self.stranded += 1
            session.send(migrate_frame(roster, self.reason))
            self.router.counters.inc("migrations", reason=self.reason)
            self.sent += 1
        if self._schedule:
            self._arm()
        elif due:
            self.log.info(
                "Drain done: {sent} session(s) told to migrate ({stranded} with no other "
                "bridge available), {skipped} had ended",
                sent=self.sent,
                skipped=self.skipped,
                stranded=self.stranded,
                event="roster.drain_done",
            )
