"""The reference Notifier as one embeddable Twisted service.

``NotifierService`` wires the core (:class:`Notifier`), the traffic generator,
the link listener and the control API under one ``MultiService``. It takes
endpoints rather than ports so the caller decides on TLS, interfaces and port
0; the bridge's ``--demo`` embeds it and tests start it on port 0. Stopping it
closes the connections it accepted as well as its listening ports, so a stopped
Notifier really is gone (and tests leave a clean reactor).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    FirstError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from smbridge.notifier.control import control_site
from smbridge.notifier.link import NotifierLinkFactory
from smbridge.notifier.model import Notifier
from smbridge.notifier.site import Site
from smbridge.notifier.traffic import Traffic


class _TrackingFactory(WrappingFactory):
    """Remembers live connections so that stopping can close them and wait."""

    noisy = False

    def __init__(self, wrapped: IProtocolFactory) -> None:
        super().__init__(wrapped)
        self._lost: dict[ProtocolWrapper, Deferred[None]] = {}

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        d = self._lost.pop(p, None)
        if d is not None:
            d.callback(None)

    def close_all(self) -> Deferred[Any]:
        waits = []
        for p in list(self.protocols):
            d = self._lost[p] = Deferred()
            waits.append(d)
            p.transport.abortConnection()
        return DeferredList(waits)


class _Listener(Service):
    """Listens on an endpoint while running; ``when_listening`` fires with the port."""

    log = Logger()

    def __init__(
        self, name: str, endpoint: IStreamServerEndpoint, factory: IProtocolFactory
    ) -> None:
        self.setName(name)
        self.endpoint = endpoint
        self.factory = _TrackingFactory(factory)
        self.port: IListeningPort | None = None
        self._failure: Failure | None = None
        self._pending: Deferred[IListeningPort] | None = None
        self._waiters: list[Deferred[IListeningPort]] = []

    def when_listening(self) -> Deferred[IListeningPort]:
        if self.port is not None:
            return succeed(self.port)
        if self._failure is not None:
            return fail(self._failure)
        d: Deferred[IListeningPort] = Deferred()
        self._waiters.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        self._failure = None
        self._pending = self.endpoint.listen(self.factory)
        self._pending.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self._pending = None
        self.port = port
        host = port.getHost()
        self.log.info(
            "Notifier {name} listening on {address}",
            name=self.name,
            address=f"{getattr(host, 'host', host)}:{getattr(host, 'port', '')}",
            event="notifier.listening",
        )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        self._failure = failure
        if not (failure.check(CancelledError) and not self.running):
            self.log.failure(
                "Notifier {name} cannot listen",
                failure,
                name=self.name,
                event="notifier.listen.failed",
            )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._pending is not None:
            self._pending.cancel()
        port, self.port = self.port, None
        stopping = port.stopListening() if port is not None else None
        return gatherResults([d for d in (stopping, self.factory.close_all()) if d is not None])


def _first_error(failure: Failure) -> Failure:
    """Unwrap gatherResults' FirstError so callers see the listener's own failure."""
    if isinstance(failure.value, FirstError):
        return failure.value.subFailure
    return failure


class NotifierService(MultiService):
    """A reference Notifier: link listener, optional control API, traffic generator."""

    def __init__(
        self,
        site: Site,
        *,
        reactor: IReactorTime,
        link_endpoint: IStreamServerEndpoint,
        control_endpoint: IStreamServerEndpoint | None = None,
    ) -> None:
        super().__init__()
        self.site = site
        self.notifier = Notifier(site, reactor)
        self.traffic = Traffic(
            self.notifier,
            reactor,
            site.traffic.calls_per_second,
            site.traffic.handle_seconds,
            max_queue_length=site.traffic.max_queue_length,
        )
        self._link = _Listener("link", link_endpoint, NotifierLinkFactory(self.notifier))
        self._link.setServiceParent(self)
        self._control: _Listener | None = None
        if control_endpoint is not None:
            self._control = _Listener(
                "control", control_endpoint, control_site(self.notifier, self.traffic)
            )
            self._control.setServiceParent(self)

    @property
    def link_port(self) -> IListeningPort | None:
        return self._link.port

    @property
    def control_port(self) -> IListeningPort | None:
        return self._control.port if self._control is not None else None

    def when_listening(self) -> Deferred[None]:
        """Fire once the link (and the control API, when configured) are listening."""
        listeners = [self._link] + ([self._control] if self._control is not None else [])
        d = gatherResults([lst.when_listening() for lst in listeners], consumeErrors=True)
        d.addErrback(_first_error)
        return d.addCallback(lambda _: None)

    def startService(self) -> None:
        super().startService()
        self.traffic.start()

    def stopService(self) -> Deferred[Any]:
        self.traffic.stop()
        return super().stopService()  # type: ignore[no-any-return]
