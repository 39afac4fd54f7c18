"""What an application sees of its session keepers, for the keeper end-to-end tests."""

from __future__ import annotations

from smbridge.client.keeper import KeeperEvent, SessionKeeper
from smbridge.codec import Frame


class KeeperListener:
    """The interaction ids QueueChanged added and the events of the keepers attached."""

    def __init__(self, *keepers: SessionKeeper) -> None:
        self.ids: list[str] = []
        self.events: list[KeeperEvent] = []
        for keeper in keepers:
            self.attach(keeper)

    def attach(self, keeper: SessionKeeper) -> None:
        keeper.add_listener(self.notification)
        keeper.add_event_listener(self.events.append)

    def notification(self, name: str, frame: Frame) -> None:
        if name == "QueueChanged":
            self.ids.extend(i["id"] for i in frame.parsed().get("added", ()))

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]
