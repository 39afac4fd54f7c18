"""The client connection: a thin adapter between a byte stream and the router.

It decodes frames, hands requests to the router, answers protocol violations
with an ``error`` frame and a close, and batches what it writes (see batch.py).
The same class serves the TLS/clear listener and, later, the WebSocket tunnel.

Every frame for the client leaves through ``send``. With the bandwidth limiter
off and the client reading, ``send`` is the direct batched path; while the
limiter is on or the transport has paused us (the connection is the push
producer of its transport), ``send`` is swapped for ``_send_slow``: frames go
to the sender's scheduler, and what is released for a paused client is held
here, counted, and bounded (see docs/sender.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.codec import BadFrame, Decoder, Frame, Kind, encode, encode_error
from smbridge.codec.catalog import SESSION_TERMINATED
from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.resources import Origin
from smbridge.sender.sender import Sender
from smbridge.session.session import EndReason
from smbridge.transports.batch import BatchedProtocol, WriteBatcher

_NOTIFICATION = int(Kind.NOTIFICATION)
MAX_UNREAD_SECONDS = 60.0  # a client paused this long is disconnected
MAX_HELD_BYTES = 4 << 20  # bytes held for a paused client before it is disconnected
ABORT_GRACE = 5.0  # seconds a stalled client gets to take its close before an abort


def transport_backlog(transport: object) -> int:
    """Bytes a transport holds that the kernel has not taken yet.

    Reads Twisted's ``FileDescriptor`` buffers (and, under TLS, the TLS layer's
    pending application data and the TCP transport below it). Bounded: at most
    three layers.
    """
    total = 0
    layer: object = transport
    for _ in range(3):
        if layer is None:
            break
        buffer = getattr(layer, "dataBuffer", None)
        if isinstance(buffer, bytes | bytearray | memoryview):
            total += len(buffer) - int(getattr(layer, "offset", 0))
            total += int(getattr(layer, "_tempDataLen", 0))
        pending = getattr(layer, "_appSendBuffer", None)
        if isinstance(pending, list):
            total += sum(len(b) for b in pending)
        layer = getattr(layer, "transport", None)
    return total


KEEPALIVE_IDLE = 60  # seconds of silence before the kernel's first keepalive probe
KEEPALIVE_INTERVAL = 10  # seconds between probes
KEEPALIVE_COUNT = 6  # unanswered probes before the kernel drops the connection


def enable_keepalive(transport: object) -> bool:
    """Turn on TCP keepalive on the TCP transport under ``transport`` (TLS or not).

    A peer that vanished without a FIN/RST (cable pulled, NAT state lost) is then
    detected within about two minutes of silence and its session starts lingering.
    Returns whether a TCP layer was found (at most three layers are searched).
    """
    import socket

    layer: object = transport
    for _ in range(3):
        if layer is None:
            return False
        set_keepalive = getattr(layer, "setTcpKeepAlive", None)
        if callable(set_keepalive):
            set_keepalive(1)
            handle = getattr(layer, "getHandle", lambda: None)()
            options = (
                ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
                ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                ("TCP_KEEPCNT", KEEPALIVE_COUNT),
            )
            for name, value in options:
                option = getattr(socket, name, None)
                if option is not None and isinstance(handle, socket.socket):
                    try:
                        handle.setsockopt(socket.IPPROTO_TCP, option, value)
                    except OSError:
                        pass
            return True
        layer = getattr(layer, "transport", None)
    return False


if TYPE_CHECKING:
    from smbridge.router.router import Router
    from smbridge.session.session import Session


@implementer(IPushProducer)
class ClientConnection(BatchedProtocol):
    log = Logger()

    factory: ClientConnectionFactory
    sender: Sender
    _paused = False
    _limited = False
    _guarded = False  # the memory safeguard is on (docs/sender.md)
    _held = 0  # bytes in _out while paused
    sent_bytes = 0  # bytes written to the transport
    sent_frames = 0
    _stall_call: IDelayedCall | None = None
    _abort_call: IDelayedCall | None = None

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
        self._attach()

    # --- the send path (docs/sender.md) ----------------------------------------
    def _attach(self) -> None:
        """Join the bridge's sender, become the transport's push producer, keep alive.

        The tunnel calls this too once its handshake is done, so TCP keepalive is on
        for every client socket (docs/lifecycle.md).
        """
        enable_keepalive(self.transport)
        self.sender = self.factory.sender
        self.sender.attach(self)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]

    def _update_mode(self) -> None:
        if self._limited and not self._guarded:
            self.send = self._send_limited  # type: ignore[method-assign]
        elif self._paused or self._limited or self._guarded:
            self.send = self._send_slow  # type: ignore[method-assign]
        else:
            self.__dict__.pop("send", None)  # back to BatchedProtocol.send

    def limiting_changed(self, limited: bool) -> None:
        self._limited = limited
        self._update_mode()

    def guard_changed(self, active: bool) -> None:
        self._guarded = active
        self._update_mode()

    def _send_slow(self, data: bytes) -> None:
        if not self.connected:
            return
        if self._guarded:
            guarded = self.sender.guard(self, data)
            if guarded is None:
                return
            data = guarded
        if self._limited:
            self.sender.enqueue(self, data)
        else:
            self.deliver(data)

    def _send_limited(self, data: bytes) -> None:
        """The limiter's path: while it is limiting, collect for the sender's turn-end."""
        if not self.connected:
            return
        sender = self.sender
        if not sender.scheduler.limiting:
            sender.enqueue(self, data)
            return
        inbox = sender.inbox
        if not inbox:
            sender.collect()
        inbox.append((self, data))

    def deliver(self, data: bytes) -> None:
        """Queue one released frame for the next write (held while paused)."""
        if not self.connected:
            return
        if self._paused:
            self._out.append(data)
            self._held += len(data)
            self.sender.watch_memory()  # held bytes are recounted while any are held
            if self._held > self.factory.max_held_bytes:
                self._stalled(f"holds {self._held} bytes unread")
            return
        if not self._out:
            self.batcher.mark(self)
        self._out.append(data)

    def flush(self) -> None:
        """Write what is queued (not while paused), numbering its notifications first.

        The session's replay numbering follows the order frames reach the transport,
        which is the order the client receives them (session/replay.py).
        """
        out = self._out
        if out and self.connected and not self._paused:
            self._out = []
            self._account(out)
            self._write(out)

    def _account(self, out: list[bytes], number: bool = True) -> None:
        """Count what is written (by frame header, for the per-priority figures, and for
        this connection) and number the session's notifications (session/replay.py)."""
        written = self.sender.written
        session = self.session
        replay = session.replay if session is not None and number else None
        size = 0
        for frame in out:
            n = len(frame)
            size += n
            head = frame[5:10]
            tally = written.get(head)
            if tally is None:
                tally = written[head] = [0, 0]
            tally[0] += 1
            tally[1] += n
            if replay is not None and frame[5] == _NOTIFICATION:
                replay.append(frame)
        self.sent_bytes += size
        self.sent_frames += len(out)

    def _write(self, out: list[bytes]) -> None:
        """Put frames on the transport (the tunnel wraps them in WebSocket messages)."""
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]

    def write_replayed(self, frames: list[bytes]) -> None:
        """Write already-numbered frames (a resume's replay) after what is queued, now.

        They skip the sender (and a pause: the replay is bounded by the session's
        replay buffer) and are not numbered again.
        """
        if not self.connected:
            return
        out, self._out = self._out, []
        self._account(out)
        self._account(frames, number=False)
        if out or frames:
            self._write(out + frames)

    def hand_back(self) -> None:
        """The session leaves this connection: number what is still held for it.

        Frames queued here or waiting in the sender were never written; the session
        keeps them, numbered after everything written, for its replay on a resume.
        """
        session = self.session
        held, self._out = self._out, []
        sender = getattr(self, "sender", None)
        if sender is not None:
            held += sender.take_waiting(self)
        if session is not None and held:
            session.replay.extend(held)

    def held_bytes(self) -> int:
        """Bytes held for this client: queued for writing plus the transport's backlog."""
        out = self._out
        return (sum(map(len, out)) if out else 0) + transport_backlog(self.transport)

    def pauseProducing(self) -> None:
        if self._paused or not self.connected or self._abort_call is not None:
            return
        self._paused = True
        self._held = sum(len(b) for b in self._out)
        self._update_mode()
        self._stall_call = self.batcher.clock.callLater(
            self.factory.max_unread_seconds,
            self._stalled,
            f"has not read for {self.factory.max_unread_seconds:g} s",
        )

    def resumeProducing(self) -> None:
        if not self._paused:
            return
        self._paused = False
        self._held = 0
        self._cancel_stall()
        self._update_mode()
        self.flush()

    def stopProducing(self) -> None:
        self._cancel_stall()

    def _cancel_stall(self) -> None:
        call, self._stall_call = self._stall_call, None
        if call is not None and call.active():
            call.cancel()

    def _stalled(self, why: str) -> None:
        """The client stopped reading: end its session and drop the connection."""
        self._stall_call = None
        if not self.connected:
            return
        self.log.warn(
            "Client {remote} {why}: disconnecting",
            remote=self.remote,
            why=why,
            session_id=self.session.id if self.session is not None else None,
            event="sender.client_stalled",
        )
        self._out = [
            encode(
                Kind.NOTIFICATION,
                *SESSION_TERMINATED,
                0,
                {"reason": EndReason.UNEXPECTED.value, "detail": "client-not-reading"},
            )
        ]
        self._held = 0
        self._paused = False  # let the notice through to the transport's buffer
        self._update_mode()
        session = self.session
        if session is not None:
            session.end(EndReason.UNEXPECTED, notify=False)
        self.close()
        self._abort_call = self.batcher.clock.callLater(self.factory.abort_grace, self._abort)

    def _abort(self) -> None:
        self._abort_call = None
        if self.connected:
            self.transport.abortConnection()  # type: ignore[union-attr]

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
        """Write what is queued (held frames too), then close.

        The connection lets go of its transport as producer first: TLS shuts down
        only once no producer is registered (``TLSMemoryBIOProtocol.loseConnection``).
        """
        if self.connected:
            self._resume_for_close()
            self.flush()
            self.transport.unregisterProducer()  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _resume_for_close(self) -> None:
        """Closing: what a pause held goes to the transport's buffer with the close."""
        if self._paused:
            self._paused = False
            self._held = 0
            self._cancel_stall()
            self._update_mode()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected = False
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
        router: Router,
        batcher: WriteBatcher,
        max_frame: int = DEFAULT_MAX_FRAME,
        sender: Sender | None = None,
        max_unread_seconds: float = MAX_UNREAD_SECONDS,
        max_held_bytes: int = MAX_HELD_BYTES,
        abort_grace: float = ABORT_GRACE,
    ):
        self.router = router
        self.batcher = batcher
        self.max_frame = max_frame
        self.sender = sender if sender is not None else Sender(batcher.clock, batcher=batcher)
        self.max_unread_seconds = max_unread_seconds
        self.max_held_bytes = max_held_bytes
        self.abort_grace = abort_grace
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
