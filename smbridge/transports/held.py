"""The client connection's send path and the bound on the bytes it holds (docs/sender.md).

Every frame for the client leaves through ``send``. With the bandwidth limiter
off and the client reading, ``send`` is the direct batched path; while the
limiter is on or the transport has paused us (the connection is the push
producer of its transport), ``send`` is swapped for ``_send_slow``: frames go
to the sender's scheduler, and what is released for a paused client is held
here.

Whatever the path, every frame is counted when the connection takes it (in its
write queue, the sender's inbox or the limiter's queues) and uncounted when it is
written; with the transport's backlog that is every byte held for the client, and
past ``max_held_bytes`` the client is dropped (``_drop``, the connection's): its
connection is aborted and its session lingers for a resume.

:class:`HeldSendPath` is the base of ``ClientConnection`` (connection.py), which
adds the frames in, the router and the close.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall

from smbridge.codec import Kind
from smbridge.sender.sender import Sender
from smbridge.session.replay import Run as Run  # re-exported: the fan-out's runs
from smbridge.session.replay import RunFrames
from smbridge.session.session import Session
from smbridge.transports.batch import BatchedProtocol
from smbridge.transports.sockets import tcp_layer, transport_backlog

_NOTIFICATION = int(Kind.NOTIFICATION)
_ONLY_RUNS = {Run}
_KEPT = attrgetter("kept")
_COUNT = attrgetter("count")
MAX_UNREAD_SECONDS = 60.0  # a client paused this long is disconnected
MAX_HELD_BYTES = 4 << 20  # bytes held for one client (any path) before it is dropped
UNBOUNDED = 1 << 62  # a dropped connection's limit: it is counted no more


WRITE_BUFFER_SHARE = 16  # the transport buffers up to 1/16 of --max-held-bytes (256 KiB)
MIN_WRITE_BUFFER = 1 << 16  # Twisted's own default


def write_buffer_bytes(max_held_bytes: int) -> int:
    """What a client's transport buffers before it pauses the connection."""
    return max(MIN_WRITE_BUFFER, max_held_bytes // WRITE_BUFFER_SHARE)


def set_write_buffer(transport: object, max_held_bytes: int) -> None:
    """Let ``transport`` buffer :func:`write_buffer_bytes` before it pauses its producer.

    Twisted pauses a producer past 64 KiB and resumes it only once its buffer is
    empty. A fan-out run to a thousand clients is often that large by itself, so at
    that size every run paused every client, and each pause cost an emptied buffer,
    a resume, a join of the held runs and two epoll changes, and sent in smaller
    pieces (bench/fanout.py: deliveries per CPU second rose by about 40 % at 256 KiB).
    The bytes stay counted against ``--max-held-bytes`` (``transport_held``). Set on
    the TCP layer (``tcp_layer``: under TLS, an attribute set on the TLS layer would
    stay there); without one, nothing is changed.
    """
    tcp = tcp_layer(transport)
    if tcp is not None and hasattr(tcp, "bufferSize"):
        tcp.bufferSize = write_buffer_bytes(max_held_bytes)


def expand(out: list[bytes]) -> list[bytes]:
    """``out`` with every :class:`Run` replaced by its frames."""
    if not any(type(frame) is Run for frame in out):
        return out
    frames: list[bytes] = []
    for frame in out:
        if type(frame) is Run:
            frames.extend(frame.frames)
        else:
            frames.append(frame)
    return frames


class Bounds(Protocol):
    """The bounds a connection's factory sets (``--max-held-bytes``, the unread time)."""

    @property
    def max_held_bytes(self) -> int: ...
    @property
    def max_unread_seconds(self) -> float: ...


class HeldSendPath(BatchedProtocol):
    """The send paths, the count of held bytes and the stall timer of a client connection."""

    factory: Bounds
    sender: Sender
    session: Session | None
    remote: str
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

    # Runs are written whole, except where ``_write`` wraps each frame (the tunnel).
    _whole_runs = True

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        cls._whole_runs = cls._write is HeldSendPath._write

    def _update_mode(self) -> None:
        # A run staged before the change is handed out before the send path is swapped:
        # its frames go where they would have gone had they been queued one by one as
        # they came (router/fanout.py; tests/test_fanout_runs.py checks it).
        if self.batcher.staged is not None:
            self.batcher.unstage()
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
        if self.batcher.staged is not None:
            self.batcher.unstage()  # the fan-out's run goes first (it came first)
        out = self._out
        if not out:
            self.batcher.mark(self)
        out.append(data)
        room = self._room - len(data)
        self._room = room
        if room < 0:
            self._check_bound()

    def send_run(self, run: Run) -> None:
        """Queue the fan-out's run of notifications (router/fanout.py) as one piece.

        The direct path takes it whole, and so does a paused connection (held, as
        ``deliver`` holds) and, while the memory safeguard is on, a run of frames it
        passes unchanged (all small); a limited or dropped connection, a run the
        safeguard would look into, or a connection whose ``_write`` wraps each frame
        (the tunnel) takes its frames one by one, as if each had been sent.
        """
        if (
            self._limited
            or self.dropped
            or not self._whole_runs
            or (self._guarded and run.largest > self.sender.settings.small_message_bytes)
        ):
            for frame in run.frames:
                self.send(frame)
            return
        if not self.connected:
            return
        out = self._out
        if not out and not self._paused:
            self.batcher.mark(self)
        out.append(run)
        room = self._room - len(run)
        self._room = room
        if room < 0:
            self._check_bound()
        if self._paused:
            self.sender.watch_memory()  # held bytes are recounted while any are held

    def _take(self, size: int) -> None:
        """Count ``size`` more bytes held for the client (the slow paths)."""
        room = self._room - size
        self._room = room
        if room < 0:
            self._check_bound()

    def _send_dropped(self, data: bytes) -> None:
        """Dropped, abort pending (this turn): hold the frame for the session (hand_back)."""
        if self.batcher.staged is not None:
            self.batcher.unstage()
        if self.connected:
            self._out.append(data)
            self._room -= len(data)

    def _send_slow(self, data: bytes) -> None:
        if not self.connected:
            return
        if self.batcher.staged is not None:
            self.batcher.unstage()
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
        if self.batcher.staged is not None:
            self.batcher.unstage()
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
            if len(out) == 1 and type(out[0]) is Run:  # the fan-out's usual turn: one run
                kept = out[0].kept  # counted as _account would, in fewer steps
                self.batcher.runs_written(self.sender.written).append(kept)
                session = self.session
                if session is not None:
                    session.replay.append_run(out[0])
                self.sent_bytes += kept.size
                self.sent_frames += kept.count
                self._room += kept.size
            elif set(map(type, out)) == _ONLY_RUNS:  # runs held while paused
                self._room += self._account_runs(out)
            else:
                self._room += self._account(out)
            self._write(out)
            if self._paused:  # the write filled the transport: count all it holds now
                self._check_bound()

    def _account_runs(self, out: list[bytes]) -> int:
        """``_account`` for runs only (held while the client was paused), in bulk."""
        kept: list[RunFrames] = list(map(_KEPT, out))
        size: int = sum(map(len, out))
        frames: int = sum(map(_COUNT, kept))
        self.batcher.runs_written(self.sender.written).extend(kept)
        session = self.session
        if session is not None:
            session.replay.add(kept, frames, size)  # type: ignore[arg-type]
        self.sent_bytes += size
        self.sent_frames += frames
        return size

    def _account(self, out: list[bytes], number: bool = True) -> int:
        """Count what is written (by frame header, for the per-priority figures, and for
        this connection) and number the session's notifications (session/replay.py).

        Returns the bytes of ``out``."""
        written = self.sender.written
        session = self.session
        replay = session.replay if session is not None and number else None
        size = count = numbered = 0
        # The notifications, in order, numbered at once below: a run stays whole (one
        # entry in the replay buffer, whatever its number of frames).
        notes: list[bytes | RunFrames] = []
        runs: list[RunFrames] | None = None
        for frame in out:
            n = len(frame)
            size += n
            if type(frame) is Run:
                kept = frame.kept
                if runs is None:
                    runs = self.batcher.runs_written(written)
                runs.append(kept)
                count += kept.count - 1
                notes.append(kept)
                numbered += n
                continue
            head = frame[5:10]
            tally = written.get(head)
            if tally is None:
                tally = written[head] = [0, 0]
            tally[0] += 1
            tally[1] += n
            if frame[5] == _NOTIFICATION:
                notes.append(frame)
                numbered += n
        count += len(out)
        if replay is not None and notes:
            replay.add(notes, count - len(out) + len(notes), numbered)
        self.sent_bytes += size
        self.sent_frames += count
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
        if self.batcher.staged is not None:
            self.batcher.unstage()
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
        if self.batcher.staged is not None:
            self.batcher.unstage()
        held, self._out = expand(self._out), []
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
        """The client stopped reading (or holds too much): abort it (``ClientConnection``)."""
        raise NotImplementedError

    def _resume_for_close(self) -> None:
        """Closing: what a pause held goes to the transport's buffer with the close."""
        if self._paused and not self.dropped:
            self._paused = False
            self._cancel_stall()
            self._update_mode()
