"""A site-wide ``tenant-limit`` answer: no other bridge is tried; the keeper waits and retries."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client.discovery import try_in_order
from smbridge.client.keeper import KeeperEvent, SessionKeeper, State
from smbridge.client.order import Attempt
from smbridge.client.protocol import ClientError
from smbridge.client.testing import FakeSite

FULL = ("tenant-limit", {"tenant": "acme", "limit": "sessions", "max": 2, "reason": "full"})


class TenantLimitAnswers(SynchronousTestCase):
    """Bridges e1, e2, e3 of one site; the Notifier refuses the tenant everywhere."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.site = FakeSite(self.clock)
        for name in ("e1", "e2", "e3"):
            self.site.add(name)
        self.times: list[float] = []
        self.events: list[KeeperEvent] = []

    def dial(self, target: dict[str, Any]) -> defer.Deferred[Any]:
        self.times.append(self.clock.seconds())
        return self.site.dial(target)

    def plan(self) -> list[Attempt]:
        return [
            Attempt(0.0, {"host": b.host, "port": b.port, "name": b.name})
            for b in self.site.bridges
        ]

    def test_tenant_limit_stops_the_search_at_once(self) -> None:
        """tenant-limit from the first bridge fails the search there, like logon-failed."""
        self.site.refusal = FULL
        d = try_in_order(self.plan(), self.dial, lambda client: client.logon("alice", "demo"))
        self.clock.advance(0)
        error = self.failureResultOf(d, ClientError).value
        self.assertEqual((error.code, error.body["limit"]), ("tenant-limit", "sessions"))
        self.assertEqual(self.site.dialed, ["e1.example:3952"])

    def test_other_refusals_still_move_on(self) -> None:
        """A bridge-local refusal (not-accepting) still moves on to the next bridge."""
        self.site.bridges[0].throttle = []
        self.site.refusal = ("not-accepting", {"reason": "draining"})
        d = try_in_order(self.plan(), self.dial, lambda client: client.logon("alice", "demo"))
        self.clock.advance(0)
        error = self.failureResultOf(d, ClientError).value
        self.assertEqual(error.code, "no-bridge")
        self.assertEqual(len(self.site.dialed), 3)

    def keeper(self) -> SessionKeeper:
        keeper = SessionKeeper(
            None,
            "tls://e1.example",
            "alice",
            "demo",
            dial=self.dial,
            resolve=lambda host, port: defer.succeed([]),
            clock=self.clock,
        )
        keeper.add_event_listener(self.events.append)
        return keeper

    def test_first_logon_over_the_limit_fails_with_tenant_limit(self) -> None:
        """start() answered tenant-limit fails with it after one bridge, and ends."""
        self.site.refusal = FULL
        keeper = self.keeper()
        d = keeper.start()
        self.clock.advance(0)
        self.assertEqual(self.failureResultOf(d, ClientError).value.code, "tenant-limit")
        self.assertEqual(len(self.site.logons), 1)
        self.assertEqual((keeper.ended, self.events[-1].reason), (True, "tenant-limit"))

    def test_keeper_rounds_wait_and_retry_until_the_limit_frees(self) -> None:
        """While the tenant is full the reconnect rounds go on with growing pauses (no spin,
        no end); once it frees, the keeper logs on again and restores its watch."""
        keeper = self.keeper()
        d = keeper.start()
        self.clock.advance(0)
        self.successResultOf(d)
        e1 = self.site.bridges[0]
        watched = keeper.watch_queue("Sales")
        self.clock.advance(0)
        self.successResultOf(watched)
        e1.resume_answer = "unknown-session"
        self.site.refusal = FULL
        self.site.logons.clear()
        self.times.clear()
        e1.cut()
        for _ in range(120):  # two minutes of the keeper's clock, a second at a time
            self.clock.advance(1)
        self.assertEqual(keeper.state, State.RELOGGING)
        self.assertFalse(keeper.ended)
        refused = list(self.times)
        self.assertGreaterEqual(len(self.site.logons), 4)  # it keeps trying...
        self.assertLessEqual(len(self.site.logons), 12)  # ...at the pace of its round delays
        pauses = [b - a for a, b in zip(refused, refused[1:], strict=False)]
        # the resume, the first round at once, then pauses that grow to the backoff's cap
        self.assertEqual(pauses[0], 0.0)
        self.assertTrue(all(p >= 0.5 for p in pauses[1:]), pauses)
        self.assertEqual(pauses[-1], keeper.backoff.maximum)
        self.assertEqual(
            {b["user"] for b in self.site.logons}, {"alice"}
        )  # each time the same logon
        self.site.refusal = None
        for _ in range(31):
            self.clock.advance(1)
        self.assertEqual(keeper.state, State.CONNECTED)
        kinds = [e.kind for e in self.events]
        self.assertEqual(kinds[-2:], ["relogged", "resynchronised"])
        self.assertIn("queue:Sales", self.events[-1].snapshots)
