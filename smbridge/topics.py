"""State of a subscribable topic, kept equal on the Notifier and the bridge.

A topic (``queue:Sales``, ``directory:Company Directory``) is a set of items
keyed by ``id``. Its snapshot lists them; its change events carry ``added``,
``changed`` (whole items, replacing) and ``removed`` (ids). Both sides apply the
same events with :meth:`TopicState.apply`, so the bridge can answer a new
watcher from its copy and that snapshot is exactly the state before the next
event it will forward.
"""

from __future__ import annotations

from typing import Any

Item = dict[str, Any]

QUEUE_PREFIX = "queue:"
DIRECTORY_PREFIX = "directory:"


def queue_topic(name: str) -> str:
    return QUEUE_PREFIX + name


def directory_topic(name: str) -> str:
    return DIRECTORY_PREFIX + name


class TopicState:
    """Items of one topic, in arrival order, keyed by their ``id``."""

    __slots__ = ("items", "key", "name", "list_field")

    def __init__(self, name: str, key: str, list_field: str, items: list[Item] | None = None):
        self.name = name  # the object's own name: queue or directory name
        self.key = key  # payload field carrying the name: "queue" or "name"
        self.list_field = list_field  # snapshot field carrying the items
        self.items: dict[Any, Item] = {}
        for item in items or ():
            self.items[item["id"]] = item

    @classmethod
    def for_topic(cls, topic: str, items: list[Item] | None = None) -> TopicState:
        """Build the state for a topic name (``queue:…`` or ``directory:…``)."""
        if topic.startswith(QUEUE_PREFIX):
            return cls(topic[len(QUEUE_PREFIX) :], "queue", "interactions", items)
        if topic.startswith(DIRECTORY_PREFIX):
            return cls(topic[len(DIRECTORY_PREFIX) :], "name", "entries", items)
        raise ValueError(f"unknown topic kind: {topic!r}")

    @classmethod
    def from_snapshot(cls, topic: str, snapshot: dict[str, Any]) -> TopicState:
        state = cls.for_topic(topic)
        for item in snapshot.get(state.list_field, ()):
            state.items[item["id"]] = item
        return state

    def snapshot(self) -> dict[str, Any]:
        return {self.key: self.name, self.list_field: list(self.items.values())}

    def apply(self, change: dict[str, Any]) -> None:
        """Apply one change event (``added``/``changed``/``removed``)."""
        items = self.items
        for item in change.get("added", ()):
            items[item["id"]] = item
        for item in change.get("changed", ()):
            items[item["id"]] = item
        for item_id in change.get("removed", ()):
            items.pop(item_id, None)

    def change(
        self,
        added: list[Item] = (),  # type: ignore[assignment]
        changed: list[Item] = (),  # type: ignore[assignment]
        removed: list[Any] = (),  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Apply a change made here and return its event payload."""
        event = {
            self.key: self.name,
            "added": list(added),
            "changed": list(changed),
            "removed": list(removed),
        }
        self.apply(event)
        return event
