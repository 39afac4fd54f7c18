"""Selection rules (PROTOCOL §4.4): parsing, resolving and ordering the roster."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smbridge.roster.selection import (
    DEFAULT_RULE,
    Resolved,
    RuleError,
    RuleSet,
    effective_location,
    order_roster,
    parse_rule,
    parse_rules,
    resolve,
    rule_for_user,
    unknown_locations,
)

LOCS = ["Indy", "London", "Paris", "Tokyo", "Sydney"]


def bridge(name: str, location: str, kind: str = "off-server") -> dict[str, Any]:
    return {"name": name, "kind": kind, "location": location, "available": True}


ROSTER = [
    bridge("on-indy", "Indy", "on-server"),
    bridge("off-indy", "Indy"),
    bridge("off-london", "London"),
    bridge("on-paris", "Paris", "on-server"),
    bridge("off-paris", "Paris"),
    bridge("off-tokyo", "Tokyo"),
]


def names(groups: list[list[dict[str, Any]]]) -> list[list[str]]:
    return [sorted(e.get("name") or e["address"] for e in g) for g in groups]


def test_effective_location_prefers_station_then_user_then_default() -> None:
    """The station's location wins over the user's, which wins over the default."""
    assert effective_location("A", "B", "C") == "A"
    assert effective_location(None, "B", "C") == "B"
    assert effective_location("", None, "C") == "C"


def test_default_rule_puts_this_location_first_then_off_then_on_then_host() -> None:
    """The default rule: this location, other off-server, other on-server, the host's addresses."""
    rule = rule_for_user(RuleSet(), "Paris")
    groups = order_roster(ROSTER, rule, ["10.0.0.1", "10.0.0.2"], random.Random(1))
    assert names(groups) == [
        ["off-paris", "on-paris"],
        ["off-indy", "off-london", "off-tokyo"],
        ["on-indy"],
        ["10.0.0.1", "10.0.0.2"],
    ]


def test_prioritized_and_load_balanced_groups_with_exclusion() -> None:
    """Prioritized locations and a load-balanced group come in order; excluded ones vanish."""
    rules = parse_rules(
        {
            "locations": {
                "London": {
                    "prioritized": ["<This Location>", ["Paris", "Tokyo"]],
                    "excluded": ["Indy"],
                }
            }
        }
    )
    groups = order_roster(ROSTER, rule_for_user(rules, "London"), ["h"], random.Random(2))
    assert names(groups) == [["off-london"], ["off-paris", "off-tokyo", "on-paris"], ["h"]]


def test_no_other_locations_keeps_only_prioritized_and_the_host() -> None:
    """'Do not use any other locations' leaves the prioritized groups and the raw addresses."""
    rules = parse_rules({"default": ["<This Location>"]})
    groups = order_roster(ROSTER, rule_for_user(rules, "Tokyo"), ["h"], random.Random(3))
    assert names(groups) == [["off-tokyo"], ["h"]]


def test_host_addresses_stay_even_when_everything_is_excluded() -> None:
    """The typed host's raw addresses are always the last group."""
    rule = resolve(parse_rule({"prioritized": [], "excluded": LOCS}, "r"), "Indy", None)
    assert names(order_roster(ROSTER, rule, ["a", "b", "a"], random.Random(4))) == [["a", "b"]]


def test_variables_resolve_and_audio_path_is_ignored() -> None:
    """<CIC Server Location> is the site's CIC location; the audio-path variable is dropped."""
    rules = parse_rules(
        {
            "cicLocation": "Indy",
            "default": ["<Other Locations in Audio Path>", "<CIC Server Location>", "London"],
        }
    )
    rule = rule_for_user(rules, "Paris")
    assert rule == Resolved((("Indy",), ("London",)), frozenset(), False)
    assert names(order_roster(ROSTER, rule, [], random.Random(5))) == [
        ["off-indy", "on-indy"],
        ["off-london"],
    ]


def test_list_form_any_location_allows_others() -> None:
    """In the list form, <Any Location> allows the other locations."""
    assert parse_rule(["<This Location>", "<Any Location>"], "r") == DEFAULT_RULE
    assert parse_rule(["London"], "r").others is False


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "selectionRules: expected a mapping"),
        ({"rules": {}}, "selectionRules: unknown key 'rules'"),
        ({"default": 3}, "selectionRules.default: expected a list or a mapping"),
        ({"default": {"excluded": [1]}}, "selectionRules.default.excluded"),
        ({"locations": {"X": {"others": "yes"}}}, "selectionRules.locations.X.others"),
        ({"default": {"prioritized": [[]]}}, "selectionRules.default.prioritized[0]"),
    ],
)
def test_bad_rules_are_refused_naming_the_entry(data: Any, message: str) -> None:
    """A rule that cannot be read is refused with a message naming its entry."""
    with pytest.raises(RuleError) as e:
        parse_rules(data)
    assert str(e.value).startswith(message)


