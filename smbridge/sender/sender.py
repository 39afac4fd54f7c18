"""The adapter that drives the scheduler from the reactor: one per bridge.

Client connections hand it frames only while the limiter is enabled; with the
limiter off (the default) they keep their direct, one-write-per-turn path and
the sender costs nothing. It follows the server parameters (``configure``),
releases what the scheduler says is due, and wakes itself at the scheduler's
``wake_at``. Backpressure stays with each connection (it is the producer its
transport pauses); the sender only reads how much each one holds.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.codec.catalog import Priority
from smbridge.sender.parameters import LimiterSettings, apply
from smbridge.sender.scheduler import Scheduler


class Receiver(Protocol):
    """A connection the sender writes to."""

    def __hash__(self) -> int: ...

    def deliver(self, data: bytes) -> None: ...

    def limiting_changed(self, limited: bool) -> None: ...

    def held_bytes(self) -> int: ...


class Sender:
    log = Logger()

    def __init__(self, clock: IReactorTime, settings: LimiterSettings | None = None) -> None:
        self.clock = clock
        self.settings = settings or LimiterSettings()
        self.scheduler = Scheduler(self.settings, clock.seconds())
        self.limited = self.settings.enabled
        self.errors: list[str] = []
        self.receivers: set[Receiver] = set()
        self._soon = False
        self._wake: IDelayedCall | None = None

    # --- receivers ----------------------------------------------------------
    def attach(self, receiver: Receiver) -> None:
        self.receivers.add(receiver)
        if self.limited:
            receiver.limiting_changed(True)

    def detach(self, receiver: Receiver) -> None:
        self.receivers.discard(receiver)
        self.scheduler.forget(receiver)

    # --- parameters ---------------------------------------------------------
    def configure(self, parameters: Mapping[str, Any]) -> list[str]:
        """Follow the server parameters; refused values are logged and kept as they were."""
        settings, errors = apply(self.settings, parameters)
        for error in errors:
            self.log.warn("Server parameter refused: {error}", error=error, event="sender.refused")
        self.errors = errors
        if settings != self.settings:
            self.settings = settings
            self.scheduler.configure(settings, self.clock.seconds())
            self.log.info(
                "Bandwidth limiter {state}: {total} bytes per {interval} ms, medium {medium} %",
                state="enabled" if settings.enabled else "disabled",
                total=settings.total_bytes,
                interval=settings.interval_ms,
                medium=settings.medium_percent,
                event="sender.configured",
            )
            if settings.enabled is not self.limited:
                self.limited = settings.enabled
                for receiver in list(self.receivers):
                    receiver.limiting_changed(self.limited)
            self.release()
        return errors

    # --- frames -------------------------------------------------------------
    def enqueue(self, receiver: Receiver, data: bytes) -> None:
        """Take one frame for ``receiver`` (only called while the limiter is enabled)."""
        scheduler = self.scheduler
        scheduler.enqueue(receiver, data, self.clock.seconds())
        if not scheduler.limiting:
            for released, frame in scheduler.take_released():  # under the limit: no delay
                released.deliver(frame)  # type: ignore[attr-defined]
        elif not self._soon:
            self._soon = True  # one release per turn for everything enqueued in it
            self.clock.callLater(0, self.release)

    def release(self) -> None:
        """Deliver what is due and set the wake-up for the rest."""
        self._soon = False
        out, wake = self.scheduler.due(self.clock.seconds())
        for receiver, data in out:
            receiver.deliver(data)  # type: ignore[attr-defined]
        call = self._wake
        if call is not None and call.active():
            if wake is not None and call.getTime() == wake:
                return
            call.cancel()
        self._wake = None
        if wake is not None:
            self._wake = self.clock.callLater(max(0.0, wake - self.clock.seconds()), self.release)

    # --- accounting ---------------------------------------------------------
    def held_bytes(self, receivers: Iterable[Receiver] | None = None) -> int:
        """Bytes held for sending: the limiter's queues plus every connection's backlog."""
        held = self.scheduler.queued_bytes
        for receiver in self.receivers if receivers is None else receivers:
            held += receiver.held_bytes()
        return held

    def status(self) -> dict[str, Any]:
        scheduler = self.scheduler
        settings = self.settings

        def per_class(p: Priority) -> dict[str, int]:
            stats = scheduler.stats[p]
            return {
                "sentBytes": stats.sent_bytes,
                "sentFrames": stats.sent_frames,
                "queuedBytes": stats.queued_bytes,
            }

        return {
            "limiterEnabled": settings.enabled,
            "limiting": scheduler.limiting,
            "totalBytesPerInterval": settings.total_bytes,
            "intervalMs": settings.interval_ms,
            "mediumPercent": settings.medium_percent,
            "maxPrivateBytes": settings.max_private_bytes,
            "smallMessageBytes": settings.small_message_bytes,
            "safeguardActive": False,  # the memory safeguard is not built yet (docs/sender.md)
            "lastIntervals": list(scheduler.history)[-10:],
            "byPriority": {p.value: per_class(p) for p in Priority},
            "heldBytes": self.held_bytes(),
            "refusedParameters": list(self.errors),
        }

    def session_status(self, receiver: Hashable) -> dict[str, Any]:
        by_class, queued = self.scheduler.session_stats(receiver)
        return {"sentBytes": sum(by_class.values()), "queuedBytes": queued, "byPriority": by_class}
