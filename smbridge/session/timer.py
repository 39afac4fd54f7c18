"""Session timers: imminent notice and expiry, restarted by activity.

Every request restarts a session's timer, so ``touch()`` is on the hot path: it
only moves the deadline. Timers do not each hold a reactor DelayedCall either:
a bridge keeps thousands of sessions, so all timers (session and linger) share
one :class:`TimerQueue`, a heap of wake-up times with a single DelayedCall for
its head. A timer that wakes early (its deadline moved) just queues itself again.

The invariant that keeps every timer on time: outside :meth:`TimerQueue._fire`
the DelayedCall is armed at the earliest entry of the heap (or earlier). Inside
``_fire`` nothing arms it: timers that re-queue themselves, and timers that
callbacks start or wake, only join the heap, and when the round is over the call
is armed at the heap's head, whichever timer that is. Entries that come due
during one round (the reactor was late, or a timer re-queued itself at a time
already past) are handled in time order, as one DelayedCall per timer would.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from smbridge.session.negotiate import imminent_lead

_COMPACT_SLACK = 64  # cancelled entries tolerated beyond the live ones before a rebuild


class TimerQueue:
    """Wakes timers at their times with one DelayedCall for all of them."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, SessionTimer]] = []
        self._seq = itertools.count()
        self._call: IDelayedCall | None = None
        self._call_at = math.inf  # when ``_call`` fires (inf: not armed)
        self._firing = False
        self.active = 0  # timers not yet expired or cancelled

    def __len__(self) -> int:
        return self.active

    def started(self) -> None:
        self.active += 1

    def finished(self) -> None:
        """A timer expired or was cancelled; with none left, nothing stays scheduled.

        A cancelled timer's entry stays in the heap until it comes up; when such
        entries outnumber the live ones the heap is rebuilt without them, so a
        churn of short sessions with long timeouts does not pile them up.
        """
        self.active -= 1
        heap = self._heap
        if self.active == 0:
            heap.clear()
            self._disarm()
        elif len(heap) > 2 * self.active + _COMPACT_SLACK and not self._firing:
            heap[:] = [entry for entry in heap if entry[2].active]
            heapq.heapify(heap)

    def wake(self, when: float, timer: SessionTimer) -> None:
        """Wake ``timer`` at ``when`` (or as soon after as the reactor runs)."""
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        if when < self._call_at and not self._firing:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call_at = when
        self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _disarm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._call_at = math.inf

    def _fire(self) -> None:
        self._call = None
        self._call_at = math.inf
        self._firing = True
        heap = self._heap
        try:
            now = self.clock.seconds()
            while heap and heap[0][0] <= now:
                when, _, timer = heapq.heappop(heap)
                timer.woken(when, now)
        finally:
            self._firing = False
            while heap and not heap[0][2].active:  # drop cancelled timers lazily
                heapq.heappop(heap)
            if heap:
                self._arm(heap[0][0])


class SessionTimer:
    """One deadline with an optional imminent notice ``min(60, T/2)`` before it."""

    __slots__ = (
        "_queue",
        "timeout",
        "_notify",
        "_lead",
        "_on_imminent",
        "_on_expire",
        "deadline",
        "_warned_for",
        "active",
    )

    def __init__(
        self,
        queue: TimerQueue,
        timeout: float,
        notify_imminent: bool,
        on_imminent: Callable[[float], None],
        on_expire: Callable[[], None],
    ) -> None:
        self._queue = queue
        self.timeout = timeout
        self._notify = notify_imminent
        self._lead = imminent_lead(timeout)
        self._on_imminent = on_imminent
        self._on_expire = on_expire
        self.deadline = queue.clock.seconds() + timeout
        self._warned_for: float | None = None  # the deadline an imminent notice was sent for
        self.active = True
        queue.started()
        queue.wake(self._next_wake(), self)

    @property
    def queue(self) -> TimerQueue:
        return self._queue

    def touch(self) -> None:
        """Restart the timeout from now."""
        self.deadline = self._queue.clock.seconds() + self.timeout

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._queue.finished()

    def _next_wake(self) -> float:
        if self._notify and self._warned_for != self.deadline:
            return self.deadline - self._lead
        return self.deadline

    def woken(self, when: float, now: float) -> None:
        """The queue reached this timer's entry for ``when``; the clock reads ``now``.

        An entry left behind by a touch re-queues the timer at its real time (which
        may be already past: the queue then comes back to it in time order). A
        notice whose deadline has passed too is not sent: the expiry follows.
        """
        if not self.active:
            return
        wake_at = self._next_wake()
        if wake_at > when:  # the deadline moved since this entry was queued
            self._queue.wake(wake_at, self)
            return
        if wake_at < self.deadline:  # the imminent notice is due
            self._warned_for = self.deadline
            if now < self.deadline:
                self._on_imminent(self.deadline - now)
            self._queue.wake(self.deadline, self)
            return
        self.cancel()
        self._on_expire()
