"""Large watch snapshots to a client: a bounded first piece, the rest as change events.

A watch reply (WatchQueue's snapshot) or a ``reset`` snapshot after a resume with
a gap can be larger than a frame should be (a queue with thousands of waiting
interactions, a 50,000-entry directory). :func:`continued` cuts such a snapshot
along its item list: the reply or reset notification carries the first piece and
``"more": true``; the remaining items follow at once, in order, as ordinary change
events of the topic (``{<name>, added: [...], changed: [], removed: [],
continued: true, more}``), each at most ``bound`` bytes. Applying those to the
first piece gives exactly the snapshot, so a client that knows nothing of pieces
still ends with the right state; ``continued: true`` tells a client that these
are the snapshot's tail, not news. They are written before any later change event
of the watch (the same ordered connection buffer), so watch semantics hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from smbridge.codec.catalog import QUEUE_CHANGED, SWITCHOVER, MessageType
from smbridge.codec.frames import Kind, dump_json, encode, encode_raw
from smbridge.codec.pieces import PIECE_BYTES, SLOT, PieceTooLarge, encode_value, split_list
from smbridge.router.fanout import FanOut, Watcher
from smbridge.router.reply import EncodedReply


def continued(
    message: MessageType,
    snapshot: dict[str, Any],
    extra: dict[str, Any] | None = None,
    bound: int = PIECE_BYTES,
) -> tuple[bytes, list[bytes]]:
    """The first piece's payload (``snapshot`` + ``extra``) and the notifications after it.

    A snapshot that fits ``bound`` is returned whole with no notifications.
    ``message`` is the topic's change event, (objectType, eventId).
    """
    extra = extra or {}
    whole = dump_json({**snapshot, **extra})
    lists = [k for k, v in snapshot.items() if isinstance(v, list)]
    if len(whole) <= bound or not lists:
        return whole, []
    field = max(lists, key=lambda k: len(snapshot[k]))
    head = {k: v for k, v in snapshot.items() if k != field}

    def shape(index: int, more: bool) -> dict[str, Any]:
        if index == 0:
            return {**head, field: SLOT, **extra, "more": more}
        return {
            **head,
            "added": SLOT,
            "changed": [],
            "removed": [],
            "continued": True,
            "more": more,
        }

    try:
        payloads = split_list([encode_value(item) for item in snapshot[field]], shape, bound)
    except PieceTooLarge:  # an item alone passes the bound: it cannot be cut
        return whole, []
    rest = [encode_raw(Kind.NOTIFICATION, *message, 0, p) for p in payloads[1:]]
    return payloads[0], rest


def queue_reply(snapshot: dict[str, Any], bound: int = PIECE_BYTES) -> EncodedReply:
    """WatchQueue's answer: the snapshot, or its first piece with QueueChanged after it."""
    first, rest = continued(QUEUE_CHANGED, snapshot, None, bound)
    return EncodedReply(first, rest)


SharedSnapshots = dict[tuple[str, Any], tuple[dict[str, Any] | None, list[bytes]]]


def completed_frames(
    fanout: FanOut,
    session: Watcher,
    names: Iterable[str],
    cic: Any,
    resets: Callable[[dict[str, dict[str, Any]]], list[bytes]],
    shared: SharedSnapshots,
    bound: int = PIECE_BYTES,
) -> list[bytes]:
    """``Switchover {phase: "completed"}`` for one session, and the reset frames after it.

    Snapshots that fit a piece go in the notice's ``snapshots``, as before; a larger
    one (a big directory) is named in ``following`` and sent right after the notice as
    its ``reset`` snapshot in pieces (``resets``). ``shared`` keeps each (topic,
    visibility scope)'s snapshot and frames for every session of one switchover, so a
    directory that a thousand sessions watch is copied and encoded once, not a thousand
    times.
    """
    small: dict[str, Any] = {}
    following: list[str] = []
    after: list[bytes] = []
    for name in sorted(names):
        if not fanout.watching(name, session):
            continue
        key = (name, fanout.scope_of(session) if name.startswith("directory:") else None)
        hit = shared.get(key)
        if hit is None:
            snapshot = fanout.snapshots(session, [name]).get(name)
            if snapshot is None:
                continue
            if len(encode_value(snapshot)) <= bound:
                hit = (snapshot, [])
            else:
                hit = (None, resets({name: snapshot}))
            shared[key] = hit
        snapshot, frames = hit
        if snapshot is not None:
            small[name] = snapshot
        else:
            following.append(name)
            after.extend(frames)
    body: dict[str, Any] = {"phase": "completed", "cic": cic, "snapshots": small}
    if following:
        body["following"] = following
    return [encode(Kind.NOTIFICATION, *SWITCHOVER, 0, body), *after]
