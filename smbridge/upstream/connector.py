"""The upstream connector: one registered link to the Notifier, kept up.

``ClientService`` reconnects with jittered exponential backoff. The link's
life is an explicit state machine; every transition is logged. While the link is
not up, every request fails at once with ``upstream-unavailable`` (retryable):
nothing waits on a link that may not come back.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.codec import Frame
from smbridge.codec.catalog import LINK_REGISTER, MessageType
from smbridge.codec.frames import dump_json
from smbridge.errors import UpstreamUnavailable
from smbridge.session.session import Session
from smbridge.transports.batch import WriteBatcher
from smbridge.upstream.link import DeferredPending, RelayPending, UpstreamLink, UpstreamLinkFactory


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    REGISTERING = "registering"
    UP = "up"


_ALLOWED: dict[LinkState, set[LinkState]] = {
    LinkState.DISCONNECTED: {LinkState.CONNECTING},
    LinkState.CONNECTING: {LinkState.REGISTERING, LinkState.DISCONNECTED},
    LinkState.REGISTERING: {LinkState.UP, LinkState.CONNECTING, LinkState.DISCONNECTED},
    LinkState.UP: {LinkState.CONNECTING, LinkState.DISCONNECTED},
}


class UpstreamConnector(Service):
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        registration: dict[str, Any],
        batcher: WriteBatcher,
        server: str,
        max_frame: int,
    ) -> None:
        self.clock = clock
        self.registration = registration
        self.server = server  # what we dial, for logs
        self.state = LinkState.DISCONNECTED
        self.link: UpstreamLink | None = None
        self.registered: dict[str, Any] = {}  # the Notifier's Register answer
        self.last_error: str | None = None  # why the link last dropped, until it is up again
        self.notification: Callable[[Frame], None] = lambda frame: None
        self._up_listeners: list[Callable[[], None]] = []
        self._waiting_up: list[defer.Deferred[None]] = []
        factory = UpstreamLinkFactory(self, batcher, max_frame)
        self._client = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(
                initialDelay=0.5, maxDelay=30.0, factor=1.7, jitter=random.random
            ),
            clock=clock,
        )

    # --- lifecycle ------------------------------------------------------------
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._move(LinkState.CONNECTING)
        self._client.startService()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        d: defer.Deferred[None] = self._client.stopService()
        return d

    def on_up(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` each time the link comes up registered."""
        self._up_listeners.append(listener)

    def when_up(self) -> defer.Deferred[None]:
        """Fire once the link is up (at once if it is)."""
        if self.state is LinkState.UP:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting_up.append(d)
        return d

    @property
    def up(self) -> bool:
        return self.state is LinkState.UP

    def _move(self, to: LinkState, **fields: Any) -> None:
        if to is self.state:
            return
        if to not in _ALLOWED[self.state]:
            self.log.error(
                "Invalid link transition {old} -> {new}",
                old=self.state.value,
                new=to.value,
                event="upstream.state.invalid",
            )
        old, self.state = self.state, to
        self.log.info(
            "Notifier link {server}: {old} -> {new}",
            server=self.server,
            old=old.value,
            new=to.value,
            event="upstream.state",
            **fields,
        )

    # --- link callbacks -------------------------------------------------------------
    def link_made(self, link: UpstreamLink) -> None:
        self._move(LinkState.REGISTERING)
        pending = DeferredPending()
        link.request(*LINK_REGISTER, dump_json(self.registration), pending)
        pending.deferred.addCallbacks(
            lambda reply: self._registered(link, reply), lambda f: self._refused(link, f)
        )

    def _registered(self, link: UpstreamLink, reply: dict[str, Any]) -> None:
        if not link.connected:
            return
        self.link = link
        self.registered = reply
        self.last_error = None
        self._move(LinkState.UP, cic=reply.get("cic"))
        for listener in self._up_listeners:
            try:
                listener()
            except Exception:
                self.log.failure("Link-up listener failed", event="upstream.listener.failed")
        waiting, self._waiting_up = self._waiting_up, []
        for d in waiting:
            d.callback(None)

    def _refused(self, link: UpstreamLink, failure: Failure) -> None:
        self.log.error(
            "The Notifier refused registration: {error}",
            error=failure.getErrorMessage(),
            event="upstream.register.refused",
        )
        if link.connected:
            link.transport.loseConnection()  # type: ignore[union-attr]

    def link_lost(self, link: UpstreamLink, reason: Failure | None) -> None:
        if self.link is link:
            self.link = None
        why = reason.getErrorMessage() if reason is not None else "closed"
        self.last_error = why
        self._move(LinkState.CONNECTING if self.running else LinkState.DISCONNECTED, reason=why)

    # --- requests -----------------------------------------------------------------
    def request(self, message: MessageType, body: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        """Ask the Notifier; fires with the answer or fails with a ProtocolError."""
        link = self.link
        if link is None:
            return defer.fail(UpstreamUnavailable())
        pending = DeferredPending()
        link.request(message[0], message[1], dump_json(body), pending)
        return pending.deferred

    def forward(self, session: Session, frame: Frame, payload: bytes) -> None:
        """Send a client's request upstream; its answer goes straight back to the session."""
        relay = RelayPending(session, frame.object_type, frame.event_id, frame.request_id)
        link = self.link
        if link is None:
            relay.fail(UpstreamUnavailable())
            return
        link.request(frame.object_type, frame.event_id, payload, relay)

    def notify(self, message: MessageType, body: dict[str, Any]) -> None:
        """Send a notification to the Notifier if the link is up (best effort)."""
        if self.link is not None:
            self.link.notify(message[0], message[1], body)
