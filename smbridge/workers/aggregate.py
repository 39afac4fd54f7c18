"""The workers' admin answers merged into one bridge's (pure: no I/O, tested without HTTP).

The supervisor asks every worker (``/api/status``, ``/api/sessions``, ``/metrics``,
``/api/bandwidth``) and answers as one bridge:

- status: the first live worker's answer, with the counts summed over all
  (sessions, by transport, topics, connections, memory returned, a drain's pending
  Migrates) and ``workers``: how many, each one's pid, whether it is alive, its
  sessions and restarts;
- sessions: every worker's rows, each with its ``worker``;
- metrics: samples of the same name and labels summed (counters, gauges of use,
  histogram buckets, sums and counts), except the few that are one value per
  process: :data:`MIN_METRICS` (a start time) take the smallest, :data:`MAX_METRICS`
  (flags, modes, states, identity, limits) the largest; plus ``smbridge_workers``,
  ``smbridge_workers_alive`` and per-worker ``smbridge_worker_up`` and
  ``smbridge_worker_restarts_total``;
- bandwidth: the per-second samples added, newest with newest.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_METRICS = frozenset({"process_start_time_seconds"})
MAX_METRICS = frozenset(
    {
        "smbridge_info",
        "smbridge_accepting",
        "smbridge_accept_mode",
        "smbridge_upstream_up",
        "smbridge_upstream_state",
        "smbridge_upstream_loaded",
        "smbridge_upstream_round_trip_seconds",
        "smbridge_limiter_enabled",
        "smbridge_limiting",
        "smbridge_safeguard_active",
        "process_max_fds",
    }
)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+\S+)?$")


@dataclass(frozen=True)
class WorkerAnswer:
    """One worker as the supervisor sees it, with its answer (None: it did not answer)."""

    index: int
    pid: int | None
    alive: bool
    restarts: int = 0
    body: Any = None


def _add(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Add ``more``'s numbers into ``into`` (nested dicts of counts; other values kept)."""
    for key, value in more.items():
        have = into.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and isinstance(have, (int, float)):
            into[key] = have + value
        elif isinstance(value, dict) and isinstance(have, dict):
            _add(have, value)
        elif key not in into:
            into[key] = copy.deepcopy(value)


def merge_status(answers: Sequence[WorkerAnswer], configured: int) -> dict[str, Any]:
    """One bridge's ``/api/status`` from its workers'."""
    bodies = [a.body for a in answers if isinstance(a.body, dict)]
    merged: dict[str, Any] = copy.deepcopy(bodies[0]) if bodies else {}
    if bodies:
        for key in ("sessions", "memory"):
            merged[key] = copy.deepcopy(bodies[0].get(key) or {})
            for body in bodies[1:]:
                _add(merged[key], body.get(key) or {})
        merged["topics"] = sum(int(b.get("topics") or 0) for b in bodies)
        merged["accepting"] = any(b.get("accepting") for b in bodies)
        drains = [b["drain"] for b in bodies if isinstance(b.get("drain"), dict)]
        if drains:
            merged["drain"] = {
                "active": any(d.get("active") for d in drains),
                "pending": sum(int(d.get("pending") or 0) for d in drains),
            }
        merged["notifier"] = dict(merged.get("notifier") or {})
        merged["notifier"]["linksUp"] = sum(
            1 for b in bodies if (b.get("notifier") or {}).get("state") == "up"
        )
    merged["workers"] = {
        "count": configured,
        "alive": sum(1 for a in answers if a.alive),
        "list": [
            {
                "index": a.index,
                "pid": a.pid,
                "alive": a.alive,
                "answered": isinstance(a.body, dict),
                "restarts": a.restarts,
                "sessions": (a.body.get("sessions") or {}).get("total")
                if isinstance(a.body, dict)
                else None,
                "notifier": (a.body.get("notifier") or {}).get("state")
                if isinstance(a.body, dict)
                else None,
            }
            for a in answers
        ],
    }
    return merged


def merge_sessions(answers: Sequence[WorkerAnswer]) -> dict[str, Any]:
    """One ``/api/sessions`` list: every worker's rows, each naming its ``worker``."""
    rows: list[dict[str, Any]] = []
    for a in answers:
        if isinstance(a.body, dict):
            rows.extend({**row, "worker": a.index} for row in a.body.get("sessions") or [])
    return {"count": len(rows), "sessions": rows}


