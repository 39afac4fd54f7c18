"""What a session may watch and call: the session hook's filters (Glacier2's SessionControl).

A hook restricts a session while deciding to create it (hook.py); the router
checks every request against the session's control and refuses the others with
error ``forbidden``. A control nobody restricted allows everything.
"""

from __future__ import annotations

from collections.abc import Iterable

from smbridge.codec.catalog import (
    CATALOG,
    CREATE_SESSION,
    DESTROY_SESSION,
    GET_SERVERS,
    GET_VERSION,
    HEARTBEAT,
    RESUME_SESSION,
    MessageType,
)
from smbridge.topics import DIRECTORY_PREFIX, QUEUE_PREFIX, STATISTICS_PREFIX, STATUS_PREFIX

# Watch categories a hook may restrict, by the topic prefix their watches hold.
WATCH_CATEGORIES: dict[str, str] = {
    "queue": QUEUE_PREFIX,
    "status": STATUS_PREFIX,
    "statistics": STATISTICS_PREFIX,
    "directory": DIRECTORY_PREFIX,
}
# Requests a session can always make: keeping itself alive and leaving.
ALWAYS_ALLOWED: frozenset[MessageType] = frozenset(
    {CREATE_SESSION, DESTROY_SESSION, HEARTBEAT, GET_VERSION, RESUME_SESSION, GET_SERVERS}
)
_BY_NAME: dict[str, MessageType] = {entry.name: key for key, entry in CATALOG.items()}


class SessionControl:
    """The filters of one session; unrestricted until a hook calls ``allow_*``."""

    __slots__ = ("_watch", "_requests")

    def __init__(self) -> None:
        self._watch: dict[str, frozenset[str]] = {}  # topic prefix -> allowed names
        self._requests: frozenset[MessageType] | None = None

    @property
    def restricted(self) -> bool:
        return bool(self._watch) or self._requests is not None

    def allow_watch(self, category: str, names: Iterable[str]) -> None:
        """Let the session watch only ``names`` of ``category`` (queue, status,
        statistics or directory); calling again replaces the list."""
        prefix = WATCH_CATEGORIES.get(category)
        if prefix is None:
            raise ValueError(
                f"unknown watch category {category!r}: one of {', '.join(WATCH_CATEGORIES)}"
            )
        self._watch[prefix] = frozenset(names)

    def allow_requests(self, names: Iterable[str]) -> None:
        """Let the session make only these requests (catalog names such as ``MakeCall``),
        besides the ones it always may (Heartbeat, DestroySession...)."""
        allowed: set[MessageType] = set()
        for name in names:
            key = _BY_NAME.get(name)
            if key is None or CATALOG[key].notification:
                raise ValueError(f"unknown request {name!r}")
            allowed.add(key)
        self._requests = frozenset(allowed)

    def may_request(self, message: MessageType) -> bool:
        requests = self._requests
        return requests is None or message in requests or message in ALWAYS_ALLOWED

    def may_watch(self, topic: str) -> bool:
        prefix, sep, name = topic.partition(":")
        allowed = self._watch.get(prefix + sep)
        return allowed is None or name in allowed
