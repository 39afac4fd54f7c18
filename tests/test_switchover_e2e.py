"""End to end on loopback: a Notifier pair, one bridge, many sessions, three switchovers."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.notifier.sizing import sizing_site
from smbridge.testing import SwitchoverWatcher, http_json, poll, start_pair

SESSIONS = 200


class SwitchoverEndToEnd(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        work = Path(tempfile.mkdtemp(prefix="smbridge-pair-"))
        site = sizing_site(SESSIONS, supervisors=0, workgroups=2)
        self.pair = yield start_pair(reactor, work, site, detection=1.0)
        self.addCleanup(self.pair.stop)
        for side in ("a", "b"):
            yield self._quiet(side)
        self.watchers: list[SwitchoverWatcher] = []

    @defer.inlineCallbacks
    def _quiet(self, side: str) -> Any:
        url = f"{self.pair.control_url(side)}/api/traffic"
        yield http_json(reactor, "POST", url, {"callsPerSecond": 0})

    @defer.inlineCallbacks
    def _logon_all(self) -> Any:
        port = self.pair.bridge.port
        for n in range(1, SESSIONS + 1):
            client = yield connect(reactor, f"tcp://127.0.0.1:{port}")
            self.addCleanup(client.close)
            user = f"agent{n}"
            yield client.logon(user, "demo")
            queue = "WG1" if n <= SESSIONS // 2 else "WG2"
            yield client.watch_queue(queue)
            self.watchers.append(SwitchoverWatcher(client, user, queue))

    @defer.inlineCallbacks
    def _publish(self, side: str, tag: str) -> Any:
        for queue in ("WG1", "WG2"):
            call = {"id": f"{tag}-{queue}", "state": "alerting", "queue": queue}
            body = {"queue": queue, "added": [call], "changed": [], "removed": []}
            code, answer = yield http_json(
                reactor,
                "POST",
                f"{self.pair.control_url(side)}/api/publish",
                {"objectType": 173, "eventId": 3, "topic": f"queue:{queue}", "payload": body},
            )
            self.assertEqual((code, answer["delivered"]), (200, 1))

    @defer.inlineCallbacks
    def _switched(self, count: int, primary: str, tag: str) -> Any:
        """Every session saw ``count`` completions; ``primary``'s next event reaches all."""
        yield poll(lambda: all(w.completed() >= count for w in self.watchers), deadline=30)
        yield poll(lambda: self.pair.bridge.upstream.up, deadline=10)
        self.assertEqual(self.pair.bridge.upstream.registered["cic"]["name"], f"cic-{primary}")
        yield self._publish(primary, tag)
        yield poll(lambda: all(f"{tag}-{w.queue}" in w.events for w in self.watchers), deadline=30)

    @defer.inlineCallbacks
    def test_sessions_survive_switchover_crash_and_switch_back(self) -> Any:
        """Switch over, kill the primary, switch back: every session stays, hears, is answered."""
        yield self._logon_all()
        for w in self.watchers:
            w.loop()
        yield poll(lambda: all(w.outcomes.get("ok") for w in self.watchers), deadline=30)

        # 1. Switchover asked on the primary: a becomes backup, b primary.
        code, answer = yield http_json(
            reactor, "POST", f"{self.pair.control_url('a')}/api/switchover", {}
        )
        self.assertEqual((code, answer["role"], answer["peerTold"]), (200, "backup", True))
        yield self._switched(1, "b", "one")

        # 2. The primary (b) dies; a takes over after the detection time.
        yield self.pair.notifiers["b"].stopService()
        yield poll(lambda: self.pair.primary() == "a", deadline=10)
        yield self._switched(2, "a", "two")

        # 3. b comes back as backup; switch back to it.
        yield self.pair.start_notifier(reactor, "b", "backup")
        yield self._quiet("b")
        self.pair.join("b", "backup")
        self.pair.join("a", "primary")
        code, answer = yield http_json(
            reactor, "POST", f"{self.pair.control_url('a')}/api/switchover", {}
        )
        self.assertEqual((code, answer["peerTold"]), (200, True))
        yield self._switched(3, "b", "three")

        for w in self.watchers:
            w.running = False
        yield defer.gatherResults([w.done for w in self.watchers])

        self.assertEqual(len(self.pair.bridge.registry), SESSIONS)
        for w in self.watchers:
            self.assertIsNone(w.client.terminated_reason, w.user)
            self.assertEqual(sum(w.outcomes.values()), w.sent, w.user)
            self.assertEqual(w.client.protocol.pending, 0, w.user)
            self.assertEqual(w.unmatched, 0, w.user)
            self.assertLessEqual(set(w.outcomes), {"ok", "upstream-unavailable"}, w.user)
            phases = [s["phase"] for s in w.switchovers]
            self.assertEqual(phases.count("completed"), 3, w.user)
            self.assertEqual(phases.count("started"), 3, w.user)
            self.assertIn(f"queue:{w.queue}", w.switchovers[-1]["snapshots"])
        beat = yield self.watchers[0].client.heartbeat()
        self.assertEqual(beat, {"sessionUpdated": True, "haSwitchover": True})
