"""Session timers: the shared TimerQueue against one DelayedCall per notice and expiry.

    python bench/timers.py            # writes bench/results/timers.json
    python bench/timers.py --quick    # small and short, to check that it works

Both run on a clock that schedules as the reactor does (``ReactorClock``: a heap
of DelayedCalls, cancelled calls skipped when they come up, and a call reset to
a later time moved only when it comes up, as ``ReactorBase.runUntilCurrent``
does), in the same run, alternating, best of the rounds.

- ``naive``: the reference of tests/test_timer_model.py done as well as it can be:
  a DelayedCall for the imminent notice and one for expiry per session; a touch
  ``reset()``s them (on the reactor a reset to a later time costs no heap work).
- ``queue``: smbridge.session.timer (one DelayedCall for the whole bridge).

Phases, per session timer: ``arm`` (create N timers), ``touch`` (10 N touches at
random timers while the clock creeps), ``cancel`` (end them all), and ``run``: N
sessions with mixed timeouts (60, 300, 1800 s) heartbeating every
``heartbeatInterval`` for an hour of clock time in 1 s steps, a tenth of them
silent (they get their notice and expire); the driver's own cost, measured with
timers that do nothing, is subtracted. Every run also checks that both produce
the same notices and expiries at the same times. The garbage collector is off
while measuring (a collection would land in whichever phase was running).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.base import DelayedCall  # noqa: E402
from twisted.internet.interfaces import IReactorTime  # noqa: E402

from bench.common import write_results  # noqa: E402
from bench.heapclock import HeapClock  # noqa: E402
from smbridge.session.negotiate import heartbeat_interval, imminent_lead  # noqa: E402
from smbridge.session.timer import SessionTimer, TimerQueue  # noqa: E402

TIMEOUTS = (60, 300, 1800)
Log = list[tuple[int, str, float]]


class ReactorClock(HeapClock):
    """HeapClock plus the reactor's lazy reset: a call moved later is re-pushed when it comes up."""

    def advance(self, amount: float) -> None:
        self.now += amount
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            when, _, call = heapq.heappop(heap)
            if call.cancelled or call.called or call.time != when:
                continue  # cancelled, or moved sooner (its new entry is further on)
            if call.delayed_time > 0:
                call.activate_delay()
                self._push(call)
                continue
            call.called = 1
            call.func(*call.args, **call.kw)


class Timer(Protocol):
    def touch(self) -> None: ...

    def cancel(self) -> None: ...


