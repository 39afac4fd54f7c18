"""Load watermarks: the round trip of a periodic Ping to the Notifier (sans-IO, clock injected).

Every ``interval`` seconds, while the link is up, the meter sends a Ping and
measures its round trip. Above the high watermark the site counts as loaded
until a round trip falls below the low watermark (hysteresis, so one slow
answer near the line does not flap). A Ping that takes longer than the interval
counts as at least that long as soon as the interval passes, so a Notifier that
stops answering is loaded, not silent. Each change of state is logged
(``upstream.load``). The rule that acts on it (redirect from an on-server
bridge) belongs to the roster; here the state is measured and exposed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

Ping = Callable[[], "defer.Deferred[Any]"]


class LoadMeter:
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        ping: Ping,
        *,
        interval: float = 5.0,
        high_ms: float = 500.0,
        low_ms: float = 200.0,
    ) -> None:
        if not 0 < low_ms <= high_ms:
            raise ValueError("the watermarks need 0 < low <= high")
        if interval <= 0:
            raise ValueError("the ping interval must be positive")
        self.clock = clock
        self.ping = ping
        self.interval = interval
        self.high_ms = high_ms
        self.low_ms = low_ms
        self.loaded = False
        self.last_ms: float | None = None  # the newest round trip (or lower bound)
        self.samples = 0
        self._sent_at: float | None = None  # a Ping in flight since then
        self._call: IDelayedCall | None = None
        self._running = False

    def start(self) -> None:
        self._running = True
        self._schedule()

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        if self._running and self._call is None:
            self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self._call = None
        now = self.clock.seconds()
        if self._sent_at is not None:
            # The previous Ping is still out: it has taken at least this long.
            self._observe((now - self._sent_at) * 1000.0, final=False)
        else:
            self._sent_at = now
            sent = now
            d = self.ping()
            d.addCallbacks(lambda _: self._answered(sent), self._failed)
        self._schedule()

    def _answered(self, sent: float) -> None:
        if self._sent_at == sent:
            self._sent_at = None
            self._observe((self.clock.seconds() - sent) * 1000.0, final=True)

    def _failed(self, failure: Failure) -> None:
        # The link is down or dropped: no measure (the link state says why).
        self._sent_at = None

    def _observe(self, ms: float, final: bool) -> None:
        self.last_ms = ms
        if final:
            self.samples += 1
        if not self.loaded and ms > self.high_ms:
            self._set(True, ms)
        elif self.loaded and final and ms < self.low_ms:
            self._set(False, ms)

    def _set(self, loaded: bool, ms: float) -> None:
        self.loaded = loaded
        self.log.info(
            "Notifier {state}: ping round trip {ms:.0f} ms (high {high:.0f}, low {low:.0f})",
            state="loaded" if loaded else "no longer loaded",
            ms=ms,
            high=self.high_ms,
            low=self.low_ms,
            event="upstream.load",
            loaded=loaded,
        )

    def state(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "pingMs": None if self.last_ms is None else round(self.last_ms, 1),
            "highWatermarkMs": self.high_ms,
            "lowWatermarkMs": self.low_ms,
            "intervalSeconds": self.interval,
            "samples": self.samples,
        }
