"""Selection rules as pure functions, shared by bridge and client (PROTOCOL §4.4).

A site's ``selectionRules`` (docs/roster.md) holds a default rule, a rule per
location and the CIC server's location. A rule is a list of prioritized entries
(a location name, a special variable, or a list of them: a load-balanced group),
a set of excluded locations and whether other locations are allowed.
:func:`order_roster` turns the roster into ordered groups for one user.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

THIS_LOCATION = "<This Location>"
CIC_SERVER_LOCATION = "<CIC Server Location>"
IC_SERVER_LOCATION = "<IC Server Location>"  # the note's older spelling
AUDIO_PATH = "<Other Locations in Audio Path>"
ANY_LOCATION = "<Any Location>"
VARIABLES = frozenset({THIS_LOCATION, CIC_SERVER_LOCATION, IC_SERVER_LOCATION, AUDIO_PATH})


class RuleError(ValueError):
    """A ``selectionRules`` value that cannot be read; the message names the entry."""


@dataclass(frozen=True)
class Rule:
    """One selection rule, before its variables are resolved."""

    prioritized: tuple[tuple[str, ...], ...] = ((THIS_LOCATION,),)
    excluded: frozenset[str] = frozenset()
    others: bool = True


DEFAULT_RULE = Rule()


@dataclass(frozen=True)
class RuleSet:
    """A site's selection rules: the default rule, one per location, the CIC location."""

    default: Rule = DEFAULT_RULE
    locations: Mapping[str, Rule] = field(default_factory=dict)
    cic_location: str | None = None

    def rule_for(self, location: str | None) -> Rule:
        """The rule of ``location``, else the default rule."""
        if location is not None and location in self.locations:
            return self.locations[location]
        return self.default


@dataclass(frozen=True)
class Resolved:
    """A rule with its variables resolved for one location."""

    groups: tuple[tuple[str, ...], ...]
    excluded: frozenset[str]
    others: bool

    def allows(self, location: str) -> bool:
        """Whether a bridge in ``location`` may serve a user under this rule."""
        if location in self.excluded:
            return False
        return self.others or any(location in g for g in self.groups)


def effective_location(
    station_location: str | None, user_location: str | None, default_location: str | None
) -> str | None:
    """The user's location: the station's if set, else the user's, else the default."""
    return station_location or user_location or default_location


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: expected a list of location names")
    return list(value)


def parse_rule(value: Any, where: str) -> Rule:
    """Read one rule: a list (shorthand) or ``{prioritized, excluded, others}``.

    In the list form ``<Any Location>`` allows other locations (anywhere in the
    list); without it only the listed locations are used.
    """
    if isinstance(value, list):
        others = ANY_LOCATION in value
        value = {"prioritized": [v for v in value if v != ANY_LOCATION], "others": others}
    if not isinstance(value, dict):
        raise RuleError(f"{where}: expected a list or a mapping")
    unknown = set(value) - {"prioritized", "excluded", "others"}
    if unknown:
        raise RuleError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    groups: list[tuple[str, ...]] = []
    raw = value.get("prioritized", [THIS_LOCATION])
    if not isinstance(raw, list):
        raise RuleError(f"{where}.prioritized: expected a list")
    for i, entry in enumerate(raw):
        if isinstance(entry, str) and entry:
            groups.append((entry,))
        else:
            group = _names(entry, f"{where}.prioritized[{i}]")
            if not group:
                raise RuleError(f"{where}.prioritized[{i}]: a load-balanced group is empty")
            groups.append(tuple(group))
    excluded = frozenset(_names(value.get("excluded", []), f"{where}.excluded"))
    others = value.get("others", True)
    if not isinstance(others, bool):
        raise RuleError(f"{where}.others: expected true or false")
    return Rule(tuple(groups), excluded, others)


def parse_rules(data: Any) -> RuleSet:
    """Read a site's ``selectionRules`` (``None`` gives the default rule everywhere)."""
    if data is None:
        return RuleSet()
    if not isinstance(data, dict):
        raise RuleError("selectionRules: expected a mapping")
    unknown = set(data) - {"default", "locations", "cicLocation"}
    if unknown:
        raise RuleError(f"selectionRules: unknown key {sorted(unknown)[0]!r}")
    default = (
        parse_rule(data["default"], "selectionRules.default") if "default" in data else DEFAULT_RULE
    )
    per = data.get("locations", {})
    if not isinstance(per, dict):
        raise RuleError("selectionRules.locations: expected a mapping")
    locations = {str(k): parse_rule(v, f"selectionRules.locations.{k}") for k, v in per.items()}
    cic = data.get("cicLocation")
    if cic is not None and not (isinstance(cic, str) and cic):
        raise RuleError("selectionRules.cicLocation: expected a location name")
    return RuleSet(default, locations, cic)


