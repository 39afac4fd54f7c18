"""State of a subscribable topic, kept equal on the Notifier and the bridge.

Every watchable thing is a topic named ``<kind>:<name>``. Both sides apply the
same change events with :meth:`TopicState.apply`, so the bridge can answer a new
watcher from its own copy, and that snapshot is exactly the state before the next
event the watcher receives.

Two shapes of state:

- an **item set** (queues, directories, a user's My Interactions): items keyed by
  ``id``; change events carry ``added`` and ``changed`` (whole items, replacing)
  and ``removed`` (ids);
- a **record** (a user's status, a workgroup's statistics, the server
  parameters): one object; a change event carries the fields that changed, and a
  nested map field (``stats``, ``parameters``) is merged key by key, where a
  ``null`` value deletes the key.

| topic | snapshot | change events |
|---|---|---|
| ``queue:<name>`` | ``{queue, interactions}`` | QueueChanged |
| ``directory:<name>`` | ``{name, entries}`` | DirectoryChanged |
| ``user:<id>`` | ``{user, interactions}`` | MyInteractionsChanged, InteractionChanged |
| ``status:<id>`` | ``{user, status, since}`` | StatusChanged |
| ``statistics:<workgroup>`` | ``{workgroup, stats}`` | StatisticsChanged |
| ``parameters`` | ``{parameters}`` | ParametersChanged (link only) |
"""

from __future__ import annotations

from typing import Any

from smbridge.codec.catalog import (
    DIRECTORY_CHANGED,
    INTERACTION_CHANGED,
    LINK_PARAMETERS_CHANGED,
    MY_INTERACTIONS_CHANGED,
    QUEUE_CHANGED,
    STATISTICS_CHANGED,
    STATUS_CHANGED,
    MessageType,
)

Item = dict[str, Any]

QUEUE_PREFIX = "queue:"
DIRECTORY_PREFIX = "directory:"
USER_PREFIX = "user:"
STATUS_PREFIX = "status:"
STATISTICS_PREFIX = "statistics:"
PARAMETERS_TOPIC = "parameters"


def queue_topic(name: str) -> str:
    return QUEUE_PREFIX + name


def directory_topic(name: str) -> str:
    return DIRECTORY_PREFIX + name


def user_topic(user_id: str) -> str:
    return USER_PREFIX + user_id


def status_topic(user_id: str) -> str:
    return STATUS_PREFIX + user_id


def statistics_topic(workgroup: str) -> str:
    return STATISTICS_PREFIX + workgroup


# prefix -> (state class name, name field, list/map field, change events)
_KINDS: dict[str, tuple[str, str, str, tuple[MessageType, ...]]] = {
    QUEUE_PREFIX: ("items", "queue", "interactions", (QUEUE_CHANGED,)),
    DIRECTORY_PREFIX: ("items", "name", "entries", (DIRECTORY_CHANGED,)),
    USER_PREFIX: ("items", "user", "interactions", (MY_INTERACTIONS_CHANGED, INTERACTION_CHANGED)),
    STATUS_PREFIX: ("record", "user", "", (STATUS_CHANGED,)),
    STATISTICS_PREFIX: ("record", "workgroup", "stats", (STATISTICS_CHANGED,)),
}


def split_topic(topic: str) -> tuple[str, str]:
    """``"queue:Sales"`` -> ``("queue:", "Sales")``; ValueError for an unknown kind."""
    if topic == PARAMETERS_TOPIC:
        return PARAMETERS_TOPIC, ""
    for prefix in _KINDS:
        if topic.startswith(prefix) and len(topic) > len(prefix):
            return prefix, topic[len(prefix) :]
    raise ValueError(f"unknown topic {topic!r}")


def change_events(topic: str) -> tuple[MessageType, ...]:
    """The notification types that change this topic."""
    prefix, _ = split_topic(topic)
    if prefix == PARAMETERS_TOPIC:
        return (LINK_PARAMETERS_CHANGED,)
    return _KINDS[prefix][3]


class TopicState:
    """The state of one topic; :meth:`for_topic` builds the right shape."""

    name: str  # the object's own name (queue, directory, user id, workgroup)
    key: str  # the payload field that carries the name

    @classmethod
    def for_topic(cls, topic: str, items: list[Item] | None = None) -> TopicState:
        prefix, name = split_topic(topic)
        if prefix == PARAMETERS_TOPIC:
            return RecordState("", "", "parameters")
        shape, key, field, _ = _KINDS[prefix]
        if shape == "items":
            return ItemSetState(name, key, field, items)
        return RecordState(name, key, field)

    @classmethod
    def from_snapshot(cls, topic: str, snapshot: dict[str, Any]) -> TopicState:
        state = cls.for_topic(topic)
        state.load(snapshot)
        return state

    def load(self, snapshot: dict[str, Any]) -> None:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, change: dict[str, Any], message: MessageType | None = None) -> None:
        """Apply one change event (``message`` is its type, when the topic has several)."""
        raise NotImplementedError


class ItemSetState(TopicState):
    """Items in arrival order, keyed by their ``id``."""

    __slots__ = ("items", "key", "name", "list_field")

    def __init__(self, name: str, key: str, list_field: str, items: list[Item] | None = None):
        self.name = name
        self.key = key
        self.list_field = list_field  # snapshot field carrying the items
        self.items: dict[Any, Item] = {}
        for item in items or ():
            self.items[item["id"]] = item

    def load(self, snapshot: dict[str, Any]) -> None:
        for item in snapshot.get(self.list_field, ()):
            self.items[item["id"]] = item

    def snapshot(self) -> dict[str, Any]:
        return {self.key: self.name, self.list_field: list(self.items.values())}

    def apply(self, change: dict[str, Any], message: MessageType | None = None) -> None:
        items = self.items
        if message == INTERACTION_CHANGED:
            item = change.get("interaction")
            if isinstance(item, dict) and item.get("id") in items:
                items[item["id"]] = item
            return
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


class RecordState(TopicState):
    """One object; ``merge_field`` (``stats``, ``parameters``) is merged key by key."""

    __slots__ = ("key", "name", "merge_field", "record")

    def __init__(self, name: str, key: str, merge_field: str = "") -> None:
        self.name = name
        self.key = key
        self.merge_field = merge_field
        self.record: dict[str, Any] = {key: name} if key else {}
        if merge_field:
            self.record[merge_field] = {}

    def load(self, snapshot: dict[str, Any]) -> None:
        self.record = {}
        if self.key:
            self.record[self.key] = self.name
        if self.merge_field:
            self.record[self.merge_field] = {}
        self.apply(snapshot)

    def snapshot(self) -> dict[str, Any]:
        record = dict(self.record)
        if self.merge_field:
            record[self.merge_field] = dict(record[self.merge_field])
        return record

    def apply(self, change: dict[str, Any], message: MessageType | None = None) -> None:
        for field, value in change.items():
            if field == self.key or field == "at":  # "at" stamps the event, not the state
                continue
            if field == self.merge_field and isinstance(value, dict):
                merged = self.record[field]
                for k, v in value.items():
                    if v is None:
                        merged.pop(k, None)
                    else:
                        merged[k] = v
            else:
                self.record[field] = value

    def change(self, **fields: Any) -> dict[str, Any]:
        """Apply a change made here and return its event payload."""
        event = {self.key: self.name, **fields} if self.key else dict(fields)
        self.apply(event)
        return event
