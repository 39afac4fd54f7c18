"""The client's attempt order (PROTOCOL §4.4), pure: what to dial, in which order.

A target is ``{"host", "port", "name"}``: a roster entry becomes its FQDN and TLS
port (and its ``uri``, when the bridge gave one to a WebSocket client), a raw address
of the typed host becomes that address and the typed port.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from smbridge.roster.selection import RuleError, order_roster, parse_rules, rule_for_user

DEFAULT_TLS_PORT = 3952
RECONNECT_TOP_TRIES = 3  # automatic reconnect: the top group this many times first


def _target(entry: Mapping[str, Any], typed_port: int) -> dict[str, Any] | None:
    if "address" in entry:
        return {"host": str(entry["address"]), "port": typed_port, "name": None}
    host = entry.get("fqdn") or entry.get("name")
    ports = entry.get("ports") if isinstance(entry.get("ports"), dict) else {}
    port = (ports or {}).get("tls") or DEFAULT_TLS_PORT
    if not isinstance(host, str) or not host or not isinstance(port, int):
        return None
    target = {"host": host, "port": port, "name": entry.get("name")}
    if isinstance(entry.get("uri"), str):  # a WebSocket client dials this (roster/reach.py)
        target["uri"] = entry["uri"]
    return target


def attempt_groups(
    cached: Mapping[str, Any] | None,
    typed_host: str,
    typed_port: int,
    host_addresses: Sequence[str],
    rng: random.Random | None = None,
) -> list[list[dict[str, Any]]]:
    """Groups of targets from a cached roster (``{roster, selectionRule, location}``).

    Without a cache (or with an unreadable rule, which falls back to the default
    rule) the typed host's raw addresses are the only group. Each (host, port)
    appears once, in its first group.
    """
    roster: list[Any] = []
    rules = parse_rules(None)
    location = None
    if cached:
        roster = [e for e in cached.get("roster") or [] if isinstance(e, dict)]
        try:
            rules = parse_rules(cached.get("selectionRule"))
        except RuleError:
            pass
        location = cached.get("location")
    groups = order_roster(
        roster, rule_for_user(rules, location), host_addresses or [typed_host], rng
    )
    seen: set[tuple[str, int]] = set()
    out: list[list[dict[str, Any]]] = []
    for group in groups:
        targets = []
        for entry in group:
            t = _target(entry, typed_port)
            if t is not None and (t["host"], t["port"]) not in seen:
                seen.add((t["host"], t["port"]))
                targets.append(t)
        if targets:
            out.append(targets)
    return out


def logon_order(
    groups: Sequence[Sequence[dict[str, Any]]], typed_host: str, typed_port: int
) -> list[dict[str, Any]]:
    """A first logon: the typed host, then every group in order, each target once."""
    first = {"host": typed_host, "port": typed_port, "name": None}
    out = [first]
    seen = {(typed_host, typed_port)}
    for group in groups:
        for t in group:
            if (t["host"], t["port"]) not in seen:
                seen.add((t["host"], t["port"]))
                out.append(t)
    return out


def reconnect_order(
    groups: Sequence[Sequence[dict[str, Any]]], tries: int = RECONNECT_TOP_TRIES
) -> list[dict[str, Any]]:
    """An automatic reconnect: the top group ``tries`` times, then the full list once."""
    top = list(groups[0]) if groups else []
    return top * tries + [t for g in groups for t in g]
