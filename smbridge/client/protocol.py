"""The client's Twisted protocol: requests out, responses matched back, notifications up.

A thin adapter over the shared codec. Each request gets a fresh, increasing
requestId and a Deferred; the bridge may answer out of order, so responses are
matched by id, never by position. Anything that ends the stream (a close, a frame
the codec rejects) fails every pending request at once, so no caller waits on an
answer that cannot come.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.codec import DEFAULT_MAX_FRAME, BadFrame, Decoder, Frame, Kind, encode, name_of

Listener = Callable[[Frame], object]
_MAX_REQUEST_ID = 0xFFFFFFFF


class ClientError(Exception):
    """A request that did not succeed: an ``error`` frame, or a local failure.

    ``code`` is the wire's kebab-case code (``logon-failed``, ``no-session``…) or one
    of the client's own: ``connection-lost`` (the stream ended first) and
    ``not-connected`` (the request was never sent). ``body`` is the whole error
    payload, so extra fields such as ``reason`` or ``retryable`` stay readable.
    """

    def __init__(self, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.body: dict[str, Any] = body if body is not None else {"code": code, "message": message}

    @property
    def reason(self) -> str | None:
        """The ``reason`` field (logon failures and redirects carry one)."""
        value = self.body.get("reason")
        return value if isinstance(value, str) else None

    @property
    def retryable(self) -> bool:
        return self.body.get("retryable") is True

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code}: {self.message}{reason}"


@implementer(IHandshakeListener)
class BridgeProtocol(Protocol):
    """One connection to a bridge.

    ``ready`` fires once the stream can carry requests: at ``connectionMade`` for
    clear text, after the TLS handshake otherwise (``tls=True``), so a certificate
    that fails verification fails ``ready`` rather than the first request.
    """

    log = Logger()

    def __init__(self, *, tls: bool = False, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._decoder = Decoder(max_frame=max_frame)
        self._tls = tls
        self._next_id = 1
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self._listeners: list[Listener] = []
        self._close_waiters: list[Deferred[Exception]] = []
        self._close_reason: Exception | None = None
        self._last_error: ClientError | None = None
        self.ready: Deferred[BridgeProtocol] = Deferred()
        self.largest_frame = 0  # bytes of the largest frame received (header included)

    # --- Twisted hooks -------------------------------------------------------------
    def connectionMade(self) -> None:
        if not self._tls:
            self.ready.callback(self)

    def handshakeCompleted(self) -> None:
        if not self.ready.called:
            self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        for event in self._decoder.feed(data):
            if isinstance(event, BadFrame):
                self._bad_frame(event)
                return
            if len(event.payload) + 14 > self.largest_frame:
                self.largest_frame = len(event.payload) + 14
            self._frame(event)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = 0
        value = reason.value if isinstance(reason.value, Exception) else ConnectionDone()
        self._close_reason = value
        detail = str(self._last_error) if self._last_error else reason.getErrorMessage()
        error = ClientError("connection-lost", f"connection to the bridge ended: {detail}")
        if not self.ready.called:
            self.ready.errback(error)
        self._fail_pending(error)
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(value)

    # --- API -----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    def request(
        self, object_type: int, event_id: int, body: dict[str, Any] | None = None
    ) -> Deferred[dict[str, Any]]:
        """Send a request; the Deferred fires with the response payload or a ClientError."""
        if not self.connected or self.transport is None:
            return fail(ClientError("not-connected", "not connected to a bridge"))
        request_id = self._allocate_id()
        d: Deferred[dict[str, Any]] = Deferred()
        self._pending[request_id] = d
        self.transport.write(encode(Kind.REQUEST, object_type, event_id, request_id, body))
        return d

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(frame)`` for every notification frame."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def when_closed(self) -> Deferred[Exception]:
        """A new Deferred firing with the close reason (``ConnectionDone`` when clean)."""
        if self._close_reason is not None:
            return succeed(self._close_reason)
        d: Deferred[Exception] = Deferred()
        self._close_waiters.append(d)
        return d

    def close(self) -> Deferred[Exception]:
        """Close the connection; fires when it has ended."""
        d = self.when_closed()
        if self.connected and self.transport is not None:
            self.transport.loseConnection()
        return d

    # --- internals -----------------------------------------------------------------
    def _allocate_id(self) -> int:
        # Increasing ids; after 2**32-1 requests wrap to 1, skipping ids still pending.
        while True:
            request_id = self._next_id
            self._next_id = request_id + 1 if request_id < _MAX_REQUEST_ID else 1
            if request_id not in self._pending:
                return request_id

    def _frame(self, frame: Frame) -> None:
        body = frame.parsed()
        if frame.kind == Kind.NOTIFICATION:
            for listener in list(self._listeners):
                try:
                    listener(frame)
                except Exception:
                    self.log.failure(
                        "Notification listener failed on {name}",
                        name=name_of(frame.object_type, frame.event_id),
                        event="client.listener_failed",
                    )
            return
        d = self._pending.pop(frame.request_id, None) if frame.kind != Kind.REQUEST else None
        if frame.kind == Kind.ERROR:
            error = ClientError(
                str(body.get("code", "unknown-error")), str(body.get("message", "")), body
            )
            if d is not None:
                d.errback(error)
                return
            # Unsolicited (requestId 0, e.g. tls-required before a close): keep it so
            # that the connection-lost failures that follow say why.
            self._last_error = error
            self.log.warn("Bridge sent {error}", error=str(error), event="client.error_frame")
        elif d is not None:
            d.callback(body)
        else:
            self.log.warn(
                "Unexpected {kind} {name} with requestId {rid}",
                kind=Kind(frame.kind).name.lower(),
                name=name_of(frame.object_type, frame.event_id),
                rid=frame.request_id,
                event="client.unexpected_frame",
            )

    def _bad_frame(self, event: BadFrame) -> None:
        self.log.error(
            "Bridge sent a bad frame: {why}", why=event.message, event="client.bad_frame"
        )
        self._last_error = ClientError("bad-frame", f"bridge sent a bad frame: {event.message}")
        self._fail_pending(self._last_error)
        if self.transport is not None:
            self.transport.loseConnection()

    def _fail_pending(self, error: ClientError) -> None:
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ClientError(error.code, error.message, dict(error.body)))
