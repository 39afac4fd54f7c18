"""Event counts that the metrics endpoint reads: logons, redirects, resumes, refusals.

The parts that see an event count it here with a name and labels; the admin
package turns the counts into Prometheus counters at scrape time. Keeping the
counts in a plain object (one per bridge) means the cores need no metrics
library and tests can read the numbers directly.
"""

from __future__ import annotations

from collections.abc import Iterator

Labels = tuple[tuple[str, str], ...]


class Counters:
    """Monotonic counts keyed by a name and a sorted set of labels."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, Labels], int] = {}

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self._counts[key] = self._counts.get(key, 0) + amount

    def get(self, name: str, **labels: str) -> int:
        """The count for exactly these labels (0 when never counted)."""
        return self._counts.get((name, tuple(sorted(labels.items()))), 0)

    def total(self, name: str) -> int:
        """The count summed over every label set."""
        return sum(n for (k, _), n in self._counts.items() if k == name)

    def __iter__(self) -> Iterator[tuple[str, dict[str, str], int]]:
        for (name, labels), count in sorted(self._counts.items()):
            yield name, dict(labels), count
