"""Mutated client frames for fuzzing the decoder and the bridge (issue 15).

:func:`mutated` turns a seeded ``random.Random`` into the wire bytes of one
hostile frame: a client request from :data:`SEEDS` whose payload or header is
mutated the ways attackers found to hurt (deep nesting, integers past Python's
4,300-digit limit, floats out of range, lone surrogates in every string field,
type confusion, flipped, inserted and dropped bytes, truncation). :func:`check`
is the decoder's contract over any bytes: it returns events (never raises), each
a :class:`Frame` or a :class:`BadFrame`, at most one ``BadFrame`` and nothing
after it. ``bench/fuzz.py`` (``make fuzz``) runs millions of these; the test suite
runs a few thousand, in-process and over real sockets.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from smbridge.codec import catalog as c
from smbridge.codec.frames import BadFrame, Decoder, Frame, Kind, encode_raw

Body = dict[str, Any]

# One typical request of each kind a client sends, with every string field filled.
SEEDS: list[tuple[c.MessageType, Body]] = [
    (
        c.CREATE_SESSION,
        {
            "user": "agent1",
            "password": "demo",
            "station": "Station-1",
            "clientId": "pc-1",
            "clientApp": "fuzz",
            "clientVersion": "1.0",
            "sessionTimeout": 600,
            "notifyImminent": True,
        },
    ),
    (c.RESUME_SESSION, {"sessionId": "sm1-1", "resumeToken": "x" * 32, "received": 3}),
    (c.HEARTBEAT, {}),
    (c.GET_VERSION, {}),
    (c.GET_SERVERS, {}),
    (c.CHANGE_STATION, {"station": "Station-2"}),
    (c.SET_STATUS, {"status": "Available"}),
    (c.WATCH_STATUS, {"users": ["agent2", "agent3"]}),
    (c.UNWATCH_STATUS, {"users": ["agent2"]}),
    (c.WATCH_QUEUE, {"queue": "Sales"}),
    (c.UNWATCH_QUEUE, {"queue": "Sales"}),
    (c.GET_DIRECTORY, {"name": "Company Directory", "limit": 5}),
    (c.SEARCH_DIRECTORY, {"name": "Company Directory", "query": "ag", "limit": 5}),
    (c.GET_TRANSFER_TARGETS, {"query": "ag"}),
    (c.WATCH_STATISTICS, {"workgroup": "Sales", "stats": ["callsWaiting"]}),
    (c.GET_RESOURCE_URI, {"kind": "http", "path": "/x"}),
    (c.SEND_CHAT, {"to": "agent2", "text": "hello"}),
]

SURROGATES = ("\\ud800", "\\udfff", "\\uDBFF", "\\ud83d", "x\\udc00y")
DEPTHS = (31, 32, 33, 63, 64, 65, 1000, 100_000)
INT_DIGITS = (39, 40, 41, 300, 4300, 4301, 20_000)
ODD_NUMBERS = ("1e999", "-1e400", "NaN", "Infinity", "-Infinity", "1.5e308", "-0", "0.1e-999")
ODD_VALUES: tuple[Any, ...] = (None, True, 0, -1, 2**63, 1.5, "", [], {}, ["x"], {"a": "b"})


def _strings(body: Body) -> list[str]:
    return [k for k, v in body.items() if isinstance(v, str)] or list(body) or ["x"]


def _splice(body: Body, key: str, raw: str) -> bytes:
    """``body`` as JSON with member ``key`` replaced by the raw JSON text ``raw``."""
    marker = "\x00fuzz\x00"
    text = json.dumps({**body, key: marker}, separators=(",", ":"))
    return text.replace(json.dumps(marker), raw).encode("utf-8")


def _surrogate(rng: random.Random, body: Body) -> bytes:
    key = rng.choice(_strings(body))
    escape = rng.choice(SURROGATES)
    if rng.random() < 0.15:  # in a member name instead
        return _splice(body, key, json.dumps({f"k{escape}": 1}).replace("\\\\", "\\"))
    if isinstance(body.get(key), list):
        return _splice(body, key, f'["ok","{escape}"]')
    return _splice(body, key, f'"{body.get(key, "v")}{escape}"')


def _deep(rng: random.Random, body: Body) -> bytes:
    depth = rng.choice(DEPTHS)
    opener, closer = rng.choice((("[", "]"), ('{"a":', "}")))
    closed = rng.random() < 0.9
    inner = opener * depth + ("0" if opener == "[" else '"x"') + (closer * depth if closed else "")
    return _splice(body, rng.choice(_strings(body)), inner)


def _number(rng: random.Random, body: Body) -> bytes:
    if rng.random() < 0.6:
        raw = rng.choice(("", "-")) + "9" * rng.choice(INT_DIGITS)
    else:
        raw = rng.choice(ODD_NUMBERS)
    return _splice(body, rng.choice([*body, "sessionTimeout", "limit"]), raw)


def _retype(rng: random.Random, body: Body) -> bytes:
    key = rng.choice(_strings(body))
    return _splice(body, key, json.dumps(rng.choice(ODD_VALUES)))


def _bytes(rng: random.Random, body: Body) -> bytes:
    data = bytearray(json.dumps(body, separators=(",", ":")).encode())
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(data) + 1)
        action = rng.randrange(4)
        if action == 0 and data:
            data[min(where, len(data) - 1)] = rng.randrange(256)
        elif action == 1:
            data[where:where] = rng.choice(
                (b"\\u", b"\\ud800", b"\xff", b"\xed\xa0\x80", b"[", b"{")
            )
        elif action == 2:
            del data[where : where + rng.randint(1, 8)]
        else:
            data[where:where] = data[: rng.randint(1, 16)]
    return bytes(data)


PAYLOAD_MUTATORS: tuple[Callable[[random.Random, Body], bytes], ...] = (
    _surrogate,
    _surrogate,
    _deep,
    _number,
    _retype,
    _bytes,
)


def mutated(rng: random.Random, request_id: int, framing: float = 0.1) -> bytes:
    """One hostile frame: a seed request with its payload (or, at rate ``framing``, its
    header or length) mutated."""
    message, body = rng.choice(SEEDS)
    payload = rng.choice(PAYLOAD_MUTATORS)(rng, dict(body))
    wire = bytearray(encode_raw(Kind.REQUEST, *message, request_id, payload))
    if rng.random() < framing:
        cut = rng.randrange(4)
        if cut == 0:  # truncated: the rest never comes
            wire = wire[: rng.randrange(1, len(wire))]
        elif cut == 1:  # a header byte changed (version, kind, eventId)
            wire[rng.randrange(4, 10)] = rng.randrange(256)
        elif cut == 2:  # a length that does not match the payload
            wire[0:4] = rng.randrange(0, len(wire) + 64).to_bytes(4, "big")
        else:  # a length far past any limit
            wire[0:4] = rng.randrange(1 << 21, 1 << 32).to_bytes(4, "big")
    return bytes(wire)


def check(decoder: Decoder, data: bytes) -> list[Frame | BadFrame]:
    """Feed ``data``; assert the decoder's contract (events only, a BadFrame last)."""
    events = decoder.feed(data)
    for i, event in enumerate(events):
        if isinstance(event, BadFrame):
            assert i == len(events) - 1 and decoder.failed, events
            assert event.error_frame()[:4]  # its answer can always be encoded
        else:
            assert type(event) is Frame, event
            assert event.body is not None or not decoder.parse
    return events


def whole_requests(data: bytes, max_frame: int) -> tuple[list[Frame], bool, bool]:
    """How the bridge sees ``data`` on a fresh connection.

    Returns the request frames it answers, whether the connection is then closed
    for a bad frame (a violation, or a frame that is not a request) and whether
    bytes are left waiting for the rest of a frame.
    """
    decoder = Decoder(max_frame)
    frames: list[Frame] = []
    for event in decoder.feed(data):
        if isinstance(event, BadFrame) or event.kind != Kind.REQUEST:
            return frames, True, False
        frames.append(event)
    return frames, False, decoder.buffered > 0
