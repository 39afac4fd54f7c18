"""What one worker tells another when it relays a client's connection (pure, no I/O).

A worker of ``--workers N`` that receives a ``ResumeSession`` for a session another
worker holds opens that worker's private Unix socket and writes, in order:

1. the **preamble**: the magic ``SMR1``, a 2-byte big-endian length (1..``MAX_PREAMBLE``)
   and that many bytes of a UTF-8 JSON object, an allow-list of members:

   ========== ========= ==========================================================
   member     required  value
   ========== ========= ==========================================================
   ``kind``   yes       the client's transport: ``tls``, ``clear``, ``ws``, ``wss``
   ``remote`` yes       the client's address as its connection writes it
                        (``host:port``, or ``REAL via host:port`` behind a proxy)
   ``from``   yes       the relaying worker's index (0..63), for the logs
   ``origin`` no        the tunnel's decoded URI: ``baseUri``, ``server``,
                        ``alias`` (strings or null) and ``proxied`` (bool)
   ========== ========= ==========================================================

2. the client's frames, from the ``ResumeSession`` on, as they came.

The owner answers with the frames for the client, which the relaying worker passes
on whole (:class:`FrameSplitter`: one WebSocket message per frame on the tunnel).
Anything else is refused with a reason (:class:`Refused`) and the socket closed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from smbridge.resources import Origin

MAGIC = b"SMR1"
MAX_PREAMBLE = 4096  # bytes of JSON: an address and a URI with room to spare
MAX_TEXT = 512  # characters of any one string member
MAX_WORKERS = 64  # --workers is 1..64
KINDS = ("tls", "clear", "ws", "wss")
_LENGTH = struct.Struct(">H")
_HEAD = len(MAGIC) + _LENGTH.size
_ORIGIN_TEXT = ("baseUri", "server", "alias")
_MEMBERS = frozenset({"kind", "remote", "from", "origin"})


@dataclass(frozen=True, slots=True)
class Preamble:
    """Who the relayed client is: transport kind, address, URI, and the relaying worker."""

    kind: str
    remote: str
    sender: int  # the relaying worker's index ("from")
    origin: Origin


@dataclass(frozen=True, slots=True)
class Refused:
    """A preamble that is not one: why (one line, safe to log)."""

    reason: str


def encode_preamble(preamble: Preamble) -> bytes:
    """The preamble's bytes (magic, length, JSON)."""
    origin = preamble.origin
    body: dict[str, Any] = {
        "kind": preamble.kind,
        "remote": preamble.remote[:MAX_TEXT],
        "from": preamble.sender,
    }
    if origin.base_uri or origin.server or origin.alias or origin.proxied:
        body["origin"] = {
            "baseUri": origin.base_uri,
            "server": origin.server,
            "alias": origin.alias,
            "proxied": origin.proxied,
        }
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_PREAMBLE:
        raise ValueError(f"preamble of {len(data)} bytes (at most {MAX_PREAMBLE})")
    return MAGIC + _LENGTH.pack(len(data)) + data


def _text(value: Any, name: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value and not optional:
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT or not value.isprintable():
        raise ValueError(f"{name} must be printable, at most {MAX_TEXT} characters")
    return value


def _origin(kind: str, value: Any) -> Origin:
    if value is None:
        return Origin(kind)
    if not isinstance(value, dict) or not set(value) <= {*_ORIGIN_TEXT, "proxied"}:
        raise ValueError("origin must be an object of baseUri, server, alias, proxied")
    base, server, alias = (_text(value.get(k), f"origin.{k}", True) for k in _ORIGIN_TEXT)
    proxied = value.get("proxied", False)
    if not isinstance(proxied, bool):
        raise ValueError("origin.proxied must be true or false")
    return Origin(kind, base, server, alias, proxied)


def parse_preamble_body(data: bytes) -> Preamble | Refused:
    """The preamble's JSON, checked member by member."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested deep
        return Refused("the preamble is not UTF-8 JSON")
    if not isinstance(body, dict):
        return Refused("the preamble is not a JSON object")
    unknown = sorted(set(body) - _MEMBERS)
    if unknown:
        return Refused(f"unknown preamble member {unknown[0][:40]!r}")
    kind = body.get("kind")
    if kind not in KINDS:
        return Refused(f"kind must be one of {', '.join(KINDS)}")
    sender = body.get("from")
    if isinstance(sender, bool) or not isinstance(sender, int) or not 0 <= sender < MAX_WORKERS:
        return Refused(f"from must be a worker index 0..{MAX_WORKERS - 1}")
    try:
        remote = _text(body.get("remote"), "remote")
        origin = _origin(kind, body.get("origin"))
    except ValueError as e:
        return Refused(str(e))
    assert remote is not None
    return Preamble(kind, remote, sender, origin)


class PreambleParser:
    """``feed(bytes)``: None until the preamble is whole, then a Preamble or Refused.

    After a Preamble, :attr:`rest` holds the bytes that followed it (the client's
    first frames). Nothing more is taken once it has answered.
    """

    def __init__(self) -> None:
        self._buf = b""
        self.rest = b""
        self.result: Preamble | Refused | None = None

    def feed(self, data: bytes) -> Preamble | Refused | None:
        if self.result is not None:
            return self.result
        buf = self._buf + data
        if buf[: len(MAGIC)] != MAGIC[: len(buf)]:
            return self._done(Refused("not a relay preamble (bad magic)"))
        if len(buf) < _HEAD:
            self._buf = buf
            return None
        (length,) = _LENGTH.unpack_from(buf, len(MAGIC))
        if not 0 < length <= MAX_PREAMBLE:
            return self._done(Refused(f"preamble length {length} outside 1..{MAX_PREAMBLE}"))
        if len(buf) < _HEAD + length:
            self._buf = buf
            return None
        self._buf = b""
        self.rest = buf[_HEAD + length :]
        return self._done(parse_preamble_body(buf[_HEAD : _HEAD + length]))

    def _done(self, result: Preamble | Refused) -> Preamble | Refused:
        self._buf = b""
        self.result = result
        return result


_U32 = struct.Struct(">I")
MIN_FRAME_LENGTH = 10  # the header after the length field (codec.frames.MIN_LENGTH)


class FrameSplitter:
    """Cuts a stream of frames into whole frames (bytes), by their length field only.

    ``feed(bytes) -> list[bytes]``; a length outside ``10..max_frame`` sets
    :attr:`error` and returns what came before it (the stream is unusable after).
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self.error: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (length,) = _U32.unpack_from(buf, pos)
            if not MIN_FRAME_LENGTH <= length <= self.max_frame:
                self.error = f"frame length {length} outside {MIN_FRAME_LENGTH}..{self.max_frame}"
                self._buf = bytearray()
                return out
            if end - pos < 4 + length:
                break
            out.append(bytes(buf[pos : pos + 4 + length]))
            pos += 4 + length
        del buf[:pos]
        return out
