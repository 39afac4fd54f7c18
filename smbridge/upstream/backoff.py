"""When to dial the Notifier again: quick after a lasting link drops, slower while it keeps failing.

Pure over an injected clock. Two counts drive the delay:

- ``failures``: failed attempts since the link was last up (no connection, a TLS
  failure, a refused Register, a link lost before it was registered);
- ``flaps``: links that dropped within ``stable_after`` seconds of coming up,
  since a link last stayed up that long. Only a lasting link resets it.

A dropped link gets quick retries (at most ``QUICK_RETRY`` seconds, jittered), one
per address, when it had lasted, and for the first ``QUICK_FLAPS`` short-lived
links in a row, so that a pair that switches over and straight back is followed
at once. Past that allowance every further flap counts like a failure, so a link
that reaches ``up`` and falls at once (a frame over the link limit, a Notifier
that drops it) is redialled less and less often instead of several times a
second. A refusal that names the primary also buys one quick retry.

Otherwise the delay is ``initial * factor ** (failures + flaps past the
allowance)``, capped at ``max_delay``, plus ``jitter()`` (below one second) so
that bridges that lost the same Notifier do not all come back at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

QUICK_RETRY = 0.2  # seconds: upper bound of a quick (jittered) retry
STABLE_AFTER = 10.0  # seconds a link must stay up before its drop is news, not a flap
QUICK_FLAPS = 2  # short-lived links in a row still retried at once (switch over, switch back)


class LinkBackoff:
    """The delay before each attempt to dial the Notifier."""

    def __init__(
        self,
        clock: IReactorTime,
        initial: float = 0.5,
        factor: float = 1.7,
        max_delay: float = 30.0,
        stable_after: float = STABLE_AFTER,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.clock = clock
        self.initial = initial
        self.factor = factor
        self.max_delay = max_delay
        self.stable_after = stable_after
        self.jitter = jitter
        self.failures = 0  # failed attempts since the link was last up
        self.flaps = 0  # short-lived links in a row, since one last stayed up stable_after
        self.quick_left = 0
        self.up_since: float | None = None

    def failed(self) -> None:
        """An attempt failed before the link was up."""
        self.failures += 1

    def came_up(self) -> None:
        """The link is registered."""
        self.failures = 0
        self.up_since = self.clock.seconds()

    def went_down(self, addresses: int = 1) -> bool:
        """An up link dropped: True if it had lasted (news), False if it flapped."""
        since, self.up_since = self.up_since, None
        lasted = since is not None and self.clock.seconds() - since >= self.stable_after
        self.flaps = 0 if lasted else self.flaps + 1
        if self.flaps <= QUICK_FLAPS:
            self.quick(max(1, addresses))
        return lasted

    def quick(self, count: int = 1) -> None:
        """Make the next ``count`` attempts quick (the counts are kept)."""
        self.quick_left = max(self.quick_left, count)

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        if self.quick_left > 0:
            self.quick_left -= 1
            return QUICK_RETRY * self.jitter()
        exponent = self.failures + max(0, self.flaps - QUICK_FLAPS)
        base = min(self.initial * self.factor**exponent, self.max_delay)
        return base + self.jitter()
