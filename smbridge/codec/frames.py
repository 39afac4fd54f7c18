"""Sans-IO frame codec (PROTOCOL §2).

A frame is ``length:u32 | version:u8 | kind:u8 | objectType:u16 | eventId:u16 |
requestId:u32 | payload``, big-endian, where ``length`` counts the 10 header bytes
after it plus the payload and the payload is a UTF-8 JSON object (empty means
``{}``).

:class:`Decoder` is fed bytes as they arrive and returns whole frames; a protocol
violation comes back as a :class:`BadFrame` event (never an exception), after
which the decoder refuses further input, because a stream that lost framing
cannot be trusted again. The loop is hand-written over one buffer rather than
built on ``Int32StringReceiver``: relaying frames is the bridge's hot path.
"""

from __future__ import annotations

import json
from enum import IntEnum
from struct import Struct
from typing import Any

VERSION = 1
HEADER = Struct(">IBBHHI")  # length, version, kind, objectType, eventId, requestId
HEADER_SIZE = HEADER.size  # 14
MIN_LENGTH = HEADER_SIZE - 4  # 10: the header after the length field
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB, the largest ``length`` accepted
MAX_EVENT_ID = 32767

_U32 = Struct(">I")
_RID = Struct(">I")
_json_decoder = json.JSONDecoder()
_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class Kind(IntEnum):
    """The frame kinds of PROTOCOL §2."""

    REQUEST = 1
    RESPONSE = 2
    NOTIFICATION = 3
    ERROR = 4


