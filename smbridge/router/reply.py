"""What a request handler returns."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer


class EncodedReply:
    """A reply whose payload is already encoded (a large answer shared by many sessions).

    ``then``: whole frames written right after the reply (a large snapshot's tail,
    router/continued.py), before anything else for the session.
    """

    __slots__ = ("payload", "then")

    def __init__(self, payload: bytes, then: list[bytes] | None = None) -> None:
        self.payload = payload
        self.then = then


Body = dict[str, Any] | EncodedReply
# The reply payload, a Deferred of it, or None when the handler answered by itself.
Reply = Body | defer.Deferred[dict[str, Any]] | defer.Deferred[EncodedReply] | None
