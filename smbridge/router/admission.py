"""What a client may send, and what of it goes to the Notifier (PROTOCOL §3).

A client shares the frame format with the bridge↔Notifier link, so the bridge must
never let a client's frame pass for one of its own. :func:`admit` lets through only
``request`` frames whose (objectType, eventId) is in the allow-list
(:data:`~smbridge.codec.catalog.CLIENT_REQUESTS`); anything else, the link's own
objectType 200 included, is refused ``unknown-request`` before the session is even
looked up. :func:`upstream_payload` builds what a forwarded request carries: the
client's members, minus any ``_session`` the client wrote, plus the bridge's
``_session`` (the identity the Notifier acts on), as valid JSON that fits in a link
frame. Whatever JSON parser the far end uses (first or last duplicate wins), there
is exactly one ``_session`` and it is the bridge's. Nor may a forwarded payload nest
deeper than :data:`~smbridge.codec.frames.MAX_DEPTH` (the codec's bound, which the
decoder's own, twice as deep, backs): the far end's parser must never fail on it,
because a frame the Notifier cannot read costs every session on the link (it drops
the link). A request holding a string that is not valid Unicode (a lone surrogate,
which the decoder marks in ``Frame.invalid``) is refused ``bad-request`` naming the
field, whatever it asks for: it could not be encoded again, nor trusted upstream.
"""

from __future__ import annotations

import json
from typing import Any

from smbridge.codec import DEFAULT_MAX_FRAME, Frame, Kind
from smbridge.codec.catalog import CLIENT_REQUESTS
from smbridge.codec.frames import MAX_DEPTH, MIN_LENGTH
from smbridge.errors import BadRequest, ProtocolError
from smbridge.router.identity import with_identity

SESSION_MEMBER = "_session"  # the member the bridge adds to a forwarded request
# The largest payload a link frame carries: the Notifier reads frames up to the
# protocol's default limit, whatever --max-frame this bridge takes from clients.
LINK_PAYLOAD_LIMIT = DEFAULT_MAX_FRAME - MIN_LENGTH
_JSON_SPACE = b" \t\r\n"  # the only white space JSON allows around a value


class UnknownRequest(ProtocolError):
    code = "unknown-request"


class RequestTooLarge(ProtocolError):
    code = "request-too-large"


def admit(frame: Frame) -> None:
    """Raise :class:`UnknownRequest` unless ``frame`` is a request a client may send,
    then :class:`BadRequest` if one of its strings is not valid Unicode."""
    if frame.kind != Kind.REQUEST:
        raise UnknownRequest(f"clients send requests, not kind {frame.kind}")
    if (frame.object_type, frame.event_id) not in CLIENT_REQUESTS:
        raise UnknownRequest(
            f"({frame.object_type},{frame.event_id}) is not a request clients may send"
        )
    if frame.body is None:
        try:
            frame.parsed()
        except ValueError as e:
            raise BadRequest(str(e)) from None
    if frame.invalid is not None:
        raise BadRequest(frame.invalid)


def upstream_payload(frame: Frame, identity: bytes) -> bytes:
    """The payload of a forwarded request: the client's members and the bridge's identity.

    The client's bytes are kept as they are (no re-encoding on the hot path) unless
    they hold a ``_session`` of their own or end in white space JSON does not allow
    (which the decoder tolerates but a splice would break); then they are re-encoded
    from the parsed body without it.
    """
    body: dict[str, Any] = frame.parsed()
    if _may_be_too_deep(frame.payload) and _too_deep(body):
        raise BadRequest(f"the request nests objects or arrays deeper than {MAX_DEPTH}")
    payload = frame.payload
    if SESSION_MEMBER in body or (body and not payload.rstrip(_JSON_SPACE).endswith(b"}")):
        body = {k: v for k, v in body.items() if k != SESSION_MEMBER}
        payload = json.dumps(body, separators=(",", ":")).encode("ascii")
    out = with_identity(payload, body, identity)
    if len(out) > LINK_PAYLOAD_LIMIT:
        raise RequestTooLarge(
            f"the request is {len(out)} bytes with the session's identity; "
            f"at most {LINK_PAYLOAD_LIMIT} go to the Notifier",
            limit=LINK_PAYLOAD_LIMIT,
        )
    return out


def _may_be_too_deep(payload: bytes) -> bool:
    """Whether the payload has enough openers to nest past MAX_DEPTH (C-speed counts).

    Every level needs its own ``{`` or ``[``, so a request with fewer (almost all of
    them) skips the walk over its parsed body on the forwarding path.
    """
    return payload.count(b"{") + payload.count(b"[") > MAX_DEPTH


def _too_deep(body: dict[str, Any]) -> bool:
    """Whether objects and arrays nest deeper than MAX_DEPTH (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in children if isinstance(v, dict | list))
    return False
