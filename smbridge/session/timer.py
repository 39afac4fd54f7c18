"""The session timer: imminent notice and expiry, restarted by activity.

Every request restarts the timer, so ``touch()`` is on the hot path: it only moves
the deadline. The one pending DelayedCall notices a moved deadline when it fires
and sleeps again, instead of being cancelled and rescheduled per request.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from smbridge.session.negotiate import imminent_lead


class SessionTimer:
    def __init__(
        self,
        clock: IReactorTime,
        timeout: float,
        notify_imminent: bool,
        on_imminent: Callable[[float], None],
        on_expire: Callable[[], None],
    ) -> None:
        self._clock = clock
        self.timeout = timeout
        self._notify = notify_imminent
        self._lead = imminent_lead(timeout)
        self._on_imminent = on_imminent
        self._on_expire = on_expire
        self.deadline = clock.seconds() + timeout
        self._warned_for: float | None = None  # the deadline an imminent notice was sent for
        self._call: IDelayedCall | None = None
        self._schedule()

    def touch(self) -> None:
        """Restart the timeout from now."""
        self.deadline = self._clock.seconds() + self.timeout

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    @property
    def active(self) -> bool:
        return self._call is not None

    def _next_wake(self) -> float:
        if self._notify and self._warned_for != self.deadline:
            return self.deadline - self._lead
        return self.deadline

    def _schedule(self) -> None:
        delay = max(0.0, self._next_wake() - self._clock.seconds())
        self._call = self._clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        if now >= self.deadline:
            self._on_expire()
            return
        if self._notify and self._warned_for != self.deadline and now >= self.deadline - self._lead:
            self._warned_for = self.deadline
            self._on_imminent(self.deadline - now)
        self._schedule()
