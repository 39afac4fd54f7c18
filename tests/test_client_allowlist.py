"""Clients may send only the requests of PROTOCOL §3; nothing else reaches the Notifier.

The router refuses every other (kind, objectType, eventId) with ``unknown-request``
before anything is forwarded (the bridge↔Notifier link's own messages included),
and what it does forward carries exactly one ``_session``: the bridge's.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from smbridge.client import ClientError, connect
from smbridge.codec import DEFAULT_MAX_FRAME, Decoder, Frame, Kind, encode_raw
from smbridge.codec import catalog as c
from smbridge.testing import Recorder, RouterHarness, http_json, poll, start_site

# PROTOCOL §3, the R rows, written out by hand: the allow-list must be exactly these.
PROTOCOL_REQUESTS = {
    (168, 1), (168, 2), (168, 3), (168, 4), (168, 5),
    (169, 1),
    (170, 1),
    (171, 1), (171, 2), (171, 3),
    (172, 1), (172, 2), (172, 3), (172, 4), (172, 6), (172, 7), (172, 8),
    (173, 1), (173, 2),
    (174, 1), (174, 2), (174, 4),
    (175, 1), (175, 2),
    (176, 1), (176, 2),
    (177, 1),
}  # fmt: skip
# Every link message, with payloads that would do harm if the Notifier acted on them.
LINK_ATTACKS: dict[tuple[int, int], dict[str, Any]] = {
    c.LINK_REGISTER: {"name": "evil", "fqdn": "evil", "kind": "off-server", "accept": "all"},
    c.LINK_AUTHENTICATE: {"user": "agent5", "password": "demo"},
    c.LINK_SUBSCRIBE: {"topic": "user:agent5", "sub": 4000},
    c.LINK_UNSUBSCRIBE: {"sub": 1},
    c.LINK_PING: {},
    c.LINK_SESSION_OPENED: {"sessionId": "sm1-forged", "user": "agent5", "station": None},
    c.LINK_SESSION_CLOSED: {"sessionId": "sm1-forged", "reason": "logout"},
    c.LINK_PARAMETERS_CHANGED: {"parameters": {"RestrictUserVisibility": "No"}},
    c.LINK_ROSTER_CHANGED: {"roster": []},
    c.LINK_BRIDGE_CHANGED: {"accept": "maintenance"},
    c.LINK_SET_ACCEPT: {"accept": "maintenance"},
}


def _code(frame: Frame) -> str:
    assert frame.kind == Kind.ERROR, frame
    return str(frame.parsed()["code"])


# --- the allow-list itself ---------------------------------------------------------


def test_allow_list_is_exactly_the_protocol_table():
    """The client allow-list equals PROTOCOL §3's requests and holds no link message."""
    assert c.CLIENT_REQUESTS == PROTOCOL_REQUESTS
    assert not {k for k in c.CLIENT_REQUESTS if k[0] == 200}
    assert c.CLIENT_REQUESTS == {k for k, e in c.CATALOG.items() if not e.notification}
    assert c.BRIDGE_REQUESTS.isdisjoint(c.UPSTREAM_REQUESTS)
    assert c.BRIDGE_REQUESTS | c.UPSTREAM_REQUESTS == c.CLIENT_REQUESTS


def test_router_handles_every_bridge_request_and_forwards_only_upstream_ones():
    """Each allowed request has a bridge handler or is one of the forwarded kinds."""
    h = RouterHarness()
    before_logon = {c.GET_VERSION, c.CREATE_SESSION, c.RESUME_SESSION}
    assert set(h.router.handlers) | before_logon == c.BRIDGE_REQUESTS
    assert c.UPSTREAM_REQUESTS == {
        c.CHANGE_STATION, c.SET_STATUS, c.MAKE_CALL, c.PICKUP, c.DISCONNECT, c.TRANSFER,
        c.SEND_CHAT, c.SEND_EMAIL, c.CALLBACK, c.ACQUIRE_LICENSE, c.RELEASE_LICENSE,
    }  # fmt: skip


# --- the router refuses and forwards nothing ----------------------------------------