class NaiveTimer:
    """One DelayedCall for the notice, one for expiry; a touch resets both."""

    __slots__ = ("clock", "timeout", "lead", "deadline", "notice", "expiry", "imminent", "expire")

    def __init__(
        self,
        clock: ReactorClock,
        timeout: float,
        on_imminent: Callable[[float], None],
        on_expire: Callable[[], None],
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.lead = imminent_lead(timeout)
        self.deadline = clock.now + timeout
        self.imminent = on_imminent
        self.expire = on_expire
        self.notice: DelayedCall | None = clock.callLater(timeout - self.lead, self._notice)
        self.expiry = clock.callLater(timeout, self._expired)

    def touch(self) -> None:
        self.deadline = self.clock.now + self.timeout
        self.expiry.reset(self.timeout)
        notice = self.notice
        if notice is not None and notice.active():
            notice.reset(self.timeout - self.lead)
        else:
            self.notice = self.clock.callLater(self.timeout - self.lead, self._notice)

    def cancel(self) -> None:
        if self.expiry.active():
            self.expiry.cancel()
        if self.notice is not None and self.notice.active():
            self.notice.cancel()

    def _notice(self) -> None:
        self.notice = None
        self.imminent(self.deadline - self.clock.now)

    def _expired(self) -> None:
        if self.notice is not None and self.notice.active():
            self.notice.cancel()
        self.expire()


class NullTimer:
    """Does nothing: what the driver loops cost on their own."""

    __slots__ = ()

    def touch(self) -> None:
        pass

    def cancel(self) -> None:
        pass


Factory = Callable[[ReactorClock, float, Callable[[float], None], Callable[[], None]], Timer]


def _queue_factory() -> Factory:
    queues: dict[int, TimerQueue] = {}

    def make(
        clock: ReactorClock,
        timeout: float,
        on_imminent: Callable[[float], None],
        on_expire: Callable[[], None],
    ) -> Timer:
        queue = queues.get(id(clock))
        if queue is None:
            queue = queues[id(clock)] = TimerQueue(cast(IReactorTime, clock))
        return SessionTimer(queue, timeout, True, on_imminent, on_expire)

    return make


def _naive_factory() -> Factory:
    return NaiveTimer


def _null_factory() -> Factory:
    def make(
        clock: ReactorClock,
        timeout: float,
        on_imminent: Callable[[float], None],
        on_expire: Callable[[], None],
    ) -> Timer:
        return NullTimer()

    return make


FACTORIES: dict[str, Callable[[], Factory]] = {
    "queue": _queue_factory,
    "naive": _naive_factory,
    "driver": _null_factory,
}


def _make(make: Factory, clock: ReactorClock, n: int, log: Log) -> list[Timer]:
    timers = []
    for i in range(n):
        timeout = TIMEOUTS[i % len(TIMEOUTS)]

        def imminent(left: float, i: int = i) -> None:
            log.append((i, "imminent", clock.now))

        def expired(i: int = i) -> None:
            log.append((i, "expired", clock.now))

        timers.append(make(clock, timeout, imminent, expired))
    return timers


def micro(name: str, n: int) -> dict[str, float]:
    """ns per arm, per touch and per cancel for one implementation."""
    make = FACTORIES[name]()
    clock = ReactorClock()
    log: Log = []
    started = time.perf_counter()
    timers = _make(make, clock, n, log)
    arm = time.perf_counter() - started
    rng = random.Random(5)
    picks = [rng.randrange(n) for _ in range(10 * n)]
    started = time.perf_counter()
    for k, i in enumerate(picks):
        timers[i].touch()
        if k % 100 == 0:
            clock.now += 0.01  # time creeps; nothing falls due
    touch = time.perf_counter() - started
    started = time.perf_counter()
    for timer in timers:
        timer.cancel()
    cancel = time.perf_counter() - started
    clock.advance(4000)  # drain what is left on the clock
    assert not log, "nothing may fire in the micro phases"
    return {
        "armNs": arm / n * 1e9,
        "touchNs": touch / len(picks) * 1e9,
        "cancelNs": cancel / n * 1e9,
    }


def run(name: str, n: int, seconds: int) -> tuple[float, int, Log]:
    """Heartbeating sessions for ``seconds`` of clock time: CPU seconds, touches, what fired."""
    make = FACTORIES[name]()
    clock = ReactorClock()
    log: Log = []
    rng = random.Random(7)
    silent = set(rng.sample(range(n), n // 10))
    due: dict[int, list[int]] = {}  # second -> sessions heartbeating then
    for i in range(n):
        if i not in silent:
            every = heartbeat_interval(TIMEOUTS[i % len(TIMEOUTS)])
            due.setdefault(rng.randrange(1, every + 1), []).append(i)
    touches = 0
    started = time.perf_counter()
    timers = _make(make, clock, n, log)
    for second in range(1, seconds + 1):
        clock.advance(1.0)
        for i in due.pop(second, ()):
            timers[i].touch()
            touches += 1
            every = heartbeat_interval(TIMEOUTS[i % len(TIMEOUTS)])
            due.setdefault(second + every, []).append(i)
    for timer in timers:
        timer.cancel()
    clock.advance(4000)
    return time.perf_counter() - started, touches, sorted(log)


def main(quick: bool) -> dict[str, Any]:
    n = 2000 if quick else 10_000
    rounds = 1 if quick else 3
    seconds = 600 if quick else 3600
    best: dict[str, dict[str, float]] = {}
    runs: dict[str, float] = {}
    logs: dict[str, Log] = {}
    gc.disable()  # collections would land in whichever phase happened to be running
    for _ in range(rounds):
        for name in ("queue", "naive"):
            gc.collect()
            figures = micro(name, n)
            kept = best.setdefault(name, figures)
            for key, value in figures.items():
                kept[key] = min(kept[key], value)
        for name in ("driver", "queue", "naive"):
            gc.collect()
            cpu, touches, log = run(name, n, seconds)
            runs[name] = min(runs.get(name, cpu), cpu)
            logs[name] = log
    gc.enable()
    assert logs["queue"] == logs["naive"], "the queue and the reference disagree"
    assert not logs["driver"]
    driver = runs["driver"]
    queue_run = max(runs["queue"] - driver, 1e-9)
    naive_run = max(runs["naive"] - driver, 1e-9)
    results: dict[str, Any] = {
        "quick": quick,
        "timers": n,
        "rounds": rounds,
        "micro": {k: {f: round(v, 1) for f, v in d.items()} for k, d in best.items()},
        "ratios": {
            f"{f[:-2]}QueueOverNaive": round(best["queue"][f] / best["naive"][f], 3)
            for f in ("armNs", "touchNs", "cancelNs")
        },
        "run": {
            "clockSeconds": seconds,
            "touches": touches,
            "eventsFired": len(logs["queue"]),
            "sameEventsAsNaive": True,
            "driverSeconds": round(driver, 4),
            "queueSeconds": round(queue_run, 4),
            "naiveSeconds": round(naive_run, 4),
            "queueOverNaive": round(queue_run / naive_run, 3),
        },
    }
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = main(args.quick)
    path = write_results("timers-quick" if args.quick else "timers", results)
    print(f"wrote {path}")
    print(results)
