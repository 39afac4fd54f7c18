"""The Python client reads a directory page by page (client/directory.py) and gathers a
watch snapshot that came in pieces (client/continued.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from smbridge.client import BridgeClient, BridgeProtocol, parse_bridge_uri
from smbridge.client.directory import read_directory
from smbridge.client.protocol import ClientError
from smbridge.codec import Decoder, Frame, Kind, encode
from smbridge.codec.catalog import QUEUE_CHANGED, WATCH_QUEUE

ENTRIES = [{"id": f"u{i}"} for i in range(23)]


def pager(
    size: int, version: Callable[[], int] = lambda: 0
) -> tuple[Callable[[dict[str, Any]], Deferred[dict[str, Any]]], list[dict[str, Any]]]:
    """A bridge's GetDirectory over ENTRIES in pages of ``size``; ``version`` read per call."""
    asked: list[dict[str, Any]] = []

    def request(body: dict[str, Any]) -> Deferred[dict[str, Any]]:
        asked.append(body)
        offset = body.get("offset", 0)
        end = min(len(ENTRIES), offset + size)
        more = end < len(ENTRIES)
        page = {
            "name": body["name"],
            "entries": ENTRIES[offset:end],
            "offset": offset,
            "total": len(ENTRIES),
            "next": end if more else None,
            "more": more,
            "version": version(),
        }
        return succeed(page)

    return request, asked


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    return out[0]


def test_pages_are_followed_in_order() -> None:
    """read_directory asks each page by next and returns every entry in order."""
    request, asked = pager(5)
    whole = result(read_directory(request, "Company Directory"))
    assert whole["entries"] == ENTRIES and whole["total"] == 23
    assert [b.get("offset", 0) for b in asked] == [0, 5, 10, 15, 20]


def test_a_version_change_restarts_the_walk() -> None:
    """Pages of different versions do not belong together: the walk starts again."""
    versions = iter([0, 1, 1, 1, 1])
    request, asked = pager(10, lambda: next(versions))
    whole = result(read_directory(request, "D"))
    assert whole["entries"] == ENTRIES and whole["version"] == 1
    assert len(asked) == 5


def test_a_directory_changing_under_every_walk_fails_clearly() -> None:
    """A directory that changes under every walk fails directory-changing after ``tries``."""
    counter = iter(range(100))
    request, _ = pager(10, lambda: next(counter))
    failure = result(read_directory(request, "D", tries=2))
    with pytest.raises(ClientError) as caught:
        failure.raiseException()
    assert caught.value.code == "directory-changing"


def test_limit_is_sent_with_every_page() -> None:
    """A caller's limit goes with every page request."""
    request, asked = pager(10)
    result(read_directory(request, "D", limit=10))
    assert all(b["limit"] == 10 for b in asked)


class WatchInPieces(SynchronousTestCase):
    """BridgeClient.watch_queue gathers a snapshot that came in pieces."""

    def setUp(self) -> None:
        self.transport = StringTransport()
        self.protocol = BridgeProtocol()
        self.protocol.makeConnection(self.transport)
        self.client = BridgeClient(self.protocol, Clock(), parse_bridge_uri("tls://typed.host"))
        self.seen: list[dict[str, Any]] = []
        self.client.add_listener(lambda name, frame: self.seen.append(frame.parsed()))

    def watch(self) -> tuple[Deferred[dict[str, Any]], int]:
        d = self.client.watch_queue("Sales")
        (frame,) = Decoder().feed(self.transport.value())
        assert isinstance(frame, Frame)
        return d, frame.request_id

    def test_watch_queue_fires_with_the_whole_snapshot(self) -> None:
        """The reply's piece and its continued QueueChanged make one snapshot; listeners see all."""
        d, rid = self.watch()
        first = {"queue": "Sales", "interactions": [{"id": 1}], "more": True}
        tail = [
            {"queue": "Sales", "added": [{"id": 2}], "continued": True, "more": True},
            {"queue": "Other", "added": [{"id": 9}], "changed": [], "removed": []},
            {"queue": "Sales", "added": [{"id": 3}], "continued": True, "more": False},
        ]
        data = encode(Kind.RESPONSE, *WATCH_QUEUE, rid, first)
        data += b"".join(encode(Kind.NOTIFICATION, *QUEUE_CHANGED, 0, t) for t in tail)
        self.protocol.dataReceived(data)
        whole = self.successResultOf(d)
        assert whole == {"queue": "Sales", "interactions": [{"id": 1}, {"id": 2}, {"id": 3}]}
        assert [s["added"][0]["id"] for s in self.seen] == [2, 9, 3]

    def test_a_snapshot_in_one_piece_is_the_reply(self) -> None:
        """A reply without more fires at once, unchanged."""
        d, rid = self.watch()
        reply = {"queue": "Sales", "interactions": [{"id": 1}]}
        self.protocol.dataReceived(encode(Kind.RESPONSE, *WATCH_QUEUE, rid, reply))
        assert self.successResultOf(d) == reply

    def test_the_connection_ending_mid_snapshot_fails_the_watch(self) -> None:
        """A connection lost before the last piece fails with connection-lost, never hangs."""
        d, rid = self.watch()
        first = {"queue": "Sales", "interactions": [], "more": True}
        self.protocol.dataReceived(encode(Kind.RESPONSE, *WATCH_QUEUE, rid, first))
        self.assertNoResult(d)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        assert self.failureResultOf(d, ClientError).value.code == "connection-lost"
