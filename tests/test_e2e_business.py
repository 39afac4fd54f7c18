"""End to end, several sessions: fan-out, snapshot consistency, per-user delivery, visibility."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge.client import ClientError, connect
from smbridge.codec import catalog as c
from smbridge.testing import Recorder, http_json, poll, start_site
from smbridge.topics import TopicState


class Business(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        self.site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-e2e-")), max_watches=5
        )
        self.addCleanup(self.site.stop)
        self.notifier = self.site.notifier.notifier
        yield self._control("POST", "/api/traffic", {"callsPerSecond": 0})

    def _control(self, method: str, path: str, body: Any = None) -> defer.Deferred:
        return http_json(reactor, method, f"{self.site.control_url}{path}", body)

    @defer.inlineCallbacks
    def _logon(self, user: str) -> Any:
        client = yield connect(
            reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
        )
        self.addCleanup(client.close)
        reply = yield client.logon(user, "demo")
        return client, reply, Recorder(client)

    @defer.inlineCallbacks
    def test_queue_snapshot_plus_events_equals_the_notifier_under_traffic(self):
        """Under live traffic, a watcher's snapshot plus its events equals the Notifier's queue."""
        a, _, rec_a = yield self._logon("agent1")
        yield self._control("POST", "/api/traffic", {"callsPerSecond": 40, "seed": 3})
        snap_a = yield a.watch_queue("Sales")
        yield task.deferLater(reactor, 0.5, lambda: None)  # let traffic run between the watches
        b, _, rec_b = yield self._logon("agent2")
        snap_b = yield b.watch_queue("Sales")
        yield task.deferLater(reactor, 0.5, lambda: None)
        yield self._control("POST", "/api/traffic", {"callsPerSecond": 0})
        # quiet: the last events have been delivered when both copies match the Notifier
        truth = self.notifier.topics["queue:Sales"]
        states = []
        for snap, rec in ((snap_a, rec_a), (snap_b, rec_b)):
            state = TopicState.from_snapshot("queue:Sales", snap)
            states.append((state, rec))

        def replayed(state, rec):
            copy = TopicState.from_snapshot("queue:Sales", state.snapshot())
            for body in rec.of("QueueChanged"):
                copy.apply(body)
            return copy.snapshot()

        yield poll(lambda: all(replayed(s, r) == truth.snapshot() for s, r in states))
        self.assertGreater(len(rec_a.of("QueueChanged")), len(rec_b.of("QueueChanged")))
        state = yield self._control("GET", "/api/state")
        self.assertEqual(state[1]["topics"]["queue:Sales"]["subscribers"], 1)

    @defer.inlineCallbacks
    def test_per_user_events_and_status_fan_out(self):
        """A call placed reaches the caller's sessions only; a status set reaches its watchers."""
        a1, r1, rec1 = yield self._logon("agent1")
        a2, _, rec2 = yield self._logon("agent1")
        b, _, rec_b = yield self._logon("agent2")
        self.assertEqual(r1["myInteractions"], [])
        watched = yield b.request(c.WATCH_STATUS, {"users": ["agent1"]})
        self.assertEqual(watched["users"][0]["user"], "agent1")
        placed = yield a1.request(c.MAKE_CALL, {"target": "+1 317 555 0123"})
        call_id = placed["interaction"]["id"]
        yield poll(lambda: rec1.of("MyInteractionsChanged") and rec2.of("MyInteractionsChanged"))
        for rec in (rec1, rec2):
            added = rec.of("MyInteractionsChanged")[0]["added"]
            self.assertEqual([i["id"] for i in added], [call_id])
        yield a1.request(c.SET_STATUS, {"status": "Away"})
        yield poll(lambda: rec_b.of("StatusChanged"))
        self.assertEqual(rec_b.of("StatusChanged")[-1]["status"], "Away")
        self.assertEqual(rec_b.of("MyInteractionsChanged"), [])
        self.assertEqual(rec_b.of("InteractionChanged"), [])
        # a third session of agent1 starts from the bridge's copy of My Interactions
        _, r3, _ = yield self._logon("agent1")
        self.assertIn(call_id, [i["id"] for i in r3["myInteractions"]])

    @defer.inlineCallbacks
    def test_bad_watches_get_clear_errors(self):
        """Unknown queue, user or workgroup get not-found; the sixth watch gets too-many-watches."""
        a, _, _ = yield self._logon("agent1")
        for message, body in (
            (c.WATCH_QUEUE, {"queue": "Nope"}),
            (c.WATCH_STATUS, {"users": ["ghost"]}),
            (c.WATCH_STATISTICS, {"workgroup": "Nope"}),
            (c.GET_DIRECTORY, {"name": "Nope"}),
        ):
            with self.assertRaises(ClientError) as caught:
                yield a.request(message, body)
            self.assertEqual(caught.exception.code, "not-found", message)
        for queue in ("Sales", "Support", "Billing"):
            yield a.watch_queue(queue)
        yield a.request(c.WATCH_STATISTICS, {"workgroup": "Sales"})
        yield a.get_directory("Company Directory")
        with self.assertRaises(ClientError) as caught:
            yield a.request(c.WATCH_STATUS, {"users": ["agent2"]})
        self.assertEqual(caught.exception.code, "too-many-watches")
        with self.assertRaises(ClientError) as caught:
            yield a.request(c.PICKUP, {"interactionId": "no-such-call"})
        self.assertEqual(caught.exception.code, "not-found")  # the Notifier's own reason

    @defer.inlineCallbacks
    def test_visibility_filtering_end_to_end(self):
        """With restriction on, a Sales agent never gets a Support-only entry; a supervisor does."""
        sales, _, rec_sales = yield self._logon("agent1")  # view:Sales in the demo site
        boss, _, rec_boss = yield self._logon("supervisor1")  # view rights on every workgroup
        code, _ = yield self._control("POST", "/api/parameters", {"RestrictUserVisibility": "Yes"})
        self.assertEqual(code, 200)
        yield poll(
            lambda: self.site.bridge.router.parameters().get("RestrictUserVisibility") == "Yes"
        )
        mine = yield sales.get_directory("Company Directory")
        everyone = yield boss.get_directory("Company Directory")
        self.assertTrue(all("Sales" in e["workgroups"] for e in mine["entries"]))
        self.assertGreater(len(everyone["entries"]), len(mine["entries"]))
        hidden = {
            "id": "temp9",
            "displayName": "Temp Support",
            "extension": "1999",
            "location": "London",
            "workgroups": ["Support"],
        }
        seen = {
            "id": "temp8",
            "displayName": "Temp Sales",
            "extension": "1998",
            "location": "London",
            "workgroups": ["Sales"],
        }
        code, _ = yield self._control(
            "POST",
            "/api/publish",
            {
                "objectType": 174,
                "eventId": 3,
                "topic": "directory:Company Directory",
                "payload": {
                    "name": "Company Directory",
                    "added": [hidden, seen],
                    "changed": [],
                    "removed": [],
                },
            },
        )
        self.assertEqual(code, 200)
        yield poll(lambda: rec_boss.of("DirectoryChanged") and rec_sales.of("DirectoryChanged"))
        self.assertEqual(len(rec_boss.of("DirectoryChanged")[0]["added"]), 2)
        found = yield sales.request(
            c.SEARCH_DIRECTORY, {"name": "Company Directory", "query": "temp"}
        )
        targets = yield sales.request(c.GET_TRANSFER_TARGETS, {"query": "temp"})
        self.assertEqual([e["id"] for e in found["entries"]], ["temp8"])
        self.assertEqual([e["id"] for e in targets["entries"]], ["temp8"])
        everything = [str(body) for _, body in rec_sales.events] + [str(mine)]
        self.assertFalse([text for text in everything if "temp9" in text])
