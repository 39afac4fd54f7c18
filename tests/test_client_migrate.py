"""Migrate (168,13): the keeper logs on elsewhere, restores watches, leaves the old session."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client.keeper import KeeperEvent, SessionKeeper, State
from smbridge.client.testing import FakeSite
from smbridge.codec import Frame
from smbridge.codec.catalog import MIGRATE


class MigrateTests(SynchronousTestCase):
    """Bridges old, b and c; the keeper is on old, watching Sales and the status of bob."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.site = FakeSite(self.clock)
        self.old = self.site.add("old")
        self.b = self.site.add("b", location="London")
        self.c = self.site.add("c", location="Paris")
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.events: list[KeeperEvent] = []
        self.keeper = SessionKeeper(
            None,
            "tls://old.example",
            "alice",
            "demo",
            dial=self.site.dial,
            resolve=lambda host, port: defer.succeed([]),
            clock=self.clock,
        )
        self.keeper.add_listener(self.on_notification)
        self.keeper.add_event_listener(self.events.append)
        d = self.keeper.start()
        self.clock.advance(0)
        self.first = self.successResultOf(d)
        self.keeper.watch_queue("Sales")
        self.keeper.request((171, 2), {"users": ["bob"]})
        self.clock.advance(0)
        self.site.dialed.clear()
        self.session = self.old.session_of("alice")

    def on_notification(self, name: str, frame: Frame) -> None:
        self.seen.append((name, frame.parsed()))

    def added(self) -> list[int]:
        return [
            i["n"]
            for name, body in self.seen
            if name == "QueueChanged"
            for i in body.get("added", ())
        ]

    def test_migrate_moves_to_the_first_bridge_that_accepts(self) -> None:
        """Migrate: b redirects (maintenance), c takes it; watches follow; the old is destroyed."""
        self.b.accept = False
        self.site.publish("Sales", {"id": "i1", "n": 1})
        self.old.migrate(self.session, "drain")
        self.clock.advance(0)
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.site.dialed, ["b.example:3952", "c.example:3952"])
        self.assertEqual(self.keeper.server["name"], "c")  # type: ignore[index]
        self.assertEqual(self.c.requests, ["CreateSession", "WatchQueue", "WatchStatus"])
        self.assertEqual(self.old.requests[-1], "DestroySession")
        self.assertEqual(self.old.sessions, {})
        self.assertEqual([e.kind for e in self.events], ["migrated", "resynchronised"])
        self.assertEqual(self.events[0].reason, "drain")
        snapshots = self.events[1].snapshots
        self.assertEqual(sorted(snapshots), ["queue:Sales", "status:bob"])
        self.assertEqual([i["n"] for i in snapshots["queue:Sales"]["interactions"]], [1])
        self.assertEqual(self.seen[-1][0], "Migrate")
        self.site.publish("Sales", {"id": "i2", "n": 2})
        self.clock.advance(0)
        self.assertEqual(self.added(), [1, 2])

    def test_migrate_never_dials_the_bridge_that_asked(self) -> None:
        """The leaving bridge is skipped even when the notice's roster names it first."""
        roster = [self.old.entry(), self.c.entry()]
        self.old.notify(self.session, MIGRATE, {"roster": roster, "reason": "shutdown"})
        self.clock.advance(0)
        self.assertEqual(self.site.dialed, ["c.example:3952"])
        self.assertEqual(self.keeper.server["name"], "c")  # type: ignore[index]

    def test_failed_migrate_stays_on_the_old_session(self) -> None:
        """When no bridge of the roster takes the logon, the still-open old session is kept."""
        self.b.up = False
        self.c.up = False
        self.old.migrate(self.session)
        self.clock.advance(0)
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.keeper.session_id, self.session.id)
        self.assertEqual(self.events, [])
        self.site.publish("Sales", {"id": "i3", "n": 3})
        self.clock.advance(0)
        self.assertEqual(self.added(), [3])

    def test_old_connection_lost_during_migrate_is_not_resumed(self) -> None:
        """The old connection dropping mid-migration neither resumes it nor stops the move."""
        self.b.up = False
        original = self.site.dial

        def dial_and_cut(target: dict[str, Any]) -> Any:
            self.old.cut()
            return original(target)

        self.keeper._dial = dial_and_cut
        self.old.migrate(self.session)
        self.clock.advance(0)
        self.assertEqual(self.keeper.state, State.CONNECTED)
        self.assertEqual(self.keeper.server["name"], "c")  # type: ignore[index]
        self.assertNotIn("ResumeSession", self.old.requests)
        self.assertFalse(any(conn.open for conn in self.old.connections))
        self.assertEqual([e.kind for e in self.events], ["migrated", "resynchronised"])