def test_link_messages_from_a_logged_on_client_are_refused_and_not_forwarded():
    """Every (200, x) request from a logged-on client gets unknown-request; none goes upstream."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    for rid, (message, body) in enumerate(LINK_ATTACKS.items(), start=100):
        h.send(conn, message, rid, body)
        assert h.upstream() == [], message
        (reply,) = h.received(t)
        assert reply.request_id == rid and _code(reply) == "unknown-request"
        assert (reply.object_type, reply.event_id) == message
    assert h.router.counters.get("refused_requests") == len(LINK_ATTACKS)


def test_refusals_are_logged_once_per_connection_as_a_warning():
    """The first refusal on a connection is a warning naming the message, later ones debug."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        for rid in (1, 2, 3):
            h.send(conn, c.LINK_AUTHENTICATE, rid, {"user": "agent5", "password": "secret"})
    finally:
        globalLogPublisher.removeObserver(observer)
    mine = [e for e in observer if e.get("event") == "router.request_refused"]
    assert [e["log_level"] for e in mine] == [LogLevel.warn, LogLevel.debug, LogLevel.debug]
    assert (mine[0]["object_type"], mine[0]["event_id"], mine[0]["user"]) == (200, 2, "agent1")
    assert all("secret" not in formatEvent(e) for e in mine)
    assert len(h.received(t)) == 3


def test_link_messages_before_logon_are_refused_and_not_forwarded():
    """Before CreateSession a link message also gets unknown-request, and nothing upstream."""
    h = RouterHarness()
    conn, t = h.client()
    for rid, (message, body) in enumerate(LINK_ATTACKS.items(), start=1):
        h.send(conn, message, rid, body)
    assert h.upstream() == []
    assert [(_code(f), f.request_id) for f in h.received(t)] == [
        ("unknown-request", rid) for rid in range(1, len(LINK_ATTACKS) + 1)
    ]


def test_notifications_and_unknown_event_ids_of_client_types_are_refused():
    """Catalog notifications and eventIds outside the table (168-177, 190) are refused."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    probes = [k for k, e in c.CATALOG.items() if e.notification]
    probes += [(ot, ev) for ot in (*range(168, 178), 190) for ev in (9, 99, 32767)]
    for rid, message in enumerate(probes, start=1):
        h.send(conn, message, rid, {"status": "Away"})
    assert h.upstream() == []
    assert {_code(f) for f in h.received(t)} == {"unknown-request"}


def test_frames_of_other_kinds_are_refused_by_the_router():
    """A response, notification or error frame handed to the router is refused, not routed."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    for rid, kind in enumerate((Kind.RESPONSE, Kind.NOTIFICATION, Kind.ERROR), start=1):
        h.router.handle(
            conn, Frame(kind, *c.SET_STATUS, rid, b'{"status":"Away"}', {"status": "Away"})
        )
        h.router.handle(conn, Frame(kind, *c.LINK_UNSUBSCRIBE, rid, b'{"sub":1}', {"sub": 1}))
    assert h.upstream() == []
    assert {_code(f) for f in h.received(t)} == {"unknown-request"}


@settings(max_examples=300, deadline=None)
@given(
    object_type=st.integers(0, 0xFFFF),
    event_id=st.integers(1, 32767),
    logged_on=st.booleans(),
)
def test_anything_outside_the_allow_list_is_refused_and_not_forwarded(
    object_type: int, event_id: int, logged_on: bool
) -> None:
    """Property: any (objectType, eventId) not allowed gets unknown-request and goes nowhere."""
    if (object_type, event_id) in PROTOCOL_REQUESTS:
        return
    h = RouterHarness()
    if logged_on:
        conn, t, _ = h.logon()
    else:
        conn, t = h.client()
    h.send(conn, (object_type, event_id), 77, {"sub": 1, "topic": "user:agent5"})
    assert h.upstream() == []
    (reply,) = h.received(t)
    assert (reply.request_id, _code(reply)) == (77, "unknown-request")


def test_allowed_upstream_requests_are_still_forwarded_with_identity():
    """Each request §3 says goes upstream is forwarded once, with the session's identity."""
    h = RouterHarness()
    conn, t, session = h.logon()
    for rid, message in enumerate(sorted(c.UPSTREAM_REQUESTS), start=1):
        h.send(conn, message, rid, {"x": rid})
        (fwd,) = h.upstream()
        assert (fwd.object_type, fwd.event_id) == message and fwd.kind == Kind.REQUEST
        assert fwd.parsed() == {
            "x": rid,
            "_session": {"id": session["sessionId"], "user": "agent1"},
        }


# --- the forwarded payload: the bridge's fields cannot be overridden -----------------


