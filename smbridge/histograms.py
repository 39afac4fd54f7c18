"""Timing histograms the metrics endpoint reads: logon, request round trip, publish delay, resume.

Like ``counters.py``, these are plain objects (one :class:`Timings` per bridge, on
the router) that the cores fill and the admin package turns into Prometheus
histograms at scrape time (``smbridge/admin/metrics.py``). An observation is on
the hot path (every forwarded request, every notification), so it is a ``bisect``
on a tuple of bounds and two additions: a few hundred nanoseconds, no lock and no
metrics library (``tests/test_metrics_histograms.py`` measures it).

Times come from the injected clock (``IReactorTime.seconds()``); the publish delay
compares it with the Notifier's ``at`` stamp, so across hosts it includes their
clock difference (a negative difference counts as 0).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

# Bucket upper bounds in seconds (each one inclusive, as Prometheus's ``le``; +Inf is implied).
LOGON_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
PUBLISH_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
RESUME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Counts of observations per bucket, their sum and their number.

    ``counts[i]`` is the number of values in ``(bounds[i-1], bounds[i]]``; the last
    slot is the values above every bound (+Inf). Counts are kept per bucket, not
    cumulative, so an observation touches one slot; :meth:`cumulative` adds them up
    for the exposition.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError("bounds must be finite numbers, at least one")
        if any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ValueError("bounds must be sorted and distinct")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, values <= le)`` for every bound, then ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for le, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((le, running))
        return out


class TimedSend:
    """A send callable that observes the time since it was made, once, then sends.

    Handed where the reply of a request will be sent (``Router._answer``, or as the
    session of a forwarded request, whose answer ``RelayPending`` sends through
    ``.send``), so the time is taken when the bytes reach the connection.
    """

    __slots__ = ("_send", "_histogram", "_now", "_started")

    def __init__(
        self, send: Callable[[bytes], None], histogram: Histogram, now: Callable[[], float]
    ) -> None:
        self._send = send
        self._histogram = histogram
        self._now = now
        self._started: float | None = now()

    def send(self, data: bytes) -> None:
        started = self._started
        if started is not None:
            self._started = None
            self._histogram.observe(self._now() - started)
        self._send(data)

    __call__ = send


class Timings:
    """The bridge's timing histograms, and the clock they are measured with."""

    __slots__ = ("clock", "now", "logon", "forwarded", "local", "publish", "resume")

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.now: Callable[[], float] = clock.seconds  # bound once: read on every request
        self.logon = Histogram(LOGON_BUCKETS)  # CreateSession received -> reply handed over
        self.forwarded = Histogram(REQUEST_BUCKETS)  # a request relayed to the Notifier
        self.local = Histogram(REQUEST_BUCKETS)  # a request the bridge answered itself
        self.publish = Histogram(PUBLISH_BUCKETS)  # the Notifier's ``at`` -> bytes handed over
        self.resume = Histogram(RESUME_BUCKETS)  # ResumeSession received -> answered

    def timed(self, send: Callable[[bytes], None], histogram: Histogram) -> TimedSend:
        """``send``, observing into ``histogram`` the time from now to its first call."""
        return TimedSend(send, histogram, self.now)

    def settle(self, histogram: Histogram, started: float, reply: Any) -> None:
        """Observe once ``reply`` is answered: now, or when its Deferred fires."""
        if isinstance(reply, Deferred):
            reply.addBoth(self._settled, histogram, started)
        else:
            histogram.observe(self.now() - started)

    def _settled(self, result: object, histogram: Histogram, started: float) -> object:
        histogram.observe(self.now() - started)
        return result

    def published(self, body: dict[str, Any] | None) -> None:
        """An event with the Notifier's ``at`` stamp was handed to its watchers."""
        if body is None:
            return
        at = body.get("at")
        if at.__class__ is float or at.__class__ is int:
            delay = self.now() - at
            self.publish.observe(delay if delay > 0.0 else 0.0)
