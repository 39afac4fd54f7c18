"""One write per connection per reactor turn.

Fan-out can put many frames for one client into a single turn; writing each
separately costs a syscall (and a TLS record) per frame. Connections queue
frames and mark themselves dirty; the batcher flushes every dirty connection
once, at the next turn. Measured on the benchmark machine, this lifts fan-out
from about 1 M to about 5 M deliveries per second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol

from smbridge.session.replay import RunFrames

Tally = dict[bytes, list[int]]  # frames and bytes written, by frame header (Sender.written)


class Flushable(Protocol):
    def flush(self) -> None: ...


class WriteBatcher:
    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._clock = clock
        self._dirty: list[Flushable] = []
        self._scheduled = False
        # Frames staged for many connections at once (the fan-out's run of events,
        # router/fanout.py): handed out before any other frame is queued for a
        # connection (``unstage``, called by every send path), and at the turn's end.
        self.staged: Callable[[], None] | None = None
        # Fan-out runs written this turn, once per connection, by the figures they
        # count in: counted at the turn's end once per run (``count_runs``), so that
        # a connection writing many runs does it in one step.
        self._written: dict[int, tuple[Tally, list[RunFrames]]] = {}
        self._last: tuple[Tally, list[RunFrames]] | None = None  # the entry used last

    def stage(self, hand_out: Callable[[], None]) -> None:
        """``hand_out`` gives the staged frames to their connections: at the latest, this turn."""
        self.staged = hand_out
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self.flush_all)

    def unstage(self) -> None:
        """Hand out what is staged now (before another frame is queued, in order)."""
        hand_out, self.staged = self.staged, None
        if hand_out is not None:
            hand_out()

    def mark(self, conn: Flushable) -> None:
        """Flush ``conn`` at the next turn (the caller marks each connection once)."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self.flush_all)

    def runs_written(self, written: Tally) -> list[RunFrames]:
        """Where a connection lists the runs it wrote, to be counted in ``written``
        (by frame header) at the end of this turn (``count_runs``)."""
        last = self._last
        if last is not None and last[0] is written:  # one sender, as in the bridge
            return last[1]
        entry = self._written.get(id(written))
        if entry is None:
            entry = self._written[id(written)] = (written, [])
            if not self._scheduled:  # written outside a turn's flush: count at the next
                self._scheduled = True
                self._clock.callLater(0, self.flush_all)
        self._last = entry
        return entry[1]

    def count_runs(self) -> None:
        """Count the runs written since the last count: each run once, times its writes."""
        pending, self._written = self._written, {}
        self._last = None
        for written, runs in pending.values():
            first = runs[0]
            if runs.count(first) == len(runs):  # the usual turn: one run, for every watcher
                counted: Iterable[tuple[RunFrames, int]] = ((first, len(runs)),)
            else:
                counted = Counter(runs).items()
            for run, times in counted:
                for head, frames, size in run.tally:
                    tally = written.get(head)
                    if tally is None:
                        tally = written[head] = [0, 0]
                    tally[0] += frames * times
                    tally[1] += size * times

    def flush_all(self) -> None:
        # What a flush marks (the sender releasing frames to connections) is flushed
        # in this same turn: loop until nothing is dirty.
        self.unstage()
        while self._dirty:
            dirty, self._dirty = self._dirty, []
            for conn in dirty:
                conn.flush()
        if self._written:
            self.count_runs()
        self._scheduled = False


class BatchedProtocol(TwistedProtocol):
    """A protocol whose frames are queued by ``send`` and written once per turn.

    Subclasses set ``connected`` in connectionMade and clear it (and ``_out``) in
    connectionLost; what is queued for a lost connection is dropped.
    """

    def __init__(self, batcher: WriteBatcher) -> None:
        self.batcher = batcher
        self.connected = False
        self._out: list[bytes] = []

    def send(self, data: bytes) -> None:
        if not self.connected:
            return
        if not self._out:
            self.batcher.mark(self)
        self._out.append(data)

    def flush(self) -> None:
        out = self._out
        if out and self.connected:
            self._out = []
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
