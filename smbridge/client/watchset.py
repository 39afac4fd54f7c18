"""The application's watches, pure: what to re-send to a fresh session, and its snapshots.

A fresh session (after an automatic re-logon or a Migrate) holds none of the old
session's watches, so the client re-issues them. Watches are kept by topic name
(``queue:Sales``, ``status:alice``, ``statistics:Support``, as the bridge names
them), so that watching twice is one watch and an unwatch forgets exactly what it
names. Status watches are restored in one WatchStatus, as they were asked.
"""

from __future__ import annotations

from typing import Any

from smbridge.codec.catalog import (
    UNWATCH_QUEUE,
    UNWATCH_STATISTICS,
    UNWATCH_STATUS,
    WATCH_QUEUE,
    WATCH_STATISTICS,
    WATCH_STATUS,
    MessageType,
)
from smbridge.topics import queue_topic, statistics_topic, status_topic

WATCHES = (WATCH_QUEUE, WATCH_STATUS, WATCH_STATISTICS)
UNWATCHES = (UNWATCH_QUEUE, UNWATCH_STATUS, UNWATCH_STATISTICS)


def _text(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    return value if isinstance(value, str) else None


def _users(body: dict[str, Any]) -> list[str]:
    users = body.get("users")
    return [u for u in users if isinstance(u, str)] if isinstance(users, list) else []


class WatchSet:
    """Watches by topic, in the order the application first asked for them."""

    def __init__(self) -> None:
        self._requests: dict[str, tuple[MessageType, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._requests)

    @property
    def topics(self) -> list[str]:
        return list(self._requests)

    @staticmethod
    def topics_of(message: MessageType, body: dict[str, Any]) -> list[str]:
        """The topics a watch or unwatch request names (empty for anything else)."""
        if message in (WATCH_QUEUE, UNWATCH_QUEUE):
            name = _text(body, "queue")
            return [queue_topic(name)] if name is not None else []
        if message in (WATCH_STATUS, UNWATCH_STATUS):
            return [status_topic(u) for u in _users(body)]
        if message in (WATCH_STATISTICS, UNWATCH_STATISTICS):
            name = _text(body, "workgroup")
            return [statistics_topic(name)] if name is not None else []
        return []

    def record(self, message: MessageType, body: dict[str, Any]) -> list[str]:
        """Remember a watch request; returns the topics that are new (to undo a refusal)."""
        if message not in WATCHES:
            return []
        new: list[str] = []
        if message == WATCH_STATUS:
            for user, topic in zip(_users(body), self.topics_of(message, body), strict=True):
                if topic not in self._requests:
                    new.append(topic)
                    self._requests[topic] = (WATCH_STATUS, {"users": [user]})
            return new
        for topic in self.topics_of(message, body):
            if topic not in self._requests:
                new.append(topic)
            self._requests[topic] = (message, dict(body))  # the latest stats list wins
        return new

    def forget(self, message: MessageType, body: dict[str, Any]) -> None:
        """An unwatch: forget the topics it names."""
        if message in UNWATCHES:
            self.discard(self.topics_of(message, body))

    def discard(self, topics: list[str]) -> None:
        for topic in topics:
            self._requests.pop(topic, None)

    def restore_requests(self) -> list[tuple[MessageType, dict[str, Any]]]:
        """The requests that re-establish every watch: one WatchStatus for all users."""
        out: list[tuple[MessageType, dict[str, Any]]] = []
        users: list[str] = []
        for message, body in self._requests.values():
            if message == WATCH_STATUS:
                if not users:
                    out.append((WATCH_STATUS, {"users": users}))
                users.extend(_users(body))
            else:
                out.append((message, body))
        return out

    def snapshots(
        self, message: MessageType, body: dict[str, Any], reply: dict[str, Any]
    ) -> dict[str, Any]:
        """A watch reply as ``{topic: snapshot}`` (WatchStatus answers ``{users: [...]}``)."""
        topics = self.topics_of(message, body)
        if message == WATCH_STATUS:
            snaps = reply.get("users")
            if isinstance(snaps, list) and len(snaps) == len(topics):
                return dict(zip(topics, snaps, strict=True))
            return dict.fromkeys(topics, reply)
        return dict.fromkeys(topics, reply)
