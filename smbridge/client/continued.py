"""A watch reply that came in pieces, made whole for the caller (docs/protocol.md, "Large answers").

The bridge answers a watch whose snapshot is larger than a piece with the first
piece and ``more: true``; the other items follow at once as change events of the
topic with ``continued: true`` (QueueChanged for WatchQueue). :func:`gather` waits
for them and fires with the whole snapshot. The continued events still reach the
notification listeners as well: applying them to the whole snapshot changes nothing
(``added`` items replace the items of the same id), so a listener need not tell them
apart, and one that does sees ``continued: true``.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed

from smbridge.client.protocol import ClientError
from smbridge.codec import Frame
from smbridge.codec.catalog import MessageType


class Listened(Protocol):
    """What :func:`gather` needs of a client: its notifications and its end."""

    def add_listener(self, listener: Any) -> None: ...

    def remove_listener(self, listener: Any) -> None: ...

    @property
    def closed(self) -> Deferred[Exception]: ...


def gather(
    client: Listened, reply: dict[str, Any], message: MessageType, key: str, field: str
) -> Deferred[dict[str, Any]]:
    """``reply``, or once its continued events have come, the whole snapshot.

    ``message`` is the topic's change event, ``key`` the field naming the topic's
    object (``queue``), ``field`` the item list (``interactions``).
    """
    if reply.get("more") is not True:
        return succeed(reply)
    items = list(reply.get(field, ()))
    done: Deferred[dict[str, Any]] = Deferred()

    def listener(name: str, frame: Frame) -> None:
        if (frame.object_type, frame.event_id) != message or done.called:
            return
        body = frame.parsed()
        if body.get("continued") is not True or body.get(key) != reply.get(key):
            return
        items.extend(body.get("added", ()))
        if body.get("more") is not True:
            client.remove_listener(listener)
            whole = {k: v for k, v in reply.items() if k != "more"}
            whole[field] = items
            done.callback(whole)

    def lost(reason: object) -> None:
        if not done.called:
            client.remove_listener(listener)
            done.errback(ClientError("connection-lost", "the connection ended mid-snapshot"))

    client.add_listener(listener)
    client.closed.addCallback(lost)
    return done
