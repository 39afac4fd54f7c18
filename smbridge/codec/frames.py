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

Whatever the bytes, :meth:`Decoder.feed` never raises (PROTOCOL §2, docs/protocol.md
"Frames"): a payload that nests objects and arrays deeper than :data:`DECODE_DEPTH`,
holds an integer of more than :data:`MAX_INT_DIGITS` digits, a float that is not
finite or a ``NaN``/``Infinity`` literal is a :class:`BadFrame`, found without
recursion and before Python's own limits (recursion, 4,300-digit integers) are
reached. A string that is valid JSON but decodes to a lone surrogate (``"\\ud800"``)
cannot be encoded again as UTF-8: the frame still decodes, with
:attr:`Frame.invalid` naming the field, so the bridge answers it ``bad-request``.
:data:`MAX_DEPTH` is the tighter bound on what a client's request may nest (the
router's admission refuses deeper ones; the far end's parser must never fail).

Receive buffering is linear in the bytes received: a partial frame is appended
to a ``bytearray`` and joined once, when the frame is complete (``copied``
counts the bytes copied for buffering), never copied whole for every chunk.
"""

from __future__ import annotations

import json
import math
import re
from enum import IntEnum
from struct import Struct
from typing import Any

VERSION = 1
HEADER = Struct(">IBBHHI")  # length, version, kind, objectType, eventId, requestId
HEADER_SIZE = HEADER.size  # 14
MIN_LENGTH = HEADER_SIZE - 4  # 10: the header after the length field
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB, the largest ``length`` accepted
MAX_EVENT_ID = 32767

MAX_DEPTH = 32  # how deep a client's request may nest objects and arrays (the payload is 1)
DECODE_DEPTH = 2 * MAX_DEPTH  # deeper than this, any payload is a bad frame
MAX_INT_DIGITS = 40  # digits of a JSON integer (a 128-bit number has 39)

_U32 = Struct(">I")
_RID = Struct(">I")
_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_ascii_encoder = json.JSONEncoder(separators=(",", ":"))
_OPENERS, _CLOSERS = b"[{", b"]}"
_NESTING = bytes.maketrans(_OPENERS + _CLOSERS, b"((" + b"))")
_NOT_SYNTAX = bytes(b for b in range(256) if b not in b'"' + _OPENERS + _CLOSERS)
_TOO_DEEP_RUN = b"(" * (DECODE_DEPTH + 1)
_TOO_DEEP = f"payload nests objects or arrays deeper than {DECODE_DEPTH}"
# Digits all become "0" (a run of more than MAX_INT_DIGITS of them is then one search)
# and openers "(" (counted: only past DECODE_DEPTH of them can a payload be too deep).
_SHAPE = bytes.maketrans(b"0123456789([{", b"0" * 10 + b"#((")
_LONG_DIGITS = b"0" * (MAX_INT_DIGITS + 1)
# The only way to a lone surrogate past a strict UTF-8 decode: a \\uD800-\\uDFFF escape.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class _TooLarge(ValueError):
    """A number past the codec's bounds (raised inside the JSON scanner)."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _TooLarge(f"a number has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _TooLarge(f"a number is out of range ({text[:20]})")
    return value


def _no_constant(text: str) -> Any:
    raise _TooLarge(f"{text} is not JSON")


