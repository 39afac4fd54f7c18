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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice

from smbridge.codec import Kind

DEFAULT_REPLAY_BYTES = 256 * 1024
_NOTIFICATION = int(Kind.NOTIFICATION)


class ReplayBuffer:
    """Numbered notification frames of one session, newest last, bounded in bytes."""

    __slots__ = ("limit", "count", "_frames", "_bytes")

    def __init__(self, limit: int = DEFAULT_REPLAY_BYTES) -> None:
        self.limit = limit
        self.count = 0  # notifications numbered so far: the last one's number
        self._frames: deque[bytes] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def size(self) -> int:
        """Bytes held now."""
        return self._bytes

    @property
    def first(self) -> int:
        """The number of the oldest frame held (``count + 1`` when empty)."""
        return self.count - len(self._frames) + 1

    def append(self, frame: bytes) -> int:
        """Number ``frame``, keep it, drop the oldest beyond the limit; return its number."""
        self.count += 1
        frames = self._frames
        frames.append(frame)
        self._bytes += len(frame)
        while self._bytes > self.limit and frames:
            self._bytes -= len(frames.popleft())
        return self.count

    def append_all(self, frames: list[bytes], size: int) -> None:
        """Number and keep ``frames``: notifications, ``size`` bytes in all (a fan-out run)."""
        self.count += len(frames)
        held = self._frames
        held.extend(frames)
        self._bytes += size
        if self._bytes > self.limit:
            limit, total, popleft = self.limit, self._bytes, held.popleft
            while total > limit and held:
                total -= len(popleft())
            self._bytes = total

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
        held = len(self._frames)
        if missing > held:
            return None
        return list(islice(self._frames, held - missing, None))

    def clear(self) -> None:
        """Let go of every frame (the session ended); numbering is kept."""
        self._frames.clear()
        self._bytes = 0
