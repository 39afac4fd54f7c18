"""The client protocol over a StringTransport (smbridge.client.protocol)."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client import BridgeProtocol, ClientError
from smbridge.codec import Decoder, Frame, Kind, encode, encode_error


def sent_frames(transport: StringTransport) -> list[Frame]:
    """Decode everything the protocol wrote and clear the transport."""
    frames = Decoder().feed(transport.value())
    transport.clear()
    assert all(isinstance(f, Frame) for f in frames)
    return frames  # type: ignore[return-value]


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.transport = StringTransport()
        self.protocol = BridgeProtocol()
        self.protocol.makeConnection(self.transport)

    def feed(self, data: bytes, bytewise: bool = False) -> None:
        if bytewise:
            for i in range(len(data)):
                self.protocol.dataReceived(data[i : i + 1])
        else:
            self.protocol.dataReceived(data)

    def test_request_encoding_and_increasing_ids(self) -> None:
        """Requests go out as request frames with increasing requestIds starting at 1."""
        self.protocol.request(168, 4)
        self.protocol.request(173, 1, {"queue": "Sales"})
        frames = sent_frames(self.transport)
        assert [(f.kind, f.object_type, f.event_id, f.request_id) for f in frames] == [
            (Kind.REQUEST, 168, 4, 1),
            (Kind.REQUEST, 173, 1, 2),
        ]
        assert frames[1].body == {"queue": "Sales"}

    def test_responses_matched_by_request_id_out_of_order(self) -> None:
        """A response resolves the request with its requestId even when answers arrive reversed."""
        first = self.protocol.request(168, 4)
        second = self.protocol.request(173, 1, {"queue": "Sales"})
        self.feed(
            encode(Kind.RESPONSE, 173, 1, 2, {"queue": "Sales", "interactions": []})
            + encode(Kind.RESPONSE, 168, 4, 1, {"server": "smbridge"}),
            bytewise=True,
        )
        assert self.successResultOf(second) == {"queue": "Sales", "interactions": []}
        assert self.successResultOf(first) == {"server": "smbridge"}
        assert self.protocol.pending == 0

    def test_error_frame_fails_with_client_error(self) -> None:
        """An error frame fails its request with a ClientError carrying code, message and body."""
        d = self.protocol.request(168, 1, {"user": "a", "password": "b"})
        self.feed(encode_error(168, 1, 1, "logon-failed", "no", reason="bad-credentials"))
        error = self.failureResultOf(d, ClientError).value
        assert (error.code, error.message, error.reason) == (
            "logon-failed",
            "no",
            "bad-credentials",
        )
        assert error.body == {"code": "logon-failed", "message": "no", "reason": "bad-credentials"}
        assert str(error) == "logon-failed: no (bad-credentials)"

    def test_connection_loss_fails_pending(self) -> None:
        """Every pending request fails with connection-lost when the connection ends."""
        a = self.protocol.request(168, 3)
        b = self.protocol.request(173, 1, {"queue": "Q"})
        closed = self.protocol.when_closed()
        self.protocol.connectionLost(Failure(ConnectionLost("reset")))
        for d in (a, b):
            assert self.failureResultOf(d, ClientError).value.code == "connection-lost"
        assert isinstance(self.successResultOf(closed), ConnectionLost)
        assert not self.protocol.connected

    def test_request_after_close_fails_not_connected(self) -> None:
        """A request on a closed connection fails at once with not-connected and writes nothing."""
        self.protocol.connectionLost(Failure(ConnectionDone()))
        d = self.protocol.request(168, 4)
        assert self.failureResultOf(d, ClientError).value.code == "not-connected"
        assert self.transport.value() == b""

    def test_notifications_reach_listeners(self) -> None:
        """Notification frames go to every listener, and a removed listener hears nothing more."""
        seen: list[tuple[str, Any]] = []
        first = lambda frame: seen.append(("first", frame.body))  # noqa: E731
        second = lambda frame: seen.append(("second", frame.body))  # noqa: E731
        self.protocol.add_listener(first)
        self.protocol.add_listener(second)
        self.feed(encode(Kind.NOTIFICATION, 173, 3, 0, {"queue": "Sales", "added": []}))
        self.protocol.remove_listener(first)
        self.feed(encode(Kind.NOTIFICATION, 168, 10, 0, {"secondsLeft": 60}))
        assert seen == [
            ("first", {"queue": "Sales", "added": []}),
            ("second", {"queue": "Sales", "added": []}),
            ("second", {"secondsLeft": 60}),
        ]

    def test_failing_listener_does_not_stop_others(self) -> None:
        """A listener that raises is logged and the next listener still runs."""
        seen: list[int] = []

        def broken(frame: Frame) -> None:
            raise RuntimeError("boom")

        self.protocol.add_listener(broken)
        self.protocol.add_listener(lambda frame: seen.append(frame.event_id))
        self.feed(encode(Kind.NOTIFICATION, 173, 3, 0, {}))
        assert seen == [3]
        assert len(self.flushLoggedErrors(RuntimeError)) == 1

    def test_bad_frame_closes_and_fails_pending(self) -> None:
        """A frame the codec rejects fails pending requests with bad-frame and closes."""
        d = self.protocol.request(168, 4)
        bad = bytearray(encode(Kind.RESPONSE, 168, 4, 1, {}))
        bad[4] = 9  # version
        self.feed(bytes(bad))
        error = self.failureResultOf(d, ClientError).value
        assert error.code == "bad-frame"
        assert "unsupported version 9" in error.message
        assert self.transport.disconnecting is True

    def test_unsolicited_error_explains_close(self) -> None:
        """An error frame with requestId 0 (e.g. tls-required) is named in connection-lost."""
        d = self.protocol.request(168, 1, {})
        self.feed(encode_error(168, 1, 0, "tls-required", "use TLS"))
        self.assertNoResult(d)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        error = self.failureResultOf(d, ClientError).value
        assert error.code == "connection-lost"
        assert "tls-required: use TLS" in error.message

    def test_response_with_unknown_request_id_is_ignored(self) -> None:
        """A response nobody asked for is dropped without disturbing pending requests."""
        d = self.protocol.request(168, 4)
        self.feed(encode(Kind.RESPONSE, 168, 4, 99, {}))
        self.assertNoResult(d)
        assert self.protocol.pending == 1

    def test_request_ids_wrap_and_skip_pending(self) -> None:
        """After 2**32-1 the requestId wraps to 1, skipping ids still waiting for an answer."""
        self.protocol.request(168, 4)  # id 1 stays pending
        self.protocol._next_id = 0xFFFFFFFF
        self.protocol.request(168, 4)
        self.protocol.request(168, 4)
        assert [f.request_id for f in sent_frames(self.transport)] == [1, 0xFFFFFFFF, 2]

    def test_ready_fires_on_connect_for_clear_text(self) -> None:
        """A clear-text protocol is ready at connectionMade, a TLS one only after the handshake."""
        assert self.successResultOf(self.protocol.ready) is self.protocol
        tls = BridgeProtocol(tls=True)
        tls.makeConnection(StringTransport())
        self.assertNoResult(tls.ready)
        tls.handshakeCompleted()
        assert self.successResultOf(tls.ready) is tls

    def test_tls_failure_before_handshake_fails_ready(self) -> None:
        """A TLS connection that drops before its handshake fails ``ready`` with connection-lost."""
        tls = BridgeProtocol(tls=True)
        tls.makeConnection(StringTransport())
        tls.connectionLost(Failure(ConnectionLost("certificate verify failed")))
        error = self.failureResultOf(tls.ready, ClientError).value
        assert error.code == "connection-lost"
        assert "certificate verify failed" in error.message
