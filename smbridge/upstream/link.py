"""The bridge's end of the Notifier link: frames in and out, requests matched by id.

Payloads are not parsed here (``Decoder(parse=False)``): a forwarded request's
answer is relayed to its client as bytes, and only the answers the bridge itself
asked for are parsed, by their :class:`Pending`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.codec import BadFrame, Decoder, Frame, Kind, encode_error, encode_raw
from smbridge.codec.frames import DEFAULT_MAX_FRAME, dump_json
from smbridge.errors import ProtocolError, UpstreamError, UpstreamUnavailable
from smbridge.transports.batch import BatchedProtocol

if TYPE_CHECKING:
    from smbridge.session.session import Session
    from smbridge.transports.batch import WriteBatcher
    from smbridge.upstream.connector import UpstreamConnector


class Pending(Protocol):
    """Someone waiting for the answer to one upstream request."""

    def resolve(self, frame: Frame) -> None: ...

    def fail(self, error: ProtocolError) -> None: ...


class RelayPending:
    """A forwarded client request: the answer's bytes go back with the client's requestId."""

    __slots__ = ("session", "object_type", "event_id", "request_id")

    def __init__(self, session: Session, object_type: int, event_id: int, request_id: int):
        self.session = session
        self.object_type = object_type
        self.event_id = event_id
        self.request_id = request_id

    def resolve(self, frame: Frame) -> None:
        self.session.send(
            encode_raw(
                frame.kind, frame.object_type, frame.event_id, self.request_id, frame.payload
            )
        )

    def fail(self, error: ProtocolError) -> None:
        self.session.send(
            encode_error(self.object_type, self.event_id, self.request_id, **error.payload())
        )


class DeferredPending:
    """An answer the bridge asked for itself: fires a Deferred with the parsed payload."""

    __slots__ = ("deferred",)

    def __init__(self) -> None:
        self.deferred: defer.Deferred[dict[str, Any]] = defer.Deferred()

    def resolve(self, frame: Frame) -> None:
        try:
            body = frame.parsed()
        except ValueError as e:
            self.deferred.errback(UpstreamError(f"the Notifier sent a bad payload: {e}"))
            return
        if frame.kind == Kind.ERROR:
            self.deferred.errback(UpstreamError.from_body(body))
        else:
            self.deferred.callback(body)

    def fail(self, error: ProtocolError) -> None:
        self.deferred.errback(error)


class UpstreamLink(BatchedProtocol):
    """One TLS connection to the Notifier; ``max_frame`` caps the frames it takes from it."""

    log = Logger()

    def __init__(self, connector: UpstreamConnector, batcher: WriteBatcher, max_frame: int):
        super().__init__(batcher)
        self.connector = connector
        self.decoder = Decoder(max_frame, parse=False)
        self.pending: dict[int, Pending] = {}
        self._next_id = 0
        self.close_reason: str | None = None  # why we dropped the link ourselves, if we did

    def connectionMade(self) -> None:
        self.connected = True
        self.connector.link_made(self)

    def dataReceived(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if type(event) is Frame:
                if event.kind == Kind.NOTIFICATION:
                    self._notification(event)
                else:
                    pending = self.pending.pop(event.request_id, None)
                    if pending is not None:
                        pending.resolve(event)
            else:
                assert isinstance(event, BadFrame)
                # The connector logs it (once per change of reason) and shows it in lastError.
                hint = " (over --link-max-frame)" if "length" in event.message else ""
                self.close_reason = f"the Notifier sent a bad frame{hint}: {event.message}"
                self.transport.loseConnection()  # type: ignore[union-attr]
                return

    def _notification(self, frame: Frame) -> None:
        try:
            self.connector.notification(frame)
        except Exception:
            self.log.failure(
                "Handling an upstream notification failed", event="upstream.notification.failed"
            )

    def request(self, object_type: int, event_id: int, payload: bytes, pending: Pending) -> None:
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        self.pending[self._next_id] = pending
        self.send(encode_raw(Kind.REQUEST, object_type, event_id, self._next_id, payload))

    def notify(self, object_type: int, event_id: int, body: dict[str, Any]) -> None:
        self.send(encode_raw(Kind.NOTIFICATION, object_type, event_id, 0, dump_json(body)))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected = False
        self._out = []
        pending, self.pending = self.pending, {}
        error = UpstreamUnavailable("the Notifier link dropped while the request was in flight")
        for waiter in pending.values():
            waiter.fail(error)
        self.connector.link_lost(self, reason)


class UpstreamLinkFactory(Factory):
    def __init__(
        self,
        connector: UpstreamConnector,
        batcher: WriteBatcher,
        max_frame: int = DEFAULT_MAX_FRAME,
    ):
        self.connector = connector
        self.batcher = batcher
        self.max_frame = max_frame

    def buildProtocol(self, addr: object) -> UpstreamLink:
        link = UpstreamLink(self.connector, self.batcher, self.max_frame)
        link.factory = self
        return link
