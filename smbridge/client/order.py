"""When and where the client dials after losing its session, pure (PROTOCOL §4.4-4.6).

Three plans, all plain data so that they are tested without a reactor:

- :func:`resume_delays`: ResumeSession goes to the *same* bridge, a few times with
  a growing pause, all within the bridge's linger time (after it the session is gone);
- :func:`reconnect_plan`: a fresh logon after that: the top group of the user's
  roster ``top_tries`` times, then the full list, each target once per pass, with a
  growing pause before each pass;
- :func:`migrate_plan`: Migrate's roster, best first, each bridge at most once,
  never the bridge that asked the client to leave.

A target is ``{"host", "port", "name"}`` (plus ``uri`` for WebSocket clients) as in
:mod:`smbridge.roster.attempts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smbridge.roster.attempts import DEFAULT_TLS_PORT, RECONNECT_TOP_TRIES

Target = dict[str, Any]


@dataclass(frozen=True)
class Backoff:
    """Pause before pass ``n``: none before the first, then ``initial * factor**(n-1)``, capped."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0

    def delay(self, n: int) -> float:
        if n <= 0:
            return 0.0
        return float(min(self.initial * self.factor ** (n - 1), self.maximum))


DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True)
class Attempt:
    """Dial ``target`` ``delay`` seconds after the previous attempt ended."""

    delay: float
    target: Target
    pass_number: int = 0


def key(target: Mapping[str, Any]) -> tuple[str, int]:
    return (str(target["host"]), int(target["port"]))


def resume_delays(linger: float, tries: int = 4, backoff: Backoff = DEFAULT_BACKOFF) -> list[float]:
    """Pauses before each ResumeSession attempt; their running sum stays under ``linger``.

    The first attempt goes at once; there is always at least one.
    """
    delays: list[float] = []
    spent = 0.0
    for n in range(max(tries, 1)):
        pause = backoff.delay(n)
        if delays and spent + pause >= linger:
            break
        delays.append(pause)
        spent += pause
    return delays


def reconnect_plan(
    groups: Sequence[Sequence[Target]],
    top_tries: int = RECONNECT_TOP_TRIES,
    backoff: Backoff = DEFAULT_BACKOFF,
    first_pass: int = 0,
) -> list[Attempt]:
    """The top group ``top_tries`` times, then every group in order; each target once a pass.

    Only the first attempt of a pass waits (``backoff.delay(first_pass + pass)``);
    ``first_pass`` lets a repeated plan keep growing its pauses. Flattened, the
    targets are exactly :func:`smbridge.roster.attempts.reconnect_order`.
    """
    top = _once(groups[0]) if groups else []
    everything = _once([t for g in groups for t in g])
    passes = [top] * max(top_tries, 0) + [everything]
    plan: list[Attempt] = []
    for n, targets in enumerate(p for p in passes if p):
        for i, target in enumerate(targets):
            delay = backoff.delay(first_pass + n) if i == 0 else 0.0
            plan.append(Attempt(delay, target, first_pass + n))
    return plan


def roster_targets(
    roster: Sequence[Any], default_port: int = DEFAULT_TLS_PORT, leaving: str | None = None
) -> list[Target]:
    """Targets of a roster in its order: available entries first, ``leaving`` never."""
    entries = [e for e in roster if isinstance(e, Mapping) and e.get("name") != leaving]
    ordered = [e for e in entries if e.get("available") is not False]
    ordered += [e for e in entries if e.get("available") is False]
    out: list[Target] = []
    for entry in ordered:
        host = entry.get("fqdn") or entry.get("name")
        ports = entry.get("ports")
        port = ports.get("tls") if isinstance(ports, Mapping) else None
        if isinstance(host, str) and host:
            target = {
                "host": host,
                "port": port if isinstance(port, int) else default_port,
                "name": entry.get("name"),
            }
            if isinstance(entry.get("uri"), str):  # reached through the proxy (client/reach.py)
                target["uri"] = entry["uri"]
            out.append(target)
    return _once(out)


def migrate_plan(
    roster: Sequence[Any], default_port: int = DEFAULT_TLS_PORT, leaving: str | None = None
) -> list[Attempt]:
    """Migrate: each bridge of the roster once, best first, without pauses."""
    return [Attempt(0.0, t) for t in roster_targets(roster, default_port, leaving)]


def _once(targets: Sequence[Target]) -> list[Target]:
    seen: set[tuple[str, int]] = set()
    out: list[Target] = []
    for t in targets:
        if key(t) not in seen:
            seen.add(key(t))
            out.append(t)
    return out
