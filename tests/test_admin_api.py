"""The admin API's operations over real HTTP and TLS: sessions, terminate, mode, errors."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import treq
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from smbridge.client import connect
from smbridge.sender import parameters as p
from smbridge.testing import Recorder, http_json, poll, start_site

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@defer.inlineCallbacks
def raw(method: str, url: str, data: bytes | None = None, headers=None):
    """One request with a raw body; fires with (code, headers, body bytes)."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = yield treq.request(method, url, data=data, pool=pool, headers=headers)
    body = yield response.content()
    return response.code, response.headers, body


@defer.inlineCallbacks
def poll_json(url: str, predicate, deadline: float = 10.0):
    """GET ``url`` until ``predicate(body)`` holds; fail after ``deadline`` seconds."""
    end = reactor.seconds() + deadline
    while True:
        code, body = yield http_json(reactor, "GET", url)
        if code == 200 and predicate(body):
            return body
        if reactor.seconds() > end:
            raise AssertionError(f"{url} never satisfied the condition: {body}")
        yield task.deferLater(reactor, 0.1, lambda: None)


class AdminOperations(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def _site(self, **kw):
        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-adminapi-")), admin_port=0, **kw
        )
        self.addCleanup(site.stop)
        self.base = f"http://127.0.0.1:{site.bridge.admin_port}"
        return site

    @defer.inlineCallbacks
    def _client(self, site, user: str, **logon):
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        self.addCleanup(client.close)
        reply = yield client.logon(user, "demo", **logon)
        return client, reply

    @defer.inlineCallbacks
    def test_sessions_list_the_note_columns_and_no_token(self):
        """GET /api/sessions has one row per session with the note's columns and live figures."""
        site = yield self._site(parameters={p.ENABLED: "Yes", p.TOTAL: "100000"})
        yield poll(lambda: site.bridge.connections.sender.limited)
        _, one = yield self._client(
            site, "agent1", station="IND-01", client_id="desk-1", client_version="9.8.7"
        )
        _, two = yield self._client(site, "agent2", client_id="desk-2")
        code, body = yield http_json(reactor, "GET", f"{self.base}/api/sessions")
        self.assertEqual((code, body["count"]), (200, 2))
        rows = {r["sessionId"]: r for r in body["sessions"]}
        self.assertEqual(set(rows), {one["sessionId"], two["sessionId"]})
        row = rows[one["sessionId"]]
        self.assertEqual(
            (row["userId"], row["station"], row["clientId"], row["clientVersion"]),
            ("agent1", "IND-01", "desk-1", "9.8.7"),
        )
        self.assertEqual((row["transport"], row["state"]), ("tls", "active"))
        self.assertRegex(row["logonTime"], ISO_UTC)
        self.assertTrue(row["remote"].startswith("127.0.0.1:"))
        self.assertEqual(row["userName"], one["user"]["displayName"])
        self.assertEqual(row["extension"], one["user"]["extension"])
        self.assertGreater(row["sentBytes"], 0)  # the logon reply went through the limiter
        self.assertEqual(row["queuedBytes"], 0)
        self.assertNotIn(one["resumeToken"], str(body))
        code, single = yield http_json(
            reactor, "GET", f"{self.base}/api/sessions/{one['sessionId']}"
        )
        self.assertEqual((code, single["userId"]), (200, "agent1"))

    @defer.inlineCallbacks
    def test_delete_ends_the_session_with_logout(self):
        """DELETE /api/sessions/{id} sends SessionTerminated logout and closes; unknown is 404."""
        site = yield self._site()
        client, reply = yield self._client(site, "agent3")
        closed = client.closed
        code, body = yield http_json(
            reactor, "DELETE", f"{self.base}/api/sessions/{reply['sessionId']}"
        )
        self.assertEqual((code, body["terminated"], body["reason"]), (200, True, "logout"))
        self.assertEqual(body["session"]["state"], "closed")
        yield closed
        self.assertEqual(client.terminated_reason, "logout")
        self.assertEqual(len(site.bridge.registry), 0)
        code, body = yield http_json(reactor, "DELETE", f"{self.base}/api/sessions/sm1-nope")
        self.assertEqual((code, body["error"]), (404, "no session 'sm1-nope' on this bridge"))
        code, headers, _ = yield raw("PUT", f"{self.base}/api/sessions/sm1-nope")
        self.assertEqual(code, 405)
        self.assertEqual(headers.getRawHeaders("allow"), ["GET, DELETE, HEAD"])

    @defer.inlineCallbacks
    def test_delete_ends_a_websocket_session_too(self):
        """A session over the WebSocket tunnel is ended and its connection closed the same way."""
        site = yield self._site(ws_port=0)
        client = yield connect(reactor, f"ws://localhost:{site.ws_port}/cic1/session")
        self.addCleanup(client.close)
        reply = yield client.logon("agent6", "demo")
        closed = client.closed
        code, body = yield http_json(
            reactor, "DELETE", f"{self.base}/api/sessions/{reply['sessionId']}"
        )
        self.assertEqual((code, body["session"]["transport"]), (200, "ws"))
        yield closed
        self.assertEqual(client.terminated_reason, "logout")

    @defer.inlineCallbacks
    def test_mode_switches_accept_and_refuses_bad_input(self):
        """POST /api/mode switches the accept mode; bad JSON, types and fields get clear 400s."""
        site = yield self._site()
        url = f"{self.base}/api/mode"
        code, body = yield http_json(reactor, "POST", url, {"accept": "maintenance"})
        self.assertEqual((code, body["accept"], body["accepting"]), (200, "maintenance", False))
        self.assertEqual(site.bridge.router.accept_mode, "maintenance")
        code, body = yield http_json(reactor, "POST", url, {"accept": "default"})
        self.assertEqual((code, body["accepting"]), (200, True))
        cases = [
            (b"{nope", "the body is not JSON"),
            (b"[1]", "the body must be a JSON object"),
            (b'{"accept": 3}', "accept must be a string, not 3"),
            (b'{"drain": "yes"}', 'drain must be true or false, not "yes"'),
            (b'{"accept": "all", "colour": 1}', "unknown field(s) colour"),
            (b'{"accept": "sometimes"}', "accept must be one of default, all, maintenance"),
            (b'{"drain": true, "spread": -1}', "spread must be 0..3600 seconds"),
            (b"{}", 'give "accept"'),
            (b'{"drain": true, "accept": "all"}', "a drain switches to maintenance"),
            (b'{"accept": "all", "spread": 5}', 'spread goes with "drain": true'),
        ]
        for data, message in cases:
            code, _, answer = yield raw("POST", url, data, {"content-type": "application/json"})
            self.assertEqual(code, 400, data)
            self.assertIn(message, json.loads(answer)["error"], data)
        self.assertEqual(site.bridge.router.accept_mode, "default")  # nothing half-applied
        code, headers, answer = yield raw("GET", url)
        self.assertEqual((code, headers.getRawHeaders("allow")), (405, ["POST"]))
        self.assertIn("use POST", answer.decode())

    @defer.inlineCallbacks
    def test_drain_migrates_every_session_and_can_be_cancelled(self):
        """A drain switches to maintenance and sends each session a Migrate; false cancels it."""
        site = yield self._site()
        client, _ = yield self._client(site, "agent5")
        events = Recorder(client)
        url = f"{self.base}/api/mode"
        code, body = yield http_json(reactor, "POST", url, {"drain": True, "spread": 0})
        self.assertEqual((code, body["drained"], body["accept"]), (200, 1, "maintenance"))
        self.assertFalse(body["accepting"])
        yield poll(lambda: events.of("Migrate"))
        self.assertEqual(events.of("Migrate")[0]["reason"], "drain")
        code, status = yield http_json(reactor, "GET", f"{self.base}/api/status")
        self.assertEqual(status["drain"], {"active": False, "pending": 0})
        code, body = yield http_json(reactor, "POST", url, {"drain": True, "spread": 600})
        self.assertEqual(body["drain"], {"active": True, "pending": 1})
        code, body = yield http_json(reactor, "POST", url, {"drain": False, "accept": "default"})
        self.assertEqual((code, body["cancelled"], body["accepting"]), (200, 1, True))
        self.assertEqual(body["drain"], {"active": False, "pending": 0})

    @defer.inlineCallbacks
    def test_drain_without_a_drainer_is_503(self):
        """A bridge without a drainer answers "drain": true with a clear 503 and changes nothing."""
        site = yield self._site()
        drainer, site.bridge.drainer = site.bridge.drainer, None
        self.addCleanup(setattr, site.bridge, "drainer", drainer)  # runs before site.stop
        code, body = yield http_json(reactor, "POST", f"{self.base}/api/mode", {"drain": True})
        self.assertEqual((code, body["error"]), (503, "drain is not available on this bridge"))
        self.assertEqual(site.bridge.router.accept_mode, "default")

    @defer.inlineCallbacks
    def test_bandwidth_history_and_health(self):
        """GET /api/bandwidth has per-second samples by priority; /healthz is 200 while linked."""
        site = yield self._site(parameters={p.ENABLED: "Yes", p.TOTAL: "100000"})
        yield poll(lambda: site.bridge.connections.sender.limited)
        yield self._client(site, "agent4")
        url = f"{self.base}/api/bandwidth"

        def total(body):
            return sum(s["high"] + s["medium"] + s["low"] for s in body["samples"])

        body = yield poll_json(url, lambda b: total(b) > 0)
        self.assertEqual(
            (body["stepSeconds"], body["priorities"]), (1.0, ["high", "medium", "low"])
        )
        self.assertTrue(body["limiterEnabled"])
        sent = site.bridge.connections.sender.status()["byPriority"]
        self.assertLessEqual(total(body), sum(c["sentBytes"] for c in sent.values()))
        self.assertGreater(total(body), 0)
        code, health = yield http_json(reactor, "GET", f"{self.base}/healthz")
        self.assertEqual((code, health), (200, {"healthy": True, "reason": "ok"}))
