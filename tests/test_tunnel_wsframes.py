"""The fast parser of common client WebSocket frames (pure, property-tested)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from smbridge.tunnel.wsframes import take_binary_frames, unmask


def reference_mask(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def client_frame(payload: bytes, key: bytes, opcode: int = 2, fin: bool = True) -> bytes:
    """A masked client frame, built the slow, obvious way."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack(">BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack(">BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", first, 0x80 | 127, n)
    return head + key + reference_mask(payload, key)


keys = st.binary(min_size=4, max_size=4)
payloads = st.binary(max_size=300)


@given(payloads, keys)
def test_unmask_matches_the_rfc(payload: bytes, key: bytes) -> None:
    """unmask equals the byte-by-byte XOR of RFC 6455 and is its own inverse."""
    assert unmask(payload, key) == reference_mask(payload, key)
    assert unmask(unmask(payload, key), key) == payload


@given(st.lists(st.tuples(payloads, keys), max_size=8))
def test_common_frames_are_all_taken(frames: list[tuple[bytes, bytes]]) -> None:
    """A run of whole masked binary frames comes back as their payloads, every byte used."""
    data = b"".join(client_frame(p, k) for p, k in frames)
    taken, used = take_binary_frames(data, 0)
    assert taken == [p for p, _ in frames]
    assert used == len(data)


@given(st.lists(st.tuples(payloads, keys), min_size=1, max_size=4), st.integers(1, 400))
def test_an_incomplete_frame_is_left_for_later(frames: list[tuple[bytes, bytes]], cut: int) -> None:
    """Cutting the stream anywhere takes only the whole frames before the cut."""
    encoded = [client_frame(p, k) for p, k in frames]
    data = b"".join(encoded)
    cut = min(cut, len(data))
    taken, used = take_binary_frames(data[:cut], 0)
    whole, total = [], 0
    for (payload, _), frame in zip(frames, encoded, strict=True):
        if total + len(frame) > cut:
            break
        whole.append(payload)
        total += len(frame)
    assert (taken, used) == (whole, total)


@given(
    payloads,
    keys,
    st.sampled_from(["text", "continuation", "ping", "close", "unmasked", "rsv", "fragment"]),
)
def test_anything_else_stops_the_fast_path(payload: bytes, key: bytes, kind: str) -> None:
    """A frame outside the common case, and all after it, is left to Autobahn."""
    first = client_frame(b"ok", key)
    if kind == "text":
        other = client_frame(payload, key, opcode=1)
    elif kind == "continuation":
        other = client_frame(payload, key, opcode=0)
    elif kind == "ping":
        other = client_frame(payload[:125], key, opcode=9)
    elif kind == "close":
        other = client_frame(b"\x03\xe8", key, opcode=8)
    elif kind == "unmasked":
        other = bytes((0x82, len(payload[:125]))) + payload[:125]
    elif kind == "rsv":
        frame = client_frame(payload, key)
        other = bytes((frame[0] | 0x40,)) + frame[1:]
    else:
        other = client_frame(payload, key, fin=False)
    data = first + other + client_frame(b"after", key)
    taken, used = take_binary_frames(data, 0)
    assert (taken, used) == ([b"ok"], len(first))


def test_large_and_over_limit_frames_go_to_autobahn() -> None:
    """64-bit lengths, non-minimal 16-bit lengths and frames over the limit are not taken."""
    key = b"\x01\x02\x03\x04"
    big = client_frame(b"x" * 70000, key)
    assert take_binary_frames(big, 0) == ([], 0)
    sloppy = struct.pack(">BBH", 0x82, 0x80 | 126, 5) + key + reference_mask(b"hello", key)
    assert take_binary_frames(sloppy, 0) == ([], 0)
    medium = client_frame(b"y" * 300, key)
    assert take_binary_frames(medium, 299) == ([], 0)
    assert take_binary_frames(medium, 300) == ([b"y" * 300], len(medium))


@given(st.binary(max_size=200), st.integers(0, 300))
def test_never_raises_and_never_overreads(data: bytes, limit: int) -> None:
    """Any bytes give a prefix length within the buffer and payloads within the limit."""
    taken, used = take_binary_frames(data, limit)
    assert 0 <= used <= len(data)
    assert all(len(p) <= limit for p in taken) or limit == 0
    assert sum(len(p) for p in taken) <= used
