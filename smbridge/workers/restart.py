"""When a worker that died is started again: exponential backoff, reset by a stable run (pure).

A worker that exits is restarted after ``base`` seconds, then twice as long after
each further exit that follows a short run, up to ``cap``; a worker that ran at
least ``stable`` seconds before it exited starts again after ``base`` (its earlier
failures are forgotten). Time is passed in (the supervisor reads its injected clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASE = 0.5
CAP = 30.0
STABLE = 30.0


@dataclass
class RestartPolicy:
    base: float = BASE
    cap: float = CAP
    stable: float = STABLE
    _failures: dict[int, int] = field(default_factory=dict)
    _started: dict[int, float] = field(default_factory=dict)

    def started(self, worker: int, now: float) -> None:
        """Worker ``worker`` (re)started at ``now``."""
        self._started[worker] = now

    def failures(self, worker: int) -> int:
        """Exits after a short run in a row (0 after a stable run)."""
        return self._failures.get(worker, 0)

    def exited(self, worker: int, now: float) -> float:
        """Worker ``worker`` exited at ``now``: seconds to wait before starting it again."""
        ran = now - self._started.get(worker, now)
        failures = 0 if ran >= self.stable else self._failures.get(worker, 0)
        self._failures[worker] = failures + 1
        return float(min(self.cap, self.base * 2**failures))
