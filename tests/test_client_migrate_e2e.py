"""Migrate over real TLS: the admin drains one bridge and the keeper moves to the other."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client.keeper import KeeperEvent, State
from smbridge.codec import Frame
from smbridge.testing import http_json, poll, start_site

pytestmark = pytest.mark.integration

QUEUE = "Support"


@defer.inlineCallbacks
def start_second_bridge(site: Any, name: str) -> Any:
    """Another bridge of the same site, in-process, off-server in the first one's location."""
    from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
    from smbridge.router.router import BridgeIdentity
    from smbridge.service import BridgeService
    from smbridge.session.negotiate import TimeoutPolicy

    files = site.pki
    config = BridgeConfig(
        identity=BridgeIdentity(name, "localhost", location="Indianapolis", ports={"tls": 0}),
        tls=TLSFiles(files.bridge, files.bridge_client, files.ca),
        notifiers=(NotifierAddress("127.0.0.1", site.link_port),),
        notifier_name="localhost",
        port=0,
        interface="127.0.0.1",
        policy=TimeoutPolicy(1800, 60),
    )
    bridge = BridgeService(config, reactor)
    bridge.startService()
    yield bridge.when_ready()
    return bridge


class MigrateEndToEnd(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        work = Path(tempfile.mkdtemp(prefix="smbridge-migrate-"))
        self.site = yield start_site(reactor, work, admin_port=0)
        self.addCleanup(self.site.stop)
        self.other = yield start_second_bridge(self.site, "sm2")
        self.addCleanup(self.other.stopService)
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )

        def sm2_in_roster() -> bool:
            roster = self.site.bridge.router.upstream.registered.get("roster") or []
            return any(e.get("name") == "sm2" and e.get("available") for e in roster)

        yield poll(sm2_in_roster, deadline=15)

    @defer.inlineCallbacks
    def publish(self, name: str) -> Any:
        call = {"id": name, "type": "call", "state": "Offering", "workgroup": QUEUE}
        code, _ = yield self.site.publish_queue(reactor, QUEUE, [call])
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_drain_moves_the_session_with_its_watch(self) -> None:
        """POST /api/mode drain: Migrate; the keeper logs on at sm2, re-watches, leaves sm1."""
        keeper = self.site.keeper(reactor, "migrate-e2e")
        self.addCleanup(lambda: keeper.logoff() if not keeper.ended else None)
        ids: list[str] = []
        events: list[KeeperEvent] = []

        def notification(name: str, frame: Frame) -> None:
            if name == "QueueChanged":
                ids.extend(i["id"] for i in frame.parsed().get("added", ()))

        keeper.add_listener(notification)
        keeper.add_event_listener(events.append)
        first = yield keeper.start()
        self.assertEqual(first["server"]["name"], "sm1")
        yield keeper.watch_queue(QUEUE)
        yield self.publish("before")
        yield poll(lambda: ids == ["before"])
        url = f"http://127.0.0.1:{self.site.bridge.admin_port}/api/mode"
        code, _ = yield http_json(reactor, "POST", url, {"drain": True, "spread": 0})
        self.assertEqual(code, 200)
        yield poll(lambda: "resynchronised" in [e.kind for e in events])
        self.assertEqual([e.kind for e in events], ["migrated", "resynchronised"])
        self.assertEqual((events[0].reason, events[0].server["name"]), ("drain", "sm2"))  # type: ignore[index]
        snapshot = events[1].snapshots[f"queue:{QUEUE}"]
        self.assertIn("before", [i["id"] for i in snapshot["interactions"]])
        self.assertEqual(keeper.state, State.CONNECTED)
        yield poll(lambda: self.site.bridge.registry.get(first["sessionId"]) is None)
        self.assertIsNotNone(self.other.registry.get(keeper.session_id))
        yield self.publish("after")
        yield poll(lambda: "after" in ids)
        self.assertEqual(ids, ["before", "after"])
        yield keeper.logoff()

    @defer.inlineCallbacks
    def test_bridge_shutdown_moves_the_session_to_the_other_bridge(self) -> None:
        """Stopping sm1 (as SIGTERM does) sends Migrate; the keeper lands on sm2, watch kept."""
        keeper = self.site.keeper(reactor, "shutdown-e2e")
        self.addCleanup(lambda: keeper.logoff() if not keeper.ended else None)
        events: list[KeeperEvent] = []
        keeper.add_event_listener(events.append)
        yield keeper.start()
        yield keeper.watch_queue(QUEUE)
        stopping = defer.maybeDeferred(self.site.bridge.stopService)
        yield poll(lambda: "resynchronised" in [e.kind for e in events])
        yield stopping
        kinds = [e.kind for e in events]
        self.assertEqual(kinds[-2:], ["migrated", "resynchronised"])
        self.assertEqual(events[-2].server["name"], "sm2")  # type: ignore[index]
        self.assertIn(f"queue:{QUEUE}", events[-1].snapshots)
        self.assertEqual(keeper.state, State.CONNECTED)
        yield keeper.logoff()

    @defer.inlineCallbacks
    def test_crashed_bridge_resume_fails_and_the_roster_order_finds_sm2(self) -> None:
        """sm1 stops listening and its connections die: resume is refused, sm2 takes a logon."""
        from smbridge.client.discovery import default_dial
        from smbridge.client.order import Backoff

        dial = default_dial(reactor, "localhost", self.site.pki.ca)
        dialed: list[int] = []

        def recording(target: dict[str, Any]) -> Any:
            dialed.append(int(target["port"]))
            return dial(target)

        keeper = self.site.keeper(
            reactor, "crash-e2e", dial=recording, backoff=Backoff(0.05, 2.0, 0.5)
        )
        self.addCleanup(lambda: keeper.logoff() if not keeper.ended else None)
        events: list[KeeperEvent] = []
        keeper.add_event_listener(events.append)
        yield keeper.start()
        yield keeper.watch_queue(QUEUE)
        sm1, sm2 = self.site.client_port, self.other.port
        dialed.clear()
        bridge = self.site.bridge
        yield bridge.listener.stopService()  # no new connections: dials are refused
        for conn in list(bridge.connections.connections):
            conn.transport.abortConnection()
        yield poll(lambda: "resynchronised" in [e.kind for e in events], deadline=20)
        self.assertEqual([e.kind for e in events], ["disconnected", "relogged", "resynchronised"])
        self.assertEqual(events[1].server["name"], "sm2")  # type: ignore[index]
        self.assertIn(f"queue:{QUEUE}", events[2].snapshots)
        self.assertEqual(dialed[:4], [sm1] * 4)  # ResumeSession on the same bridge first
        self.assertEqual(dialed[-1], sm2)  # then the roster order, until sm2 took the logon
        yield keeper.logoff()
