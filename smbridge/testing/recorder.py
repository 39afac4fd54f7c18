"""A recorder of the notifications a client library client receives."""

from __future__ import annotations

from typing import Any


class Recorder:
    """Collects (name, payload) of every notification a client library client receives."""

    def __init__(self, client: Any) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        client.add_listener(lambda name, frame: self.events.append((name, frame.parsed())))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [body for n, body in self.events if n == name]
