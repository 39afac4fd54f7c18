"""The upstream connector: one registered link to the Notifier, kept up.

``ClientService`` reconnects with jittered exponential backoff. The link's
life is an explicit state machine; every transition is logged. While the link is
not up, every request fails at once with ``upstream-unavailable`` (retryable):
nothing waits on a link that may not come back.

States: ``disconnected`` (stopped), ``connecting`` (never up yet),
``registering`` (connected, Register sent), ``up``, ``switching`` (was up, or was
refused by a backup: looking for the current primary). When the endpoint is a
:class:`~smbridge.upstream.addresses.NotifierEndpoints`, a refusal that names the
primary (``not-primary``) makes the next attempt dial it. Coming up again after
``switching`` is a switchover: listeners hear ``("started", cic)`` when an up link
drops and ``("completed", cic)`` when the link is registered again.

When to dial again is :class:`~smbridge.upstream.backoff.LinkBackoff`'s call: a
link that drops right after coming up backs off like a failed attempt. Why the
link is down is ``last_error`` (``/api/status``'s ``lastError``), in the words of
:func:`~smbridge.upstream.reasons.describe`; it is logged at warning level with
the event key ``upstream.link.failed`` once per change of reason (per address),
not once per retry, and ``upstream.link.recovered`` says when the link is back.

A frozen Notifier is noticed (upstream/deadlines.py): a request unanswered for
``request_timeout`` seconds fails with ``upstream-unavailable``; an up link that
has heard nothing for ``dead_after`` seconds while requests were out is dropped
like a lost one (``lastError`` says why) and the next attempt goes to the next
address; a new link whose Register (TLS handshake included) is not answered
within ``request_timeout`` is aborted and the next address tried.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.codec import Frame
from smbridge.codec.catalog import LINK_REGISTER, MessageType
from smbridge.codec.frames import dump_json
from smbridge.errors import ProtocolError, UpstreamUnavailable
from smbridge.transports.batch import WriteBatcher
from smbridge.upstream import reasons
from smbridge.upstream.addresses import NotifierEndpoints
from smbridge.upstream.backoff import LinkBackoff
from smbridge.upstream.link import (
    DeferredPending,
    RelayPending,
    ReplyTarget,
    UpstreamLink,
    UpstreamLinkFactory,
)
from smbridge.upstream.reasons import describe


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    REGISTERING = "registering"
    UP = "up"
    SWITCHING = "switching"


_ALLOWED: dict[LinkState, set[LinkState]] = {
    LinkState.DISCONNECTED: {LinkState.CONNECTING},
    LinkState.CONNECTING: {LinkState.REGISTERING, LinkState.DISCONNECTED},
    LinkState.REGISTERING: {
        LinkState.UP,
        LinkState.CONNECTING,
        LinkState.SWITCHING,
        LinkState.DISCONNECTED,
    },
    LinkState.UP: {LinkState.SWITCHING, LinkState.DISCONNECTED},
    LinkState.SWITCHING: {LinkState.REGISTERING, LinkState.DISCONNECTED},
}

SwitchoverListener = Callable[[str, Any], None]  # (phase, cic)
STOP_GRACE = 1.0  # seconds the link may take to close at shutdown before it is aborted


def _abort(link: UpstreamLink) -> None:
    if link.connected:
        link.transport.abortConnection()  # type: ignore[union-attr]


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
        *,
        request_timeout: float | None = None,
        dead_after: float | None = None,
    ) -> None:
        """``max_frame`` caps frames from the Notifier (``--link-max-frame``);
        ``request_timeout`` (``--upstream-timeout``) and ``dead_after``
        (``--link-dead-after``) are seconds, None: wait for ever."""
        self.clock = clock
        self.request_timeout = request_timeout
        self.dead_after = dead_after
        self.registration = registration
        # Called with the Register payload just before it is sent (the service fills in
        # the ports it actually bound, which port 0 does not say).
        self.before_register: Callable[[dict[str, Any]], None] | None = None
        self.server = server  # what we dial, for logs
        self.state = LinkState.DISCONNECTED
        self.link: UpstreamLink | None = None
        self._current: UpstreamLink | None = None  # the connected link, registered or not
        self.registered: dict[str, Any] = {}  # the Notifier's Register answer
        self.last_error: str | None = None  # why the link last dropped, until it is up again
        self.notification: Callable[[Frame], None] = lambda frame: None
        self._up_listeners: list[Callable[[], object]] = []
        self._stop_listeners: list[Callable[[], object]] = []  # told first when stopping
        self._switchover_listeners: list[SwitchoverListener] = []
        self._waiting_up: list[defer.Deferred[None]] = []
        self._switching = False  # an up link dropped (or a backup refused us) since last up
        self.switchovers = 0  # completed switchovers (reconnects after being up)
        self._refused_link: UpstreamLink | None = None  # the link whose Register was refused
        self.backoff = LinkBackoff(clock)  # the delay before each attempt (module docstring)
        self.attempts = 0  # dials so far
        self._dialled = server  # the address of the current (or last) attempt
        # address -> the reason last logged for it; forgotten once a link has lasted
        # (a link that flaps does not log the same reason again on every drop).
        self._reported: dict[str, str] = {}
        self._recovery_logged = False
        self.endpoint = endpoint
        factory = self.link_factory = UpstreamLinkFactory(self, batcher, max_frame)
        self._client = ClientService(
            _Dialler(self),
            factory,
            retryPolicy=self._retry_delay,
            clock=clock,
        )

    # --- lifecycle ------------------------------------------------------------
    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._move(LinkState.CONNECTING)
        self._client.startService()

    def stopService(self) -> defer.Deferred[None]:
        """Close the link; one that is not closed within ``STOP_GRACE`` seconds is aborted
        (a frozen Notifier does not delay the bridge's shutdown)."""
        for listener in self._stop_listeners:
            listener()
        super().stopService()  # type: ignore[no-untyped-call]
        d: defer.Deferred[None] = self._client.stopService()
        link = self._current
        if link is not None and link.connected and not d.called:
            late = self.clock.callLater(STOP_GRACE, _abort, link)

            def done(result: object) -> object:
                if late.active():
                    late.cancel()
                return result

            d.addBoth(done)
        return d

    def _retry_delay(self, attempt: int) -> float:
        # ClientService's own count restarts with every connection, even one that
        # fails at once (TLS, Register): the backoff keeps its own.
        return self.backoff.next_delay()

    def _dial(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """One attempt: dial the endpoint; a failure to connect is a reported failure."""
        self.attempts += 1
        address = self._dialled = self._dialling()
        d: defer.Deferred[IProtocol] = self.endpoint.connect(factory)

        def failed(failure: Failure) -> Failure:
            if self.running and not failure.check(defer.CancelledError):
                self.backoff.failed()
                self._report(describe(failure.value, address), address)
            return failure

        return d.addErrback(failed)

    def _report(self, reason: str, address: str | None = None) -> None:
        """Say why the link is down: ``last_error`` always, the log once per change."""
        address = address or self._dialled
        self.last_error = reason
        if self._reported.get(address) == reason:
            return
        self._reported[address] = reason
        self._recovery_logged = False
        self.log.warn(
            "Notifier link {server}: {reason}",
            server=address,
            reason=reason,
            state=self.state.value,
            event="upstream.link.failed",
        )

    def on_up(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` each time the link comes up registered."""
        self._up_listeners.append(listener)

    def on_stop(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` when the connector stops, before the link is closed."""
        self._stop_listeners.append(listener)

    def on_switchover(self, listener: SwitchoverListener) -> None:
        """Call ``listener(phase, cic)``: "started" when an up link drops, "completed" when back."""
        self._switchover_listeners.append(listener)

    def _tell_switchover(self, phase: str, cic: Any) -> None:
        for listener in self._switchover_listeners:
            try:
                listener(phase, cic)
            except Exception:
                self.log.failure(
                    "Switchover listener failed", event="upstream.listener.failed", phase=phase
                )

    @property
    def dialled(self) -> str:
        """The address of the current (or last) attempt."""
        return self._dialled

    def _dialling(self) -> str:
        current = getattr(self.endpoint, "current", None)
        return current if isinstance(current, str) else self.server

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
            server=self._dialling(),
            old=old.value,
            new=to.value,
            event="upstream.state",
            **fields,
        )

    # --- link callbacks -------------------------------------------------------------
    def link_made(self, link: UpstreamLink) -> None:
        # Nagle off: the link's writes are batched once per turn already, and a
        # notification (SessionOpened, SessionClosed) has no answer to carry the ACK, so
        # the next request would wait for the Notifier's delayed ACK (up to 40 ms).
        no_delay = getattr(link.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        self._current = link
        self._move(LinkState.REGISTERING)
        if self.before_register is not None:
            self.before_register(self.registration)
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
        self.backoff.came_up()
        if self._reported and not self._recovery_logged:
            self._recovery_logged = True
            self.log.info(
                "Notifier link {server} is up (it was down: {previous})",
                server=self._dialled,
                previous=self.last_error,
                event="upstream.link.recovered",
            )
        self.last_error = None
        switched, self._switching = self._switching, False
        self._move(LinkState.UP, cic=reply.get("cic"))
        for listener in self._up_listeners:
            try:
                listener()
            except Exception:
                self.log.failure("Link-up listener failed", event="upstream.listener.failed")
        if switched:
            self.switchovers += 1
            self.log.info(
                "Switched over to {server} (CIC {cic})",
                server=self._dialling(),
                cic=reply.get("cic"),
                event="upstream.switchover",
            )
            self._tell_switchover("completed", reply.get("cic"))
        waiting, self._waiting_up = self._waiting_up, []
        for d in waiting:
            d.callback(None)

    def _refused(self, link: UpstreamLink, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, UpstreamUnavailable):
            if link.connected:  # no answer in time (a frozen Notifier): give up on this link
                link.close_reason = reasons.register_unanswered(
                    self._dialled, self.request_timeout or 0.0
                )
                link.transport.abortConnection()  # type: ignore[union-attr]
            return  # else the link dropped before the answer: link_lost says why
        self._refused_link = link
        extra = error.extra if isinstance(error, ProtocolError) else {}
        code = error.code if isinstance(error, ProtocolError) else "internal-error"
        primary = extra.get("primary")
        self._report(f"the Notifier refused registration ({code}): {failure.getErrorMessage()}")
        if code == "not-primary":
            self._switching = True
        if isinstance(self.endpoint, NotifierEndpoints):
            named = isinstance(primary, str) and self.endpoint.prefer(primary)
            if named:
                self.backoff.quick(1)
            else:
                self.endpoint.advance(f"refused: {code}")
        if link.connected:
            link.transport.loseConnection()  # type: ignore[union-attr]

    def link_lost(self, link: UpstreamLink, reason: Failure | None) -> None:
        was_up = self.link is link
        if was_up:
            self.link = None
        if self._current is link:
            self._current = None
        if link.close_reason is not None:
            why = link.close_reason
        elif reason is not None:
            why = describe(reason.value, self._dialled)
        else:
            why = "the Notifier closed the link"
        refused, self._refused_link = self._refused_link is link, None
        if not self.running:
            self._move(LinkState.DISCONNECTED, reason=why)
            return
        if was_up:
            if self.backoff.went_down(len(getattr(self.endpoint, "entries", ()))):
                self._reported, self._recovery_logged = {}, False  # a lasting link: news again
        else:
            self.backoff.failed()
        if not refused:
            self._report(why)
            if not was_up and isinstance(self.endpoint, NotifierEndpoints):
                self.endpoint.advance(f"lost while registering: {why}")
        if was_up:
            if link.dropped_silent and isinstance(self.endpoint, NotifierEndpoints):
                self.endpoint.advance(f"silent: {why}")  # a frozen Notifier stays frozen a while
            self._switching = True
            self._move(LinkState.SWITCHING, reason=why)
            self._tell_switchover("started", self.registered.get("cic"))
        else:
            self._move(LinkState.SWITCHING if self._switching else LinkState.CONNECTING, reason=why)

    # --- requests -----------------------------------------------------------------
    def request(self, message: MessageType, body: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        """Ask the Notifier; fires with the answer or fails with a ProtocolError."""
        link = self.link
        if link is None:
            return defer.fail(UpstreamUnavailable())
        pending = DeferredPending()
        link.request(message[0], message[1], dump_json(body), pending)
        return pending.deferred

    def forward(self, session: ReplyTarget, frame: Frame, payload: bytes) -> None:
        """Send a client's request upstream; its answer goes back through ``session.send``."""
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


@implementer(IStreamClientEndpoint)
class _Dialler:
    """The endpoint ``ClientService`` dials: the connector's, with each attempt counted."""

    def __init__(self, connector: UpstreamConnector) -> None:
        self._connector = connector

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        return self._connector._dial(factory)
