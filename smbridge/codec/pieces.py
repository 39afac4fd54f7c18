"""Large lists in bounded pieces: splitting on one side, reassembly on the other (pure).

A frame may carry at most ``max frame`` bytes (1 MiB by default), but a site's
Company Directory, a busy queue or a site reload's change event can hold far
more. Every such list travels in **pieces**, each an ordinary JSON payload no
larger than a byte bound (:data:`PIECE_BYTES` by default, a quarter of the frame
limit), with the items in their original order:

- :func:`pack` decides where pieces start and end from the items' encoded sizes;
- :class:`Template` writes a payload around a run of already-encoded items, so
  each item is encoded once whatever the number of pieces;
- :func:`split_change` cuts a change event (``added``, ``changed``, ``removed``)
  into several valid change events whose application in order equals the whole;
- :class:`Assembly` merges the pieces of a snapshot back into one object.

An item that alone does not fit in a piece cannot be bounded: :class:`PieceTooLarge`
(the callers then send the whole answer, as they would without pieces).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

PIECE_BYTES = 256 * 1024  # default bound on one piece's encoded payload
MIN_PIECE_BYTES = 1024  # smallest bound accepted (an envelope and a few items)
CHANGE_FIELDS = ("added", "changed", "removed")

_SLOT_TEXT = "\x00smbridge-piece-slot\x00"
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_compact_ascii = json.JSONEncoder(separators=(",", ":"))


class PieceTooLarge(ValueError):
    """One item (or an envelope) is larger than the piece bound on its own."""


def encode_value(value: Any) -> bytes:
    """One JSON value, compact, as :func:`smbridge.codec.frames.dump_json` writes it."""
    try:
        return _compact.encode(value).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: ASCII escapes, like dump_json
        return _compact_ascii.encode(value).encode("ascii")


def pack(sizes: Sequence[int], first_budget: int, budget: int | None = None) -> list[range]:
    """Cut items of these encoded sizes into runs whose ``sum + commas`` fit the budgets.

    The first run must fit ``first_budget`` (it shares its payload with more
    fields), every later one ``budget`` (default: the same). Runs are greedy,
    in order, and cover every index exactly once; no items give one empty run.
    """
    later = first_budget if budget is None else budget
    runs: list[range] = []
    start, used, limit = 0, 0, first_budget
    for i, size in enumerate(sizes):
        cost = size if i == start else used + 1 + size
        if cost <= limit:
            used = cost
            continue
        if size > later:
            raise PieceTooLarge(f"item {i} takes {size} bytes; a piece holds {later}")
        runs.append(range(start, i))  # empty only when the first piece cannot hold item 0
        start, used, limit = i, size, later
    runs.append(range(start, len(sizes)))
    return runs


class Template:
    """A JSON payload with one list left open: ``fill(items)`` writes it around them.

    ``shape`` is any JSON object in which exactly one value is :data:`SLOT`;
    that value becomes the list of the given encoded items.
    """

    __slots__ = ("prefix", "suffix")

    def __init__(self, shape: dict[str, Any]) -> None:
        whole = encode_value(shape)
        marker = encode_value(_SLOT_TEXT)
        at = whole.find(marker)
        if at < 0 or whole.find(marker, at + 1) >= 0:
            raise ValueError("a template needs exactly one SLOT")
        self.prefix = whole[:at] + b"["
        self.suffix = b"]" + whole[at + len(marker) :]

    @property
    def overhead(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def fill(self, encoded: Sequence[bytes]) -> bytes:
        return self.prefix + b",".join(encoded) + self.suffix


SLOT: Any = _SLOT_TEXT  # the place of the list in a Template's shape


def split_list(
    encoded: Sequence[bytes],
    shape: Callable[[int, bool], dict[str, Any]],
    bound: int = PIECE_BYTES,
) -> list[bytes]:
    """Payloads of at most ``bound`` bytes carrying ``encoded`` items in order.

    ``shape(index, more)`` is the envelope of piece ``index`` (with :data:`SLOT`
    where its items go); ``more`` says whether pieces follow it. The budget of
    each piece is taken from the larger of its two envelopes, so the ``more``
    flag can be set after cutting.
    """

    def overhead(index: int) -> int:
        return max(Template(shape(index, m)).overhead for m in (True, False))

    first, later = bound - overhead(0), bound - overhead(1)
    if first < 0 or later < 0:
        raise PieceTooLarge(f"the envelope alone is larger than {bound} bytes")
    runs = pack([len(e) for e in encoded], first, later)
    last = len(runs) - 1
    return [
        Template(shape(i, i < last)).fill(encoded[run.start : run.stop])
        for i, run in enumerate(runs)
    ]


def split_change(
    payload: dict[str, Any], bound: int = PIECE_BYTES, whole: bytes | None = None
) -> list[bytes]:
    """A change event cut into valid change events of at most ``bound`` bytes each.

    Applying the pieces in order gives the same state as applying the whole event
    (``added`` pieces first, then ``changed``, then ``removed``: the order in which
    a whole event is applied). Other fields (the name, ``at``) are in every piece.
    An event that fits is returned whole (``whole``: its encoding, if known), and so
    is one holding an item that alone passes the bound (it cannot be cut).
    """
    if whole is None:
        whole = encode_value(payload)
    if len(whole) <= bound:
        return [whole]
    out: list[bytes] = []
    empty: dict[str, Any] = {field: [] for field in CHANGE_FIELDS}
    for field in CHANGE_FIELDS:
        items = payload.get(field) or []
        if not items:
            continue
        shape: dict[str, Any] = {**payload, **empty, field: SLOT}
        encoded = [encode_value(item) for item in items]
        try:
            out.extend(split_list(encoded, _same(shape), bound))
        except PieceTooLarge:
            return [whole]
    return out or [whole]


def _same(shape: dict[str, Any]) -> Callable[[int, bool], dict[str, Any]]:
    """An envelope that is the same for every piece (a change event's pieces are alike)."""
    return lambda index, more: shape


class Assembly:
    """The pieces of one object put back together: lists in parts are appended in order.

    ``first`` is the first piece's object (kept and extended in place); each
    :meth:`add` merges a later piece's object into it: a list extends the list
    of the same name, an object merges into the object of the same name, and
    anything else is ignored (the first piece already says it).
    """

    __slots__ = ("result", "pieces", "items")

    def __init__(self, first: dict[str, Any]) -> None:
        self.result = first
        self.pieces = 1
        self.items = 0

    def add(self, part: dict[str, Any]) -> None:
        self.pieces += 1
        self.items += _merge(self.result, part)


def _merge(into: dict[str, Any], part: dict[str, Any]) -> int:
    count = 0
    for key, value in part.items():
        have = into.get(key)
        if isinstance(value, list) and isinstance(have, list):
            have.extend(value)
            count += len(value)
        elif isinstance(value, dict) and isinstance(have, dict):
            count += _merge(have, value)
    return count
