"""A generator of ACD call traffic, so queues move during demos and benchmarks.

Calls arrive at ``calls_per_second`` into the site's queues in turn (Offering),
turn Alerting a little later and leave after ``handle_seconds``; each step is one
QueueChanged through :meth:`Notifier.change_queue`. A queue never holds more than
``max_queue_length`` items: when full, the oldest item leaves as the new call
arrives (in the same event), so a high rate with a long handle time stays bounded.

Everything is driven by ``clock.callLater``, so tests run it with ``Clock``.
"""

from __future__ import annotations

import math

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.notifier.model import Notifier
from smbridge.topics import queue_topic

MAX_BURST = 1000  # most arrivals one late tick may catch up


class Traffic:
    """Timed call arrivals, state changes and departures on a :class:`Notifier`."""

    log = Logger()

    def __init__(
        self,
        notifier: Notifier,
        clock: IReactorTime,
        calls_per_second: float = 0.0,
        handle_seconds: float = 8.0,
        *,
        alert_seconds: float | None = None,
        max_queue_length: int = 50,
        queues: list[str] | None = None,
    ) -> None:
        if calls_per_second < 0 or handle_seconds < 0 or max_queue_length < 1:
            raise ValueError("rates and times must be >= 0 and max_queue_length >= 1")
        self.notifier = notifier
        self.clock = clock
        self.rate = float(calls_per_second)
        self.handle_seconds = float(handle_seconds)
        self.alert_seconds = (
            min(2.0, handle_seconds / 2) if alert_seconds is None else alert_seconds
        )
        self.max_queue_length = max_queue_length
        self.queues = list(notifier.site.queues if queues is None else queues)
        self.running = False
        self.calls_made = 0
        self._next_queue = 0
        self._arrival: IDelayedCall | None = None
        self._next_at: float | None = None
        self._timers: dict[str, list[IDelayedCall]] = {}
        self._queue_of: dict[str, str] = {}

    @property
    def calls_in_progress(self) -> int:
        return len(self._queue_of)

    def start(self) -> None:
        """Begin generating at the current rate (a rate of 0 waits for :meth:`set_rate`)."""
        self.running = True
        self._schedule()

    def stop(self) -> None:
        """Stop arrivals and every pending state change; calls already queued stay."""
        self.running = False
        self._cancel_arrival()
        for timers in self._timers.values():
            for t in timers:
                if t.active():
                    t.cancel()
        self._timers.clear()
        self._queue_of.clear()

    def set_rate(self, calls_per_second: float) -> None:
        """Change the arrival rate now; 0 stops arrivals (calls in progress still finish)."""
        if not 0 <= calls_per_second < math.inf:
            raise ValueError("callsPerSecond must be a finite number >= 0")
        self.rate = float(calls_per_second)
        self.log.info(
            "Traffic rate set to {rate} calls/s", rate=self.rate, event="notifier.traffic.rate"
        )
        self._cancel_arrival()
        self._schedule()

    def _cancel_arrival(self) -> None:
        if self._arrival is not None and self._arrival.active():
            self._arrival.cancel()
        self._arrival = None
        self._next_at = None

    def _schedule(self) -> None:
        if self.running and self.rate > 0 and self.queues:
            now = self.clock.seconds()
            if self._next_at is None:
                self._next_at = now + 1.0 / self.rate
            self._arrival = self.clock.callLater(max(0.0, self._next_at - now), self._tick)

    def _tick(self) -> None:
        # Arrivals are due at fixed times, so a late tick (a busy reactor, a coarse
        # test clock) catches up instead of lowering the rate; a long stall does not
        # turn into an unbounded burst.
        self._arrival = None
        now = self.clock.seconds()
        if self._next_at is None or self.rate <= 0:
            return
        interval = 1.0 / self.rate
        burst = 0
        while self._next_at <= now and burst < MAX_BURST:
            self._arrive()
            self._next_at += interval
            burst += 1
        if self._next_at <= now:
            self._next_at = now + interval
        self._schedule()

    def _arrive(self) -> None:
        queue = self.queues[self._next_queue % len(self.queues)]
        self._next_queue += 1
        self.calls_made += 1
        n = self.calls_made
        call_id = f"call-{n}"
        call = {
            "id": call_id,
            "type": "call",
            "state": "Offering",
            "from": f"+1 317 555 {(142 + 7919 * (n - 1)) % 10000:04d}",
            "workgroup": queue,
            "arrived": self.clock.seconds(),
        }
        items = self.notifier.queue_items(queue)
        removed = []
        while len(items) >= self.max_queue_length:
            oldest = items.pop(0)["id"]
            removed.append(oldest)
            self._forget(oldest)
        self.notifier.change_queue(queue, added=[call], removed=removed)
        self._queue_of[call_id] = queue
        timers = [self.clock.callLater(self.handle_seconds, self._depart, call_id)]
        if self.alert_seconds < self.handle_seconds:
            timers.append(self.clock.callLater(self.alert_seconds, self._alert, call_id))
        self._timers[call_id] = timers

    def _alert(self, call_id: str) -> None:
        queue = self._queue_of.get(call_id)
        item = self.notifier.topics[queue_topic(queue)].items.get(call_id) if queue else None
        if queue is not None and item is not None:
            self.notifier.change_queue(queue, changed=[dict(item, state="Alerting")])

    def _depart(self, call_id: str) -> None:
        queue = self._queue_of.get(call_id)
        self._forget(call_id)
        if queue is not None and call_id in self.notifier.topics[queue_topic(queue)].items:
            self.notifier.change_queue(queue, removed=[call_id])

    def _forget(self, call_id: str) -> None:
        self._queue_of.pop(call_id, None)
        for t in self._timers.pop(call_id, ()):
            if t.active():
                t.cancel()
