"""A service that listens on an endpoint while it runs; shared by the bridge and the Notifier.

``when_listening()`` fires with the bound port (tests listen on port 0 and read
it back). A bind that fails at start-up raises :class:`ListenFailed` from
``startService``, so twistd stops with the reason instead of running deaf;
:class:`ExitOnListenFailure`, the top service of ``twistd smbridge``, turns it into
one critical log line naming the address (and the option) and exit status 1.
With ``track=True`` the service remembers accepted connections and closes them
when stopped, so that a stopped server is really gone; the bridge closes its own
clients more gracefully and leaves it off, keeping the per-connection wrapper off
its hot path.

:func:`announce_backlog` logs the client listeners' listen backlog at start: the
kernel holds at most ``min(--backlog, net.core.somaxconn)`` connections waiting to be
accepted, and a full queue costs each further client a 1 s SYN retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure


class ListenFailed(Exception):
    """A listener could not bind: which one, where, why (and the option that sets it)."""

    def __init__(self, name: str, where: str, reason: str, option: str | None = None) -> None:
        super().__init__(name, where, reason)
        self.name = name
        self.where = where
        self.reason = reason
        self.option = option

    @classmethod
    def of(cls, name: str, failure: Failure) -> ListenFailed:
        error = failure.value
        if isinstance(error, CannotListenError):
            host = error.interface or "*"
            where = f"[{host}]:{error.port}" if ":" in host else f"{host}:{error.port}"
            socket_error = error.socketError
            reason = getattr(socket_error, "strerror", None) or str(socket_error)
            return cls(name, where, reason)
        return cls(name, "its endpoint", failure.getErrorMessage())

    def __str__(self) -> str:
        option = f" ({self.option})" if self.option else ""
        return f"{self.name} cannot listen on {self.where}{option}: {self.reason}"


class ExitOnListenFailure(MultiService):
    """twistd's top service: a listener that cannot bind ends the process, in one line.

    ``startService`` runs before the reactor: the failure is logged critical (event
    ``listener.bind_failed``) and ``SystemExit(1)`` ends twistd with a non-zero
    status, so a supervisor (systemd's ``Restart=on-failure``) sees the failure.
    """

    log = Logger()

    def __init__(self, service: IService) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wrapped = service
        service.setServiceParent(self)

    def startService(self) -> None:
        try:
            super().startService()  # type: ignore[no-untyped-call]
        except ListenFailed as e:
            what = f"choose another with {e.option}" if e.option else "change its endpoint"
            self.log.critical(
                "Stopping: {message} (stop what holds {where}, or {hint})",
                message=str(e),
                hint=what,
                listener=e.name,
                where=e.where,
                option=e.option,
                event="listener.bind_failed",
            )
            raise SystemExit(1) from None


class TrackingFactory(WrappingFactory):
    """Remembers live connections so that stopping can close them and wait."""

    def __init__(self, wrapped: Factory[Any]) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self._lost: dict[ProtocolWrapper, Deferred[None]] = {}

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)  # type: ignore[no-untyped-call]
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


class ListenerService(Service):
    log = Logger()

    def __init__(
        self,
        name: str,
        endpoint: IStreamServerEndpoint,
        factory: Factory[Any],
        track: bool = True,
    ) -> None:
        self.setName(name)  # type: ignore[no-untyped-call]
        self.endpoint = endpoint
        self.factory: Factory[Any] = TrackingFactory(factory) if track else factory
        self.port: IListeningPort | None = None
        self._failure: Failure | None = None
        self._pending: Deferred[IListeningPort] | None = None
        self._waiters: list[Deferred[IListeningPort]] = []
        self._starting = False  # a failure now raises from startService (not logged twice)

    def when_listening(self) -> Deferred[IListeningPort]:
        if self.port is not None:
            return succeed(self.port)
        if self._failure is not None:
            return fail(self._failure)
        d: Deferred[IListeningPort] = Deferred()
        self._waiters.append(d)
        return d

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._failure = None
        self._starting = True
        try:
            self._pending = self.endpoint.listen(self.factory)
            self._pending.addCallbacks(self._listening, self._failed)
        finally:
            self._starting = False
        if self._failure is not None:  # TCP binds synchronously: fail start-up loudly
            raise ListenFailed.of(self.name, self._failure)

    def _listening(self, port: IListeningPort) -> None:
        self._pending = None
        self.port = port
        host = port.getHost()
        self.log.info(
            "{name} listening on {host}:{port}",
            name=self.name,
            host=getattr(host, "host", host),
            port=getattr(host, "port", ""),
            event="listener.listening",
        )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        self._failure = failure
        if not self._starting and not (failure.check(CancelledError) and not self.running):
            self.log.error(
                "{name} cannot listen: {error}",
                name=self.name,
                error=failure.getErrorMessage(),
                event="listener.failed",
            )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._pending is not None:
            self._pending.cancel()
        port, self.port = self.port, None
        waits = [port.stopListening()] if port is not None else []
        if isinstance(self.factory, TrackingFactory):
            waits.append(self.factory.close_all())
        return gatherResults([d for d in waits if d is not None])


SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
_backlog_log = Logger(namespace="smbridge.listening.backlog")


def somaxconn(path: Path = SOMAXCONN) -> int | None:
    """The kernel's cap on a listen backlog (Linux), or None where it cannot be read."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def announce_backlog(configured: int, cap: int | None) -> int:
    """Log the effective listen backlog (one info line; a warning if the kernel caps it)."""
    effective = configured if cap is None else min(configured, cap)
    _backlog_log.info(
        "client listeners: listen backlog {effective} (--backlog {configured}, "
        "net.core.somaxconn {cap})",
        effective=effective,
        configured=configured,
        cap="unknown" if cap is None else cap,
        event="listener.backlog",
    )
    if effective < configured:
        _backlog_log.warn(
            "net.core.somaxconn {cap} caps --backlog {configured}: raise it "
            "(sysctl -w net.core.somaxconn={configured}) or a logon storm waits on SYN retries",
            cap=cap,
            configured=configured,
            event="listener.backlog_capped",
        )
    return effective
