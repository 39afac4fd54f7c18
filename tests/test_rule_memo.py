"""The selection rule a logon is judged by is read once per rules value, not per logon."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from smbridge.roster.selection import parse_rules, rule_for_user
from smbridge.router import roster_requests
from smbridge.router.roster_requests import RosterRequests

RULES = {"default": ["$location", "*"], "locations": {"Paris": ["Paris", "Lyon"]}}


def router(rule: Any) -> Any:
    r = object.__new__(RosterRequests)
    r.upstream = SimpleNamespace(registered={"selectionRule": rule})  # type: ignore[assignment]
    return r


def test_same_rules_are_parsed_once_per_location_and_match_a_fresh_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many logons from two locations parse the rules twice, and agree with a fresh read."""
    calls: list[Any] = []

    def counting(data: Any) -> Any:
        calls.append(data)
        return parse_rules(data)

    monkeypatch.setattr(roster_requests, "parse_rules", counting)
    r = router(RULES)
    for _ in range(50):
        for location in ("Paris", "Berlin", None):
            assert r.user_rule(location) == rule_for_user(parse_rules(RULES), location)
    assert len(calls) == 3


def test_a_new_rules_value_is_read_again() -> None:
    """RosterChanged replaces the value: the next logon is judged by the new rules."""
    r = router(RULES)
    before = r.user_rule("Paris")
    assert before.groups == (("Paris",), ("Lyon",))
    r.upstream.registered["selectionRule"] = {"default": ["Berlin"]}
    after = r.user_rule("Paris")
    assert after == rule_for_user(parse_rules({"default": ["Berlin"]}), "Paris")
    assert after != before


def test_unreadable_rules_give_the_default_rule() -> None:
    """A value that cannot be read judges by the default rule, as before the memo."""
    r = router({"bogus": 1})
    assert r.user_rule("Paris") == rule_for_user(parse_rules(None), "Paris")


def test_the_memo_is_bounded() -> None:
    """Users from very many locations do not grow the memo without bound."""
    r = router(RULES)
    for i in range(roster_requests.MEMO_LOCATIONS + 10):
        r.user_rule(f"loc{i}")
    assert len(r._rules[1]) <= roster_requests.MEMO_LOCATIONS
