"""The keeper over wss through real nginx in front of two real bridges and a real Notifier.

Public URIs: ``wss://127.0.0.1:<cut>/edge1/session`` (sm1) and ``.../edge2/session``
(sm2), where ``<cut>`` is a TCP relay in front of nginx that the test can cut (every
flow aborted, new ones refused) and heal. nginx routes by alias to each bridge's wss
tunnel: both listen on the same port, sm1 on 127.0.0.1 and sm2 on 127.0.0.2 (loopback),
as two machines of a site would — the rendered site has one session port.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols import portforward
from twisted.trial.unittest import TestCase

from smbridge.client.keeper import KeeperEvent, SessionKeeper, State
from smbridge.client.order import Backoff
from smbridge.session.session import EndReason
from smbridge.session.session import State as SessionState
from smbridge.testing import http_json, poll, start_site
from smbridge.testing.cli import spawn_client
from smbridge.testing.keeper import KeeperListener
from smbridge.tunnel.testing import NGINX, need_binary, start_proxy

pytestmark = pytest.mark.integration

BASE_MAP = "cic1|IC&sm1|edge1&sm2|edge2"
QUEUE = "Sales"


class CuttableFlow(portforward.ProxyServer):
    """One client flow through the relay; refused outright while the relay is cut."""

    factory: Relay

    def connectionMade(self) -> None:
        if self.factory.down:
            self.transport.abortConnection()
            return
        self.factory.flows.add(self)
        super().connectionMade()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Any) -> None:
        self.factory.flows.discard(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class Relay(portforward.ProxyFactory):
    """A TCP relay to nginx: ``cut()`` kills every flow (RST) and refuses new ones."""

    protocol = CuttableFlow
    noisy = False

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)  # type: ignore[no-untyped-call]
        self.down = False
        self.flows: set[CuttableFlow] = set()

    def cut(self) -> None:
        self.down = True
        for flow in list(self.flows):
            flow.transport.abortConnection()
            if flow.peer is not None and flow.peer.transport is not None:
                flow.peer.transport.abortConnection()

    def heal(self) -> None:
        self.down = False


@defer.inlineCallbacks
def start_sm2(site: Any, interface: str, **tunnel: int) -> Any:
    """The second bridge, sm2, on ``interface``; ``tunnel``: its ``wss_port``/``ws_port``."""
    from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
    from smbridge.router.router import BridgeIdentity
    from smbridge.service import BridgeService
    from smbridge.session.negotiate import TimeoutPolicy

    files = site.pki
    config = BridgeConfig(
        identity=BridgeIdentity(
            "sm2",
            "localhost",
            location="Indianapolis",
            ports={"tls": 0, "ws": tunnel.get("ws_port"), "wss": tunnel.get("wss_port")},
        ),
        tls=TLSFiles(files.bridge, files.bridge_client, files.ca),
        notifiers=(NotifierAddress("127.0.0.1", site.link_port),),
        notifier_name="localhost",
        port=0,
        interface=interface,
        policy=TimeoutPolicy(1800, 60),
        **tunnel,
    )
    bridge = BridgeService(config, reactor)
    bridge.startService()
    yield bridge.when_ready()
    return bridge


def sm2_available(site: Any) -> bool:
    roster = site.bridge.router.upstream.registered.get("roster") or []
    return any(e.get("name") == "sm2" and e.get("available") for e in roster)


class KeeperOverWss(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        nginx = need_binary(NGINX, "nginx")
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-keeper-wss-"))
        self.site = yield start_site(
            reactor,
            self.work,
            parameters={"SM HTTPS URL Base Map": BASE_MAP},
            wss_port=0,
            admin_port=0,
        )
        self.addCleanup(self.site.stop)
        self.sm2 = yield start_sm2(self.site, "127.0.0.2", wss_port=self.site.wss_port)
        self.addCleanup(self.sm2.stopService)
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )
        self.proxy = yield start_proxy(
            reactor,
            self.work,
            self.site.pki.ca.parent,
            {
                "cic1": "127.0.0.1,localhost",
                "sm1": "127.0.0.1,localhost",
                "sm2": "127.0.0.2,localhost",
            },
            BASE_MAP,
            {},
            self.site.wss_port,
            nginx=nginx,
        )
        self.addCleanup(self.proxy.stop)
        self.relay = Relay("127.0.0.1", self.proxy.port)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.relay_port = yield endpoint.listen(self.relay)
        self.addCleanup(self.relay_port.stopListening)
        self.public = f"127.0.0.1:{self.relay_port.getHost().port}"

        yield poll(lambda: sm2_available(self.site), deadline=15)
        self.heard = KeeperListener()
        self.events, self.ids = self.heard.events, self.heard.ids

    def keeper(self) -> SessionKeeper:
        keeper = SessionKeeper(
            reactor,
            f"wss://{self.public}/edge1/session",
            "agent1",
            "demo",
            ca=self.site.pki.ca,
            client_id="keeper-wss",
            resolve=lambda host, port: defer.succeed([]),
            backoff=Backoff(0.2, 1.5, 1.0),
            resume_tries=40,
        )
        self.heard.attach(keeper)
        self.addCleanup(lambda: keeper.logoff() if not keeper.ended else None)
        return keeper

    @defer.inlineCallbacks
    def publish(self, *ids: str) -> Any:
        for call_id in ids:
            call = {"id": call_id, "type": "call", "state": "Offering", "workgroup": QUEUE}
            code, _ = yield self.site.publish_queue(reactor, QUEUE, [call])
            self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_cut_flow_resumes_through_nginx_without_loss(self) -> Any:
        """The TCP flow is killed and events are published meanwhile: the keeper resumes
        through nginx and sees every event once, in order."""
        keeper = self.keeper()
        reply = yield keeper.start()
        self.assertEqual(reply["server"]["name"], "sm1")
        roster = {e["name"]: e.get("uri") for e in reply["roster"]}
        self.assertEqual(roster["sm2"], f"wss://{self.public}/edge2/session")
        yield keeper.watch_queue(QUEUE)
        yield self.publish("c1")
        yield poll(lambda: self.ids == ["c1"])
        session = self.site.bridge.registry.get(keeper.session_id)
        written = session.replay.count
        self.relay.cut()
        yield poll(lambda: session.state is SessionState.LINGERING, deadline=20)
        yield self.publish("c2", "c3", "c4", "c5", "c6")
        yield poll(lambda: session.replay.count == written + 5)
        self.assertEqual(self.ids, ["c1"])
        self.relay.heal()
        yield poll(lambda: "resumed" in [e.kind for e in self.events], deadline=30)
        yield poll(lambda: len(self.ids) >= 6)
        yield self.publish("c7")
        yield poll(lambda: "c7" in self.ids)
        self.assertEqual(self.ids, ["c1", "c2", "c3", "c4", "c5", "c6", "c7"])
        self.assertEqual([e.kind for e in self.events], ["disconnected", "resumed"])
        self.assertFalse(self.events[1].gap)
        self.assertEqual(keeper.session_id, reply["sessionId"])
        self.assertEqual(session.origin.base_uri, f"https://{self.public}")
        yield keeper.logoff()

    @defer.inlineCallbacks
    def test_session_gone_relogs_through_nginx_by_the_roster(self) -> Any:
        """The session ends while the flow is cut: resume is refused, the keeper logs on
        again through nginx by the roster's public URIs and its watch comes back."""
        keeper = self.keeper()
        first = yield keeper.start()
        yield keeper.watch_queue(QUEUE)
        session = self.site.bridge.registry.get(keeper.session_id)
        self.relay.cut()
        yield poll(lambda: session.state is SessionState.LINGERING, deadline=20)
        session.end(EndReason.UNEXPECTED, notify=False)
        self.relay.heal()
        yield poll(lambda: "resynchronised" in [e.kind for e in self.events], deadline=30)
        self.assertEqual(
            [e.kind for e in self.events], ["disconnected", "relogged", "resynchronised"]
        )
        self.assertNotEqual(keeper.session_id, first["sessionId"])
        self.assertIn(f"queue:{QUEUE}", self.events[-1].snapshots)
        name = keeper.server["name"]  # type: ignore[index]
        bridge = self.site.bridge if name == "sm1" else self.sm2
        fresh = bridge.registry.get(keeper.session_id)
        self.assertEqual(fresh.origin.base_uri, f"https://{self.public}")
        self.assertIn(fresh.origin.server, ("edge1", "edge2"))
        yield self.publish("after")
        yield poll(lambda: "after" in self.ids)
        yield keeper.logoff()

    @defer.inlineCallbacks
    def test_drain_migrates_through_nginx_by_the_roster_uri(self) -> Any:
        """Draining sm1 sends Migrate whose roster names sm2 by its public uri; the keeper
        logs on there through nginx and its watch is restored."""
        keeper = self.keeper()
        first = yield keeper.start()
        yield keeper.watch_queue(QUEUE)
        yield self.publish("before")
        yield poll(lambda: self.ids == ["before"])
        url = f"http://127.0.0.1:{self.site.bridge.admin_port}/api/mode"
        code, _ = yield http_json(reactor, "POST", url, {"drain": True, "spread": 0})
        self.assertEqual(code, 200)
        yield poll(lambda: "resynchronised" in [e.kind for e in self.events], deadline=30)
        self.assertEqual([e.kind for e in self.events], ["migrated", "resynchronised"])
        self.assertEqual(self.events[0].server["name"], "sm2")  # type: ignore[index]
        self.assertIn(f"queue:{QUEUE}", self.events[1].snapshots)
        self.assertEqual(keeper.state, State.CONNECTED)
        moved = self.sm2.registry.get(keeper.session_id)
        self.assertEqual(
            (moved.origin.transport, moved.origin.server, moved.origin.base_uri),
            ("wss", "edge2", f"https://{self.public}"),
        )
        yield poll(lambda: self.site.bridge.registry.get(first["sessionId"]) is None)
        yield self.publish("after")
        yield poll(lambda: "after" in self.ids)
        self.assertEqual(self.ids, ["before", "after"])
        yield keeper.logoff()

    @defer.inlineCallbacks
    def test_cli_keep_over_wss_prints_the_resume(self) -> Any:
        """``smbridge client --keep wss://...`` as a subprocess resumes after a cut and says so."""
        password = self.work / "password"
        password.write_text("demo\n")
        args = [f"wss://{self.public}/edge1/session", "--user", "agent1",
                "--password-file", str(password), "--ca", str(self.site.pki.ca),
                "--watch", f"queue:{QUEUE}", "--keep"]  # fmt: skip
        client = spawn_client(self, reactor, args, self.work)
        proc, transport, printed = client.proc, client.transport, client.printed
        yield poll(lambda: printed(f"queue {QUEUE}:"), deadline=30)
        (session,) = list(self.site.bridge.registry)
        self.relay.cut()
        yield poll(lambda: session.state is SessionState.LINGERING, deadline=20)
        yield self.publish("while-cut")
        self.relay.heal()
        yield poll(lambda: printed("resumed session"), deadline=30)
        yield poll(lambda: printed('"id":"while-cut"'), deadline=20)
        self.assertEqual(proc.out.count(b'"id":"while-cut"'), 1)
        transport.signalProcess("TERM")
        code = yield proc.ended
        self.assertEqual(code, 0, proc.err)
        yield poll(lambda: len(self.site.bridge.registry) == 0, deadline=20)  # logged off