# The default one for the common case (no Python call per number); the strict one
# when a long digit run or an exponent is seen: only those can overflow (1e999).
_json_decoder = json.JSONDecoder(parse_constant=_no_constant)
_strict_decoder = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_no_constant
)


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
    not to parse, see :meth:`parsed`). ``invalid``, once parsed, says which string
    is not valid Unicode (a lone surrogate), or is ``None``.
    """

    __slots__ = ("kind", "object_type", "event_id", "request_id", "payload", "body", "invalid")

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
        self.invalid: str | None = None
        if body and b"\\u" in payload:
            self.invalid = lone_surrogate(payload, body)

    def parsed(self) -> dict[str, Any]:
        """Return the payload as a dict, parsing it on first use."""
        if self.body is None:
            body = parse_payload(self.payload)
            if isinstance(body, str):
                raise ValueError(body)
            self.body = body
            self.invalid = lone_surrogate(self.payload, body)
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
    """Parse a payload; return the object, or a one-line reason it is not one.

    Never raises: nesting and numbers are bounded (see the module's docstring).
    """
    if not payload:
        return {}
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"payload is not UTF-8 (byte {e.start})"
    decoder = _strict_decoder  # a short payload: its checks cost next to nothing
    if len(payload) > MAX_INT_DIGITS:
        decoder = _json_decoder
        shape = payload.translate(_SHAPE)  # digits become "0", openers "("
        if shape.count(b"(") > DECODE_DEPTH:
            problem = _nesting_problem(payload)
            if problem is not None:
                return problem
        if _LONG_DIGITS in shape or b"0e" in shape or b"0E" in shape:  # 1e999 overflows
            decoder = _strict_decoder
    try:
        body, end = decoder.raw_decode(text)
    except _TooLarge as e:
        return f"payload holds a number past the bounds: {e}"
    except json.JSONDecodeError as e:
        if not text.strip():
            return {}
        return f"payload is not JSON: {e.msg} at {e.pos}"
    except (ValueError, RecursionError) as e:  # not expected after the checks above
        return f"payload is not acceptable JSON ({type(e).__name__})"
    if text[end:].strip():
        return f"payload has data after the JSON value at {end}"
    if not isinstance(body, dict):
        return f"payload is JSON {type(body).__name__}, not an object"
    return body


def _nesting_problem(payload: bytes) -> str | None:
    """Why the payload's brackets (outside strings) rule it out, or None.

    Without recursion and with C-speed byte operations only: escapes are dropped
    (backslash pairs first, so ``\\\\"`` still ends a string); only quotes and
    brackets are kept; adjacent quotes go (an empty string, or two strings joined:
    what is outside strings is unchanged), then what is left between quotes; the
    brackets left become ``(`` and ``)``, and each pass deletes the innermost
    pairs, so a payload nesting at most DECODE_DEPTH deep is gone after
    DECODE_DEPTH passes.
    """
    if b"\\" in payload:
        payload = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    rest = payload.translate(None, _NOT_SYNTAX).replace(b'""', b"")
    if b'"' in rest:
        rest = b"".join(rest.split(b'"')[::2])
    rest = rest.translate(_NESTING)
    if _TOO_DEEP_RUN in rest:
        return _TOO_DEEP
    for _ in range(DECODE_DEPTH):
        if not rest:
            return None
        shorter = rest.replace(b"()", b"")
        if len(shorter) == len(rest):
            return "payload is not JSON: unbalanced brackets"
        rest = shorter
    return _TOO_DEEP if rest else None


def lone_surrogate(payload: bytes, body: dict[str, Any]) -> str | None:
    """Name the first string of ``body`` (key or value) holding a lone surrogate, or None.

    Only a ``\\uD800``-``\\uDFFF`` escape in ``payload`` can make one, so without
    it nothing is walked.
    """
    if b"\\u" not in payload or _SURROGATE_ESCAPE.search(payload) is None:
        return None
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _not_unicode(value):
                return f"{path or 'the payload'} is not valid Unicode (a lone surrogate)"
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if _not_unicode(key):
                    where = f"a member name in {path}" if path else "a member name"
                    return f"{where} is not valid Unicode (a lone surrogate)"
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None


def _not_unicode(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class Decoder:
    """Incremental frame decoder: ``feed(bytes) -> list[Frame | BadFrame]``.

    ``parse=False`` skips JSON parsing (the payload is still kept): the bridge
    uses it on links whose payloads it relays without reading.
    """

    __slots__ = ("_buf", "_need", "_failed", "copied", "max_frame", "parse")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, parse: bool = True) -> None:
        self._buf = bytearray()  # the start of a frame, waiting for the rest
        self._need = 0  # the buffered bytes that make it worth looking again
        self._failed = False
        self.copied = 0  # bytes copied for buffering (linear in the bytes fed)
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
        held = self._buf
        if held:
            held += data
            self.copied += len(data)
            if len(held) < self._need:
                return []  # still short of the frame: nothing else is touched
            buf = bytes(held)  # joined once, now that a frame is complete
            self.copied += len(buf)
            held.clear()
        else:
            buf = data
        end_of_data = len(buf)
        out: list[Frame | BadFrame] = []
        pos = 0
        need = 4
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
                need = 4 + length
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
        if pos < end_of_data:
            held += memoryview(buf)[pos:]
            self.copied += end_of_data - pos
            self._need = need
        return out

    def _fail(self, out: list[Frame | BadFrame], bad: BadFrame) -> list[Frame | BadFrame]:
        self._failed = True
        self._buf = bytearray()
        out.append(bad)
        return out


def dump_json(body: dict[str, Any]) -> bytes:
    """Encode a payload compactly (UTF-8, no spaces).

    A string that is not valid Unicode (a lone surrogate) cannot be UTF-8: the
    payload is then written with ASCII escapes instead of raising.
    """
    text = _json_encoder.encode(body)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ascii_encoder.encode(body).encode("ascii")


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
