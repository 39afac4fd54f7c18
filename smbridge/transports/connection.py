"""The client connection: a thin adapter between a byte stream and the router.

It decodes frames, hands requests to the router, answers protocol violations
with an ``error`` frame and a close, and batches what it writes (see batch.py).
The same class serves the TLS/clear listener and, later, the WebSocket tunnel.
The router is reached only through :class:`FrameHandler`: transports sit below the
router and never import it (service.py wires them). What it sends, and the bound
on what it holds for a slow client, is its base
:class:`~smbridge.transports.held.HeldSendPath` (held.py, docs/sender.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.codec import BadFrame, Decoder, Frame, Kind, encode_error
from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.counters import Counters
from smbridge.resources import Origin
from smbridge.sender.sender import Sender
from smbridge.transports.batch import WriteBatcher
from smbridge.transports.held import MAX_HELD_BYTES as MAX_HELD_BYTES  # re-exported
from smbridge.transports.held import MAX_UNREAD_SECONDS as MAX_UNREAD_SECONDS
from smbridge.transports.held import UNBOUNDED as UNBOUNDED
from smbridge.transports.held import HeldSendPath, set_write_buffer
from smbridge.transports.prelogon import LOGON, Deadline, PrelogonLimits
from smbridge.transports.sockets import enable_keepalive as enable_keepalive  # re-exported

if TYPE_CHECKING:
    from smbridge.session.session import Session


class FrameHandler(Protocol):
    """Something that handles a client's frames for a connection (the router).

    The transports sit below the router and never import it: the bridge's ``Router``
    satisfies this (service.py wires it), a fake can in tests.
    """

    @property
    def counters(self) -> Counters:
        """Where the connection counts what it closes (prelogon deadlines, bad frames)."""
        ...

    def handle(self, conn: ClientConnection, frame: Frame) -> None:
        """Answer or forward one request frame that arrived on ``conn``."""
        ...

    def connection_lost(self, conn: ClientConnection) -> None:
        """``conn`` is gone (dropped or aborted): its session, if any, lingers."""
        ...


@implementer(IPushProducer, IHandshakeListener)
class ClientConnection(HeldSendPath):
    log = Logger()

    factory: ClientConnectionFactory
    sender: Sender
    _abort_call: IDelayedCall | None = None
    # Until the first logon (transports/prelogon.py): the deadline, and a small max frame.
    prelogon: Deadline | None = None
    _session: Session | None = None

    def __init__(
        self, router: FrameHandler, batcher: WriteBatcher, max_frame: int, kind: str
    ) -> None:
        super().__init__(batcher)
        self.router = router
        self.decoder = Decoder(max_frame)
        self.kind = kind  # "tls" or "clear" (later "ws"/"wss")
        self._session = None
        self.remote = ""
        self.origin = Origin(kind)  # the tunnel replaces it with the decoded URI

    def connectionMade(self) -> None:
        self.connected = True
        self.factory.connections.add(self)
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.remote = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        self._attach()

    # --- before logon (transports/prelogon.py) -----------------------------------
    @property
    def session(self) -> Session | None:
        return self._session

    @session.setter
    def session(self, session: Session | None) -> None:
        self._session = session
        if session is not None and self.prelogon is not None:
            self.logged_on()

    def before_logon(self, deadline: Deadline, limits: PrelogonLimits) -> None:
        """Until the first logon: ``deadline`` runs and frames are bounded by ``limits``."""
        self.prelogon = deadline
        deadline.remote = self.remote or deadline.remote
        self.decoder.max_frame = min(self.decoder.max_frame, limits.max_frame)

    def handshakeCompleted(self) -> None:
        """TLS is up (IHandshakeListener): the time to log on starts now."""
        if self.prelogon is not None:
            self.prelogon.enter(LOGON)

    def logged_on(self) -> None:
        """The first CreateSession/ResumeSession succeeded: no deadline, full frames."""
        deadline, self.prelogon = self.prelogon, None
        if deadline is not None:
            deadline.done()
            self.decoder.max_frame = self.factory.max_frame

    # --- the send path (docs/sender.md) ----------------------------------------
    def _attach(self) -> None:
        """Join the bridge's sender, become the transport's push producer, keep alive.

        The tunnel calls this too once its handshake is done, so TCP keepalive is on
        for every client socket (docs/lifecycle.md).
        """
        enable_keepalive(self.transport)
        self._base = self._room = self.factory.max_held_bytes
        self.sender = self.factory.sender
        self.sender.attach(self)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        set_write_buffer(self.transport, self.factory.max_held_bytes)

    def _drop(self, why: str) -> None:
        """The client stopped reading (or holds too much): abort the connection.

        Nothing more is written to it; frames sent to it until the connection is lost
        are held for the session, which lingers for a resume like any dropped
        connection's (``hand_back``, ``Router.connection_lost``). The abort runs at the
        next turn: this may be called from inside a write to the transport.
        """
        if not self.connected or self.dropped:
            return
        self.log.warn(
            "Client {remote} {why}: disconnecting",
            remote=self.remote,
            why=why,
            session_id=self.session.id if self.session is not None else None,
            event="sender.client_stalled",
        )
        self.dropped = True
        self._paused = True  # write nothing more
        queued = self._base - self._room
        self._base = UNBOUNDED  # counted still (held_total), checked no more
        self._room = UNBOUNDED - queued
        self._cancel_stall()
        self._update_mode()
        self._abort_call = self.batcher.clock.callLater(0, self._abort)

    def _abort(self) -> None:
        """The drop, at the turn after it was decided.

        The session takes what was held for it (numbered for its replay) and lingers
        from now, so what is sent to it meanwhile goes to its bounded replay buffer,
        not to this connection; then the transport is aborted.
        """
        self._abort_call = None
        if self.connected:
            self.hand_back()
            self.router.connection_lost(self)
            self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if self.dropped:
                return  # requests pipelined behind the drop are not answered
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
                if self.batcher.staged is not None:
                    self.batcher.unstage()  # a request sees the events that came before it
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
        if self.prelogon is not None and bad.message.startswith("frame length"):
            self.prelogon.done()
            self.router.counters.inc("connections_closed", reason="prelogon-frame-too-large")
            bad.message = (
                f"{bad.message}: before logon a frame may have at most "
                f"{self.decoder.max_frame} bytes"
            )
        self.log.warn(
            "Bad frame from {remote}: {message}",
            remote=self.remote,
            message=bad.message,
            event="connection.bad_frame",
        )
        self.send(bad.error_frame())
        self.close()

    def close(self) -> None:
        """Write what is queued (held frames too), then close.

        The connection lets go of its transport as producer first: TLS shuts down
        only once no producer is registered (``TLSMemoryBIOProtocol.loseConnection``).
        """
        if self.batcher.staged is not None:
            self.batcher.unstage()  # the fan-out's run goes out with the rest
        if self.connected and not self.dropped:
            self._resume_for_close()
            self.flush()
            self.transport.unregisterProducer()  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.batcher.staged is not None:
            self.batcher.unstage()  # the fan-out's run is held for the session below
        self.connected = False
        if self.prelogon is not None:
            self.prelogon.done()
        self.hand_back()
        self._cancel_stall()
        abort, self._abort_call = self._abort_call, None
        if abort is not None and abort.active():
            abort.cancel()
        sender = getattr(self, "sender", None)
        if sender is not None:
            sender.detach(self)
        self.factory.forget(self)
        self.router.connection_lost(self)


class ClientConnectionFactory(Factory):
    def __init__(
        self,
        router: FrameHandler,
        batcher: WriteBatcher,
        max_frame: int = DEFAULT_MAX_FRAME,
        sender: Sender | None = None,
        max_unread_seconds: float = MAX_UNREAD_SECONDS,
        max_held_bytes: int = MAX_HELD_BYTES,
    ):
        self.router = router
        self.batcher = batcher
        self.max_frame = max_frame
        self.sender = sender if sender is not None else Sender(batcher.clock, batcher=batcher)
        self.max_unread_seconds = max_unread_seconds
        self.connections: set[ClientConnection] = set()
        self._max_held_bytes = max_held_bytes
        self._drained: list[defer.Deferred[None]] = []
        # Deadlines and the frame bound before logon (transports/prelogon.py); None: none.
        self.prelogon: PrelogonLimits | None = None

    def deadline(self, abort: Callable[[], None], stage: str, remote: str = "") -> Deadline | None:
        """A new connection's deadline before logon, starting at ``stage`` (None: off)."""
        limits = self.prelogon
        if limits is None:
            return None
        return Deadline(self.batcher.clock, limits, self.router.counters, abort, stage, remote)

    @property
    def max_held_bytes(self) -> int:
        """The bound on the bytes held for one client (``--max-held-bytes``)."""
        return self._max_held_bytes

    @max_held_bytes.setter
    def max_held_bytes(self, value: int) -> None:
        """A new bound (a reload) applies to every open connection at once."""
        self._max_held_bytes = value
        for conn in list(self.connections):
            if conn.connected:
                conn._check_bound()

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
