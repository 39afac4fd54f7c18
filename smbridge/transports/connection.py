"""The client connection: a thin adapter between a byte stream and the router.

It decodes frames, hands requests to the router, answers protocol violations
with an ``error`` frame and a close, and batches what it writes (see batch.py).
The same class serves the TLS/clear listener and, later, the WebSocket tunnel.

Every frame for the client leaves through ``send``. With the bandwidth limiter
off and the client reading, ``send`` is the direct batched path; while the
limiter is on or the transport has paused us (the connection is the push
producer of its transport), ``send`` is swapped for ``_send_slow``: frames go
to the sender's scheduler, and what is released for a paused client is held
here (see docs/sender.md).

Whatever the path, every frame is counted when the connection takes it (in its
write queue, the sender's inbox or the limiter's queues) and uncounted when it is
written; with the transport's backlog that is every byte held for the client, and
past ``max_held_bytes`` the client is dropped: its connection is aborted and its
session lingers for a resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

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
from smbridge.resources import Origin
from smbridge.sender.sender import Sender
from smbridge.transports.batch import BatchedProtocol, WriteBatcher
from smbridge.transports.prelogon import LOGON, Deadline, PrelogonLimits
from smbridge.transports.sockets import enable_keepalive as enable_keepalive  # re-exported
from smbridge.transports.sockets import transport_backlog

_NOTIFICATION = int(Kind.NOTIFICATION)
MAX_UNREAD_SECONDS = 60.0  # a client paused this long is disconnected
MAX_HELD_BYTES = 4 << 20  # bytes held for one client (any path) before it is dropped
UNBOUNDED = 1 << 62  # a dropped connection's limit: it is counted no more


if TYPE_CHECKING:
    from smbridge.router.router import Router
    from smbridge.session.session import Session


@implementer(IPushProducer, IHandshakeListener)
class ClientConnection(BatchedProtocol):
    log = Logger()

    factory: ClientConnectionFactory
    sender: Sender
    _paused = False
    _limited = False
    _guarded = False  # the memory safeguard is on (docs/sender.md)
    # The bound's count, kept as room left so that a frame costs one subtraction: the
    # bytes taken for the client and not yet written to its transport (in ``_out``,
    # the sender's inbox or the limiter's queues; taken where ``send`` takes them,
    # given back by ``flush``) are ``_base - _room``, where ``_base`` is the bound less
    # the transport's backlog when it was last read. Below zero, ``_check_bound``
    # counts exactly.
    _base = MAX_HELD_BYTES
    _room = MAX_HELD_BYTES
    dropped = False  # past the bound or unread too long: being aborted
    sent_bytes = 0  # bytes written to the transport
    sent_frames = 0
    _stall_call: IDelayedCall | None = None
    _abort_call: IDelayedCall | None = None
    # Until the first logon (transports/prelogon.py): the deadline, and a small max frame.
    prelogon: Deadline | None = None
    _session: Session | None = None

    def __init__(self, router: Router, batcher: WriteBatcher, max_frame: int, kind: str) -> None:
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

    def _update_mode(self) -> None:
        if self.dropped:
            self.send = self._send_dropped  # type: ignore[method-assign]
        elif self._limited and not self._guarded:
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

    def send(self, data: bytes) -> None:
        """The direct path: queue for the turn's write, counted against the bound."""
        if not self.connected:
            return
        out = self._out
        if not out:
            self.batcher.mark(self)
        out.append(data)
        room = self._room - len(data)
        self._room = room
        if room < 0:
            self._check_bound()

    def _take(self, size: int) -> None:
        """Count ``size`` more bytes held for the client (the slow paths)."""
        room = self._room - size
        self._room = room
        if room < 0:
            self._check_bound()

    def _send_dropped(self, data: bytes) -> None:
        """Dropped, abort pending (this turn): hold the frame for the session (hand_back)."""
        if self.connected:
            self._out.append(data)
            self._room -= len(data)

    def _send_slow(self, data: bytes) -> None:
        if not self.connected:
            return
        if self._guarded:
            guarded = self.sender.guard(self, data)
            if guarded is None:
                return
            data = guarded
        self._take(len(data))
        if self._limited:
            self.sender.enqueue(self, data)
        else:
            self.deliver(data)

    def _send_limited(self, data: bytes) -> None:
        """The limiter's path: while it is limiting, collect for the sender's turn-end."""
        if not self.connected:
            return
        room = self._room - len(data)
        self._room = room
        if room < 0:
            self._check_bound()
        sender = self.sender
        if not sender.scheduler.limiting:
            sender.enqueue(self, data)
            return
        inbox = sender.inbox
        if not inbox:
            sender.collect()
        inbox.append((self, data))

    def deliver(self, data: bytes) -> None:
        """Queue one released frame for the next write (held while paused).

        Its bytes were counted when the connection took the frame.
        """
        if not self.connected:
            return
        if self._paused:
            self._out.append(data)
            self.sender.watch_memory()  # held bytes are recounted while any are held
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
            self._room += self._account(out)
            self._write(out)
            if self._paused:  # the write filled the transport: count all it holds now
                self._check_bound()

    def _account(self, out: list[bytes], number: bool = True) -> int:
        """Count what is written (by frame header, for the per-priority figures, and for
        this connection) and number the session's notifications (session/replay.py).

        Returns the bytes of ``out``."""
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
        return size

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
        self._room += self._account(out)
        self._account(frames, number=False)
        if out or frames:
            self._write(out + frames)
            if self._paused:
                self._check_bound()

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
        self._room = self._base
        if session is not None and held:
            session.replay.extend(held)

    def held_bytes(self) -> int:
        """Bytes held for this client here: queued for writing plus the transport's backlog.

        What waits for it in the limiter is the sender's to count (``Sender.held_bytes``).
        """
        out = self._out
        return (sum(map(len, out)) if out else 0) + self.transport_held()

    def held_total(self) -> int:
        """Every byte held for this client: limiter, write queue, transport (what is bounded)."""
        return self._base - self._room + self.transport_held()

    def transport_held(self) -> int:
        """Bytes given to the transport that the kernel has not taken yet."""
        return transport_backlog(self.transport)

    def _check_bound(self) -> None:
        """Count exactly (the transport's backlog read now); drop the client past the bound."""
        if self.dropped:
            return
        queued = self._base - self._room
        backlog = self.transport_held()
        bound = self.factory.max_held_bytes
        self._base = bound - backlog
        self._room = self._base - queued
        if self._room < 0:
            self._drop(f"holds {queued + backlog} bytes unsent (more than {bound})")

    def pauseProducing(self) -> None:
        if self._paused or not self.connected or self.dropped:
            return
        self._paused = True
        self._update_mode()
        self.sender.watch_memory()  # what the transport holds is recounted while held
        self._stall_call = self.batcher.clock.callLater(
            self.factory.max_unread_seconds,
            self._stalled,
            f"has not read for {self.factory.max_unread_seconds:g} s",
        )
        self._check_bound()  # the transport's backlog, read now, counts from here on

    def resumeProducing(self) -> None:
        if not self._paused or self.dropped:
            return
        self._paused = False
        self._cancel_stall()
        # The transport resumes us once its buffer is empty: nothing is in it now.
        queued = self._base - self._room
        self._base = self.factory.max_held_bytes
        self._room = self._base - queued
        self._update_mode()
        self.flush()

    def stopProducing(self) -> None:
        self._cancel_stall()

    def _cancel_stall(self) -> None:
        call, self._stall_call = self._stall_call, None
        if call is not None and call.active():
            call.cancel()

    def _stalled(self, why: str) -> None:
        """The unread timer ran out."""
        self._stall_call = None
        self._drop(why)

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
        if self.connected and not self.dropped:
            self._resume_for_close()
            self.flush()
            self.transport.unregisterProducer()  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _resume_for_close(self) -> None:
        """Closing: what a pause held goes to the transport's buffer with the close."""
        if self._paused and not self.dropped:
            self._paused = False
            self._cancel_stall()
            self._update_mode()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
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
        router: Router,
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