def test_unknown_locations_are_listed() -> None:
    """Rules that name locations the site does not have are reported entry by entry."""
    rules = parse_rules(
        {
            "cicLocation": "Mars",
            "default": {"prioritized": ["<This Location>", "Moon"], "excluded": ["Indy"]},
            "locations": {"Venus": ["London"]},
        }
    )
    assert unknown_locations(rules, LOCS) == [
        "selectionRules.default: 'Moon'",
        "selectionRules.locations: 'Venus'",
        "selectionRules.cicLocation: 'Mars'",
    ]


def test_random_order_within_a_group_follows_the_injected_random() -> None:
    """Order within a group comes from the injected Random, so a seed reproduces it."""
    roster = [bridge(f"b{i}", "Indy") for i in range(8)]
    rule = rule_for_user(RuleSet(), "Indy")
    first = order_roster(roster, rule, [], random.Random(7))
    assert first == order_roster(roster, rule, [], random.Random(7))
    orders = {
        tuple(e["name"] for e in order_roster(roster, rule, [], random.Random(s))[0])
        for s in range(10)
    }
    assert len(orders) > 1


# --- properties -------------------------------------------------------------------

location = st.sampled_from(LOCS + [""])
entry = st.sampled_from(LOCS + ["<This Location>", "<CIC Server Location>"])
rules_st = st.builds(
    lambda prio, excl, others: {"prioritized": prio, "excluded": excl, "others": others},
    st.lists(st.one_of(entry, st.lists(entry, min_size=1, max_size=3)), max_size=4),
    st.lists(st.sampled_from(LOCS), max_size=3),
    st.booleans(),
)
roster_st = st.lists(
    st.tuples(location, st.sampled_from(["on-server", "off-server"])), max_size=12
).map(lambda items: [bridge(f"b{i}", loc, kind) for i, (loc, kind) in enumerate(items)])


@settings(max_examples=200, deadline=None)
@given(rules_st, roster_st, location, st.sampled_from(LOCS), st.integers(0, 99))
def test_ordering_invariants(
    data: dict[str, Any], roster: list[dict[str, Any]], here: str, cic: str, seed: int
) -> None:
    """No excluded location appears, groups keep their order, every allowed bridge once."""
    rule = resolve(parse_rule(data, "r"), here or None, cic)
    groups = order_roster(roster, rule, ["host"], random.Random(seed))
    assert groups[-1] == [{"address": "host"}]
    bridges = [e for g in groups[:-1] for e in g]
    assert not any(e["location"] in rule.excluded for e in bridges)
    allowed = sorted(e["name"] for e in roster if rule.allows(e["location"]))
    assert sorted(e["name"] for e in bridges) == allowed

    # Each group is one prioritized group in rule order, then other off-, then other on-server.
    def rank(e: dict[str, Any]) -> int:
        for i, locs in enumerate(rule.groups):
            if e["location"] in locs:
                return i
        return len(rule.groups) + (0 if e["kind"] == "off-server" else 1)

    ranks = [{rank(e) for e in g} for g in groups[:-1]]
    assert all(len(r) == 1 for r in ranks)
    flat = [r.pop() for r in ranks]
    assert flat == sorted(flat) and len(set(flat)) == len(flat)


# --- the site file --------------------------------------------------------------


def _site_with(rules: Any) -> Any:
    from smbridge.notifier.demo import demo_site_dict
    from smbridge.notifier.site import Site

    data = demo_site_dict()
    data["selectionRules"] = rules
    return Site.from_dict(data)


def test_site_keeps_good_rules_and_refuses_bad_ones_naming_the_entry() -> None:
    """A site loads with readable rules on its locations; others are refused by entry."""
    from smbridge.notifier.demo import demo_site_dict
    from smbridge.notifier.site import SiteError

    loc = demo_site_dict()["locations"][0]
    good = {"cicLocation": loc, "locations": {loc: ["<This Location>", "<Any Location>"]}}
    assert _site_with(good).selection_rules == good
    with pytest.raises(SiteError, match=r"^selectionRules.default: 'Atlantis' is not one of"):
        _site_with({"default": ["Atlantis"]})
    with pytest.raises(SiteError, match=r"^selectionRules.locations.X.others: expected"):
        _site_with({"locations": {"X": {"others": 1}}})
