"""A simulated clock that schedules like the real reactor: a heap, lazy cancellation.

``twisted.internet.task.Clock`` re-sorts its whole list of calls on every
``callLater``, which is fine in unit tests but costs microseconds per call, so a
benchmark that counts CPU per frame on it would measure the test clock. This one
keeps the reactor's own data structure (``heapq`` of ``DelayedCall``, cancelled
entries skipped when they come up), so the figures are the code's.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.base import DelayedCall


class HeapClock:
    """``seconds``, ``callLater`` and ``advance``, as ``Clock`` has them, on a heap."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._seq = itertools.count()

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall:
        call = DelayedCall(
            self.now + delay, f, args, kw, lambda c: None, self._push, seconds=self.seconds
        )
        self._push(call)
        return call

    def _push(self, call: DelayedCall) -> None:
        heapq.heappush(self._heap, (call.getTime(), next(self._seq), call))

    def advance(self, amount: float) -> None:
        self.now += amount
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            when, _, call = heapq.heappop(heap)
            if call.cancelled or call.called or call.getTime() != when:
                continue  # cancelled, or moved (its new entry is further on)
            call.called = 1
            call.func(*call.args, **call.kw)