def _forwarded_members(h: RouterHarness, conn: Any, payload: bytes) -> tuple[Frame, list[Any]]:
    conn.dataReceived(encode_raw(Kind.REQUEST, *c.SET_STATUS, 9, payload))
    (fwd,) = h.upstream()
    # Parse the bytes the Notifier gets keeping duplicate members, as a first-wins parser would.
    pairs = json.loads(fwd.payload, object_pairs_hook=lambda p: p)
    return fwd, [v for k, v in pairs if k == "_session"]


def test_a_client_session_member_never_reaches_the_notifier():
    """A client's _session (even duplicated) is dropped: the Notifier sees only the bridge's."""
    h = RouterHarness()
    conn, _, session = h.logon()
    mine = {"id": session["sessionId"], "user": "agent1"}
    forged = b'{"_session":{"id":"x","user":"agent5"},"status":"Away","_session":{"user":"agent5"}}'
    fwd, sessions = _forwarded_members(h, conn, forged)
    assert sessions == [[("id", mine["id"]), ("user", "agent1")]]
    assert fwd.parsed() == {"status": "Away", "_session": mine}


def test_payload_with_odd_trailing_white_space_is_forwarded_as_valid_json():
    """A payload ending in white space JSON does not allow still goes upstream as valid JSON."""
    h = RouterHarness()
    conn, _, session = h.logon()
    for tail in (b"\x0c", b"\x0b", "\u00a0".encode(), "\u2028".encode(), b" \x1c\n"):
        conn.dataReceived(encode_raw(Kind.REQUEST, *c.SET_STATUS, 9, b'{"status":"Away"}' + tail))
        (fwd,) = h.upstream()
        (event,) = Decoder().feed(fwd.encode())  # as the Notifier decodes it
        assert isinstance(event, Frame), (tail, event)
        assert event.parsed() == {
            "status": "Away",
            "_session": {"id": session["sessionId"], "user": "agent1"},
        }


