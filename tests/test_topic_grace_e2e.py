"""The user topic's grace end to end: real bridge, real Notifier, real client, real TLS."""

from __future__ import annotations

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.testing import http_json, poll, start_quiet_site


@pytest.mark.integration
class TopicGraceEndToEnd(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.site = yield start_quiet_site(self, reactor, "smbridge-grace-")

    def _connect(self):
        return connect(reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca)

    @defer.inlineCallbacks
    def _subscribers(self, topic: str):
        _, state = yield http_json(reactor, "GET", f"{self.site.control_url}/api/state")
        return state["topics"].get(topic, {}).get("subscribers", 0)

    @defer.inlineCallbacks
    def _poll_subscribers(self, topic: str, count: int, deadline: float = 10.0):
        waited = 0.0
        while (yield self._subscribers(topic)) != count:
            if waited >= deadline:
                raise AssertionError(f"{topic} never had {count} subscriber(s)")
            yield task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    @defer.inlineCallbacks
    def test_relogon_within_grace_keeps_the_subscription_and_its_events(self):
        """Logoff keeps user:agent1 subscribed; an event meanwhile is in the next logon."""
        fanout = self.site.bridge.router.fanout
        self.assertEqual(fanout.grace, 30.0)  # the default
        client = yield self._connect()
        yield client.logon("agent1", "demo")
        sub = fanout.topics["user:agent1"].sub
        yield client.logoff()
        yield poll(lambda: len(self.site.bridge.registry) == 0)
        self.assertEqual((yield self._subscribers("user:agent1")), 1)
        item = {"id": "grace-1", "type": "call", "state": "Connected", "from": "x"}
        code, published = yield http_json(
            reactor,
            "POST",
            f"{self.site.control_url}/api/publish",
            {
                "objectType": 173,
                "eventId": 4,
                "topic": "user:agent1",
                "payload": {"user": "agent1", "added": [item], "changed": [], "removed": []},
            },
        )
        self.assertEqual((code, published["delivered"]), (200, 1))  # to the bridge's copy
        yield poll(lambda: any(i.get("id") == "grace-1" for i in _items(fanout)))
        again = yield self._connect()
        reply = yield again.logon("agent1", "demo")
        self.assertIn(item, reply["myInteractions"])
        self.assertEqual(fanout.topics["user:agent1"].sub, sub)  # the same subscription
        fanout.grace = 0.2  # a short grace from here on: the next logoff's ends soon
        yield again.logoff()
        yield self._poll_subscribers("user:agent1", 0)
        self.assertNotIn("user:agent1", fanout.topics)


def _items(fanout):
    state = fanout.state("user:agent1")
    return state.snapshot()["interactions"] if state is not None else []
