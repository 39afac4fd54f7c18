"""The common case of client WebSocket frames, parsed fast. Pure: no I/O.

Nearly every frame a client sends is a whole, final, masked binary frame of under
64 KiB: one or a few requests. Autobahn parses each frame through a general state
machine (fragments, control frames, compression, UTF-8) and builds a native XOR
masker object per frame; for small frames that costs more than the request itself.
:func:`take_binary_frames` takes a run of such common frames off the front of the
buffer and unmasks them with one big-integer XOR each; the first frame that is
anything else (a control frame, text, a fragment, unmasked, non-minimal length, over
the size limit, 64-bit length, or not yet complete) stops it, and Autobahn handles
the rest exactly as before (with NVX for the large frames).
"""

from __future__ import annotations

FIN_BINARY = 0x82
MASKED = 0x80


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (RFC 6455 §5.3)."""
    n = len(payload)
    if n == 0 or key == b"\x00\x00\x00\x00":
        return payload
    mask = (key * ((n + 3) // 4))[:n]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")
    return value.to_bytes(n, "little")


def take_binary_frames(data: bytes, max_payload: int) -> tuple[list[bytes], int]:
    """Unmasked payloads of the common frames at the start of ``data``, and bytes used.

    A frame qualifies when it is FIN + binary with RSV bits clear, masked, uses the
    7-bit or 16-bit (minimal) length form and carries at most ``max_payload`` bytes
    (0: no limit), and is wholly in ``data``.
    """
    out: list[bytes] = []
    pos, end = 0, len(data)
    while end - pos >= 6:
        if data[pos] != FIN_BINARY:
            break
        b1 = data[pos + 1]
        if not b1 & MASKED:
            break
        n = b1 & 0x7F
        if n < 126:
            head = 2
        elif n == 126:
            if end - pos < 8:
                break
            n = (data[pos + 2] << 8) | data[pos + 3]
            if n < 126:
                break  # not the minimal encoding: Autobahn refuses it
            head = 4
        else:
            break  # 64-bit length: a large frame, left to Autobahn
        if max_payload and n > max_payload:
            break
        start = pos + head + 4
        stop = start + n
        if stop > end:
            break
        out.append(unmask(data[start:stop], data[pos + head : start]))
        pos = stop
    return out, pos