def merge_bandwidth(answers: Sequence[WorkerAnswer]) -> dict[str, Any]:
    """One ``/api/bandwidth``: samples added position by position from the newest."""
    bodies = [a.body for a in answers if isinstance(a.body, dict)]
    if not bodies:
        return {"stepSeconds": 1.0, "priorities": [], "samples": []}
    merged = copy.deepcopy(bodies[0])
    longest = max(bodies, key=lambda b: len(b.get("samples") or []))
    samples = [dict(s) for s in longest.get("samples") or []]
    for body in bodies:
        if body is longest:
            continue
        theirs = body.get("samples") or []
        for back in range(1, min(len(theirs), len(samples)) + 1):
            mine, other = samples[-back], theirs[-back]
            for key in ("high", "medium", "low"):
                mine[key] = int(mine.get(key) or 0) + int(other.get(key) or 0)
    merged["samples"] = samples
    total = [b.get("totalBytesPerInterval") for b in bodies]
    if all(isinstance(t, (int, float)) for t in total):
        merged["totalBytesPerInterval"] = sum(total)  # each worker limits its own share
    return merged


@dataclass
class _Family:
    name: str
    help: str | None = None
    type: str | None = None
    samples: dict[tuple[str, str], float] = field(default_factory=dict)


def _combine(family: str, sample: str, old: float, new: float) -> float:
    if family in MIN_METRICS or sample.endswith("_created"):
        return min(old, new)
    if family in MAX_METRICS or family.endswith("_info"):
        return max(old, new)
    return old + new


def parse_exposition(text: str) -> list[_Family]:
    """Prometheus text format to families (HELP, TYPE and their samples, in order)."""
    families: dict[str, _Family] = {}
    current: _Family | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                current = families.setdefault(parts[2], _Family(parts[2]))
                rest = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    current.help = rest
                else:
                    current.type = rest
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        try:
            number = float(value)
        except ValueError:
            continue
        if current is None or not name.startswith(current.name):
            current = families.setdefault(name, _Family(name))
        key = (name, labels)
        old = current.samples.get(key)
        current.samples[key] = number if old is None else _combine(current.name, name, old, number)
    return list(families.values())


def _go_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def merge_metrics(texts: Iterable[str], answers: Sequence[WorkerAnswer], configured: int) -> str:
    """One ``/metrics`` exposition from the workers' (see the module's rules)."""
    merged: dict[str, _Family] = {}
    for text in texts:
        for family in parse_exposition(text):
            into = merged.setdefault(family.name, _Family(family.name, family.help, family.type))
            for key, value in family.samples.items():
                old = into.samples.get(key)
                into.samples[key] = (
                    value if old is None else _combine(family.name, key[0], old, value)
                )
    out: list[str] = []
    for family in merged.values():
        if family.help is not None:
            out.append(f"# HELP {family.name} {family.help}")
        if family.type is not None:
            out.append(f"# TYPE {family.name} {family.type}")
        for (name, labels), value in family.samples.items():
            out.append(f"{name}{labels} {_go_float(value)}")
    out += [
        "# HELP smbridge_workers Bridge processes this host runs as one bridge (--workers).",
        "# TYPE smbridge_workers gauge",
        f"smbridge_workers {float(configured)!r}",
        "# HELP smbridge_workers_alive Workers running now.",
        "# TYPE smbridge_workers_alive gauge",
        f"smbridge_workers_alive {float(sum(1 for a in answers if a.alive))!r}",
        "# HELP smbridge_worker_up 1 while the worker runs and answered the supervisor.",
        "# TYPE smbridge_worker_up gauge",
        *(
            f'smbridge_worker_up{{worker="{a.index}"}} {float(a.alive and a.body is not None)!r}'
            for a in answers
        ),
        "# HELP smbridge_worker_restarts_total Times the supervisor restarted the worker.",
        "# TYPE smbridge_worker_restarts_total counter",
        *(
            f'smbridge_worker_restarts_total{{worker="{a.index}"}} {float(a.restarts)!r}'
            for a in answers
        ),
    ]
    return "\n".join(out) + "\n"
