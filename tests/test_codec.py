"""Codec: frames round-trip, split anywhere, and violations become bad-frame events."""

from __future__ import annotations

import json
import struct
import time

from hypothesis import given
from hypothesis import strategies as st

from smbridge.codec import (
    BadFrame,
    Decoder,
    Frame,
    Kind,
    encode,
    encode_error,
    name_of,
    priority_of,
)
from smbridge.codec.catalog import CATALOG, Priority
from smbridge.codec.frames import (
    DECODE_DEPTH,
    HEADER,
    MAX_DEPTH,
    MAX_INT_DIGITS,
    encode_raw,
    parse_payload,
    with_request_id,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
frames = st.tuples(
    st.sampled_from(list(Kind)),
    st.integers(0, 65535),
    st.integers(1, 32767),
    st.integers(0, 2**32 - 1),
    bodies,
)


def _encode(spec: tuple[Kind, int, int, int, dict]) -> bytes:
    return encode(*spec)


@given(st.lists(frames, min_size=1, max_size=6), st.data())
def test_split_anywhere_decodes_the_same(specs, data):
    """Frames cut at arbitrary boundaries decode exactly like the whole stream at once."""
    wire = b"".join(_encode(s) for s in specs)
    whole = Decoder().feed(wire)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    decoder = Decoder()
    pieces: list = []
    last = 0
    for cut in cuts + [len(wire)]:
        pieces += decoder.feed(wire[last:cut])
        last = cut
    assert pieces == whole
    assert [(f.kind, f.object_type, f.event_id, f.request_id, f.parsed()) for f in whole] == [
        (k, o, e, r, b) for k, o, e, r, b in specs
    ]
    assert decoder.buffered == 0


@given(frames)
def test_every_single_byte_split(spec):
    """Feeding one byte at a time yields the frame once, on its last byte."""
    wire = _encode(spec)
    decoder = Decoder()
    events = [decoder.feed(wire[i : i + 1]) for i in range(len(wire))]
    assert all(e == [] for e in events[:-1])
    assert events[-1] == Decoder().feed(wire)


def test_empty_payload_means_empty_object():
    """An empty payload decodes as {} and encodes to nothing."""
    wire = encode(Kind.REQUEST, 168, 4, 9)
    assert len(wire) == 14
    (frame,) = Decoder().feed(wire)
    assert frame.parsed() == {} and frame.payload == b""


def _header(length: int, version=1, kind=1, ot=168, ev=1, rid=77) -> bytes:
    return HEADER.pack(length, version, kind, ot, ev, rid)


def _bad(data: bytes, **kw) -> BadFrame:
    decoder = Decoder(**kw)
    events = decoder.feed(data)
    assert isinstance(events[-1], BadFrame), events
    assert decoder.failed and decoder.feed(encode(Kind.REQUEST, 1, 1, 1)) == []
    return events[-1]


def test_bad_version():
    """A version other than 1 is a bad frame that names the version and keeps the requestId."""
    bad = _bad(_header(10, version=2))
    assert bad.code == "bad-frame" and "version 2" in bad.message and bad.request_id == 77


def test_bad_kind():
    """Kinds outside 1..4 are refused."""
    assert "kind 5" in _bad(_header(10, kind=5)).message
    assert "kind 0" in _bad(_header(10, kind=0)).message


def test_bad_event_id():
    """eventId 0 and values above 32767 are refused."""
    assert "eventId 0" in _bad(_header(10, ev=0)).message
    assert "eventId 40000" in _bad(_header(10, ev=40000)).message


def test_length_too_small_and_too_large():
    """A length under 10 or over the limit is refused, with the requestId when readable."""
    assert _bad(_header(9)).request_id == 77
    assert _bad(struct.pack(">I", 3)).request_id is None
    big = _bad(_header(2049), max_frame=2048)
    assert "2049" in big.message and big.request_id == 77


def test_oversized_frame_refused_before_it_arrives():
    """An over-long frame is refused from its header, without buffering its body."""
    decoder = Decoder(max_frame=1000)
    events = decoder.feed(_header(5000))
    assert isinstance(events[0], BadFrame) and decoder.buffered == 0


def test_payload_not_utf8():
    """Invalid UTF-8 in the payload is a bad frame."""
    assert "UTF-8" in _bad(_header(12) + b"\xff\xfe").message


def test_payload_not_json_or_not_object():
    """Payloads that are not JSON, or JSON but not an object, are bad frames."""
    for payload, words in (
        (b"{nope", "not JSON"),
        (b"[1,2]", "list"),
        (b'"x"', "str"),
        (b"{} {}", "after"),
    ):
        assert words in _bad(_header(10 + len(payload)) + payload).message


def test_good_frames_before_a_bad_one_are_kept():
    """Frames that precede a violation in the same chunk are still delivered."""
    good = encode(Kind.REQUEST, 168, 3, 1)
    events = Decoder().feed(good + _header(10, version=9))
    assert isinstance(events[0], Frame) and isinstance(events[1], BadFrame)


@given(st.binary(max_size=300))
def test_garbage_never_raises(data):
    """Arbitrary bytes produce frames or a bad-frame event, never an exception."""
    events = Decoder(max_frame=4096).feed(data)
    assert all(isinstance(e, Frame | BadFrame) for e in events)
    assert sum(isinstance(e, BadFrame) for e in events) <= 1


def test_parse_false_keeps_payload_unparsed():
    """With parse=False the payload bytes are kept and parsed on demand."""
    (frame,) = Decoder(parse=False).feed(encode(Kind.NOTIFICATION, 173, 3, 5, {"queue": "Sales"}))
    assert frame.body is None and frame.parsed() == {"queue": "Sales"}


def test_error_frame_and_request_id_rewrite():
    """Error frames carry code and message; with_request_id rewrites only the id."""
    wire = encode_error(168, 1, 42, "logon-failed", "wrong password", reason="bad-credentials")
    (frame,) = Decoder().feed(with_request_id(wire, 7))
    assert frame.kind == Kind.ERROR and frame.request_id == 7
    assert frame.parsed() == {
        "code": "logon-failed",
        "message": "wrong password",
        "reason": "bad-credentials",
    }
    assert encode_raw(2, 1, 1, 1, b"{}")[14:] == b"{}"


def test_unicode_payload():
    """Non-ASCII text is sent as UTF-8, not escaped."""
    wire = encode(Kind.RESPONSE, 174, 1, 1, {"name": "Zoë"})
    assert "Zoë".encode() in wire
    assert json.loads(wire[14:]) == {"name": "Zoë"}
    assert parse_payload(b"  ") == {}


def test_catalog_names_and_priorities():
    """The catalog names PROTOCOL §3's messages with their default priorities."""
    assert name_of(168, 1) == "CreateSession" and priority_of(168, 1) is Priority.HIGH
    assert name_of(173, 3) == "QueueChanged" and priority_of(173, 3) is Priority.LOW
    assert priority_of(168, 4) is Priority.MEDIUM
    assert name_of(999, 9) == "(999,9)" and priority_of(999, 9) is Priority.LOW
    assert name_of(200, 1) == "Register"
    assert len(CATALOG) == 41


# --- bounds: the decoder never raises (issue 15, item 5) -----------------------------


def _payload(payload: bytes, rid: int = 5) -> bytes:
    return encode_raw(Kind.REQUEST, 173, 1, rid, payload)


def test_deep_nesting_is_a_bad_frame_not_a_recursion_error():
    """100,000 nested arrays (or objects) are a bad-frame naming the depth, not a RecursionError."""
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        payload = b'{"x":' + opener * 100_000 + closer * 100_000 + b"}"
        bad = _bad(_payload(payload), max_frame=4 << 20)
        assert bad.request_id == 5 and f"deeper than {DECODE_DEPTH}" in bad.message
    unclosed = b'{"x":' + b"[" * 100_000
    assert isinstance(_bad(_payload(unclosed), max_frame=4 << 20), BadFrame)


def test_the_depth_bound_is_exact_and_ignores_brackets_in_strings():
    """A payload nesting DECODE_DEPTH deep decodes; one level more is a bad frame."""
    inner = DECODE_DEPTH - 1  # the payload object is level 1
    ok = b'{"x":' + b"[" * inner + b"]" * inner + b',"s":"' + b"[" * 500 + b'\\"["}'
    (frame,) = Decoder().feed(_payload(ok))
    assert isinstance(frame, Frame) and frame.parsed()["s"] == "[" * 500 + '"['
    deep = b'{"x":' + b"[" * (inner + 1) + b"]" * (inner + 1) + b"}"
    assert "deeper" in _bad(_payload(deep)).message
    assert MAX_DEPTH == 32 and DECODE_DEPTH >= MAX_DEPTH


def test_number_sizes_are_bounded():
    """Integers past MAX_INT_DIGITS digits and non-finite floats are bad frames, not ValueErrors."""
    limit = MAX_INT_DIGITS
    for number in (b"9" * 5000, b"-" + b"9" * (limit + 1), b"1e999", b"-1e400"):
        bad = _bad(_payload(b'{"n":' + number + b"}"))
        assert bad.request_id == 5 and "number" in bad.message
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        assert "not JSON" in _bad(_payload(b'{"n":' + literal + b"}")).message
    fine = b'{"n":[-' + b"9" * limit + b"," + b"9" * limit + b',1.5e300,"' + b"9" * 99 + b'"]}'
    (frame,) = Decoder().feed(_payload(fine))
    assert frame.parsed()["n"][1] == int("9" * limit)


def test_a_lone_surrogate_names_its_field():
    """A \\ud800 escape decodes to a frame marked invalid, naming the field; pairs are fine."""
    (frame,) = Decoder().feed(_payload(b'{"queue":"Sales\\ud800"}'))
    assert isinstance(frame, Frame) and frame.invalid is not None and "queue" in frame.invalid
    (nested,) = Decoder().feed(_payload(b'{"users":["ok","\\uDFFFx"]}'))
    assert nested.invalid is not None and "users[1]" in nested.invalid
    (key,) = Decoder().feed(_payload(b'{"\\udc00":1}'))
    assert key.invalid is not None
    (pair,) = Decoder().feed(_payload(b'{"queue":"\\ud83d\\ude00","q":"\\\\ud800"}'))
    assert pair.invalid is None and pair.parsed() == {"queue": "\U0001f600", "q": "\\ud800"}
    (lazy,) = Decoder(parse=False).feed(_payload(b'{"user":"\\ud800"}'))
    lazy.parsed()
    assert lazy.invalid is not None and "user" in lazy.invalid


def test_encoding_a_lone_surrogate_does_not_raise():
    """A reply carrying a lone surrogate is still encoded (as a JSON escape), never raising."""
    wire = encode(Kind.RESPONSE, 173, 1, 1, {"queue": "a\ud800"})
    assert wire.endswith(b'{"queue":"a\\ud800"}')


# --- receive buffering is linear (issue 15, item 1) ----------------------------------


def test_buffering_copies_each_byte_a_bounded_number_of_times():
    """A 1 MB frame fed one byte at a time is copied a few times over, not once per byte."""
    body = {"text": "x" * ((1 << 20) - 100)}
    wire = encode(Kind.REQUEST, 172, 6, 3, body)
    decoder = Decoder(max_frame=2 << 20)
    events: list = []
    for i in range(len(wire)):
        events += decoder.feed(wire[i : i + 1])
    assert [e.parsed() for e in events] == [body]
    assert decoder.copied <= 3 * len(wire) and decoder.buffered == 0


def test_per_byte_cost_does_not_grow_with_the_buffered_size():
    """Feeding 1-byte pieces costs the same with 900 KB buffered as with nothing buffered."""
    wire = encode(Kind.REQUEST, 172, 6, 3, {"text": "x" * (1 << 20)})
    span = 20_000
    pieces = [wire[i : i + 1] for i in range(len(wire))]

    def cost(start: int) -> float:
        best = float("inf")
        for _ in range(3):
            decoder = Decoder(max_frame=2 << 20)
            decoder.feed(wire[:start])
            began = time.perf_counter()
            for piece in pieces[start : start + span]:
                decoder.feed(piece)
            best = min(best, time.perf_counter() - began)
        return best

    early, late = cost(20), cost(900_000)
    assert late < 4 * early, (early, late)
