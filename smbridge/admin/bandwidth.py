"""Outgoing bytes by priority, sampled every second into a ring buffer (the dashboard chart).

The sender reports the bytes written to clients per priority class (cumulative,
limiter on or off); the sampler keeps the difference over each second for the
last ``SAMPLES`` seconds, so the chart has history as soon as the page loads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

PRIORITIES = ("high", "medium", "low")
SAMPLES = 600  # ten minutes at one sample a second
Reading = Callable[[], Mapping[str, Mapping[str, int]]]  # priority -> {"sentBytes": ...}


class BandwidthHistory:
    """``sample()`` once a second; ``snapshot()`` for ``GET /api/bandwidth``."""

    def __init__(
        self, clock: IReactorTime, read: Reading, step: float = 1.0, size: int = SAMPLES
    ) -> None:
        self.clock = clock
        self.read = read
        self.step = step
        self.samples: deque[tuple[float, int, int, int]] = deque(maxlen=size)
        self._last: tuple[int, int, int] | None = None
        self._loop: LoopingCall | None = None

    def _totals(self) -> tuple[int, int, int]:
        by = self.read()
        h, m, low = (int(by.get(p, {}).get("sentBytes", 0)) for p in PRIORITIES)
        return h, m, low

    def sample(self) -> None:
        now = self.clock.seconds()
        totals = self._totals()
        last, self._last = self._last, totals
        if last is None:
            return
        # A counter that went down (a reset) counts from zero.
        delta = [t - p if t >= p else t for t, p in zip(totals, last, strict=True)]
        self.samples.append((now, delta[0], delta[1], delta[2]))

    def start(self) -> None:
        if self._loop is None:
            self._loop = LoopingCall(self.sample)
            self._loop.clock = self.clock
            self._loop.start(self.step, now=True)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def snapshot(self) -> dict[str, Any]:
        return {
            "stepSeconds": self.step,
            "priorities": list(PRIORITIES),
            "samples": [
                {"t": round(t, 3), "high": h, "medium": m, "low": low}
                for t, h, m, low in self.samples
            ],
        }
