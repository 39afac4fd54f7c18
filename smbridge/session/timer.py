"""Session timers: imminent notice and expiry, restarted by activity.

Every request restarts a session's timer, so ``touch()`` is on the hot path: it
only moves the deadline. Timers do not each hold a reactor DelayedCall either:
a bridge keeps thousands of sessions, so all timers share one
:class:`TimerQueue`, a heap of wake-up times with a single DelayedCall for its
head. A timer that wakes early (its deadline moved) just queues itself again.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from smbridge.session.negotiate import imminent_lead


class TimerQueue:
    """Wakes timers at their times with one DelayedCall for all of them."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, SessionTimer]] = []
        self._seq = itertools.count()
        self._call: IDelayedCall | None = None
        self._call_at = 0.0
        self.active = 0  # timers not yet expired or cancelled

    def __len__(self) -> int:
        return self.active

    def started(self) -> None:
        self.active += 1

    def finished(self) -> None:
        """A timer expired or was cancelled; with none left, nothing stays scheduled."""
        self.active -= 1
        if self.active == 0:
            self._heap.clear()
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None

    def wake(self, when: float, timer: SessionTimer) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        if self._call is None or when < self._call_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call_at = when
        self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self.clock.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            timer.woken(now)
        while heap and not heap[0][2].active:  # drop cancelled timers lazily
            heapq.heappop(heap)
        if heap and self._call is None:
            self._arm(heap[0][0])


class SessionTimer:
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

    def woken(self, now: float) -> None:
        """Called by the queue at (or after) the time this timer asked for."""
        if not self.active:
            return
        if now >= self.deadline:
            self.cancel()
            self._on_expire()
            return
        if self._notify and self._warned_for != self.deadline and now >= self.deadline - self._lead:
            self._warned_for = self.deadline
            self._on_imminent(self.deadline - now)
        self._queue.wake(self._next_wake(), self)
