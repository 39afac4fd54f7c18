"""Automatic reconnect: the pure plans (order.py), the watch set, and the keeper following them."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client import ClientError
from smbridge.client.keeper import KeeperEvent, SessionKeeper, State
from smbridge.client.order import (
    Backoff,
    migrate_plan,
    reconnect_plan,
    resume_delays,
    roster_targets,
)
from smbridge.client.testing import FakeSite
from smbridge.client.watchset import WatchSet
from smbridge.codec.catalog import (
    UNWATCH_QUEUE,
    UNWATCH_STATUS,
    WATCH_QUEUE,
    WATCH_STATISTICS,
    WATCH_STATUS,
)
from smbridge.roster.attempts import reconnect_order


def t(name: str, port: int = 3952) -> dict[str, Any]:
    return {"host": f"{name}.example", "port": port, "name": name}


GROUPS = [[t("a1"), t("a2")], [t("b1")], [t("raw", 4000)]]


def names(plan: Any) -> list[str]:
    return [a.target["name"] for a in plan]


class PlanTests(SynchronousTestCase):
    def test_top_group_repeated_then_the_full_list(self) -> None:
        """Three passes of the top group, then every group once; pauses only between passes."""
        plan = reconnect_plan(GROUPS, 3, Backoff(1.0, 2.0, 30.0))
        self.assertEqual(names(plan), ["a1", "a2"] * 4 + ["b1", "raw"])
        self.assertEqual([a.delay for a in plan], [0, 0, 1, 0, 2, 0, 4, 0, 0, 0])
        self.assertEqual([a.pass_number for a in plan], [0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
        self.assertEqual([a.target for a in plan], reconnect_order(GROUPS, 3))

    def test_top_tries_is_configurable_and_passes_continue(self) -> None:
        """top_tries=1 gives one top pass; a later round keeps growing pauses up to the cap."""
        plan = reconnect_plan(GROUPS, 1, Backoff(1.0, 2.0, 5.0), first_pass=3)
        self.assertEqual(names(plan), ["a1", "a2", "a1", "a2", "b1", "raw"])
        self.assertEqual([a.delay for a in plan if a.delay], [4.0, 5.0])
        self.assertEqual(reconnect_plan([], 3), [])

    def test_plan_keeps_each_target_once_per_pass(self) -> None:
        """A target listed twice in the groups is dialed once per pass."""
        plan = reconnect_plan([[t("a"), t("a")], [t("a"), t("b")]], 2)
        self.assertEqual(names(plan), ["a", "a", "a", "b"])

    def test_resume_delays_stay_within_the_linger_time(self) -> None:
        """Attempts at once, then 1 s, 2 s, 4 s ...; their sum stays under the linger time."""
        backoff = Backoff(1.0, 2.0, 60.0)
        self.assertEqual(resume_delays(120, 4, backoff), [0, 1, 2, 4])
        self.assertEqual(resume_delays(5, 10, backoff), [0, 1, 2])
        self.assertEqual(resume_delays(0, 3, backoff), [0])

    def test_migrate_plan_is_the_roster_order_without_the_leaving_bridge(self) -> None:
        """Migrate keeps the roster's order, available first, never the bridge that asked."""
        roster = [
            {"name": "old", "fqdn": "old.example", "ports": {"tls": 1}},
            {"name": "down", "fqdn": "down.example", "available": False},
            {"name": "x", "fqdn": "x.example", "ports": {"tls": 2}},
            {"name": "x", "fqdn": "x.example", "ports": {"tls": 2}},
            "junk",
        ]
        self.assertEqual(names(migrate_plan(roster, 3952, "old")), ["x", "down"])
        self.assertEqual(roster_targets(roster, 3952, "old")[1]["port"], 3952)


class WatchSetTests(SynchronousTestCase):
    def test_record_forget_and_restore(self) -> None:
        """Watches are kept by topic; unwatch forgets; status users come back in one request."""
        w = WatchSet()
        self.assertEqual(w.record(WATCH_QUEUE, {"queue": "Sales"}), ["queue:Sales"])
        self.assertEqual(w.record(WATCH_QUEUE, {"queue": "Sales"}), [])
        self.assertEqual(
            w.record(WATCH_STATUS, {"users": ["bob", "carol"]}), ["status:bob", "status:carol"]
        )
        w.record(WATCH_STATISTICS, {"workgroup": "Support", "stats": ["waiting"]})
        w.record(WATCH_STATUS, {"users": ["dave"]})
        w.forget(UNWATCH_STATUS, {"users": ["carol"]})
        self.assertEqual(
            w.restore_requests(),
            [
                (WATCH_QUEUE, {"queue": "Sales"}),
                (WATCH_STATUS, {"users": ["bob", "dave"]}),
                (WATCH_STATISTICS, {"workgroup": "Support", "stats": ["waiting"]}),
            ],
        )
        w.forget(UNWATCH_QUEUE, {"queue": "Sales"})
        self.assertEqual(w.topics, ["status:bob", "statistics:Support", "status:dave"])
        self.assertEqual(w.record((171, 1), {"status": "Away"}), [])

    def test_snapshots_by_topic(self) -> None:
        """A WatchStatus reply is split per user; other replies map to their one topic."""
        w = WatchSet()
        reply = {"users": [{"user": "bob"}, {"user": "dave"}]}
        self.assertEqual(
            w.snapshots(WATCH_STATUS, {"users": ["bob", "dave"]}, reply),
            {"status:bob": {"user": "bob"}, "status:dave": {"user": "dave"}},
        )
        self.assertEqual(
            w.snapshots(WATCH_QUEUE, {"queue": "Q"}, {"queue": "Q"}), {"queue:Q": {"queue": "Q"}}
        )


