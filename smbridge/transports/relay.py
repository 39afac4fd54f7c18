"""Cross-worker ResumeSession, the relaying side (docs/lifecycle.md, "Several workers").

With ``--workers N`` a client's connection lands on any worker, but its session lives
in the worker that created it, whose index is in the session id
(``<node>-w<I>-...``, :func:`smbridge.session.registry.worker_of`). When a connection
without a session sends ``ResumeSession`` for a session of another worker J,
:class:`WorkerRelays` (the Resumer's ``relay`` hook) makes this worker a pipe:

* only a sessionId of this bridge naming a worker index below N is relayed; one
  naming an index >= N, or a worker whose socket does not answer, gets the usual
  ``unknown-session`` error with a reason (``no-such-worker``, ``worker-down``) and
  the connection goes on as before;
* :class:`RelayedClient` opens J's private Unix socket (``<run_dir>/worker-<J>.sock``),
  writes the preamble (relay_wire.py: the client's transport kind, address and URI),
  then the ResumeSession frame and every frame after it, as they came;
* J's frames are passed to the client whole (one WebSocket message per frame on the
  tunnel), as they come: nothing is queued here beyond one read;
* backpressure both ways: a client that does not read pauses reading from J (J then
  sees a slow reader and applies ``--max-held-bytes`` / ``--max-unread-seconds`` to
  it); J not reading pauses reading from the client;
* a close on either side closes the other.

The client connection stays this worker's (its guard admission, descriptor and TLS or
WebSocket layer); its frames go to the relay instead of the router (``conn.router``),
its pause and resume move the relay's reading (``pauseProducing``), per instance, as
the send path swaps ``send`` (held.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from smbridge.codec import Frame, encode_error, encode_raw
from smbridge.counters import Counters
from smbridge.errors import ProtocolError
from smbridge.session.registry import worker_of
from smbridge.transports.connection import ClientConnection, FrameHandler
from smbridge.transports.relay_wire import FrameSplitter, Preamble, encode_preamble

CONNECT_TIMEOUT = 5.0  # seconds to reach another worker's socket (local: at once, or never)
# The owner writes what it would write to a client of its own, whatever its size; the
# bound only cuts a corrupt stream (a frame is held here until it is whole).
OWNER_FRAME_BOUND = 64 << 20


def worker_socket(run_dir: Path, index: int) -> Path:
    """Where worker ``index`` takes relayed connections."""
    return run_dir / f"worker-{index}.sock"


def reading_layer(transport: Any) -> Any:
    """The socket under a client's TLS or WebSocket layers (pauses reading; at most 3 deep)."""
    layer = transport
    for _ in range(3):
        if layer is None:
            return None
        if callable(getattr(layer, "stopReading", None)):
            return layer
        layer = getattr(layer, "transport", None)
    return None


@implementer(IPushProducer)
class _ReadGate:
    """Pauses reading from a client's socket while the owner's socket is full."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket

    def pauseProducing(self) -> None:
        if self.socket is not None:
            self.socket.pauseProducing()

    def resumeProducing(self) -> None:
        if self.socket is not None:
            self.socket.resumeProducing()

    def stopProducing(self) -> None:
        pass


class WorkerRelays:
    """The Resumer's relay hook: relay a ResumeSession for another worker's session."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        node: str,
        index: int,
        count: int,
        run_dir: Path,
        counters: Counters,
        max_frame: int,
    ) -> None:
        self.reactor = reactor
        self.node = node
        self.index = index
        self.count = count
        self.run_dir = run_dir
        self.counters = counters
        self.max_frame = max_frame  # the bound on a frame from the owner (OWNER_FRAME_BOUND)
        self.active: set[RelayedClient] = set()

    def __call__(self, conn: ClientConnection, frame: Frame, session_id: str) -> bool:
        """Relay ``conn`` if ``session_id`` is another worker's: True when relayed.

        False: the id names this worker or none (looked up here as usual). An index
        outside this bridge's workers raises ``unknown-session``.
        """
        owner = worker_of(session_id, self.node)
        if owner is None or owner == self.index:
            return False
        if owner >= self.count:
            self.counters.inc("relays", outcome="no-such-worker")
            raise ProtocolError(
                f"no session {session_id} on this bridge: it names worker {owner}, "
                f"and this bridge runs {self.count}",
                code="unknown-session",
                reason="no-such-worker",
            )
        RelayedClient(self, conn, frame, owner).start()
        return True

    def connect(self, owner: int, protocol: Protocol) -> Any:
        """Dial worker ``owner``'s socket with ``protocol`` (a Deferred)."""
        path = str(worker_socket(self.run_dir, owner))
        endpoint = UNIXClientEndpoint(self.reactor, path, timeout=CONNECT_TIMEOUT)
        return connectProtocol(endpoint, protocol)


def _raw(frame: Frame) -> bytes:
    return encode_raw(
        frame.kind, frame.object_type, frame.event_id, frame.request_id, frame.payload
    )


