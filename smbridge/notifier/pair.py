"""The reference Notifier's place in a primary/backup pair (sans-IO: clock and probes injected).

A pair is two Notifiers, each told the other's link address (``--peer``). The
primary accepts bridges; the backup refuses every Register with ``not-primary``
naming the primary, so a bridge given both addresses finds its way, except from a
bridge pinned to it, which it takes and which then redirects its clients. Roles swap
on ``POST /api/switchover`` (on either side: it changes its own role and tells
the peer through ``tell_peer``), and the backup takes over by itself when the
primary has not answered a liveness probe for ``detection`` seconds (a crash, or a
frozen process: the probe is an application-level request, notifier/peer.py, and
each one that takes longer than ``probe_timeout`` seconds counts as unanswered).
A primary that hears that its peer took over while it was silent (the probe's
answer says ``role: primary, tookOver: true``: it was frozen, and the bridges
followed the peer) steps down to backup, so a thawed Notifier does not make a
second primary.
Every role change is logged (``notifier.pair.role``) and reported to listeners,
which drop the bridges' links when this side became the backup. Probe results are
reported too (``on_peer``: True after each answer, False once the peer has been
silent for ``detection`` seconds), so the pair's roster (notifier/pair_roster.py)
can send its half again and stop counting a dead peer's bridges as connected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.errors import ProtocolError

PRIMARY = "primary"
BACKUP = "backup"
ROLES = (PRIMARY, BACKUP)

Probe = Callable[[], "defer.Deferred[Any]"]  # fires when the peer is alive, fails if not
TellPeer = Callable[[str], "defer.Deferred[Any]"]  # ask the peer to take this role


class NotPrimary(ProtocolError):
    """Register on the backup: the answer names the primary so the bridge can go there."""

    code = "not-primary"


class Pair:
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        role: str = PRIMARY,
        peer: str | None = None,
        *,
        probe: Probe | None = None,
        tell_peer: TellPeer | None = None,
        detection: float = 5.0,
        interval: float = 1.0,
        probe_timeout: float | None = None,
    ) -> None:
        """``probe_timeout``: seconds a probe may take (default: half ``detection``, at most 2)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        self.clock = clock
        self.role = role
        self.peer = peer
        self.probe = probe
        self.tell_peer = tell_peer
        self.detection = detection
        self.interval = interval
        self.probe_timeout = probe_timeout or min(2.0, detection / 2)
        self.took_over = False  # primary because the peer went silent (told in probe answers)
        self.peer_seen = clock.seconds()  # last time the peer answered a probe
        self.changes = 0
        self._listeners: list[Callable[[str], None]] = []
        self._peer_listeners: list[Callable[[bool], None]] = []
        self._call: IDelayedCall | None = None
        self._probing = False

    # --- what the link asks --------------------------------------------------------
    def check_register(self, pinned: bool = False) -> None:
        """Raise :class:`NotPrimary` (naming the primary) while this side is the backup.

        A bridge pinned to this server (``--switchover-mode pinned``, the note's WAN
        switchover) is let in whatever the role: it learns the role from the answer
        and, on the backup, redirects every logon (PROTOCOL §4.3).
        """
        if self.role == BACKUP and not pinned:
            raise NotPrimary(
                "this Notifier is the backup; register with the primary",
                primary=self.peer,
            )

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(new_role)`` after each role change."""
        self._listeners.append(listener)

    def on_peer(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(True)`` after each probe the peer answers, ``listener(False)``
        after each failed probe once it has been silent for the detection time."""
        self._peer_listeners.append(listener)

    # --- role changes --------------------------------------------------------------
    def set_role(self, role: str, reason: str) -> bool:
        """Take ``role``; True when it changed (logged, listeners told)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if role == self.role:
            return False
        old, self.role = self.role, role
        self.took_over = False
        self.changes += 1
        self.peer_seen = self.clock.seconds()
        self.log.info(
            "Notifier role {old} -> {new} ({reason})",
            old=old,
            new=role,
            reason=reason,
            event="notifier.pair.role",
        )
        for listener in self._listeners:
            listener(role)
        return True

    def switchover(self) -> defer.Deferred[dict[str, Any]]:
        """Swap roles: this side takes the other role and asks the peer to take ours."""
        new = BACKUP if self.role == PRIMARY else PRIMARY
        old = self.role
        self.set_role(new, "switchover requested")
        answer = {"role": new, "peer": self.peer, "peerTold": False}
        if self.tell_peer is None:
            return defer.succeed(answer)
        d = self.tell_peer(old)

        def told(_: Any) -> dict[str, Any]:
            return {**answer, "peerTold": True}

        def not_told(failure: Failure) -> dict[str, Any]:
            self.log.warn(
                "Could not tell the peer {peer} to become {role}: {error}",
                peer=self.peer,
                role=old,
                error=failure.getErrorMessage(),
                event="notifier.pair.peer_unreachable",
            )
            return answer

        return d.addCallbacks(told, not_told)

    # --- crash detection -----------------------------------------------------------
    def start(self) -> None:
        """Start probing the peer (only a backup acts on the result)."""
        self.peer_seen = self.clock.seconds()
        self._probing = self.probe is not None
        self._again(None)

    def stop(self) -> None:
        self._probing = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        self._call = None
        assert self.probe is not None
        d = self.probe()
        d.addTimeout(self.probe_timeout, self.clock)  # a frozen peer never answers
        d.addCallbacks(self._alive, self._silent).addBoth(self._again)

    def _alive(self, answer: Any) -> None:
        self.peer_seen = self.clock.seconds()
        if (
            self.role == PRIMARY
            and not self.took_over
            and isinstance(answer, dict)
            and answer.get("role") == PRIMARY
            and answer.get("tookOver") is True
        ):
            self.set_role(BACKUP, f"peer {self.peer} took over while this side was silent")
        for listener in self._peer_listeners:
            listener(True)

    def _silent(self, failure: Failure) -> None:
        silent_for = self.clock.seconds() - self.peer_seen
        if silent_for < self.detection:
            return
        if self.role == BACKUP:
            self.set_role(PRIMARY, f"peer {self.peer} silent for {silent_for:.1f} s")
            self.took_over = True
        for listener in self._peer_listeners:
            listener(False)

    def _again(self, _: Any) -> None:
        if self._probing and self._call is None:
            self._call = self.clock.callLater(self.interval, self._tick)

    def state(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "peer": self.peer,
            "detection": self.detection,
            "probeTimeout": self.probe_timeout,
            "tookOver": self.took_over,
            "peerSeen": self.peer_seen,
            "changes": self.changes,
        }
