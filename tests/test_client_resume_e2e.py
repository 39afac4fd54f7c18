"""SessionKeeper against the real bridge over TLS: resume across cuts, and Migrate on drain."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge.client.discovery import default_dial
from smbridge.client.keeper import SessionKeeper, State
from smbridge.testing import http_json, poll, start_site
from smbridge.testing.keeper import KeeperListener

pytestmark = pytest.mark.integration

QUEUE = "Support"


class KeeperSiteCase(TestCase):
    timeout = 90
    site_options: dict[str, Any] = {"admin_port": 0}

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-keeper-"))
        self.site = yield start_site(reactor, self.work, **self.site_options)
        self.addCleanup(self.site.stop)
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )

    @defer.inlineCallbacks
    def publish(self, name: str) -> Any:
        call = {"id": name, "type": "call", "state": "Offering", "workgroup": QUEUE}
        code, _ = yield self.site.publish_queue(reactor, QUEUE, [call])
        self.assertEqual(code, 200)

    def keeper(self, dial: Any = None) -> SessionKeeper:
        keeper: SessionKeeper = self.site.keeper(reactor, "keeper-e2e", dial=dial)
        self.addCleanup(lambda: keeper.logoff() if not keeper.ended else None)
        return keeper


class ResumeEndToEnd(KeeperSiteCase):
    @defer.inlineCallbacks
    def test_listener_gets_every_event_once_in_order_across_cuts(self) -> None:
        """Events stream while the connection is cut 4 times: each arrives once, in order."""
        dial = default_dial(reactor, "localhost", self.site.pki.ca)
        away = {"n": 0}

        @defer.inlineCallbacks
        def dial_after_an_event(target: dict[str, Any]) -> Any:
            # Once the bridge has seen the drop, publish: that event must be replayed.
            if keeper.state is State.RESUMING:
                session = self.site.bridge.registry.get(keeper.reply["sessionId"])
                yield poll(lambda: session.state.value == "lingering", deadline=10)
                away["n"] += 1
                yield self.publish(f"ev-away-{away['n']}")
            client = yield dial(target)
            return client

        keeper = self.keeper(dial_after_an_event)
        seen = KeeperListener(keeper)
        reply = yield keeper.start()
        snapshot = yield keeper.watch_queue(QUEUE)
        before = {i["id"] for i in snapshot["interactions"]}
        published: list[str] = []
        done = {"stop": False}

        @defer.inlineCallbacks
        def publisher() -> Any:
            for n in range(400):  # bounded; stopped once the cuts are over
                if done["stop"]:
                    break
                published.append(f"ev-{n:04d}")
                yield self.publish(published[-1])
                yield task.deferLater(reactor, 0.02, lambda: None)

        publishing = publisher()
        for cut in range(1, 5):
            yield task.deferLater(reactor, 0.6, lambda: None)  # events flow meanwhile
            assert keeper.client is not None
            keeper.client.protocol.transport.abortConnection()  # type: ignore[union-attr]
            yield poll(lambda n=cut: keeper.state is State.CONNECTED and len(seen.events) == 2 * n)
        done["stop"] = True
        yield publishing
        yield self.publish("ev-last")
        expected = [*published, "ev-last"]
        yield poll(lambda: "ev-last" in seen.ids, deadline=15)
        got = [i for i in seen.ids if i not in before]
        self.assertEqual([i for i in got if i.startswith("ev-0") or i == "ev-last"], expected)
        self.assertEqual(len(got), len(set(got)))  # exactly once
        self.assertEqual(
            sorted(i for i in got if "away" in i), sorted(f"ev-away-{n}" for n in range(1, 5))
        )
        self.assertEqual(seen.kinds(), ["disconnected", "resumed"] * 4)
        self.assertFalse(any(e.gap for e in seen.events))
        self.assertEqual(keeper.session_id, reply["sessionId"])
        session = self.site.bridge.registry.get(reply["sessionId"])
        self.assertEqual(keeper.client.received, session.replay.count)  # type: ignore[union-attr]
        counters = self.site.bridge.router.counters
        self.assertEqual(counters.get("resumes", outcome="resumed"), 4)
        yield keeper.logoff()
        self.assertIsNone(self.site.bridge.registry.get(reply["sessionId"]))


class FreshLogonEndToEnd(KeeperSiteCase):
    site_options = {"admin_port": 0, "linger": 0}  # a dropped session is destroyed at once

    @defer.inlineCallbacks
    def test_destroyed_session_is_replaced_by_a_fresh_logon_with_its_watch(self) -> None:
        """No linger: resume gets unknown-session; a fresh logon restores the watch."""
        dial = default_dial(reactor, "localhost", self.site.pki.ca)
        registry = self.site.bridge.registry

        @defer.inlineCallbacks
        def dial_when_gone(target: dict[str, Any]) -> Any:
            if keeper.state is State.RESUMING:  # the bridge has surely dropped the session
                yield poll(lambda: registry.get(first["sessionId"]) is None, deadline=10)
            client = yield dial(target)
            return client

        keeper = self.keeper(dial_when_gone)
        seen = KeeperListener(keeper)
        first = yield keeper.start()
        yield keeper.watch_queue(QUEUE)
        assert keeper.client is not None
        keeper.client.protocol.transport.abortConnection()  # type: ignore[union-attr]
        yield poll(lambda: "resynchronised" in seen.kinds())
        self.assertEqual(seen.kinds(), ["disconnected", "relogged", "resynchronised"])
        self.assertNotEqual(keeper.session_id, first["sessionId"])
        self.assertIn(f"queue:{QUEUE}", seen.events[-1].snapshots)
        yield self.publish("after-relogon")
        yield poll(lambda: "after-relogon" in seen.ids)
        self.assertEqual(seen.ids, ["after-relogon"])


class DocsExampleEndToEnd(KeeperSiteCase):
    @defer.inlineCallbacks
    def test_keeper_example_in_the_docs_runs(self) -> None:
        """The SessionKeeper example in docs/client.md logs on, watches, logs off."""
        import io
        import re
        import sys

        text = (Path(__file__).resolve().parent.parent / "docs" / "client.md").read_text()
        (source,) = [
            b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "SessionKeeper(" in b
        ]
        namespace: dict[str, Any] = {"__name__": "docs_keeper_example"}
        exec(compile(source, "docs/client.md", "exec"), namespace)
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        yield defer.ensureDeferred(
            namespace["main"](
                reactor,
                f"tls://localhost:{self.site.client_port}",
                "agent1",
                "demo",
                ca=self.site.pki.ca,
                seconds=0,
                cache_dir=self.work / "cache",
            )
        )
        self.assertIn("interactions on sm1", stdout.getvalue())
        self.assertIn("session: ended logoff", stdout.getvalue())
        self.assertEqual(len(self.site.bridge.registry), 0)
