"""The outgoing bandwidth limiter: a pure scheduler with an injected clock.

``enqueue(key, frame, now)`` hands it one encoded frame for one session (``key``
is anything hashable: the connection); ``due(now)`` returns the frames to write
now, in order, and when to call again (``wake_at``, ``None`` when nothing waits).
No I/O, no reactor: the adapter reads ``clock.seconds()`` and writes.

Rules (PROTOCOL §3 and §5, the Session Manager note):

* Classes. A notification is high if its (objectType, eventId) is in the high
  list, medium if in the medium list, low otherwise; a response or error is high
  if its request's type is in the high list, medium otherwise.
* Intervals. Time is cut into intervals of ``Interval Milliseconds`` from the
  moment the limiter was configured. Each interval may send ``Total Outgoing
  Bytes Per Interval``. Frames are never split: the frame that crosses the budget
  is sent whole and the excess is taken from the next interval's budget, so over
  several intervals the bytes sent equal the configured total exactly.
* Activation. While limiting is off every frame is released at once (no delay)
  and counted. When a frame arrives and the interval's budget is used up,
  limiting switches on and frames wait. It switches off at an interval boundary
  where nothing waits (the outgoing rate fell back under the limit).
* Pacing. While limiting, an interval is released in ``SLICES`` equal steps:
  by the end of step k (1..SLICES) at most k/SLICES of the interval's budget has
  been released. A high frame that arrives after the step's bytes are spent so
  waits at most one step (a tenth of the interval), not the whole interval, and
  the interval's total and shares are unchanged.
* Allocation, at each release while limiting: first any medium frame that would
  otherwise have waited more than 60 s at the next boundary (sent even over the
  budget: a medium frame is never held more than 60 s); then high frames up to the
  total; then medium up to its percentage of what high left; then low up to the
  rest; then medium again with what low left unused. Releases happen at every
  boundary (with everything that waits, so the shares are exact there) and when
  frames arrive while the interval still has budget (work-conserving: a class
  uses what the others have not claimed yet).
* Fairness. Within a class, sessions are served round-robin one frame at a time,
  so a session with a huge backlog delays the others by at most one of its frames
  per turn.

Ordering guarantee. Frames of one session are released in the order they were
enqueued among frames of the same class. Across classes a later frame may
overtake an earlier one (a high StatusChanged may pass a low QueueChanged),
except for frames about the same thing: while a session has a frame of some
objectType waiting, any later frame of that session with the same objectType
joins the same class queue behind it (its bytes then count in that class). So
frames of one session and one objectType, e.g. the WatchQueue reply carrying a
snapshot and the QueueChanged notifications that follow it, always leave in the
order they were enqueued: a response is never overtaken by a later notification
about the same thing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from twisted.logger import Logger

from smbridge.codec.catalog import Priority
from smbridge.sender.parameters import LimiterSettings

MEDIUM_MAX_HOLD = 60.0
SLICES = 10

# Classes are small ints inside (an Enum's hash is slow on the hot path).
HIGH, MEDIUM, LOW = 0, 1, 2
CLASSES = (HIGH, MEDIUM, LOW)
PRIORITIES = (Priority.HIGH, Priority.MEDIUM, Priority.LOW)

Release = tuple[Hashable, bytes]


def _class_of(data: bytes, settings: LimiterSettings) -> int:
    kind = data[5]
    key = ((data[6] << 8) | data[7], (data[8] << 8) | data[9])
    if key in settings.high:
        return HIGH
    if kind == 2 or kind == 4 or key in settings.medium:
        return MEDIUM
    return LOW


def classify(data: bytes, settings: LimiterSettings) -> Priority:
    """The class of one encoded frame (header: kind at 5, objectType 6..7, eventId 8..9)."""
    return PRIORITIES[_class_of(data, settings)]


# A queued frame is a ``(data, at)`` tuple: no object of our own per frame, and a
# tuple of a bytes and a float is soon untracked by the garbage collector, so a
# large backlog costs the collector nothing (holding a reference to a shared list
# in it would keep every queued tuple tracked: a backlog of a few megabytes made
# CPU per frame about a fifth worse). Its session is the queue's key; its chain,
# ``[class, frames waiting]`` per (session, objectType), is found from its header.
_Chain = list[int]
_Queued = tuple[bytes, float]
_Turn = tuple[Hashable, "deque[_Queued]", list[int]]


@dataclass
class ClassStats:
    """Counters for one class: bytes and frames sent, bytes queued now."""

    sent_bytes: int = 0
    sent_frames: int = 0
    queued_bytes: int = 0


class Scheduler:
    log = Logger()

    def __init__(self, settings: LimiterSettings, now: float) -> None:
        self.settings = settings
        # Per class: each session's waiting frames, and the round-robin ring of sessions.
        self._queues: list[dict[Hashable, deque[_Queued]]] = [{} for _ in CLASSES]
        # A ring entry is ``(session, its queue, its sent-bytes counters)``: serving
        # one frame then needs no dictionary lookup.
        self._rings: list[deque[_Turn]] = [deque() for _ in CLASSES]
        self._class_cache: dict[bytes, int] = {}  # header bytes 5..9 -> class
        self._chains: dict[tuple[Hashable, int], _Chain] = {}
        self._ready: list[Release] = []
        self.limiting = False
        self._stats = [ClassStats() for _ in CLASSES]
        self.stats: dict[Priority, ClassStats] = dict(zip(PRIORITIES, self._stats, strict=True))
        self._sent_by: dict[Hashable, list[int]] = {}  # bytes sent per session and class
        self.history: deque[int] = deque(maxlen=64)  # bytes sent per finished interval
        # No medium frame waiting was enqueued before this (a lower bound, kept cheaply):
        # the 60 s check scans the medium queues only once it could find one.
        self._medium_floor = float("inf")
        self._reset_clock(now)

    # --- configuration ------------------------------------------------------
    def _reset_clock(self, now: float) -> None:
        self._origin = now
        self._index = 0
        self._boundary = now + self.settings.interval
        self.interval_start = now
        self.avail = self.settings.total_bytes
        self.used = 0
        self.class_used = [0, 0, 0]

    def configure(self, settings: LimiterSettings, now: float) -> None:
        """Apply new settings; turning the limiter off releases everything at once."""
        old, self.settings = self.settings, settings
        self._class_cache.clear()
        if not settings.enabled:
            for c in CLASSES:
                self._serve(c, None)
            self._set_limiting(False)
        if settings.interval_ms != old.interval_ms or settings.enabled != old.enabled:
            self._reset_clock(now)
        # A new total applies from the next interval on.

    # --- accounting ---------------------------------------------------------
    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the class queues (not yet returned by ``due``)."""
        return sum(s.queued_bytes for s in self._stats)

    @property
    def pending(self) -> bool:
        return any(self._queues)

    def session_stats(self, key: Hashable) -> tuple[dict[str, int], int]:
        """Bytes sent per class and bytes queued now for one session."""
        sent = self._sent_by.get(key, [0, 0, 0])
        queued = sum(len(item[0]) for q in self._queues for item in q.get(key, ()))
        return {PRIORITIES[c].value: sent[c] for c in CLASSES}, queued

    def next_boundary(self) -> float:
        return self._origin + (self._index + 1) * self.settings.interval

    def _slice(self, now: float) -> int:
        """The pacing step ``now`` falls in within the current interval (0..SLICES-1)."""
        into = (now - self.interval_start) / self.settings.interval
        return min(SLICES - 1, int(into * SLICES + 1e-9))

    def _roll(self, now: float) -> None:
        """Start the interval that ``now`` falls in, carrying any overdraft."""
        interval = self.settings.interval
        elapsed = int((now - self._origin) / interval + 1e-9) - self._index
        if elapsed <= 0:
            return
        total = self.settings.total_bytes
        debt = max(0, self.used - self.avail - (elapsed - 1) * total)
        self.history.append(self.used)
        for _ in range(min(elapsed - 1, self.history.maxlen or 0)):
            self.history.append(0)
        self._index += elapsed
        self.interval_start = self._origin + self._index * interval
        self._boundary = self._origin + (self._index + 1) * interval
        self.avail = total - debt
        self.used = 0
        self.class_used = [0, 0, 0]
        if self.limiting and not self.pending:
            self._set_limiting(False)

    def _set_limiting(self, on: bool) -> None:
        if on is not self.limiting:
            self.limiting = on
            self.log.info(
                "Bandwidth limiting {state}",
                state="on" if on else "off",
                event="sender.limiting_on" if on else "sender.limiting_off",
            )

    # --- the two calls ------------------------------------------------------
    def enqueue(self, key: Hashable, data: bytes, now: float) -> Priority:
        """Take one frame for ``key``; return the class it was queued or released in."""
        c = self._class_cache.get(data[5:10])
        if c is None:
            c = self._class_cache[data[5:10]] = _class_of(data, self.settings)
        if not self.settings.enabled:
            self._release_now(key, data, c)
            return PRIORITIES[c]
        if now >= self._boundary:
            self._roll(now)
        if not self.limiting:
            if self.used < self.avail:
                self._release_now(key, data, c)
                return PRIORITIES[c]
            self._set_limiting(True)
        chain_key = (key, (data[6] << 8) | data[7])
        chain = self._chains.get(chain_key)
        if chain is None:
            chain = self._chains[chain_key] = [c, 1]
        else:
            c = chain[0]
            chain[1] += 1
        queue = self._queues[c]
        if c == MEDIUM and not queue:
            self._medium_floor = now
        q = queue.get(key)
        if q is None:
            q = self._join(c, key)
        q.append((data, now))
        self._stats[c].queued_bytes += len(data)
        return PRIORITIES[c]

    def _join(self, c: int, key: Hashable) -> deque[_Queued]:
        """Give ``key`` a queue in class ``c`` and a place at the back of its ring."""
        q = self._queues[c][key] = deque()
        by = self._sent_by.get(key)
        if by is None:
            by = self._sent_by[key] = [0, 0, 0]
        self._rings[c].append((key, q, by))
        return q

    def enqueue_batch(self, items: list[Release], now: float) -> None:
        """Take several ``(key, frame)`` pairs at once, in order: ``enqueue`` each, inlined.

        While limiting, connections append what they send during a reactor turn to
        the sender's inbox, which hands it over here in one call: the per-frame cost
        is then a list append in the connection and one pass of this loop.
        """
        if not self.settings.enabled:
            for key, data in items:
                self.enqueue(key, data, now)
            return
        if now >= self._boundary:
            self._roll(now)
        if not self.limiting:
            for i, (key, data) in enumerate(items):
                self.enqueue(key, data, now)
                if self.limiting:  # this frame switched limiting on: queue the rest
                    items = items[i + 1 :]
                    break
            else:
                return
        settings = self.settings
        cache = self._class_cache
        if not self.pending and self.used + sum(len(item[1]) for item in items) <= (
            self.avail * (self._slice(now) + 1) // SLICES
        ):
            # Nothing waits and all of it fits in the paced budget: an allocation would
            # release every frame now whatever its class, so skip the queues.
            self._ready.extend(items)
            sent_by = self._sent_by
            sizes = [0, 0, 0]
            counts = [0, 0, 0]
            for key, data in items:
                c = cache.get(data[5:10])
                if c is None:
                    c = cache[data[5:10]] = _class_of(data, settings)
                size = len(data)
                sizes[c] += size
                counts[c] += 1
                by = sent_by.get(key)
                if by is None:
                    by = sent_by[key] = [0, 0, 0]
                by[c] += size
            for c in CLASSES:
                stats = self._stats[c]
                stats.sent_bytes += sizes[c]
                stats.sent_frames += counts[c]
                self.class_used[c] += sizes[c]
                self.used += sizes[c]
            return
        chains = self._chains
        queues = self._queues
        if not queues[MEDIUM]:
            self._medium_floor = now  # every medium frame queued below is this recent
        added = [0, 0, 0]
        for key, data in items:
            c = cache.get(data[5:10])
            if c is None:
                c = cache[data[5:10]] = _class_of(data, settings)
            chain_key = (key, (data[6] << 8) | data[7])
            chain = chains.get(chain_key)
            if chain is None:
                chain = chains[chain_key] = [c, 1]
            else:
                c = chain[0]
                chain[1] += 1
            q = queues[c].get(key)
            if q is None:
                q = self._join(c, key)
            q.append((data, now))
            added[c] += len(data)
        for c in CLASSES:
            self._stats[c].queued_bytes += added[c]

    def due(self, now: float) -> tuple[list[Release], float | None]:
        """The frames to write now, in order, and when to call again."""
        if self.settings.enabled:
            self._roll(now)
            if self.limiting and self.pending:
                self._allocate(now)
        out, self._ready = self._ready, []
        wake = None
        if self.limiting:
            step = self._slice(now) + 1
            if step < SLICES and self.pending:
                wake = self.interval_start + step * self.settings.interval / SLICES
            else:
                wake = self.next_boundary()
        return out, wake

    def has_room(self, now: float) -> bool:
        """Whether a release now could send anything (the paced budget is not spent)."""
        if now >= self._boundary:
            return True
        return self.used < self.avail * (self._slice(now) + 1) // SLICES

    def take_released(self) -> list[Release]:
        """What ``enqueue`` released at once (limiting off), without ``due``'s bookkeeping."""
        out, self._ready = self._ready, []
        return out

    def waiting(self, key: Hashable) -> list[bytes]:
        """The frames waiting for ``key``, oldest first (one turn's frames by class)."""
        held = [
            (item[1], c, i, item[0])
            for c in CLASSES
            for i, item in enumerate(self._queues[c].get(key, ()))
        ]
        held.sort(key=lambda h: h[:3])
        return [h[3] for h in held]

    def forget(self, key: Hashable) -> int:
        """Drop what waits for ``key`` (its connection is gone); return the bytes dropped."""
        dropped = 0
        for c in CLASSES:
            q = self._queues[c].pop(key, None)
            if q is not None:
                self._leave(c, key)
                size = sum(len(item[0]) for item in q)
                self._stats[c].queued_bytes -= size
                dropped += size
                for item in q:
                    self._chains.pop((key, (item[0][6] << 8) | item[0][7]), None)
        kept = [r for r in self._ready if r[0] != key]
        dropped += sum(len(r[1]) for r in self._ready) - sum(len(r[1]) for r in kept)
        self._ready = kept
        self._sent_by.pop(key, None)
        return dropped

    # --- internals ----------------------------------------------------------
    def _release_now(self, key: Hashable, data: bytes, c: int) -> None:
        self._ready.append((key, data))
        size = len(data)
        self.used += size
        self.class_used[c] += size
        stats = self._stats[c]
        stats.sent_bytes += size
        stats.sent_frames += 1
        sent = self._sent_by.get(key)
        if sent is None:
            sent = self._sent_by[key] = [0, 0, 0]
        sent[c] += size

    def _release(self, key: Hashable, item: _Queued, c: int) -> int:
        data = item[0]
        size = len(data)
        self._release_now(key, data, c)
        self._stats[c].queued_bytes -= size
        chain_key = (key, (data[6] << 8) | data[7])
        chain = self._chains[chain_key]
        chain[1] -= 1
        if not chain[1]:
            del self._chains[chain_key]
        return size

    def _leave(self, c: int, key: Hashable) -> None:
        ring = self._rings[c]
        kept = [turn for turn in ring if turn[0] != key]
        ring.clear()
        ring.extend(kept)

    def _serve(self, c: int, budget: int | None) -> None:
        """Round-robin over sessions, one frame each, until ``budget`` bytes are sent.

        The ring holds each session with frames waiting once: serve the front one
        frame, put it at the back while it has more.
        """
        ring = self._rings[c]
        if not ring or (budget is not None and budget <= 0):
            return
        limit = float("inf") if budget is None else budget
        queue = self._queues[c]
        ready = self._ready
        chains = self._chains
        pop_turn = ring.popleft
        push_turn = ring.append
        sent = frames = 0
        while ring:  # bounded: every pass releases one frame
            turn = pop_turn()
            key, q, by = turn
            data = q.popleft()[0]
            ready.append((key, data))
            chain_key = (key, (data[6] << 8) | data[7])
            chain = chains[chain_key]
            chain[1] -= 1
            if not chain[1]:
                del chains[chain_key]
            size = len(data)
            by[c] += size
            sent += size
            frames += 1
            if q:
                push_turn(turn)
            else:
                del queue[key]
            if sent >= limit:
                break
        stats = self._stats[c]
        stats.sent_frames += frames
        stats.sent_bytes += sent
        stats.queued_bytes -= sent
        self.used += sent
        self.class_used[c] += sent

    def _overdue_medium(self, now: float) -> None:
        deadline = self.next_boundary() - MEDIUM_MAX_HOLD
        if deadline <= self._medium_floor:
            return  # nothing waiting is old enough
        queue = self._queues[MEDIUM]
        for key in [k for k, q in queue.items() if q[0][1] < deadline]:
            q = queue[key]
            while q and q[0][1] < deadline:
                self._release(key, q.popleft(), MEDIUM)
            if not q:
                del queue[key]
                self._leave(MEDIUM, key)
        self._medium_floor = min((q[0][1] for q in queue.values()), default=float("inf"))

    def _allocate(self, now: float) -> None:
        if self._queues[MEDIUM]:
            self._overdue_medium(now)
        avail = self.avail
        used = self.class_used
        cap = avail * (self._slice(now) + 1) // SLICES  # paced: released so far at most
        self._serve(HIGH, cap - self.used)
        medium_share = max(0, avail - used[HIGH]) * self.settings.medium_percent // 100
        self._serve(MEDIUM, min(medium_share - used[MEDIUM], cap - self.used))
        low_share = avail - used[HIGH] - medium_share
        self._serve(LOW, min(low_share - used[LOW], cap - self.used))
        self._serve(MEDIUM, cap - self.used)
        self._serve(LOW, cap - self.used)
