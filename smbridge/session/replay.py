"""The per-session replay buffer: numbered notifications, the newest kept up to a byte limit.

Every notification frame that leaves the bridge toward a session is numbered 1,
2, 3, ... in the order it leaves (the client counts the same frames, in the order
TCP delivers them): when its connection writes it to the transport, or, when the
session has no connection (or loses it with frames still held for it), when it
is handed to the session. Numbering where frames leave, not where they are
produced, keeps the count true when the sender reorders frames by priority,
suppresses some under the memory safeguard or adds notices of its own.

The buffer keeps the most recent frames whose sizes add up to at most ``limit``
bytes, so a client that reconnects and says how many it received gets exactly
the rest, in order, or learns that the buffer no longer reaches back that far
(a gap). Frames are stored as the very bytes that
were written: a fan-out event shared by many sessions is held once in memory.

A fan-out :class:`Run` (many events joined once for every watcher) is kept as
one entry, not frame by frame (its :class:`RunFrames`, shared by all its watchers'
buffers like a single event's bytes): numbering it, counting its bytes and letting the
oldest entries go cost the same for a run of one event or of a hundred. Where
the byte limit falls inside the oldest run, the buffer remembers how many of
its frames are gone (found by bisecting the run's sizes, added up once for all
its watchers); only a resume (``since``) takes a run apart.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from itertools import accumulate

from smbridge.codec import Kind

DEFAULT_REPLAY_BYTES = 256 * 1024
_NOTIFICATION = int(Kind.NOTIFICATION)


class RunFrames:
    """A run's frames as replay buffers keep them: one object for every watcher.

    ``ends[i]`` is the bytes of frames 0..i (so the limit can cut inside the run by
    bisection), ``size`` the bytes of all, ``count`` the frames; ``tally`` their
    count and bytes per frame header, for the per-priority figures
    (``Sender.written``, counted once per run and turn: transports/batch.py).
    """

    __slots__ = ("frames", "ends", "size", "count", "tally")

    def __init__(
        self, frames: list[bytes], ends: list[int], tally: list[tuple[bytes, int, int]]
    ) -> None:
        self.frames = frames
        self.ends = ends
        self.size = ends[-1]
        self.count = len(frames)
        self.tally = tally


class Run(bytes):
    """Notifications for many clients at once, joined once (the fan-out's run of events).

    The same object is queued for every watcher of a topic (router/fanout.py):
    ``frames`` are its frames (all notifications), ``kept`` them as the watchers'
    replay buffers keep them (the joined bytes are let go once written) with their
    count and tally.
    """

    frames: list[bytes]
    kept: RunFrames
    largest: int  # the size of its largest frame (the safeguard lets small ones pass)

    @classmethod
    def of(cls, frames: list[bytes]) -> Run:
        run = cls(b"".join(frames))
        run.frames = frames
        sizes = list(map(len, frames))
        heads: dict[bytes, list[int]] = {}
        for frame, n in zip(frames, sizes, strict=True):
            tally = heads.setdefault(frame[5:10], [0, 0])
            tally[0] += 1
            tally[1] += n
        tallied = [(head, n, size) for head, (n, size) in heads.items()]
        run.kept = RunFrames(frames, list(accumulate(sizes)), tallied)
        run.largest = max(sizes)
        return run


class ReplayBuffer:
    """Numbered notification frames of one session, newest last, bounded in bytes."""

    __slots__ = ("limit", "count", "_entries", "_held", "_bytes", "_cut", "_cut_bytes")

    def __init__(self, limit: int = DEFAULT_REPLAY_BYTES) -> None:
        self.limit = limit
        self.count = 0  # notifications numbered so far: the last one's number
        # Frames and runs' frames, oldest first; of the oldest (a run's), the first
        # ``_cut`` frames (``_cut_bytes`` bytes) are gone already.
        self._entries: deque[bytes | RunFrames] = deque()
        self._held = 0  # frames held
        self._bytes = 0
        self._cut = 0
        self._cut_bytes = 0

    def __len__(self) -> int:
        return self._held

    @property
    def size(self) -> int:
        """Bytes held now."""
        return self._bytes

    @property
    def first(self) -> int:
        """The number of the oldest frame held (``count + 1`` when empty)."""
        return self.count - self._held + 1

    def append(self, frame: bytes) -> int:
        """Number ``frame``, keep it, drop the oldest beyond the limit; return its number."""
        self.count += 1
        self._held += 1
        self._entries.append(frame)
        self._bytes += len(frame)
        if self._bytes > self.limit:
            self._trim()
        return self.count

    def append_run(self, run: Run) -> None:
        """Number and keep the fan-out's ``run`` (all notifications), as one entry."""
        kept = run.kept
        n = len(kept.ends)
        self.count += n
        self._held += n
        self._entries.append(kept)
        self._bytes += kept.size
        if self._bytes > self.limit:
            self._trim()

    def add(self, items: list[bytes | RunFrames], frames: int, size: int) -> None:
        """Number and keep ``items``, notifications and runs (their ``kept``) in the order
        written: ``frames`` frames, ``size`` bytes in all (the connection counted them)."""
        self.count += frames
        self._held += frames
        self._entries.extend(items)
        self._bytes += size
        if self._bytes > self.limit:
            self._trim()

    def _trim(self) -> None:
        """Let the oldest frames go until what is held fits the limit."""
        entries, limit = self._entries, self.limit
        total, held = self._bytes, self._held
        while total > limit and entries:
            head = entries[0]
            if type(head) is not RunFrames:
                total -= len(head)  # type: ignore[arg-type]
                held -= 1
                entries.popleft()
                continue
            cut, cut_bytes = self._cut, self._cut_bytes
            ends = head.ends
            rest = head.size - cut_bytes
            excess = total - limit
            # Without the rest of the run, still at or over the limit: all of it goes.
            # Otherwise the run's frame at which enough is gone (the last: all of it).
            last = -1 if rest <= excess else bisect_left(ends, excess + cut_bytes, cut)
            if last < 0 or last == len(ends) - 1:
                total -= rest
                held -= len(ends) - cut
                entries.popleft()
                self._cut = self._cut_bytes = 0
                continue
            total -= ends[last] - cut_bytes
            held -= last + 1 - cut
            self._cut, self._cut_bytes = last + 1, ends[last]
        self._bytes, self._held = total, held

    def extend(self, frames: Iterable[bytes]) -> None:
        """Number and keep the notifications among ``frames`` (responses pass unnumbered)."""
        for frame in frames:
            if frame[5] == _NOTIFICATION:
                self.append(frame)

    def since(self, received: int) -> list[bytes] | None:
        """The frames numbered after ``received``, in order; ``None`` when some are gone.

        ``received`` must be between 0 and :attr:`count` (the caller checks).
        """
        missing = self.count - received
        if missing <= 0:
            return []
        if missing > self._held:
            return None
        out: list[bytes] = []
        for entry in reversed(self._entries):  # the newest entries, until enough
            if type(entry) is RunFrames:
                out.extend(reversed(entry.frames))
            else:
                out.append(entry)  # type: ignore[arg-type]
            if len(out) >= missing:
                break
        del out[missing:]
        out.reverse()
        return out

    def clear(self) -> None:
        """Let go of every frame (the session ended); numbering is kept."""
        self._entries.clear()
        self._bytes = self._held = self._cut = self._cut_bytes = 0
