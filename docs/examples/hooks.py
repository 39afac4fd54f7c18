"""An example session hook (docs/lifecycle.md): run it with

    twistd -n smbridge --session-hook hooks.WorkgroupQueues ...

with this folder on PYTHONPATH. It refuses users on a block list, lets every
other session watch only the queues named after the user's workgroups (and
make no calls but status changes and the call controls), caps sessions per
user, and keeps a count of live sessions that ``destroy`` brings back down.
tests/test_lifecycle_hook.py imports and runs it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from smbridge.session.control import SessionControl
from smbridge.session.hook import CannotCreateSession


class WorkgroupQueues:
    """Vet sessions and restrict each to its user's workgroup queues."""

    blocked = frozenset({"contractor1"})
    max_per_user = 3

    def __init__(self) -> None:
        self.live: Counter[str] = Counter()  # user -> sessions created and not yet destroyed

    def create(self, info: Any, control: SessionControl) -> None:
        if info.user_id in self.blocked:
            raise CannotCreateSession("blocked-user")
        if self.live[info.user_id] >= self.max_per_user:
            raise CannotCreateSession("too-many-sessions")
        control.allow_watch("queue", info.workgroups)
        control.allow_requests(
            ["SetStatus", "WatchQueue", "UnwatchQueue", "MakeCall", "Pickup", "Disconnect"]
        )
        self.live[info.user_id] += 1

    def destroy(self, session: Any, reason: str) -> None:
        user = session.info.user_id
        self.live[user] -= 1
        if self.live[user] <= 0:
            del self.live[user]