class KeeperOverDirectWs(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_drain_moves_a_direct_ws_client_to_the_other_bridges_tunnel(self) -> Any:
        """Without a proxy (ws:// straight to sm1's tunnel) Migrate's roster names sm2 by its
        own tunnel, ws://<fqdn>:<ws port>/sm2/session, and the keeper moves there."""
        work = Path(tempfile.mkdtemp(prefix="smbridge-keeper-ws-"))
        site = yield start_site(reactor, work, ws_port=0, admin_port=0)
        self.addCleanup(site.stop)
        sm2 = yield start_sm2(site, "127.0.0.1", ws_port=0)
        self.addCleanup(sm2.stopService)
        yield poll(lambda: sm2_available(site), deadline=15)
        keeper = SessionKeeper(
            reactor,
            f"ws://127.0.0.1:{site.ws_port}/sm1/session",
            "agent1",
            "demo",
            client_id="keeper-ws",
            resolve=lambda host, port: defer.succeed([]),
        )
        self.addCleanup(lambda: keeper.logoff() if not keeper.ended else None)
        events: list[KeeperEvent] = []
        keeper.add_event_listener(events.append)
        reply = yield keeper.start()
        sm2_uri = f"ws://localhost:{sm2.tunnel.ws_port}/sm2/session"
        self.assertEqual({e["name"]: e.get("uri") for e in reply["roster"]}["sm2"], sm2_uri)
        yield keeper.watch_queue(QUEUE)
        url = f"http://127.0.0.1:{site.bridge.admin_port}/api/mode"
        code, _ = yield http_json(reactor, "POST", url, {"drain": True, "spread": 0})
        self.assertEqual(code, 200)
        yield poll(lambda: "resynchronised" in [e.kind for e in events], deadline=30)
        self.assertEqual([e.kind for e in events], ["migrated", "resynchronised"])
        moved = sm2.registry.get(keeper.session_id)
        self.assertEqual((moved.origin.transport, moved.origin.server), ("ws", "sm2"))
        self.assertIn(f"queue:{QUEUE}", events[1].snapshots)
        yield keeper.logoff()