class RelayedClient(Protocol):
    """One client connection relayed to the worker that holds its session.

    It stands in for the router on the client's connection (:class:`FrameHandler`)
    and is the protocol of the Unix socket to the owner.
    """

    log = Logger()

    def __init__(
        self, relays: WorkerRelays, conn: ClientConnection, first: Frame, owner: int
    ) -> None:
        self.relays = relays
        self.conn = conn
        self.first = first
        self.owner = owner
        self.router: FrameHandler = conn.router  # given back if the owner cannot be reached
        self.pending: list[Frame] = []  # frames that came while the socket was opening
        self.splitter = FrameSplitter(relays.max_frame)
        self.socket = reading_layer(conn.transport)
        self.gate = _ReadGate(self.socket)
        self.up = False
        self.client_gone = False

    @property
    def counters(self) -> Counters:
        return self.router.counters

    # --- the client's side: the connection's frames come here -------------------------
    def start(self) -> None:
        conn = self.conn
        self.relays.active.add(self)
        conn.router = self
        conn.pauseProducing = self._client_full  # type: ignore[method-assign]
        conn.resumeProducing = self._client_drained  # type: ignore[method-assign]
        self.gate.pauseProducing()  # nothing more is read until the owner answers
        d = self.relays.connect(self.owner, self)
        d.addCallbacks(self._connected, self._unreachable)

    def handle(self, conn: ClientConnection, frame: Frame) -> None:
        """A client frame: to the owner (kept in order while the socket opens)."""
        if self.up and self.transport is not None:
            self.transport.write(_raw(frame))
        else:
            self.pending.append(frame)

    def connection_lost(self, conn: ClientConnection) -> None:
        """The client is gone: so is the relay (the owner's session lingers)."""
        self.client_gone = True
        self.relays.active.discard(self)
        transport: Any = self.transport
        if transport is not None:
            transport.unregisterProducer()
            transport.loseConnection()

    def _client_full(self) -> None:
        """The client's transport is full: stop reading from the owner."""
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _client_drained(self) -> None:
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    # --- opening the owner's socket -------------------------------------------------
    def _connected(self, _: object) -> None:
        transport: Any = self.transport
        assert transport is not None
        if self.client_gone:
            transport.loseConnection()
            return
        conn = self.conn
        self.up = True
        preamble = Preamble(conn.kind, conn.remote, self.relays.index, conn.origin)
        frames = [_raw(self.first), *(_raw(f) for f in self.pending)]
        self.pending = []
        transport.write(encode_preamble(preamble) + b"".join(frames))
        transport.registerProducer(self.gate, True)  # the owner full: stop reading the client
        conn.logged_on()  # this worker's deadline is over: the owner's applies
        conn.decoder.parse = False  # the owner reads the payloads
        self.gate.resumeProducing()
        self.counters.inc("relays", outcome="relayed")
        self.log.debug(
            "Relaying {transport} client {remote} to worker {owner} (ResumeSession)",
            transport=conn.kind,
            remote=conn.remote,
            owner=self.owner,
            event="relay.started",
        )

    def _unreachable(self, failure: Failure) -> None:
        """The owner's socket does not answer: ``unknown-session``; the connection goes on."""
        self.relays.active.discard(self)
        if self.client_gone:
            return
        conn = self.conn
        conn.router = self.router
        for name in ("pauseProducing", "resumeProducing"):
            conn.__dict__.pop(name, None)
        self.counters.inc("relays", outcome="worker-down")
        self.counters.inc("resumes", outcome="refused")
        self.log.info(
            "Resume from {remote} not relayed: worker {owner} does not answer ({error})",
            remote=conn.remote,
            owner=self.owner,
            error=failure.getErrorMessage(),
            event="relay.worker_down",
        )
        first = self.first
        conn.send(
            encode_error(
                first.object_type,
                first.event_id,
                first.request_id,
                "unknown-session",
                f"the session's worker ({self.owner}) of this bridge is not running",
                reason="worker-down",
            )
        )
        self.gate.resumeProducing()
        pending, self.pending = self.pending, []
        for frame in pending:
            if conn.connected and conn.router is self.router:
                self.router.handle(conn, frame)
            elif conn.router is not self.router:  # relayed again (another ResumeSession)
                conn.router.handle(conn, frame)

    # --- the owner's side: its frames go to the client ------------------------------
    def dataReceived(self, data: bytes) -> None:
        frames = self.splitter.feed(data)
        conn = self.conn
        if frames and conn.connected:
            conn._write(frames)
        if self.splitter.error is not None:
            self.log.warn(
                "Relay from worker {owner}: {error}; closing",
                owner=self.owner,
                error=self.splitter.error,
                event="relay.bad_frame",
            )
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """The owner closed (logout, expiry, takeover, its shutdown): close the client."""
        self.up = False
        self.relays.active.discard(self)
        if not self.client_gone and self.conn.connected:
            self.conn.close()
