"""The splitter and assembler of large lists (smbridge/codec/pieces.py), sans-IO."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smbridge.codec.frames import dump_json
from smbridge.codec.pieces import (
    SLOT,
    Assembly,
    PieceTooLarge,
    Template,
    encode_value,
    pack,
    split_change,
    split_list,
)
from smbridge.topics import ItemSetState

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**9), 10**9), st.text(max_size=40)
)
items_strategy = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 10**6)},
        optional={"name": st.text(max_size=60), "x": json_scalars},
    ),
    max_size=80,
)


def _shape(index: int, more: bool) -> dict[str, Any]:
    if index == 0:
        return {"snapshot": {"name": "Company Directory", "entries": SLOT}, "more": more}
    return {"sub": 7, "snapshot": {"entries": SLOT}, "more": more}


@settings(max_examples=200, deadline=None)
@given(items=items_strategy, bound=st.integers(150, 4000))
def test_split_list_bounds_every_piece_and_reassembles_in_order(
    items: list[dict[str, Any]], bound: int
) -> None:
    """Any items, any bound: each piece is at most the bound, reassembly equals the original."""
    encoded = [encode_value(i) for i in items]
    biggest = max((len(e) for e in encoded), default=0)
    head = max(Template(_shape(0, m)).overhead for m in (True, False))
    later = max(Template(_shape(1, m)).overhead for m in (True, False))
    if biggest + later > bound or head > bound:
        with pytest.raises(PieceTooLarge):
            split_list(encoded, _shape, bound)
        return
    pieces = split_list(encoded, _shape, bound)
    assert all(len(p) <= bound for p in pieces)
    bodies = [json.loads(p) for p in pieces]
    assert [b["more"] for b in bodies] == [True] * (len(bodies) - 1) + [False]
    whole = Assembly(bodies[0])
    for body in bodies[1:]:
        whole.add(body)
    assert whole.result["snapshot"]["entries"] == items
    assert whole.result["snapshot"]["name"] == "Company Directory"


@given(sizes=st.lists(st.integers(0, 100), max_size=60), budget=st.integers(100, 400))
def test_pack_covers_every_index_once_within_budget(sizes: list[int], budget: int) -> None:
    """pack cuts consecutive runs covering every item once, each run's bytes within budget."""
    runs = pack(sizes, budget)
    assert [i for run in runs for i in run] == list(range(len(sizes)))
    for run in runs:
        assert sum(sizes[i] for i in run) + max(len(run) - 1, 0) <= budget


def test_pack_refuses_an_item_larger_than_a_piece() -> None:
    """An item that alone exceeds the bound cannot be bounded: PieceTooLarge names it."""
    with pytest.raises(PieceTooLarge, match="item 1 takes 500"):
        pack([10, 500, 10], 100)


def test_pack_leaves_the_first_piece_empty_when_its_envelope_is_full() -> None:
    """A first piece with a small budget may carry no item; the next piece takes it."""
    assert pack([50, 50], 10, 200) == [range(0, 0), range(0, 2)]


change_strategy = st.fixed_dictionaries(
    {
        "added": st.lists(st.fixed_dictionaries({"id": st.integers(0, 50), "v": st.text()})),
        "changed": st.lists(st.fixed_dictionaries({"id": st.integers(0, 50), "v": st.text()})),
        "removed": st.lists(st.integers(0, 50)),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    start=st.lists(st.fixed_dictionaries({"id": st.integers(0, 50)}), max_size=20),
    change=change_strategy,
    bound=st.integers(300, 2000),
)
def test_split_change_pieces_apply_like_the_whole_event(
    start: list[dict[str, Any]], change: dict[str, Any], bound: int
) -> None:
    """Applying the pieces of a change event in order gives the state the whole event gives."""
    event = {"name": "D", **change, "at": 12.5}
    whole_state = ItemSetState("D", "name", "entries", [dict(i) for i in start])
    whole_state.apply(event)
    pieces = split_change(event, bound)
    if len(dump_json(event)) <= bound:
        assert pieces == [dump_json(event)]
    else:  # cut, unless one item alone passes the bound (then it goes whole)
        assert all(len(p) <= bound for p in pieces) or pieces == [dump_json(event)]
    piece_state = ItemSetState("D", "name", "entries", [dict(i) for i in start])
    for raw in pieces:
        body = json.loads(raw)
        assert body["name"] == "D" and body["at"] == 12.5
        assert set(body) == {"name", "added", "changed", "removed", "at"}
        piece_state.apply(body)
    assert list(piece_state.items.items()) == list(whole_state.items.items())


def test_split_change_of_fifty_thousand_entries_stays_under_the_bound() -> None:
    """A site reload's 50,000 added entries become several events, each under the bound."""
    added = [{"id": f"user{i:05d}", "displayName": f"User {i}"} for i in range(50_000)]
    event = {"name": "Company Directory", "added": added, "changed": [], "removed": [], "at": 1.0}
    pieces = split_change(event, 256 * 1024)
    assert len(pieces) > 4
    assert max(len(p) for p in pieces) <= 256 * 1024
    got = [e for p in pieces for e in json.loads(p)["added"]]
    assert got == added


def test_encode_value_matches_dump_json() -> None:
    """Items encoded one by one are byte-identical to the frame codec's encoding."""
    body = {"a": "é", "b": [1, 2.5, None], "c": "\ud800"}
    assert encode_value(body) == dump_json(body)


def test_split_change_with_an_item_larger_than_a_piece_goes_whole() -> None:
    """An item that cannot be cut leaves the event whole rather than failing or losing it."""
    event = {"name": "D", "added": [{"id": 1, "blob": "x" * 5000}, {"id": 2}], "changed": []}
    assert split_change(event, 2048) == [dump_json(event)]
