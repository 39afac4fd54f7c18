"""Headless Chromium runs the shipped demo page through nginx: logon over wss, a queue event."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

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
    start_proxied_site,
)

pytestmark = pytest.mark.integration


class WebClientInChromium(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        need_binary(NGINX, "nginx")
        self.chromium_path = need_binary(CHROMIUM, "chromium")
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-browser-"))
        self.proxied = yield start_proxied_site(reactor, self.work)
        self.addCleanup(self.proxied.stop)
        self.site = self.proxied.site
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )

    @defer.inlineCallbacks
    def browse(self, query: str):
        proxy = self.proxied.proxy
        browser = yield start_chromium(
            reactor,
            f"{proxy.base}/webclient/?{query}",
            # Trust exactly the test proxy's key, not every certificate.
            trust_spki=proxy.certificate.spki_sha256,
            chromium=self.chromium_path,
        )
        self.addCleanup(browser.stop)
        return browser

    @defer.inlineCallbacks
    def wait_dom(self, browser, expression: str, what: str, deadline: float = 30):
        """Poll a DOM expression until it is truthy; fail with the page's status if not."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            value = yield browser.evaluate(expression)
            if value:
                return value
            yield deferLater(reactor, 0.1, lambda: None)
        status = yield browser.evaluate("document.getElementById('status')?.textContent")
        raise AssertionError(f"no {what} in the page; status: {status}; console: {browser.console}")

    @defer.inlineCallbacks
    def test_web_client_logs_on_and_shows_a_queue_event(self):
        """The page logs on over wss through nginx and shows a published QueueChanged in its DOM."""
        browser = yield self.browse("server=edge1&prefix=extra/path&queue=Sales")
        ready = yield self.wait_dom(
            browser,
            "document.readyState === 'complete' && !!document.getElementById('logon')",
            "the page",
        )
        self.assertTrue(ready)
        yield browser.evaluate(
            "document.getElementById('user').value = 'agent7';"
            "document.getElementById('password').value = 'demo';"
            "document.getElementById('logon').requestSubmit(); true"
        )
        yield self.wait_dom(
            browser, "!!document.querySelector('#events li[data-event=WatchQueue]')", "snapshot"
        )
        (session,) = list(self.site.bridge.registry)
        base = f"{self.proxied.proxy.base}/extra/path"
        self.assertEqual((session.origin.base_uri, session.origin.alias), (base, "edge1"))
        self.assertEqual(session.info.client_app, "smbridge-webclient")
        yield self.site.publish_queue(reactor, "Sales", [{"id": "web-call-1"}])
        text = yield self.wait_dom(
            browser,
            "document.querySelector('#events li[data-event=QueueChanged]')?.textContent",
            "QueueChanged",
        )
        self.assertEqual(text, "QueueChanged Sales +1 ~0 -0 web-call-1")
        state = yield browser.evaluate(
            "JSON.stringify({status: document.getElementById('status').dataset.state,"
            " size: document.getElementById('queue-size').textContent,"
            " session: document.getElementById('session').textContent,"
            " password: document.getElementById('password').value})"
        )
        state = json.loads(state)
        self.assertEqual(state["status"], "open")
        self.assertEqual(state["size"], "1")
        self.assertEqual(state["session"], session.id)
        self.assertEqual(state["password"], "")
        yield browser.evaluate("document.getElementById('logoff-button').click(); true")
        yield poll(reactor, lambda: len(self.site.bridge.registry) == 0, "logoff")

    @defer.inlineCallbacks
    def test_browser_trusts_only_the_test_proxy_key(self):
        """Without the proxy's key on the SPKI allow-list, Chromium refuses the page."""
        browser = yield start_chromium(
            reactor, f"{self.proxied.proxy.base}/webclient/", chromium=self.chromium_path
        )
        self.addCleanup(browser.stop)
        href = yield self.wait_dom(
            browser, "location.href.startsWith('chrome-error') && location.href", "error page"
        )
        self.assertTrue(href.startswith("chrome-error://"))
        found = yield browser.evaluate("!!document.getElementById('logon')")
        self.assertFalse(found)

    @defer.inlineCallbacks
    def test_javascript_codec_matches_the_python_one(self):
        """The SDK's decoder reads Python-encoded frames fed byte by byte and all at once, and
        its encoder writes what the Python decoder reads."""
        from smbridge.codec import Decoder, Kind, encode

        frames = encode(Kind.RESPONSE, 168, 4, 7, {"server": "smbridge", "\u00e9": [1, 2]})
        frames += encode(Kind.NOTIFICATION, 173, 3, 0, {"queue": "Sales"})
        browser = yield self.browse("")
        yield self.wait_dom(
            browser, "!!window.smbridgeSession || !!document.getElementById('logon')", "the page"
        )
        script = f"""(async () => {{
            const Smbridge = await import("/webclient/smbridge.js");
            const bytes = new Uint8Array({list(frames)});
            const whole = new Smbridge.Decoder().feed(bytes);
            const decoder = new Smbridge.Decoder();
            const split = [];
            for (const b of bytes) split.push(...decoder.feed(new Uint8Array([b])));
            const out = new Uint8Array(Smbridge.encode(1, 173, 1, 9, {{queue: "Sales"}}));
            return JSON.stringify({{whole, split, out: Array.from(out)}});
        }})()"""
        result = json.loads((yield browser.evaluate(script)))
        expected = [
            {
                "kind": 2,
                "objectType": 168,
                "eventId": 4,
                "requestId": 7,
                "body": {"server": "smbridge", "\u00e9": [1, 2]},
            },
            {
                "kind": 3,
                "objectType": 173,
                "eventId": 3,
                "requestId": 0,
                "body": {"queue": "Sales"},
            },
        ]
        self.assertEqual(result["whole"], expected)
        self.assertEqual(result["split"], expected)
        (frame,) = Decoder().feed(bytes(result["out"]))
        self.assertEqual(
            (frame.kind, frame.object_type, frame.event_id, frame.request_id, frame.parsed()),
            (1, 173, 1, 9, {"queue": "Sales"}),
        )
