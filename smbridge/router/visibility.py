"""Restricted directory visibility (the note's "Restrict users' visibility").

With the server parameter ``RestrictUserVisibility`` set to ``Yes``, a user sees a
directory entry only when one of the entry's ``workgroups`` is a workgroup the user
has view or modify rights for (``view:<workgroup>``, ``modify:<workgroup>``;
``view:*`` sees everything). Pure functions over plain data: the router decides
who sees what, the fan-out groups watchers by their scope so that each directory
event is encoded once per group rather than once per session.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RESTRICT_PARAMETER = "RestrictUserVisibility"
_RIGHT_PREFIXES = ("view:", "modify:")

Scope = frozenset[str] | None  # the workgroups a user may see; None: everything


def restricted(parameters: dict[str, Any]) -> bool:
    """Whether the parameter turns restriction on (Yes/True/1/On, any case)."""
    value = str(parameters.get(RESTRICT_PARAMETER, "")).strip().lower()
    return value in ("yes", "true", "1", "on")


def scope_of(rights: Iterable[str], is_restricted: bool) -> Scope:
    """The workgroups a user with ``rights`` may see (``None``: no restriction applies)."""
    if not is_restricted:
        return None
    workgroups = set()
    for right in rights:
        for prefix in _RIGHT_PREFIXES:
            if right.startswith(prefix):
                name = right[len(prefix) :]
                if name == "*":
                    return None
                workgroups.add(name)
    return frozenset(workgroups)


def visible(scope: Scope, entry: dict[str, Any]) -> bool:
    if scope is None:
        return True
    return any(wg in scope for wg in entry.get("workgroups", ()))


def visible_entries(scope: Scope, entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    if scope is None:
        return list(entries)
    return [e for e in entries if visible(scope, e)]


def filter_change(
    scope: Scope, change: dict[str, Any], before: dict[Any, dict[str, Any]]
) -> dict[str, Any] | None:
    """The part of a directory change a scope may see, or ``None`` when nothing is left.

    ``before`` is the directory's entries before the change. An entry that becomes
    visible is ``added``; one that stops being visible, or a visible one removed,
    is ``removed``; ids of entries the scope never saw are not sent.
    """
    if scope is None:
        return change
    added = [e for e in change.get("added", ()) if visible(scope, e)]
    changed: list[dict[str, Any]] = []
    removed = [i for i in change.get("removed", ()) if i in before and visible(scope, before[i])]
    for entry in change.get("changed", ()):
        old = before.get(entry.get("id"))
        was = old is not None and visible(scope, old)
        now = visible(scope, entry)
        if was and now:
            changed.append(entry)
        elif now:
            added.append(entry)
        elif was:
            removed.append(entry["id"])
    if not (added or changed or removed):
        return None
    out = {k: v for k, v in change.items() if k not in ("added", "changed", "removed")}
    out.update(added=added, changed=changed, removed=removed)
    return out
