"""The client connection: a thin adapter between a byte stream and the router.

It decodes frames, hands requests to the router, answers protocol violations
with an ``error`` frame and a close, and batches what it writes (see batch.py).
The same class serves the TLS/clear listener and, later, the WebSocket tunnel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.codec import BadFrame, Decoder, Frame, Kind, encode_error
from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.resources import Origin
from smbridge.transports.batch import BatchedProtocol, WriteBatcher

if TYPE_CHECKING:
    from smbridge.router.router import Router
    from smbridge.session.session import Session


class ClientConnection(BatchedProtocol):
    log = Logger()

    factory: ClientConnectionFactory

    def __init__(self, router: Router, batcher: WriteBatcher, max_frame: int, kind: str) -> None:
        super().__init__(batcher)
        self.router = router
        self.decoder = Decoder(max_frame)
        self.kind = kind  # "tls" or "clear" (later "ws"/"wss")
        self.session: Session | None = None
        self.remote = ""
        self.origin = Origin(kind)  # the tunnel replaces it with the decoded URI

    def connectionMade(self) -> None:
        self.connected = True
        self.factory.connections.add(self)
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.remote = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"

    def dataReceived(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if type(event) is Frame:
                if event.kind != Kind.REQUEST:
                    self._refuse(
                        BadFrame(
                            f"clients send requests, not kind {event.kind}",
                            event.request_id,
                            event.object_type,
                            event.event_id,
                        )
                    )
                    return
                try:
                    self.router.handle(self, event)
                except Exception:
                    self.log.failure(
                        "Request {rid} failed",
                        rid=event.request_id,
                        event="connection.request.failed",
                    )
                    self.send(
                        encode_error(
                            event.object_type,
                            event.event_id,
                            event.request_id,
                            "internal-error",
                            "the bridge failed to handle this request",
                        )
                    )
            else:
                assert isinstance(event, BadFrame)
                self._refuse(event)
                return

    def _refuse(self, bad: BadFrame) -> None:
        self.log.warn(
            "Bad frame from {remote}: {message}",
            remote=self.remote,
            message=bad.message,
            event="connection.bad_frame",
        )
        self.send(bad.error_frame())
        self.close()

    def close(self) -> None:
        """Write what is queued, then close."""
        if self.connected:
            self.flush()
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected = False
        self._out = []
        self.factory.forget(self)
        self.router.connection_lost(self)


class ClientConnectionFactory(Factory):
    def __init__(self, router: Router, batcher: WriteBatcher, max_frame: int = DEFAULT_MAX_FRAME):
        self.router = router
        self.batcher = batcher
        self.max_frame = max_frame
        self.connections: set[ClientConnection] = set()
        self._drained: list[defer.Deferred[None]] = []

    def forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def close_all(self, clock: IReactorTime, grace: float = 5.0) -> defer.Deferred[None]:
        """Flush and close every client connection; fire when all are gone.

        A peer that does not finish the close within ``grace`` seconds is aborted.
        """
        if not self.connections:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._drained.append(d)
        for conn in list(self.connections):
            conn.close()
        abort = clock.callLater(grace, self._abort_all)

        def cancel_abort(result: None | Failure) -> None | Failure:
            if abort.active():
                abort.cancel()
            return result

        return d.addBoth(cancel_abort)

    def _abort_all(self) -> None:
        for conn in list(self.connections):
            conn.transport.abortConnection()  # type: ignore[union-attr]

    def buildProtocol(self, addr: object) -> ClientConnection:  # type: ignore[override]
        return self.connection("tls")

    def connection(self, kind: str) -> ClientConnection:
        conn = ClientConnection(self.router, self.batcher, self.max_frame, kind)
        conn.factory = self
        return conn
