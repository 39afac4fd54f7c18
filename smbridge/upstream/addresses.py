"""Which Notifier to dial next: the address book behind the connector's one endpoint.

``ClientService`` dials one endpoint; :class:`NotifierEndpoints` is that
endpoint, and picks the address each attempt goes to. In ``follow-primary``
mode a failed connection moves on to the next address, and a refusal that
names the current primary (``not-primary``) moves straight to it. In ``pinned``
mode (the note's WAN switchover: "always connect to SERVER1") only the pinned
address is ever dialled. Nothing here does I/O of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

FOLLOW_PRIMARY = "follow-primary"
PINNED = "pinned"
MODES = (FOLLOW_PRIMARY, PINNED)


@implementer(IStreamClientEndpoint)
class NotifierEndpoints:
    """Several named Notifier endpoints behind one ``connect``."""

    log = Logger()

    def __init__(
        self,
        entries: Sequence[tuple[str, IStreamClientEndpoint]],
        mode: str = FOLLOW_PRIMARY,
        pinned: str | None = None,
    ) -> None:
        if not entries:
            raise ValueError("at least one Notifier address is needed")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        names = [name for name, _ in entries]
        if pinned is not None and pinned not in names:
            raise ValueError(f"the pinned Notifier {pinned} is not among {', '.join(names)}")
        self.entries = list(entries)
        self.mode = mode
        self.index = names.index(pinned) if pinned is not None else 0

    @property
    def current(self) -> str:
        """The address the next (or the current) attempt dials."""
        return self.entries[self.index][0]

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        name, endpoint = self.entries[self.index]
        d: defer.Deferred[IProtocol] = endpoint.connect(factory)

        def failed(failure: Failure) -> Failure:
            self.advance(f"{name} unreachable: {failure.getErrorMessage()}")
            return failure

        return d.addErrback(failed)

    def advance(self, why: str) -> None:
        """Try the next address on the next attempt (follow-primary only)."""
        if self.mode == PINNED or len(self.entries) == 1:
            return
        old = self.current
        self.index = (self.index + 1) % len(self.entries)
        self.log.info(
            "Next Notifier: {old} -> {new} ({why})",
            old=old,
            new=self.current,
            why=why,
            event="upstream.address.next",
        )

    def prefer(self, name: str) -> bool:
        """Dial ``name`` next when it is one of ours (follow-primary); True if it is."""
        names = [n for n, _ in self.entries]
        if self.mode == PINNED or name not in names:
            return False
        old, self.index = self.current, names.index(name)
        if old != name:
            self.log.info(
                "Next Notifier: {old} -> {new} (named as the primary)",
                old=old,
                new=name,
                event="upstream.address.primary",
            )
        return True
