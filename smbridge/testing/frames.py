"""Frames as a test sees them: decode whatever a peer wrote, a sample Register."""

from __future__ import annotations

from typing import Any

from smbridge.codec import BadFrame, Decoder, Frame

# What a bridge sends in Register, for tests that play the bridge's part.
SAMPLE_REGISTRATION: dict[str, Any] = {
    "name": "bridge1",
    "fqdn": "localhost",
    "kind": "on-server",
    "location": "Indianapolis",
    "ports": {"tls": 3952, "ws": 8951, "wss": 8952},
    "accept": "default",
    "version": "test",
}


def decode_all(data: bytes) -> list[Frame]:
    """Decode a byte string that must hold only whole, valid frames."""
    events = Decoder().feed(data)
    bad = [e for e in events if isinstance(e, BadFrame)]
    if bad:
        raise AssertionError(f"bad frames in {data!r}: {bad}")
    return [e for e in events if isinstance(e, Frame)]


class FramePeer:
    """A session Peer that records what was written, decoded."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.session: Any = None

    def send(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    @property
    def frames(self) -> list[Frame]:
        return decode_all(self.data)

    def bodies(self, message: tuple[int, int]) -> list[dict[str, Any]]:
        """Payloads of the frames of one (objectType, eventId)."""
        return [f.parsed() for f in self.frames if (f.object_type, f.event_id) == message]
