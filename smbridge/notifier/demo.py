"""The demo site: a small contact centre that works out of the box.

``twistd -n smbridge --demo`` and ``twistd -n notifier --demo`` use it, and tests
use it as a realistic fixture. Every user's password is ``demo``; the hashes use
few PBKDF2 iterations so building the site stays well under a second (this is a
demo, not a place for real passwords).

Users ``agent1``..``agent50`` are spread round-robin over the workgroups Sales,
Support and Billing (each with a queue of the same name); ``supervisor1`` is in
all three with view rights (role supervisor). ACD calls arrive at one per second
and are answered by the agents (see :mod:`smbridge.notifier.traffic`); the
license pool is :data:`LICENSES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smbridge.notifier.passwords import hash_password
from smbridge.notifier.site import COMPANY_DIRECTORY, DEFAULT_PORTS, Site

DEMO_PASSWORD = "demo"
DEMO_ITERATIONS = 10_000
WORKGROUPS = ("Sales", "Support", "Billing")
LOCATIONS = ("Indianapolis", "London")
AGENTS = 50
STATIONS_PER_LOCATION = 10
LICENSES = {"Interaction Desktop": AGENTS + 1, "Interaction Supervisor": 2, "Recorder": 5}

_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Niklaus",
)
_LAST = (
    "Hopper",
    "Turing",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Wirth",
    "Ritchie",
    "Hamilton",
    "Lamport",
)


def demo_site(
    cic_name: str = "cic1",
    bridge_fqdn: str = "localhost",
    ports: Mapping[str, int] | None = None,
    bridge_name: str = "bridge1",
) -> Site:
    """Build the demo site (the roster holds one on-server bridge at ``bridge_fqdn``)."""
    return Site.from_dict(demo_site_dict(cic_name, bridge_fqdn, ports, bridge_name))


def demo_site_dict(
    cic_name: str = "cic1",
    bridge_fqdn: str = "localhost",
    ports: Mapping[str, int] | None = None,
    bridge_name: str = "bridge1",
) -> dict[str, Any]:
    """The demo site as site-file data (what ``yaml.safe_load`` of a site file returns)."""
    users: list[dict[str, Any]] = []
    for i in range(1, AGENTS + 1):
        wg = WORKGROUPS[(i - 1) % len(WORKGROUPS)]
        users.append(
            {
                "id": f"agent{i}",
                "displayName": f"{_FIRST[(i - 1) % len(_FIRST)]} {_LAST[(i - 1) % len(_LAST)]}",
                "extension": str(1000 + i),
                "passwordHash": hash_password(DEMO_PASSWORD, iterations=DEMO_ITERATIONS),
                "location": LOCATIONS[0] if i <= AGENTS * 3 // 5 else LOCATIONS[1],
                "workgroups": [wg],
                "rights": [f"view:{wg}"],
            }
        )
    users.append(
        {
            "id": "supervisor1",
            "displayName": "Sam Supervisor",
            "extension": str(1000 + AGENTS + 1),
            "passwordHash": hash_password(DEMO_PASSWORD, iterations=DEMO_ITERATIONS),
            "location": LOCATIONS[0],
            "workgroups": list(WORKGROUPS),
            "rights": [f"view:{wg}" for wg in WORKGROUPS],
            "role": "supervisor",
        }
    )
    stations = [
        {"id": f"{loc[:3].upper()}-{n:02d}", "location": loc, "extension": str(2000 + 1000 * k + n)}
        for k, loc in enumerate(LOCATIONS)
        for n in range(1, STATIONS_PER_LOCATION + 1)
    ]
    directories: dict[str, list[Any]] = {
        wg: [u["id"] for u in users if wg in u["workgroups"]] for wg in WORKGROUPS
    }
    return {
        "name": "demo",
        "cic": {"name": cic_name, "role": "primary"},
        "locations": list(LOCATIONS),
        "defaultLocation": LOCATIONS[0],
        "users": users,
        "stations": stations,
        "workgroups": [{"name": wg} for wg in WORKGROUPS],
        "directories": {COMPANY_DIRECTORY: [u["id"] for u in users], **directories},
        "parameters": {
            "DirectoriestoCacheOnSMStartup": COMPANY_DIRECTORY,
            "TransferDialogDirectories": COMPANY_DIRECTORY,
            "RestrictUserVisibility": "No",
            "SM HTTPS URL Base Map": f"{cic_name}|127.0.0.1&{bridge_name}|IC",  # docs/tunnel.md
        },
        "licenses": dict(LICENSES),
        "bridges": [
            {
                "name": bridge_name,
                "fqdn": bridge_fqdn,
                "kind": "on-server",
                "location": LOCATIONS[0],
                "ports": dict(ports or DEFAULT_PORTS),
            }
        ],
        "traffic": {
            "callsPerSecond": 1.0,
            "handleSeconds": 8.0,
            "followUpSeconds": 2.0,
            "maxQueueLength": 50,
            "seed": 0,
        },
    }
