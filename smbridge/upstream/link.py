"""The bridge's end of the Notifier link: frames in and out, requests matched by id.

Payloads are not parsed here (``Decoder(parse=False)``): a forwarded request's
answer is relayed to its client as bytes, and only the answers the bridge itself
asked for are parsed, by their :class:`Pending`.

Nothing waits on the Notifier for ever (upstream/deadlines.py): a request not
answered within the connector's ``request_timeout`` fails with
``upstream-unavailable`` (retryable) and its late answer is dropped; a link on
which requests (the load meter's Pings at least) go unanswered and nothing at all
is heard for ``dead_after`` seconds is aborted, with the reason in ``close_reason``
(``lastError``). One timer per link serves both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.codec import BadFrame, Decoder, Frame, Kind, encode_error, encode_raw
from smbridge.codec.catalog import LINK_SNAPSHOT_PART, LINK_SUBSCRIBE
from smbridge.codec.frames import DEFAULT_MAX_FRAME, dump_json
from smbridge.codec.pieces import Assembly
from smbridge.errors import ProtocolError, UpstreamError, UpstreamUnavailable
from smbridge.transports.batch import BatchedProtocol
from smbridge.upstream import reasons
from smbridge.upstream.deadlines import PendingTable, Silence

if TYPE_CHECKING:
    from smbridge.transports.batch import WriteBatcher


class LinkOwner(Protocol):
    """What a link needs of the connector that dials it (:class:`UpstreamConnector`)."""

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def request_timeout(self) -> float | None: ...

    @property
    def dead_after(self) -> float | None: ...

    @property
    def dialled(self) -> str: ...

    @property
    def notification(self) -> Callable[[Frame], None]: ...

    def link_made(self, link: UpstreamLink) -> None: ...

    def link_lost(self, link: UpstreamLink, reason: Failure | None) -> None: ...


class Pending(Protocol):
    """Someone waiting for the answer to one upstream request."""

    def resolve(self, frame: Frame) -> None: ...

    def fail(self, error: ProtocolError) -> None: ...


class ReplyTarget(Protocol):
    """Where a forwarded request's answer goes: a session, or a timer wrapped around one."""

    def send(self, data: bytes) -> None: ...


class RelayPending:
    """A forwarded client request: the answer's bytes go back with the client's requestId."""

    __slots__ = ("session", "object_type", "event_id", "request_id")

    def __init__(self, session: ReplyTarget, object_type: int, event_id: int, request_id: int):
        self.session = session
        self.object_type = object_type
        self.event_id = event_id
        self.request_id = request_id

    def resolve(self, frame: Frame) -> None:
        self.session.send(
            encode_raw(
                frame.kind, frame.object_type, frame.event_id, self.request_id, frame.payload
            )
        )

    def fail(self, error: ProtocolError) -> None:
        self.session.send(
            encode_error(self.object_type, self.event_id, self.request_id, **error.payload())
        )


class DeferredPending:
    """An answer the bridge asked for itself: fires a Deferred with the parsed payload."""

    __slots__ = ("deferred",)

    def __init__(self) -> None:
        self.deferred: defer.Deferred[dict[str, Any]] = defer.Deferred()

    def resolve(self, frame: Frame) -> None:
        try:
            body = frame.parsed()
        except ValueError as e:
            self.deferred.errback(UpstreamError(f"the Notifier sent a bad payload: {e}"))
            return
        if frame.kind == Kind.ERROR:
            self.deferred.errback(UpstreamError.from_body(body))
        else:
            self.deferred.callback(body)

    def fail(self, error: ProtocolError) -> None:
        self.deferred.errback(error)


_PART_TYPE, _PART_EVENT = LINK_SNAPSHOT_PART  # compared on every notification: plain ints
_SUBSCRIBE_TYPE, _SUBSCRIBE_EVENT = LINK_SUBSCRIBE
MAX_ASSEMBLED_BYTES = 1 << 30  # one Subscribe answer in pieces may not exceed this in total