class ReconnectOrderTests(SynchronousTestCase):
    """Bridges a1, a2 (London, the user's location) and b1 (Indy); the keeper starts on a1."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.site = FakeSite(self.clock)
        self.a1 = self.site.add("a1", location="London")
        self.a2 = self.site.add("a2", location="London")
        self.b1 = self.site.add("b1", location="Indy")
        self.events: list[KeeperEvent] = []

    def start(self, **options: Any) -> SessionKeeper:
        keeper = SessionKeeper(
            None,
            "tls://a1.example",
            "alice",
            "demo",
            dial=self.site.dial,
            resolve=lambda host, port: defer.succeed([]),
            clock=self.clock,
            rng=random.Random(7),
            backoff=Backoff(1.0, 2.0, 8.0),
            resume_tries=1,
            **options,
        )
        keeper.add_event_listener(self.events.append)
        d = keeper.start()
        self.clock.advance(0)
        self.successResultOf(d)
        self.site.dialed.clear()
        return keeper

    def advance(self, seconds: float) -> None:
        for _ in range(int(seconds * 2)):
            self.clock.advance(0.5)

    def test_top_group_is_tried_several_times_before_the_rest(self) -> None:
        """With London down, a1 and a2 are dialed three times (1, 2 s apart), then b1 takes it."""
        keeper = self.start()
        self.a1.stop()
        self.a2.stop()
        self.advance(20)
        self.assertEqual(keeper.state, State.CONNECTED)
        self.assertEqual(keeper.server["name"], "b1")  # type: ignore[index]
        dialed = [d.split(".")[0] for d in self.site.dialed]
        self.assertEqual(dialed[0], "a1")  # the resume attempt, same bridge
        top = dialed[1:-3]
        self.assertEqual(len(top), 6)
        self.assertEqual(sorted(top[:2]), ["a1", "a2"])
        self.assertEqual(top[:2] * 3, top)
        self.assertEqual(dialed[-3:], [*top[:2], "b1"])
        self.assertEqual(
            [e.kind for e in self.events], ["disconnected", "relogged", "resynchronised"]
        )

    def test_logon_failed_on_reconnect_ends_the_keeper(self) -> None:
        """A password changed meanwhile: logon-failed stops at once, nothing else is dialed."""
        keeper = self.start()
        self.a1.stop()
        self.site.password = "changed"
        self.advance(2)
        self.assertEqual(keeper.state, State.ENDED)
        self.assertEqual(self.events[-1].reason, "logon-failed")
        dialed = list(self.site.dialed)  # resume on a1, then the top group up to a2
        self.assertEqual(dialed[-1], "a2.example:3952")
        self.assertNotIn("b1.example:3952", dialed)
        self.advance(60)
        self.assertEqual(self.site.dialed, dialed)

    def test_rounds_bound_the_attempts(self) -> None:
        """rounds=2: after two full plans with no bridge the keeper ends with no-bridge."""
        keeper = self.start(rounds=2, top_tries=1)
        for bridge in (self.a1, self.a2, self.b1):
            bridge.stop()
        self.advance(60)
        self.assertEqual((keeper.state, self.events[-1].reason), (State.ENDED, "no-bridge"))
        self.assertEqual(len(self.site.dialed), 1 + 2 * 5)
        failure = self.failureResultOf(keeper.request((171, 1), {}), ClientError)
        self.assertEqual(failure.value.code, "session-ended")

    def test_redirect_during_reconnect_is_followed(self) -> None:
        """A bridge in maintenance redirects; the roster it sends is tried next."""
        keeper = self.start(top_tries=1)
        self.a1.stop()
        self.a2.accept = False
        self.advance(10)
        self.assertEqual(keeper.state, State.CONNECTED)
        self.assertEqual(keeper.server["name"], "b1")  # type: ignore[index]

    def test_logoff_while_relogging_dials_nothing_more(self) -> None:
        """logoff between reconnect passes: the pending pass never dials, the keeper has ended."""
        keeper = self.start()
        for bridge in (self.a1, self.a2, self.b1):
            bridge.stop()
        self.advance(1)
        self.assertEqual(keeper.state, State.RELOGGING)
        dialed = list(self.site.dialed)
        self.successResultOf(keeper.logoff())
        self.advance(60)
        self.assertEqual(self.site.dialed, dialed)
        self.assertEqual((keeper.state, self.events[-1].reason), (State.ENDED, "logoff"))


def test_reconnect_doc_examples() -> None:
    """The >>> examples in docs/client.md give the output written under them."""
    import doctest
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "client.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if ">>>" in b]
    assert blocks, "docs/client.md has no >>> examples"
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner()
    for i, block in enumerate(blocks):
        runner.run(parser.get_doctest(block, {}, f"client.md[{i}]", "docs/client.md", 0))
    assert runner.summarize(verbose=False).failed == 0
