"""The browser SDK end to end: headless Chromium through real nginx to real bridges."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from smbridge.testing import http_json
from smbridge.tunnel.testing import (
    CHROMIUM,
    NGINX,
    need_binary,
    poll,
    start_chromium,
    start_proxied_pair,
    start_proxied_site,
)

pytestmark = pytest.mark.integration

# A Session in the page; a dial waits while window.gate holds a promise (the network is
# "down"), notifications and the session's events are collected for the test to read.
SETUP = """(async () => {
  const S = await import("/webclient/smbridge.js");
  window.got = []; window.kinds = []; window.gate = null;
    const aliases = { sm1: "edge1", sm2: "edge2" }; // for roster entries without a uri
  const session = new S.Session(S.sessionUrl(location, "edge1", "extra/path"), "agent7", "demo",
    { clientId: "sdk-e2e", beforeDial: () => window.gate, backoff: new S.Backoff(0.2, 2, 1),
      uriFor: (e) => e.uri || S.sessionUrl(location, aliases[e.name], "extra/path") });
  session.addEventListener("notification", ({ detail }) => {
    if (detail.name === "QueueChanged") got.push(...detail.body.added.map((i) => i.id));
  });
  for (const kind of ["disconnected", "resumed", "relogged", "migrated", "resynchronised",
    "ended"]) session.addEventListener(kind, () => kinds.push(kind));
  window.session = session;
  await session.start();
  const snapshot = await session.watchQueue("Sales");
  return JSON.stringify({ id: session.sessionId, queue: snapshot.queue });
})()"""


class PageOnSite(TestCase):
    """nginx in front of the site (two bridges when ``pair``), Chromium on the demo page."""

    timeout = 120
    pair = False

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        need_binary(NGINX, "nginx")
        self.chromium_path = need_binary(CHROMIUM, "chromium")
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-sdk-"))
        start = start_proxied_pair if self.pair else start_proxied_site
        self.proxied = yield start(reactor, self.work)
        self.addCleanup(self.proxied.stop)
        self.site = self.proxied.site
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )
        proxy = self.proxied.proxy
        self.browser = yield start_chromium(
            reactor,
            f"{proxy.base}/webclient/",
            trust_spki=proxy.certificate.spki_sha256,
            chromium=self.chromium_path,
        )
        self.addCleanup(self.browser.stop)
        yield self.until("document.readyState === 'complete'", "the page")

    @defer.inlineCallbacks
    def until(self, expression: str, what: str, deadline: float = 30) -> Any:
        """Poll a page expression until it is truthy; fail with the page's console if not."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            value = yield self.browser.evaluate(expression)
            if value:
                return value
            yield deferLater(reactor, 0.1, lambda: None)
        got = yield self.browser.evaluate("JSON.stringify([window.got, window.kinds])")
        raise AssertionError(f"no {what}; page: {got}; console: {self.browser.console}")

    @defer.inlineCallbacks
    def publish(self, *ids: str) -> Any:
        for name in ids:
            code, _ = yield self.site.publish_queue(reactor, "Sales", [{"id": name}])
            self.assertEqual(code, 200)


class ResumeThroughNginx(PageOnSite):
    @defer.inlineCallbacks
    def test_dropped_socket_resumes_and_delivers_each_event_once_in_order(self) -> Any:
        """Events published while the page's socket is down arrive once, in order, on resume."""
        started = json.loads((yield self.browser.evaluate(SETUP)))
        self.assertEqual(started["queue"], "Sales")
        yield self.publish("one")
        yield self.until("got.join() === 'one'", "the first event")
        registry = self.site.bridge.registry
        yield self.browser.evaluate(
            "window.gate = new Promise((r) => { window.openGate = r; });"
            " session.connection.drop(); true"
        )
        yield poll(reactor, lambda: registry.lingering() == 1, "the session lingering")
        yield self.publish("two", "three")
        yield self.browser.evaluate("openGate(); window.gate = null; true")
        yield self.until("kinds.includes('resumed')", "resumed")
        yield self.publish("four")
        yield self.until("got.length >= 4", "the event after the resume")
        state = json.loads(
            (yield self.browser.evaluate("JSON.stringify([got, kinds, session.sessionId])"))
        )
        self.assertEqual(
            state, [["one", "two", "three", "four"], ["disconnected", "resumed"], started["id"]]
        )
        self.assertEqual(registry.lingering(), 0)
        yield self.browser.evaluate("session.logoff().then(() => true)")
        yield poll(reactor, lambda: len(registry) == 0, "logoff")


class MigrateThroughNginx(PageOnSite):
    pair = True

    @defer.inlineCallbacks
    def test_drain_migrates_the_page_to_the_other_bridge(self) -> Any:
        """A drained sm1 sends Migrate; the page logs on at sm2 through nginx, watch kept."""
        started = json.loads((yield self.browser.evaluate(SETUP)))
        old = self.site.bridge.registry.get(started["id"])
        self.assertIsNotNone(old)
        yield self.publish("before")
        yield self.until("got.join() === 'before'", "the first event")
        url = f"http://127.0.0.1:{self.site.bridge.admin_port}/api/mode"
        code, _ = yield http_json(reactor, "POST", url, {"drain": True, "spread": 0})
        self.assertEqual(code, 200)
        yield self.until("kinds.includes('resynchronised')", "the migration")
        state = json.loads(
            (
                yield self.browser.evaluate(
                    "JSON.stringify({kinds, server: session.server.name, id: session.sessionId,"
                    " snapshot: session.watches.topics})"
                )
            )
        )
        self.assertEqual(state["kinds"], ["migrated", "resynchronised"])
        self.assertEqual(state["server"], "sm2")
        self.assertEqual(state["snapshot"], ["queue:Sales"])
        moved = self.proxied.other.registry.get(state["id"])
        self.assertIsNotNone(moved)
        self.assertEqual(moved.origin.alias, "edge2")
        yield poll(
            reactor, lambda: self.site.bridge.registry.get(started["id"]) is None, "sm1 left"
        )
        yield self.publish("after")
        yield self.until("got.includes('after')", "the event on sm2")
        got = yield self.browser.evaluate("got.join()")
        self.assertEqual(got, "before,after")
        yield self.browser.evaluate("session.logoff().then(() => true)")
        yield poll(reactor, lambda: len(self.proxied.other.registry) == 0, "logoff")