class _Assembling:
    """A Subscribe answer arriving in pieces (SnapshotPart), for the waiter of its request."""

    __slots__ = ("pending", "assembly", "bytes")

    def __init__(self, pending: Pending, first: Frame) -> None:
        self.pending = pending
        self.assembly = Assembly(first.parsed())
        self.bytes = len(first.payload)


class UpstreamLink(BatchedProtocol):
    """One TLS connection to the Notifier; ``max_frame`` caps the frames it takes from it.

    A Subscribe answer too large for one frame comes in pieces (docs/protocol.md,
    Link): a response with ``more: true`` and ``sub``, then SnapshotPart
    notifications for that ``sub`` until ``more`` is false. The link puts them
    together and only then resolves the request, so the fan-out sees one snapshot.
    """

    log = Logger()

    def __init__(self, connector: LinkOwner, batcher: WriteBatcher, max_frame: int):
        super().__init__(batcher)
        self.connector = connector
        self.decoder = Decoder(max_frame, parse=False)
        self.pending: PendingTable[Pending] = PendingTable(connector.request_timeout)
        self.silence = Silence(connector.dead_after)
        self.clock = connector.clock
        self._timer: IDelayedCall | None = None
        self.late_answers = 0  # answers that came after their request had timed out
        self._next_id = 0
        self.close_reason: str | None = None  # why we dropped the link ourselves, if we did
        self.dropped_silent = False  # dropped for silence (--link-dead-after)
        self.assembling: dict[int, _Assembling] = {}  # sub -> a Subscribe answer in pieces

    def connectionMade(self) -> None:
        self.connected = True
        self.connector.link_made(self)

    def dataReceived(self, data: bytes) -> None:
        events = self.decoder.feed(data)
        try:
            self._frames(events)
        finally:
            if data:
                # Whatever comes in (a part of a frame too), the Notifier is alive: the
                # wait restarts if requests are still out (a waiter that already timed
                # out is not waited for again).
                self.silence.heard(self.clock.seconds(), still_waiting=len(self.pending) > 0)

    def _frames(self, events: list[Frame | BadFrame]) -> None:
        for event in events:
            if type(event) is Frame:
                if event.kind == Kind.NOTIFICATION:
                    if event.event_id == _PART_EVENT and event.object_type == _PART_TYPE:
                        self._part(event)
                    else:
                        self._notification(event)
                else:
                    pending = self.pending.take(event.request_id)
                    if pending is not None:
                        if not self._first_piece(event, pending):
                            pending.resolve(event)
                    else:
                        self.late_answers += 1  # timed out already: answered once, dropped
            else:
                assert isinstance(event, BadFrame)
                # The connector logs it (once per change of reason) and shows it in lastError.
                hint = " (over --link-max-frame)" if "length" in event.message else ""
                self.close_reason = f"the Notifier sent a bad frame{hint}: {event.message}"
                self.transport.loseConnection()  # type: ignore[union-attr]
                return

    def _first_piece(self, frame: Frame, pending: Pending) -> bool:
        """True when ``frame`` opens a Subscribe answer in pieces (kept until the last)."""
        if frame.event_id != _SUBSCRIBE_EVENT or frame.object_type != _SUBSCRIBE_TYPE:
            return False  # (cheap first: every relayed answer passes here)
        if frame.kind != Kind.RESPONSE:
            return False
        if b'"more":true' not in frame.payload:
            return False
        try:
            body = frame.parsed()
        except ValueError:
            return False  # the waiter reports the bad payload
        sub = body.get("sub")
        if body.get("more") is not True or isinstance(sub, bool) or not isinstance(sub, int):
            return False
        self.assembling[sub] = _Assembling(pending, frame)
        return True

    def _part(self, frame: Frame) -> None:
        """A SnapshotPart: add it to its answer; the last one resolves the request."""
        entry = self.assembling.get(frame.request_id)
        if entry is None:
            self.log.warn(
                "SnapshotPart for sub {sub}, which is not being assembled: ignored",
                sub=frame.request_id,
                event="upstream.part.unexpected",
            )
            return
        entry.bytes += len(frame.payload)
        try:
            body = frame.parsed()
        except ValueError as e:
            del self.assembling[frame.request_id]
            entry.pending.fail(UpstreamError(f"the Notifier sent a bad SnapshotPart: {e}"))
            return
        if entry.bytes > MAX_ASSEMBLED_BYTES:
            del self.assembling[frame.request_id]
            entry.pending.fail(UpstreamError("a Subscribe answer in pieces exceeds 1 GiB"))
            return
        entry.assembly.add(body)
        if body.get("more") is True:
            return
        del self.assembling[frame.request_id]
        whole = entry.assembly.result
        whole.pop("more", None)
        whole.pop("sub", None)
        entry.pending.resolve(Frame(Kind.RESPONSE, *LINK_SUBSCRIBE, 0, b"", body=whole))

    def _notification(self, frame: Frame) -> None:
        try:
            self.connector.notification(frame)
        except Exception:
            self.log.failure(
                "Handling an upstream notification failed", event="upstream.notification.failed"
            )

    def request(self, object_type: int, event_id: int, payload: bytes, pending: Pending) -> None:
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        now = self.clock.seconds()
        self.pending.add(self._next_id, pending, now)
        self.silence.asked(now)
        self._arm()
        self.send(encode_raw(Kind.REQUEST, object_type, event_id, self._next_id, payload))

    # --- deadlines ------------------------------------------------------------------
    def _next_check(self) -> float | None:
        times = [
            t for t in (self.pending.next_deadline(), self.silence.deadline()) if t is not None
        ]
        return min(times) if times else None

    def _arm(self) -> None:
        """Make sure the timer runs while something has a deadline (it may fire early)."""
        if self._timer is not None or not self.connected:
            return
        at = self._next_check()
        if at is not None:
            self._timer = self.clock.callLater(max(0.0, at - self.clock.seconds()), self._check)

    def _check(self) -> None:
        self._timer = None
        if not self.connected:
            return
        now = self.clock.seconds()
        if self.silence.dead(now):
            self._dead(now)
            return
        expired = self.pending.expire(now)
        if expired:
            timeout = self.pending.timeout or 0.0
            error = UpstreamUnavailable(reasons.request_timed_out(timeout))
            self.log.info(
                "{count} request(s) to the Notifier timed out after {timeout} s",
                count=len(expired),
                timeout=timeout,
                event="upstream.request.timeout",
            )
            for waiter in expired:
                try:
                    waiter.fail(error)
                except Exception:
                    self.log.failure("A timed-out waiter failed", event="upstream.request.failed")
        self._arm()

    def _dead(self, now: float) -> None:
        """Nothing heard for dead_after seconds while waiting: drop the link (lastError says so)."""
        # The configured time, not the measured one: the same cause keeps the same words,
        # so the connector logs it once (upstream.link.failed), not once per drop.
        self.close_reason = reasons.silent(self.connector.dialled, self.silence.dead_after or 0.0)
        self.dropped_silent = True
        self.log.info(
            "Nothing heard from the Notifier for {silent:.1f} s with requests out: link dropped",
            silent=self.silence.silent_for(now),
            event="upstream.link.silent",
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def notify(self, object_type: int, event_id: int, body: dict[str, Any]) -> None:
        self.send(encode_raw(Kind.NOTIFICATION, object_type, event_id, 0, dump_json(body)))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected = False
        self._out = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        error = UpstreamUnavailable("the Notifier link dropped while the request was in flight")
        for waiter in self.pending.drain():
            waiter.fail(error)
        assembling, self.assembling = self.assembling, {}
        for entry in assembling.values():
            entry.pending.fail(error)
        self.connector.link_lost(self, reason)


class UpstreamLinkFactory(Factory):
    def __init__(
        self,
        connector: LinkOwner,
        batcher: WriteBatcher,
        max_frame: int = DEFAULT_MAX_FRAME,
    ):
        self.connector = connector
        self.batcher = batcher
        self.max_frame = max_frame

    def buildProtocol(self, addr: object) -> UpstreamLink:
        link = UpstreamLink(self.connector, self.batcher, self.max_frame)
        link.factory = self
        return link