def unknown_locations(rules: RuleSet, known: Iterable[str]) -> list[str]:
    """Entries of ``rules`` naming a location not in ``known``, each as ``where: name``."""
    names = set(known)
    bad: list[str] = []

    def check(rule: Rule, where: str) -> None:
        for group in rule.prioritized:
            bad.extend(f"{where}: {n!r}" for n in group if n not in names and n not in VARIABLES)
        bad.extend(f"{where}: {n!r}" for n in sorted(rule.excluded) if n not in names)

    check(rules.default, "selectionRules.default")
    for loc, rule in rules.locations.items():
        if loc not in names:
            bad.append(f"selectionRules.locations: {loc!r}")
        check(rule, f"selectionRules.locations.{loc}")
    if rules.cic_location is not None and rules.cic_location not in names:
        bad.append(f"selectionRules.cicLocation: {rules.cic_location!r}")
    return bad


def resolve(rule: Rule, location: str | None, cic_location: str | None) -> Resolved:
    """Resolve ``<This Location>`` and ``<CIC Server Location>``; drop the audio path.

    A variable that resolves to nothing is dropped, a location already in an
    earlier group is dropped from later ones, and empty groups vanish.
    """
    seen: set[str] = set()
    groups: list[tuple[str, ...]] = []
    for group in rule.prioritized:
        out: list[str] = []
        for name in group:
            if name == THIS_LOCATION:
                name_or = location
            elif name in (CIC_SERVER_LOCATION, IC_SERVER_LOCATION):
                name_or = cic_location
            elif name == AUDIO_PATH:
                name_or = None
            else:
                name_or = name
            if name_or is not None and name_or not in seen:
                seen.add(name_or)
                out.append(name_or)
        if out:
            groups.append(tuple(out))
    return Resolved(tuple(groups), rule.excluded, rule.others)


def rule_for_user(rules: RuleSet, location: str | None) -> Resolved:
    """The resolved rule for a user whose effective location is ``location``."""
    return resolve(rules.rule_for(location), location, rules.cic_location)


def _on_backup(entry: Mapping[str, Any]) -> bool:
    cic = entry.get("cic")
    return isinstance(cic, Mapping) and cic.get("role") == "backup"


def order_roster(
    roster: Sequence[Mapping[str, Any]],
    rule: Resolved,
    host_addresses: Sequence[str] = (),
    rng: random.Random | None = None,
) -> list[list[dict[str, Any]]]:
    """The roster ordered in groups for one user (PROTOCOL §4.4).

    Excluded locations are dropped; each prioritized group follows in order (on-
    and off-server together); then, if other locations are allowed, the other
    off-server bridges, then the other on-server ones; last, always, one entry
    ``{"address": a}`` per raw address of the host the user typed. Each group is
    shuffled with ``rng``, then a bridge on the backup CIC server of a pair (its
    entry's ``cic.role``) moves behind the rest of its group: the note puts the
    primary server's bridge first. Empty groups are left out.
    """
    rng = rng or random.Random()
    entries = [dict(e) for e in roster if str(e.get("location") or "") not in rule.excluded]
    taken: set[int] = set()
    groups: list[list[dict[str, Any]]] = []

    def take(pred: Any) -> None:
        picked = [i for i, e in enumerate(entries) if i not in taken and pred(e)]
        taken.update(picked)
        group = [entries[i] for i in picked]
        if group:
            rng.shuffle(group)
            group.sort(key=_on_backup)  # stable: the shuffle stands otherwise
            groups.append(group)

    for locs in rule.groups:
        take(lambda e, locs=locs: str(e.get("location") or "") in locs)
    if rule.others:
        take(lambda e: e.get("kind") == "off-server")
        take(lambda e: True)
    addresses = [{"address": a} for a in dict.fromkeys(host_addresses)]
    if addresses:
        rng.shuffle(addresses)
        groups.append(addresses)
    return groups
