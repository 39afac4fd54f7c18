"""Cross-worker ResumeSession, the pure parts: worker ids, the relay preamble, frame cutting."""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from smbridge.codec import Kind, encode
from smbridge.resources import Origin
from smbridge.session.registry import new_session_id, worker_of
from smbridge.transports.relay_wire import (
    MAGIC,
    MAX_PREAMBLE,
    FrameSplitter,
    Preamble,
    PreambleParser,
    Refused,
    encode_preamble,
)


def test_single_process_ids_are_unchanged() -> None:
    """Without a worker index the id is <node>-<ms hex>-<16 hex> and names no worker."""
    sid = new_session_id("sm1", 1_700_000_000.0)
    node, stamp, rand = sid.split("-")
    assert (node, stamp, len(rand)) == ("sm1", f"{1_700_000_000_000:x}", 16)
    assert worker_of(sid, "sm1") is None


def test_worker_ids_name_their_worker() -> None:
    """A worker's ids carry w<I> after the node, read back by worker_of (node with dashes too)."""
    for node in ("sm1", "bridge-east-1"):
        for index in (0, 1, 7, 63):
            sid = new_session_id(node, 1_700_000_000.5, index)
            assert sid.startswith(f"{node}-w{index}-")
            assert worker_of(sid, node) == index
            assert worker_of(sid, "other") is None


def test_ids_that_name_no_worker() -> None:
    """Leading zeros, signs, long indexes, wrong shapes and other nodes name no worker."""
    for sid in (
        "sm1-w01-19a8-3f9c",
        "sm1-w+1-19a8-3f9c",
        "sm1-w123-19a8-3f9c",
        "sm1-w1-19a8",
        "sm1-w1-19a8-3f9c-00",
        "sm1-w1-19G8-3f9c",
        "sm1-w1--3f9c",
        "sm1-w٣-19a8-3f9c",
        "sm2-w1-19a8-3f9c",
        "sm1-19a8f3c2d10-3f9c0a6b1d2e4f57",
        "",
    ):
        assert worker_of(sid, "sm1") is None, sid
    assert worker_of("sm1-w7-19a8-3f9c", "sm1") == 7


def _whole(preamble: Preamble) -> bytes:
    return encode_preamble(preamble)


SAMPLES = [
    Preamble("tls", "127.0.0.1:50000", 1, Origin("tls")),
    Preamble("clear", "[::1]:4", 0, Origin("clear")),
    Preamble(
        "wss",
        "203.0.113.9 via 127.0.0.1:61000",
        63,
        Origin("wss", "wss://bridge.example/x", "cic1", "alias1", True),
    ),
]


def test_preamble_round_trip_whole_and_byte_by_byte() -> None:
    """Every preamble reads back equal, fed at once or a byte at a time; the rest is kept."""
    tail = encode(Kind.REQUEST, 168, 5, 1, {"sessionId": "x"})
    for preamble in SAMPLES:
        data = _whole(preamble) + tail
        parser = PreambleParser()
        assert parser.feed(data) == preamble and parser.rest == tail
        parser = PreambleParser()
        results = [parser.feed(data[i : i + 1]) for i in range(len(data))]
        done = [r for r in results if r is not None]
        assert done[0] == preamble and results.index(preamble) == len(_whole(preamble)) - 1
        assert parser.rest == b""  # the tail came after the answer, one byte at a time


def _raw(body: object) -> bytes:
    data = json.dumps(body).encode()
    return MAGIC + struct.pack(">H", len(data)) + data


def test_preambles_refused_with_a_reason() -> None:
    """Each malformed preamble gets Refused naming what is wrong."""
    good = {"kind": "tls", "remote": "1.2.3.4:5", "from": 0}
    cases = {
        b"GET / HTTP/1.1\r\n": "bad magic",
        MAGIC + b"\x00\x00": "length 0",
        MAGIC + struct.pack(">H", MAX_PREAMBLE + 1): f"length {MAX_PREAMBLE + 1}",
        MAGIC + b"\x00\x02\xff\xfe": "not UTF-8 JSON",
        _raw([1, 2]): "not a JSON object",
        _raw({**good, "token": "x"}): "unknown preamble member 'token'",
        _raw({**good, "kind": "udp"}): "kind must be one of",
        _raw({**good, "from": 64}): "from must be a worker index",
        _raw({**good, "from": True}): "from must be a worker index",
        _raw({**good, "remote": ""}): "remote must be a non-empty string",
        _raw({**good, "remote": "a\nb"}): "remote must be printable",
        _raw({**good, "origin": {"evil": 1}}): "origin must be an object",
        _raw({**good, "origin": {"proxied": "yes"}}): "origin.proxied",
        MAGIC + struct.pack(">H", 4000) + b"[" * 2000 + b"]" * 2000: "not UTF-8 JSON",
    }
    for data, reason in cases.items():
        result = PreambleParser().feed(data)
        assert isinstance(result, Refused), data
        assert reason in result.reason, (data, result.reason)
    plain = PreambleParser().feed(_raw({**good, "origin": {"server": None}}))
    assert isinstance(plain, Preamble) and plain.origin == Origin("tls")


@given(st.binary(max_size=300))
def test_garbage_preambles_are_refused_cleanly(data: bytes) -> None:
    """Any bytes give None (need more), a Preamble or Refused; never an exception."""
    parser = PreambleParser()
    result = parser.feed(data)
    assert result is None or isinstance(result, Preamble | Refused)
    if isinstance(result, Refused):
        assert result.reason and "\n" not in result.reason
        assert parser.feed(b"more") is result  # nothing more is taken


@given(
    st.dictionaries(
        st.sampled_from(["kind", "remote", "from", "origin", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-5, 100),
            st.text(max_size=20),
            st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        ),
    )
)
def test_garbage_json_preambles_are_refused_cleanly(body: dict[str, object]) -> None:
    """Well-framed JSON with wrong members is Refused (or, when valid, a Preamble)."""
    result = PreambleParser().feed(_raw(body))
    assert isinstance(result, Preamble | Refused)
    if isinstance(result, Preamble):
        assert result.kind in ("tls", "clear", "ws", "wss") and 0 <= result.sender < 64


def test_frame_splitter_cuts_whole_frames_however_split() -> None:
    """Frames come out whole and in order, whether fed at once or byte by byte."""
    frames = [encode(Kind.NOTIFICATION, 173, 3, 0, {"n": i, "pad": "x" * i}) for i in range(20)]
    data = b"".join(frames)
    assert FrameSplitter(1 << 20).feed(data) == frames
    splitter = FrameSplitter(1 << 20)
    out = [f for i in range(len(data)) for f in splitter.feed(data[i : i + 1])]
    assert out == frames and splitter.error is None


def test_frame_splitter_refuses_a_bad_length() -> None:
    """A length below the header or above the bound sets error after the frames before it."""
    good = encode(Kind.RESPONSE, 168, 5, 1, {})
    splitter = FrameSplitter(100)
    assert splitter.feed(good + struct.pack(">I", 101) + b"x" * 10) == [good]
    assert splitter.error is not None and "101" in splitter.error
    assert splitter.feed(good) == []
    small = FrameSplitter(100)
    assert small.feed(struct.pack(">I", 3)) == [] and small.error is not None
