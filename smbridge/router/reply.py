"""What a request handler returns."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer


class EncodedReply:
    """A reply whose payload is already encoded (a large answer shared by many sessions)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


Body = dict[str, Any] | EncodedReply
# The reply payload, a Deferred of it, or None when the handler answered by itself.
Reply = Body | defer.Deferred[dict[str, Any]] | defer.Deferred[EncodedReply] | None