class Frame:
    """One decoded frame.

    ``payload`` keeps the raw JSON bytes so that a relay can pass them on without
    re-encoding; ``body`` is the parsed object (``None`` when the decoder was told
    not to parse, see :meth:`parsed`).
    """

    __slots__ = ("kind", "object_type", "event_id", "request_id", "payload", "body")

    def __init__(
        self,
        kind: int,
        object_type: int,
        event_id: int,
        request_id: int,
        payload: bytes,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.object_type = object_type
        self.event_id = event_id
        self.request_id = request_id
        self.payload = payload
        self.body = body

    def parsed(self) -> dict[str, Any]:
        """Return the payload as a dict, parsing it on first use."""
        if self.body is None:
            body = parse_payload(self.payload)
            if isinstance(body, str):
                raise ValueError(body)
            self.body = body
        return self.body

    def encode(self) -> bytes:
        """Return the frame's wire bytes."""
        return encode_raw(self.kind, self.object_type, self.event_id, self.request_id, self.payload)

    def __repr__(self) -> str:
        return (
            f"Frame(kind={self.kind}, type=({self.object_type},{self.event_id}), "
            f"rid={self.request_id}, payload={self.payload[:80]!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.object_type == other.object_type
            and self.event_id == other.event_id
            and self.request_id == other.request_id
            and self.payload == other.payload
        )

    __hash__ = None  # type: ignore[assignment]


class BadFrame:
    """A protocol violation found while decoding.

    ``request_id``, ``object_type`` and ``event_id`` are set when the header was
    readable, so the adapter can answer the offending request with an ``error``
    frame of code ``bad-frame`` that names it.
    """

    __slots__ = ("message", "request_id", "object_type", "event_id")
    code = "bad-frame"

    def __init__(
        self,
        message: str,
        request_id: int | None = None,
        object_type: int = 0,
        event_id: int = 1,
    ) -> None:
        self.message = message
        self.request_id = request_id
        self.object_type = object_type
        self.event_id = event_id if 1 <= event_id <= MAX_EVENT_ID else 1

    def error_frame(self) -> bytes:
        """The ``error`` frame that answers this violation."""
        return encode_error(
            self.object_type, self.event_id, self.request_id or 0, self.code, self.message
        )

    def __repr__(self) -> str:
        return f"BadFrame({self.message!r}, request_id={self.request_id})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BadFrame):
            return NotImplemented
        return (self.message, self.request_id) == (other.message, other.request_id)

    __hash__ = None  # type: ignore[assignment]


def parse_payload(payload: bytes) -> dict[str, Any] | str:
    """Parse a payload; return the object, or a one-line reason it is not one."""
    if not payload:
        return {}
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"payload is not UTF-8 (byte {e.start})"
    try:
        body, end = _json_decoder.raw_decode(text)
    except json.JSONDecodeError as e:
        if not text.strip():
            return {}
        return f"payload is not JSON: {e.msg} at {e.pos}"
    if text[end:].strip():
        return f"payload has data after the JSON value at {end}"
    if not isinstance(body, dict):
        return f"payload is JSON {type(body).__name__}, not an object"
    return body


class Decoder:
    """Incremental frame decoder: ``feed(bytes) -> list[Frame | BadFrame]``.

    ``parse=False`` skips JSON parsing (the payload is still kept): the bridge
    uses it on links whose payloads it relays without reading.
    """

    __slots__ = ("_buf", "_failed", "max_frame", "parse")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, parse: bool = True) -> None:
        self._buf = b""
        self._failed = False
        self.max_frame = max_frame
        self.parse = parse

    @property
    def failed(self) -> bool:
        """True once a violation was reported; the stream is unusable after it."""
        return self._failed

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        if self._failed:
            return []
        buf = self._buf + data if self._buf else data
        end_of_data = len(buf)
        out: list[Frame | BadFrame] = []
        pos = 0
        unpack = HEADER.unpack_from
        max_frame = self.max_frame
        parse = self.parse
        while end_of_data - pos >= 4:
            (length,) = _U32.unpack_from(buf, pos)
            if length < MIN_LENGTH or length > max_frame:
                message = f"frame length {length} outside {MIN_LENGTH}..{max_frame}"
                if end_of_data - pos < HEADER_SIZE:
                    return self._fail(out, BadFrame(message))
                _, _, _, object_type, event_id, request_id = unpack(buf, pos)
                return self._fail(out, BadFrame(message, request_id, object_type, event_id))
            end = pos + 4 + length
            if end > end_of_data:
                break
            _, version, kind, object_type, event_id, request_id = unpack(buf, pos)
            problem = None
            if version != VERSION:
                problem = f"unsupported version {version}"
            elif not 1 <= kind <= 4:
                problem = f"unknown frame kind {kind}"
            elif not 1 <= event_id <= MAX_EVENT_ID:
                problem = f"eventId {event_id} outside 1..{MAX_EVENT_ID}"
            if problem is not None:
                return self._fail(out, BadFrame(problem, request_id, object_type, event_id))
            payload = buf[pos + HEADER_SIZE : end]
            body: dict[str, Any] | None = None
            if parse:
                parsed = parse_payload(payload)
                if isinstance(parsed, str):
                    return self._fail(out, BadFrame(parsed, request_id, object_type, event_id))
                body = parsed
            out.append(Frame(kind, object_type, event_id, request_id, payload, body))
            pos = end
        self._buf = buf[pos:] if pos else buf
        return out

    def _fail(self, out: list[Frame | BadFrame], bad: BadFrame) -> list[Frame | BadFrame]:
        self._failed = True
        self._buf = b""
        out.append(bad)
        return out


def dump_json(body: dict[str, Any]) -> bytes:
    """Encode a payload compactly (UTF-8, no spaces)."""
    return _json_encoder.encode(body).encode("utf-8")


def encode_raw(
    kind: int, object_type: int, event_id: int, request_id: int, payload: bytes
) -> bytes:
    """Build a frame from an already-encoded payload."""
    return (
        HEADER.pack(MIN_LENGTH + len(payload), VERSION, kind, object_type, event_id, request_id)
        + payload
    )


def encode(
    kind: int, object_type: int, event_id: int, request_id: int, body: dict[str, Any] | None = None
) -> bytes:
    """Build a frame from a payload object (``None`` sends an empty payload)."""
    payload = dump_json(body) if body else b""
    return encode_raw(kind, object_type, event_id, request_id, payload)


def encode_error(
    object_type: int, event_id: int, request_id: int, code: str, message: str, **extra: Any
) -> bytes:
    """Build an ``error`` frame: ``{"code", "message", ...extra}``."""
    return encode(
        Kind.ERROR, object_type, event_id, request_id, {"code": code, "message": message, **extra}
    )


def with_request_id(raw: bytes, request_id: int) -> bytes:
    """Return a copy of encoded frame ``raw`` with another requestId (for relaying)."""
    return raw[:10] + _RID.pack(request_id) + raw[14:]
