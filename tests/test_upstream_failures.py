"""Why the Notifier link is down: said in lastError and logged once per change, not per retry."""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.exceptions import DNSMismatch
from service_identity.hazmat import DNS_ID
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, TimeoutError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from smbridge.codec import Kind
from smbridge.codec import catalog as c
from smbridge.testing import FakeNotifierEndpoint
from smbridge.transports.batch import WriteBatcher
from smbridge.upstream.addresses import NotifierEndpoints
from smbridge.upstream.backoff import STABLE_AFTER
from smbridge.upstream.connector import LinkState, UpstreamConnector
from smbridge.upstream.reasons import describe

CIC = {"name": "cicA", "role": "primary"}


class Rig:
    """A connector over one fake Notifier, with its log events captured."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.a = FakeNotifierEndpoint("a:5597")
        self.connector = UpstreamConnector(
            self.clock,
            NotifierEndpoints([("a:5597", self.a)]),
            {"name": "sm1"},
            WriteBatcher(self.clock),
            "a:5597",
            1 << 20,
        )
        self.logged = EventLoggingObserver()
        globalLogPublisher.addObserver(self.logged)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self.logged)
        if self.connector.running:
            self.connector.stopService()

    def events(self, key: str) -> list[Any]:
        return [e for e in self.logged if e.get("event") == key]

    def warnings(self) -> list[Any]:
        return [e for e in self.logged if e["log_level"] >= LogLevel.warn]

    def next_attempt(self) -> None:
        """Advance the clock until the connector dials again (bounded)."""
        before = self.a.attempts
        for _ in range(2000):
            if self.a.attempts > before:
                return
            self.clock.advance(0.05)
        raise AssertionError("no new attempt within 100 s")

    def take_register(self) -> Any:
        self.clock.advance(0)
        (frame,) = self.a.last.take()
        assert (frame.object_type, frame.event_id) == c.LINK_REGISTER
        return frame

    def register(self) -> None:
        self.a.last.answer(self.take_register(), {"cic": CIC, "parameters": {}, "roster": []})

    def refuse(self, code: str, message: str) -> None:
        body = {"code": code, "message": message}
        self.a.last.answer(self.take_register(), body, kind=Kind.ERROR)
        self.a.drop()


def test_unreachable_notifier_is_reported_once_across_retries_and_cleared_when_up() -> None:
    """Nothing listening: lastError says so, one warning for five attempts, cleared when up."""
    rig = Rig()
    try:
        rig.a.reachable = False
        rig.connector.startService()
        for _ in range(4):
            rig.next_attempt()
        assert rig.a.attempts == 5
        assert rig.connector.last_error is not None
        assert "connection refused" in rig.connector.last_error
        assert "a:5597" in rig.connector.last_error
        (warning,) = rig.warnings()
        assert warning["event"] == "upstream.link.failed"
        assert warning["reason"] == rig.connector.last_error
        assert warning["server"] == "a:5597"
        rig.a.reachable = True
        rig.next_attempt()
        rig.register()
        assert rig.connector.state is LinkState.UP
        assert rig.connector.last_error is None
        (recovered,) = rig.events("upstream.link.recovered")
        assert recovered["log_level"] == LogLevel.info
        assert len(rig.warnings()) == 1
    finally:
        rig.close()


def test_refused_registration_is_reported_once_per_change() -> None:
    """The same refusal three times is one warning; a different reason is a second one."""
    rig = Rig()
    try:
        rig.connector.startService()
        for attempt in range(3):
            if attempt:
                rig.next_attempt()
            rig.refuse("certificate-not-trusted", "this bridge's certificate is not trusted")
        assert rig.connector.last_error is not None
        assert "certificate-not-trusted" in rig.connector.last_error
        assert "not trusted" in rig.connector.last_error
        assert len(rig.warnings()) == 1
        rig.a.reachable = False
        rig.next_attempt()
        rig.next_attempt()
        assert "connection refused" in (rig.connector.last_error or "")
        warnings = rig.warnings()
        assert [w["event"] for w in warnings] == ["upstream.link.failed"] * 2
        assert warnings[1]["reason"] == rig.connector.last_error
    finally:
        rig.close()


def test_a_flapping_link_logs_its_reason_once_and_a_lasting_link_makes_it_news_again() -> None:
    """Drops right after up repeat nothing; after a link that lasted, the same drop is logged."""
    rig = Rig()
    try:
        rig.connector.startService()
        rig.register()
        rig.a.drop()
        assert rig.connector.last_error == "the Notifier closed the link"
        for _ in range(3):  # flapping: up, and down at once
            rig.next_attempt()
            rig.register()
            assert rig.connector.last_error is None
            rig.a.drop()
        assert len(rig.warnings()) == 1
        assert len(rig.events("upstream.link.recovered")) == 1
        rig.next_attempt()
        rig.register()
        rig.clock.advance(STABLE_AFTER)
        rig.a.drop()
        assert [w["reason"] for w in rig.warnings()] == ["the Notifier closed the link"] * 2
    finally:
        rig.close()


def test_describe_names_the_cause_of_tls_and_connect_failures() -> None:
    """Name mismatch, untrusted or refused certificates and a refused connect read plainly."""
    mismatch = VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("wrong.example"))])
    text = describe(mismatch, "127.0.0.1:5597")
    assert "wrong.example" in text and "--notifier-name" in text
    verify = SSL.Error([("SSL routines", "", "certificate verify failed")])
    text = describe(verify, "127.0.0.1:5597")
    assert "certificate verify failed" in text and "--ca" in text
    alert = SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")])
    text = describe(alert, "127.0.0.1:5597")
    assert "--client-cert" in text and "tlsv1 alert unknown ca" in text
    text = describe(ConnectionRefusedError("111: Connection refused"), "127.0.0.1:5597")
    assert text.startswith("cannot connect to 127.0.0.1:5597: connection refused")
    assert "timed out" in describe(TimeoutError(), "n1:5597")
    assert describe(ConnectionDone(), "n1:5597") == "the Notifier closed the link"


def test_describe_is_stable_across_retries() -> None:
    """The same cause gives the same text each time (no addresses of objects, no ports of ours)."""
    one = describe(Failure(ConnectionRefusedError("111: Connection refused")).value, "n1:5597")
    two = describe(Failure(ConnectionRefusedError("111: Connection refused")).value, "n1:5597")
    assert one == two
