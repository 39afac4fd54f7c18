"""The client library retries a retryable failure (upstream-unavailable) once, then gives up."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client import BridgeClient, BridgeProtocol, ClientError
from smbridge.codec import Decoder, Frame, Kind, encode, encode_error
from smbridge.codec.catalog import SET_STATUS


class RetryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.protocol = BridgeProtocol()
        self.protocol.makeConnection(self.transport)
        self.client = BridgeClient(self.protocol, self.clock, retry_delay=1.0)

    def sent(self) -> list[Frame]:
        frames = Decoder().feed(self.transport.value())
        self.transport.clear()
        return frames  # type: ignore[return-value]

    def fail(self, frame: Frame, code: str, **extra: Any) -> None:
        self.protocol.dataReceived(
            encode_error(frame.object_type, frame.event_id, frame.request_id, code, "x", **extra)
        )

    def answer(self, frame: Frame) -> None:
        self.protocol.dataReceived(
            encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, {"ok": 1})
        )

    def test_retryable_failure_is_sent_again_once_after_the_delay(self) -> None:
        """upstream-unavailable (retryable) is retried after retry_delay; its answer wins."""
        d = self.client.request(SET_STATUS, {"status": "Away"})
        (first,) = self.sent()
        self.fail(first, "upstream-unavailable", retryable=True)
        self.assertNoResult(d)
        self.clock.advance(0.99)
        self.assertEqual(self.sent(), [])
        self.clock.advance(0.01)
        (second,) = self.sent()
        self.assertEqual(second.parsed(), {"status": "Away"})
        self.assertNotEqual(second.request_id, first.request_id)
        self.answer(second)
        self.assertEqual(self.successResultOf(d), {"ok": 1})

    def test_second_retryable_failure_reaches_the_caller(self) -> None:
        """A retry that fails again is the caller's failure; no third attempt is sent."""
        d = self.client.request(SET_STATUS, {"status": "Away"})
        self.fail(self.sent()[0], "upstream-unavailable", retryable=True)
        self.clock.advance(1.0)
        self.fail(self.sent()[0], "upstream-unavailable", retryable=True)
        failure = self.failureResultOf(d, ClientError)
        self.assertEqual(failure.value.code, "upstream-unavailable")
        self.clock.advance(10)
        self.assertEqual(self.sent(), [])

    def test_non_retryable_failure_is_not_retried(self) -> None:
        """An error without retryable (bad-request) fails at once, nothing is resent."""
        d = self.client.request(SET_STATUS, {"status": 5})
        self.fail(self.sent()[0], "bad-request")
        self.assertEqual(self.failureResultOf(d, ClientError).value.code, "bad-request")
        self.clock.advance(10)
        self.assertEqual(self.sent(), [])
