"""The Notifier's end of the bridge link: a thin protocol over :class:`Notifier`.

Frames come from one :class:`~smbridge.codec.Decoder` per connection; each
request is answered with the same (objectType, eventId, requestId), as a
``response`` or as an ``error`` carrying the ProtocolError payload. The first
request must be Register. Nothing raised while handling a frame escapes
``dataReceived``: it is logged and answered ``internal-error``, because one bad
request must not take down every session riding on the link.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.codec.catalog import (
    LINK_AUTHENTICATE,
    LINK_BRIDGE_CHANGED,
    LINK_PING,
    LINK_REGISTER,
    LINK_SESSION_CLOSED,
    LINK_SESSION_OPENED,
    LINK_SNAPSHOT_PART,
    LINK_SUBSCRIBE,
    LINK_UNSUBSCRIBE,
    name_of,
)
from smbridge.codec.frames import (
    BadFrame,
    Decoder,
    Frame,
    Kind,
    dump_json,
    encode,
    encode_error,
    encode_raw,
)
from smbridge.codec.pieces import PIECE_BYTES, SLOT, PieceTooLarge, encode_value, split_list
from smbridge.errors import BadRequest, ProtocolError
from smbridge.notifier.model import Notifier

LINK_OBJECT_TYPE = 200


def _string(body: dict[str, Any], key: str, optional: bool = False) -> Any:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _sub(body: dict[str, Any]) -> int:
    sub = body.get("sub")
    if isinstance(sub, bool) or not isinstance(sub, int):
        raise BadRequest("sub must be an integer")
    return sub


def subscribe_answer(
    request_id: int, sub: int, snapshot: dict[str, Any], bound: int = PIECE_BYTES
) -> list[bytes]:
    """The frames answering a Subscribe: one response, or pieces when the snapshot is large.

    A snapshot whose answer fits ``bound`` bytes is one response ``{snapshot}``.
    A larger one is cut along its longest list: the response carries the first
    piece with ``more: true`` and ``sub``; SnapshotPart notifications (requestId =
    ``sub``) carry ``{sub, snapshot: {<list>: [...]}, more}`` until ``more`` is
    false. They are written together, so no change event of the topic comes between.
    """
    whole = dump_json({"snapshot": snapshot})
    lists = [k for k, v in snapshot.items() if isinstance(v, list)]
    if len(whole) <= bound or not lists:
        return [encode_raw(Kind.RESPONSE, *LINK_SUBSCRIBE, request_id, whole)]
    field = max(lists, key=lambda k: len(snapshot[k]))
    head = {k: v for k, v in snapshot.items() if k != field}

    def shape(index: int, more: bool) -> dict[str, Any]:
        if index == 0:
            return {"snapshot": {**head, field: SLOT}, "more": more, "sub": sub}
        return {"sub": sub, "snapshot": {field: SLOT}, "more": more}

    try:
        payloads = split_list([encode_value(item) for item in snapshot[field]], shape, bound)
    except PieceTooLarge:  # an item alone passes the bound: the answer goes whole
        return [encode_raw(Kind.RESPONSE, *LINK_SUBSCRIBE, request_id, whole)]
    frames = [encode_raw(Kind.RESPONSE, *LINK_SUBSCRIBE, request_id, payloads[0])]
    frames.extend(encode_raw(Kind.NOTIFICATION, *LINK_SNAPSHOT_PART, sub, p) for p in payloads[1:])
    return frames


class NotifierLink(Protocol):
    """One bridge connection; it is also that bridge's :class:`Subscriber`."""

    log = Logger()

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.largest_frame = 0  # bytes of the largest frame written to the bridge
        self.decoder = Decoder()
        self.peer = ""
        self.live: set[NotifierLink] | None = None  # the factory's set of open links

    def connectionMade(self) -> None:
        if self.live is not None:
            self.live.add(self)
        peer = self._transport().getPeer()
        self.peer = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        self.log.info("Link from {peer} opened", peer=self.peer, event="notifier.link.opened")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.live is not None:
            self.live.discard(self)
        self.notifier.link_lost(self)
        self.notifier.tenants.link_lost(self)
        self.log.info("Link from {peer} closed", peer=self.peer, event="notifier.link.closed")

    def _transport(self) -> ITransport:
        assert self.transport is not None, "used before connectionMade"
        return self.transport

    def _write(self, data: bytes) -> None:
        """Write one frame (and remember the largest written, for tests and state)."""
        if len(data) > self.largest_frame:
            self.largest_frame = len(data)
        self._transport().write(data)

    def send_event(self, sub_id: int, frame: bytes) -> None:
        self._write(frame)

    def dataReceived(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if isinstance(event, BadFrame):
                self.log.warn(
                    "Bad frame from {peer}: {why}",
                    peer=self.peer,
                    why=event.message,
                    event="notifier.link.bad-frame",
                )
                self._write(event.error_frame())
                self._transport().loseConnection()
                return
            try:
                self._frame(event)
            except Exception:
                # Name the message, never the payload: it may hold a password.
                self.log.failure(
                    "Handling {name} (request {rid}) from {peer} failed",
                    name=name_of(event.object_type, event.event_id),
                    rid=event.request_id,
                    peer=self.peer,
                    event="notifier.link.internal-error",
                )
                if event.kind == Kind.REQUEST:
                    self._error(
                        event, "internal-error", "the Notifier failed to handle the request"
                    )

    def _frame(self, frame: Frame) -> None:
        key = (frame.object_type, frame.event_id)
        if frame.kind == Kind.NOTIFICATION:
            self.notifier.tenants.notified(self, key, frame)  # SessionOpened/Closed: tenants.py
            if key == LINK_SESSION_OPENED:
                self.notifier.session_opened(self, frame.parsed())
            elif key == LINK_SESSION_CLOSED:
                self.notifier.session_closed(self, frame.parsed())
            elif key == LINK_BRIDGE_CHANGED:
                self.notifier.bridge_changed(self, frame.parsed())
            else:
                self.log.debug(
                    "Ignored notification {name} from {peer}",
                    name=name_of(*key),
                    peer=self.peer,
                    event="notifier.link.ignored",
                )
            return
        if frame.kind != Kind.REQUEST:
            self.log.warn(
                "Ignored unexpected {kind} frame {name} from {peer}",
                kind=Kind(frame.kind).name,
                name=name_of(*key),
                peer=self.peer,
                event="notifier.link.ignored",
            )
            return
        if key == LINK_PING and self.notifier.ping_delay > 0 and self.notifier.is_registered(self):
            # Simulated load (POST /api/load): the Ping answer waits.
            self.notifier.clock.callLater(self.notifier.ping_delay, self._pong, frame)
            return
        try:
            answer = self._request(frame)
            self.notifier.tenants.answered(self, key, answer)  # Authenticate, Register: tenants.py
        except ProtocolError as e:
            self._error(frame, **e.payload())
            return
        if key == LINK_SUBSCRIBE:
            sub = _sub(frame.parsed())
            snapshot = answer["snapshot"]
            bound = self.notifier.piece_bytes  # also the bound on change events (model.py)
            for raw in subscribe_answer(frame.request_id, sub, snapshot, bound):
                self._write(raw)
            return
        self._write(
            encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, answer)
        )

    def _request(self, frame: Frame) -> dict[str, Any]:
        key = (frame.object_type, frame.event_id)
        body = frame.parsed()
        registered = self.notifier.is_registered(self)
        if key == LINK_REGISTER:
            if self.notifier.trust is not None and not registered:
                self.notifier.pair.check_register(pinned=body.get("pinned") is True)
                der, subject = self._peer_certificate()
                self.notifier.trust.check(der, subject, self.notifier.clock.seconds())
            return self.notifier.register(body, self, peer=self.peer)
        if not registered:
            raise ProtocolError(
                "the first request on a link must be Register", code="not-registered"
            )
        if key == LINK_AUTHENTICATE and "certificate" in body:  # certificate logon (auth.py)
            return self.notifier.auth.authenticate_certificate(
                body["certificate"],
                _string(body, "station", optional=True),
                _string(body, "user", optional=True),
            )
        if key == LINK_AUTHENTICATE:
            return self.notifier.authenticate(
                _string(body, "user"),
                _string(body, "password"),
                _string(body, "station", optional=True),
            )
        if key == LINK_SUBSCRIBE:
            return {"snapshot": self.notifier.subscribe(_string(body, "topic"), self, _sub(body))}
        if key == LINK_UNSUBSCRIBE:
            self.notifier.unsubscribe(self, _sub(body))
            return {}
        if key == LINK_PING:
            return {}
        if frame.object_type == LINK_OBJECT_TYPE:
            raise ProtocolError(f"unknown link request {name_of(*key)}", code="unknown-request")
        return self.notifier.handle_forwarded(frame.object_type, frame.event_id, body)

    def _peer_certificate(self) -> tuple[bytes | None, str]:
        """The client certificate of this link (DER) and its subject, if TLS gave one."""
        get = getattr(self.transport, "getPeerCertificate", None)
        cert = get() if get is not None else None
        if cert is None:
            return None, ""
        from cryptography.hazmat.primitives.serialization import Encoding

        parsed = cert.to_cryptography()
        der: bytes = parsed.public_bytes(Encoding.DER)
        subject: str = parsed.subject.rfc4514_string()
        return der, subject

    def _pong(self, frame: Frame) -> None:
        if self.transport is not None and self.connected:
            self._write(
                encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, {})
            )

    def _error(self, frame: Frame, code: str, message: str, **extra: Any) -> None:
        self._write(
            encode_error(
                frame.object_type, frame.event_id, frame.request_id, code, message, **extra
            )
        )


class NotifierLinkFactory(Factory):
    """Builds a :class:`NotifierLink` per accepted bridge connection."""

    noisy = False

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.links: set[NotifierLink] = set()

    def buildProtocol(self, addr: Any) -> NotifierLink:
        link = NotifierLink(self.notifier)
        link.live = self.links
        return link

    def drop_all(self) -> int:
        """Close every bridge link (this Notifier became the backup); return how many."""
        links = list(self.links)
        for link in links:
            if link.transport is not None:
                link.transport.loseConnection()
        return len(links)
