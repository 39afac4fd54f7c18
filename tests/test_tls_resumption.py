"""TLS session resumption on the client port and the wss port, with rotated ticket keys."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.codec import Kind, encode
from smbridge.codec import catalog as c
from smbridge.config import TunnelSettings
from smbridge.testing import poll, start_site
from smbridge.testing.tls_visit import tls_visit
from smbridge.transports import tickets
from smbridge.transports.resumption import learn_key_name

pytestmark = pytest.mark.integration


def client_context(ca: Path, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = context.maximum_version = version
    return context


CREATE_SESSION = encode(
    Kind.REQUEST,
    *c.CREATE_SESSION,
    1,
    {"user": "agent1", "password": "demo", "clientId": "resume-test"},
)


def reconnect(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None, ws: bool
) -> tuple[bool, ssl.SSLSession | None]:
    """A visit to sm1's wss tunnel or a CreateSession on the client port."""
    return tls_visit(port, context, session, "/sm1/session" if ws else None, CREATE_SESSION)


def rotation_story(
    port: int, ca: Path, ws: bool, rotate: Any, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
) -> list[bool]:
    """Resumed? for: first visit, return, return after one rotation, after two."""
    context = client_context(ca, version)
    first, session = reconnect(port, context, None, ws)
    assert session is not None and session.has_ticket
    seen = [first, reconnect(port, context, session, ws)[0]]
    threads.blockingCallFromThread(reactor, rotate)
    seen.append(reconnect(port, context, session, ws)[0])
    threads.blockingCallFromThread(reactor, rotate)
    seen.append(reconnect(port, context, session, ws)[0])
    return seen


class Resumption(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def site(self, **options: Any) -> Any:
        """A started site, stopped once the bridge has seen every client leave."""
        work = Path(tempfile.mkdtemp(prefix="smbridge-resume-"))
        site = yield start_site(reactor, work, **options)
        self.addCleanup(site.stop)
        self.addCleanup(poll, lambda: not site.bridge.connections.connections)
        return site

    @defer.inlineCallbacks
    def test_tickets_resume_on_both_ports_through_one_rotation(self) -> Any:
        """Both ports resume a ticket; after one key rotation still, after two not (full
        handshake, which succeeds)."""
        site = yield self.site(wss_port=0, tunnel=TunnelSettings(ping_interval=0))
        keys = site.bridge.tickets
        for port, ws in ((site.client_port, False), (site.wss_port, True)):
            seen = yield threads.deferToThread(rotation_story, port, site.pki.ca, ws, keys.rotate)
            self.assertEqual(seen, [False, True, True, False], f"ws={ws}")

    @defer.inlineCallbacks
    def test_tls12_tickets_follow_the_same_rotation(self) -> Any:
        """A TLS 1.2 client's ticket (the session_ticket extension) is routed the same way."""
        site = yield self.site()
        story = yield threads.deferToThread(
            rotation_story,
            site.client_port,
            site.pki.ca,
            False,
            site.bridge.tickets.rotate,
            ssl.TLSVersion.TLSv1_2,
        )
        self.assertEqual(story, [False, True, True, False])

    @defer.inlineCallbacks
    def test_a_ticket_from_the_client_port_resumes_on_wss(self) -> Any:
        """The two ports share the ticket keys: a ticket from one resumes on the other."""
        site = yield self.site(wss_port=0, tunnel=TunnelSettings(ping_interval=0))
        context = client_context(site.pki.ca)
        _, session = yield threads.deferToThread(reconnect, site.client_port, context, None, False)
        resumed, _ = yield threads.deferToThread(reconnect, site.wss_port, context, session, True)
        self.assertTrue(resumed)

    @defer.inlineCallbacks
    def test_rotation_zero_offers_no_tickets(self) -> Any:
        """--tls-ticket-rotation 0 turns resumption off: every handshake is a full one."""
        site = yield self.site(tls_ticket_rotation=0.0)
        context = client_context(site.pki.ca)
        _, session = yield threads.deferToThread(reconnect, site.client_port, context, None, False)
        resumed, _ = yield threads.deferToThread(
            reconnect, site.client_port, context, session, False
        )
        self.assertFalse(resumed)


def test_keys_rotate_on_the_injected_clock_and_keep_one_previous_generation() -> None:
    """A connection after the period starts a new key; two generations are kept."""
    files = pki.ensure_site_pki(Path(tempfile.mkdtemp(prefix="smbridge-keys-")))
    clock = Clock()
    keys = pki.server_tickets(files.bridge, clock, 60)
    first = keys.current()
    clock.advance(59)
    assert keys.current() is first
    clock.advance(1)
    second = keys.current()
    assert second is not first
    assert [g.context for g in keys.generations] == [second, first]
    clock.advance(60)
    third = keys.current()
    assert [g.context for g in keys.generations] == [third, second]
    names = [g.key_name for g in keys.generations]
    assert all(n is not None and len(n) == 16 for n in names) and names[0] != names[1]


def test_learnt_key_name_is_the_one_a_ticket_carries() -> None:
    """The key name learnt in memory is the one in the ClientHello of a returning client."""
    files = pki.ensure_site_pki(Path(tempfile.mkdtemp(prefix="smbridge-keys-")))
    context = pki.server_options(files.bridge, session_tickets=True).getContext()
    name = learn_key_name(context)
    assert name is not None and len(name) == 16
    assert learn_key_name(context) == name  # stable for a context
    other = pki.server_options(files.bridge, session_tickets=True).getContext()
    assert learn_key_name(other) != name


def test_hello_parser_needs_whole_record_and_survives_garbage() -> None:
    """first_record asks for the header then the record; junk gives no key name."""
    assert tickets.first_record(b"") == 0
    assert tickets.first_record(b"GET /") == 0
    assert tickets.first_record(b"\x16\x03") == 5
    assert tickets.first_record(b"\x16\x03\x01\x00\x10") == 21
    assert tickets.hello_key_name(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00") is None
    assert tickets.hello_key_name(b"\x16\x03\x01\x00\x02\x01\xff") is None


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        # A handshake record header in front of arbitrary bytes reaches the parser's walk.
        st.binary(max_size=600).map(lambda b: b"\x16\x03\x01" + len(b).to_bytes(2, "big") + b),
        st.binary(max_size=600).map(
            lambda b: b"\x16\x03\x01" + (len(b) + 4).to_bytes(2, "big") + b"\x01\x00\x02\x00" + b
        ),
    )
)
def test_ticket_parsers_never_raise_on_a_strangers_bytes(data: bytes) -> None:
    """Whatever a client sends first, the ticket routing reads it without raising."""
    needed = tickets.first_record(data)
    assert needed == 0 or tickets.RECORD_HEADER <= needed <= tickets.RECORD_HEADER + 16384
    name = tickets.hello_key_name(data)
    assert name is None or len(name) == tickets.KEY_NAME_LENGTH
    issued = tickets.issued_key_name(data)
    assert issued is None or len(issued) == tickets.KEY_NAME_LENGTH