def test_a_request_too_large_for_the_link_is_refused_not_forwarded():
    """A request that would pass the link's frame limit once the identity is added is refused."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    conn.decoder.max_frame = 2 * DEFAULT_MAX_FRAME  # a bridge run with a larger --max-frame
    pad = "x" * (DEFAULT_MAX_FRAME - 40)
    h.send(conn, c.SEND_CHAT, 5, {"to": "agent2", "text": pad})
    assert h.upstream() == []
    (reply,) = h.received(t)
    assert reply.request_id == 5 and _code(reply) == "request-too-large"
    h.send(conn, c.SEND_CHAT, 6, {"to": "agent2", "text": "hi"})
    assert len(h.upstream()) == 1


def test_a_deeply_nested_request_is_refused_not_forwarded():
    """A forwarded request nesting deeper than the limit is a bad request and stays here."""
    h = RouterHarness()
    conn, t, _ = h.logon()
    deep = b'{"status":"Away","x":' + b"[" * 40 + b"]" * 40 + b"}"
    conn.dataReceived(encode_raw(Kind.REQUEST, *c.SET_STATUS, 3, deep))
    shallow = b'{"status":"Away","x":' + b"[" * 30 + b"]" * 30 + b"}"
    conn.dataReceived(encode_raw(Kind.REQUEST, *c.SET_STATUS, 4, shallow))
    (fwd,) = h.upstream()
    assert fwd.parsed()["status"] == "Away"
    (reply,) = h.received(t)
    assert reply.request_id == 3 and _code(reply) == "bad-request"


# --- end to end: real bridge, real Notifier, real client library, real TLS -----------


class _LinkRecorder:
    """Records every frame the Notifier receives on its bridge links (wraps each link)."""

    def __init__(self, links: Any) -> None:
        self.frames: list[Frame] = []
        for link in links:
            handle = link._frame

            def recorded(frame: Frame, handle: Any = handle) -> None:
                self.frames.append(frame)
                handle(frame)

            link._frame = recorded

    def carrying(self, marker: str) -> list[Frame]:
        return [f for f in self.frames if marker.encode() in f.payload]


@pytest.mark.integration
class ClientCannotSpeakTheLink(TestCase):
    """The attack of issue 13 from outside, over real sockets."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.site = yield start_site(reactor, Path(tempfile.mkdtemp(prefix="smbridge-allow-")))
        self.addCleanup(self.site.stop)
        self.notifier = self.site.notifier.notifier
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )

    @defer.inlineCallbacks
    def _logon(self, user: str) -> Any:
        client = yield connect(
            reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
        )
        self.addCleanup(client.close)
        yield client.logon(user, "demo", client_id=f"{user}-pc")
        return client

    def _subs(self) -> dict[int, str]:
        """The Notifier's subscription table for this site's bridge link: {sub: topic}."""
        tables = [dict(subs) for subs in self.notifier._subs.values()]
        assert len(tables) == 1
        return tables[0]

    def _bridges(self) -> dict[str, Any]:
        """The Notifier's bridge records: registration, link and sessions of each."""
        return {
            name: (dict(r.info), r.link, sorted(r.sessions))
            for name, r in self.notifier.bridges.items()
        }

    @defer.inlineCallbacks
    def test_every_link_message_is_refused_and_the_notifier_sees_nothing(self) -> Any:
        """Each link message is refused; the Notifier's table, logons and other sessions hold."""
        victim = yield self._logon("agent2")
        events = Recorder(victim)
        yield victim.watch_queue("Sales")
        attacker = yield self._logon("agent1")
        bridge = self.site.bridge.router
        table = self._subs()
        bridges = self._bridges()
        recorder = _LinkRecorder(self.site.notifier._links.links)
        marker = "client-attack-7f3a"
        attacks = [(m, {**body, "marker": marker}) for m, body in LINK_ATTACKS.items()]
        # Every sub the bridge holds, and squatting the next ones it would pick.
        next_sub = bridge.fanout._next_sub
        for sub in [*table, *range(next_sub + 1, next_sub + 6)]:
            attacks.append((c.LINK_UNSUBSCRIBE, {"sub": sub, "marker": marker}))
            attacks.append(
                (c.LINK_SUBSCRIBE, {"topic": "user:agent5", "sub": sub, "marker": marker})
            )
        for message, body in attacks:
            with self.assertRaises(ClientError) as caught:
                yield attacker.request(message, body)
            self.assertEqual(caught.exception.code, "unknown-request", message)
        # A request after the attack is answered, so everything before it was handled.
        yield attacker.heartbeat()
        self.assertEqual(recorder.carrying(marker), [])
        self.assertEqual(self._subs(), table)
        self.assertEqual(self._bridges(), bridges)
        self.assertEqual(self.notifier.subscriber_count("user:agent5"), 0)
        self.assertEqual(bridge.counters.get("refused_requests"), len(attacks))
        # The victim still gets its queue's events, and a new logon works.
        code, _ = yield self.site.publish_queue(
            reactor, "Sales", [{"id": "allow-1", "type": "call", "state": "Offering"}]
        )
        self.assertEqual(code, 200)
        yield poll(lambda: any(
            e["added"][0]["id"] == "allow-1" for e in events.of("QueueChanged") if e.get("added")
        ))  # fmt: skip
        newcomer = yield self._logon("agent3")
        snapshot = yield newcomer.watch_queue("Sales")
        self.assertIn("allow-1", [i["id"] for i in snapshot["interactions"]])

    @defer.inlineCallbacks
    def test_a_forged_session_member_does_not_act_as_another_user(self) -> Any:
        """SetStatus with a forged _session changes the sender's status, not the named user's."""
        attacker = yield self._logon("agent1")
        before = self.notifier.status_of("agent5")
        payload = b'{"_session":{"id":"x","user":"agent5"},"status":"Do Not Disturb"}'
        # The raw bytes, duplicate member included, as a hostile client would write them.
        attacker.protocol.transport.write(encode_raw(Kind.REQUEST, *c.SET_STATUS, 999, payload))
        yield attacker.heartbeat()
        yield poll(lambda: self.notifier.status_of("agent1") == "Do Not Disturb")
        self.assertEqual(self.notifier.status_of("agent5"), before)

    @defer.inlineCallbacks
    def test_a_payload_the_bridge_tolerates_does_not_break_the_link(self) -> Any:
        """SetStatus ending in a form feed reaches the Notifier as valid JSON; the link stays."""
        watcher = yield self._logon("agent2")
        yield watcher.watch_queue("Sales")
        attacker = yield self._logon("agent1")
        link = self.site.bridge.router.upstream.link
        payload = b'{"status":"Away"}\x0c'
        attacker.protocol.transport.write(encode_raw(Kind.REQUEST, *c.SET_STATUS, 998, payload))
        yield poll(lambda: self.notifier.status_of("agent1") == "Away")
        yield attacker.heartbeat()
        self.assertIs(self.site.bridge.router.upstream.link, link)
        snapshot = yield watcher.request(c.GET_SERVERS)
        self.assertTrue(snapshot["roster"])
