"""The note's N+1 sizing formula, per location and in total (``smbridge sizing``).

Off-server bridges = Ceiling(B_total / B_max + A_total / A_max) + 1, with
B_max = 5000 business users and A_max = 2500 call-center agents per off-server
bridge (the note's Tables 4 and 5). Fractions are exact, so 5000 users need
Ceiling(1) + 1 = 2, never 3 by a rounding error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

B_MAX = 5000
A_MAX = 2500


def off_server_bridges(business: int, agents: int, b_max: int = B_MAX, a_max: int = A_MAX) -> int:
    """Off-server bridges for ``business`` users and ``agents`` agents, with N+1 redundancy."""
    if business < 0 or agents < 0 or b_max < 1 or a_max < 1:
        raise ValueError("user counts must be >= 0 and the maxima >= 1")
    return math.ceil(Fraction(business, b_max) + Fraction(agents, a_max)) + 1


def plan(
    locations: Mapping[str, tuple[int, int]], b_max: int = B_MAX, a_max: int = A_MAX
) -> dict[str, Any]:
    """Bridges per location (each with its own +1), their sum, and the all-in-one figure."""
    per = {
        name: {"business": b, "agents": a, "offServer": off_server_bridges(b, a, b_max, a_max)}
        for name, (b, a) in locations.items()
    }
    b_total = sum(b for b, _ in locations.values())
    a_total = sum(a for _, a in locations.values())
    return {
        "locations": per,
        "sumOfLocations": sum(int(p["offServer"]) for p in per.values()),
        "total": {
            "business": b_total,
            "agents": a_total,
            "offServer": off_server_bridges(b_total, a_total, b_max, a_max),
        },
    }


def parse_location(value: str) -> tuple[str, tuple[int, int]]:
    """``NAME=BUSINESS,AGENTS`` -> ``(NAME, (BUSINESS, AGENTS))``."""
    name, sep, counts = value.partition("=")
    parts = counts.split(",")
    if not sep or not name or len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"--location expects NAME=BUSINESS,AGENTS (e.g. Primary=2000,1000), not {value!r}"
        )
    return name, (int(parts[0]), int(parts[1]))


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "sizing", help="off-server bridges needed (N+1), per location and in total"
    )
    p.add_argument(
        "--location",
        action="append",
        type=parse_location,
        required=True,
        metavar="NAME=BUSINESS,AGENTS",
        help="simultaneous business users and call-center agents of one location (repeatable)",
    )
    p.add_argument("--business-max", type=int, default=B_MAX, help="business users per bridge")
    p.add_argument("--agents-max", type=int, default=A_MAX, help="agents per bridge")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    if args.business_max < 1 or args.agents_max < 1:
        raise argparse.ArgumentTypeError("--business-max and --agents-max must be at least 1")
    result = plan(dict(args.location), args.business_max, args.agents_max)
    width = max(len(n) for n in [*result["locations"], "all locations as one"])
    print(f"{'location':<{width}}  business  agents  off-server bridges")
    for name, p in result["locations"].items():
        print(f"{name:<{width}}  {p['business']:>8}  {p['agents']:>6}  {p['offServer']:>18}")
    t = result["total"]
    print(f"{'sum per location':<{width}}  {'':>8}  {'':>6}  {result['sumOfLocations']:>18}")
    label = "all locations as one"
    print(f"{label:<{width}}  {t['business']:>8}  {t['agents']:>6}  {t['offServer']:>18}")
