"""How long the bridge waits on the Notifier: per-request deadlines and link silence (pure).

:class:`PendingTable` holds the requests in flight on one link, in the order they
were sent, each with the time it was sent. With a ``timeout`` every request
expires that many seconds after it was sent (``expire(now)`` hands back the
expired ones, oldest first); an answer that arrives after that finds nothing in
the table and is dropped, so a waiter is answered exactly once. All requests share
one timeout, so the oldest always expires first: one timer serves the table.

:class:`Silence` says when a link counts as dead: something was asked (a Ping,
any request) and nothing at all came back for ``dead_after`` seconds. Any frame
from the Notifier shows it is alive; it restarts the wait when requests are still
out, and ends it when none are. A request that timed out still counts as
unanswered: the silence is measured from the first request after the last frame
heard, not from the requests still in the table.

No I/O and no reactor: times are the caller's ``clock.seconds()``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class PendingTable(Generic[T]):
    """Requests in flight by id, oldest first, each expiring ``timeout`` seconds after sending."""

    def __init__(self, timeout: float | None = None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("the request timeout must be positive (or None: no timeout)")
        self.timeout = timeout
        self._items: dict[int, tuple[T, float]] = {}  # insertion order is sending order

    def __len__(self) -> int:
        return len(self._items)

    def add(self, request_id: int, waiter: T, now: float) -> None:
        self._items[request_id] = (waiter, now)

    def take(self, request_id: int) -> T | None:
        """The waiter for an answer, removed; None when unknown (expired, or never asked)."""
        item = self._items.pop(request_id, None)
        return None if item is None else item[0]

    def next_deadline(self) -> float | None:
        """When the oldest request expires; None with no timeout or nothing in flight."""
        if self.timeout is None or not self._items:
            return None
        _, sent = next(iter(self._items.values()))
        return sent + self.timeout

    def expire(self, now: float) -> list[T]:
        """Remove and return the waiters whose deadline has passed, oldest first."""
        if self.timeout is None:
            return []
        expired: list[T] = []
        for request_id, (waiter, sent) in list(self._items.items()):
            if sent + self.timeout > now:
                break
            del self._items[request_id]
            expired.append(waiter)
        return expired

    def drain(self) -> list[T]:
        """Remove and return every waiter (the link is gone)."""
        waiters = [waiter for waiter, _ in self._items.values()]
        self._items.clear()
        return waiters


class Silence:
    """Whether a link has been silent too long while the bridge waits for an answer."""

    def __init__(self, dead_after: float | None = None) -> None:
        if dead_after is not None and dead_after <= 0:
            raise ValueError("the dead-after time must be positive (or None: never)")
        self.dead_after = dead_after
        self.waiting_since: float | None = None  # the first request since the last frame heard

    def asked(self, now: float) -> None:
        """A request went out."""
        if self.waiting_since is None:
            self.waiting_since = now

    def heard(self, now: float, still_waiting: bool) -> None:
        """A frame came in; ``still_waiting``: requests are still in flight."""
        self.waiting_since = now if still_waiting else None

    def deadline(self) -> float | None:
        """When the link counts as dead if nothing comes in before; None: not waiting."""
        if self.dead_after is None or self.waiting_since is None:
            return None
        return self.waiting_since + self.dead_after

    def dead(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def silent_for(self, now: float) -> float:
        return 0.0 if self.waiting_since is None else now - self.waiting_since
