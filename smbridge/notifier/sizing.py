"""Generated sites shaped like the Session Manager sizing scenarios, for benchmarks.

The note's scenarios: call-center agents in workgroups of about 100 (one workgroup
each), supervisors at 10 agents to 1 who view every workgroup, and business users
who load the Company Directory plus one smaller directory. :func:`sizing_site_dict`
builds such a site as site-file data (``yaml.safe_dump`` it for ``twistd notifier
--site``); :func:`sizing_site` loads it.

Users: ``agent1..N`` (workgroups ``WG1..``, ``view:`` their own), ``supervisor1..M``
(role supervisor, ``view:`` every workgroup, member of none), ``user1..K`` (role
business, in directories ``Department1..``, about 100 each). Each workgroup has a
queue and a directory of its own name; the Company Directory lists everyone.

**Every user's password is the same (``demo`` by default) and every user carries
the same hash string, computed once.** That keeps a 5,000-user site quick to build
and lets the Notifier's verification cache pay PBKDF2 once for all logons; it is
for generated benchmark sites only, never a real site.

The traffic defaults scale the note's scenario (20 calls/s for 2,500 agents) with
calls handled in about 100 s, so most agents are on a call or in follow-up and
about one call waits per agent on a call; business calls keep about 15 % of the
business users on a call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from smbridge.notifier.passwords import hash_password
from smbridge.notifier.site import COMPANY_DIRECTORY, DEFAULT_PORTS, Site

SIZING_PASSWORD = "demo"
SIZING_ITERATIONS = 10_000
AGENTS_PER_WORKGROUP = 100
USERS_PER_DEPARTMENT = 100
HANDLE_SECONDS = 100.0
FOLLOW_UP_SECONDS = 12.0
CALLS_PER_AGENT_SECOND = 20 / 2500  # the note's 20 CPS for 2,500 agents
BUSINESS_ON_CALL = 0.15
RING_SECONDS = 2.5  # mean time a business call alerts before it is answered


def sizing_site_dict(
    agents: int,
    supervisors: int | None = None,
    business: int = 0,
    workgroups: int | None = None,
    seed: int = 0,
    *,
    password: str = SIZING_PASSWORD,
    cic_name: str = "cic1",
    location: str = "Indianapolis",
    bridge_fqdn: str = "localhost",
    ports: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A sizing site as site-file data (what ``load_site``/``Site.from_dict`` accept).

    ``supervisors`` defaults to ``agents // 10``; ``workgroups`` to one per 100 agents
    (at least one when there are agents); ``seed`` becomes ``traffic.seed``.
    """
    if agents < 0 or business < 0 or (supervisors is not None and supervisors < 0):
        raise ValueError("agents, supervisors and business must be >= 0")
    n_sup = agents // 10 if supervisors is None else supervisors
    if workgroups is None:
        workgroups = math.ceil(agents / AGENTS_PER_WORKGROUP)
    n_wg = workgroups
    if agents and n_wg < 1:
        raise ValueError("agents need at least one workgroup")
    wg_names = [f"WG{k}" for k in range(1, n_wg + 1)]
    pw = hash_password(password, iterations=SIZING_ITERATIONS)  # once, shared by all users

    users: list[dict[str, Any]] = []
    members: dict[str, list[str]] = {wg: [] for wg in wg_names}
    extension = 10000
    for i in range(1, agents + 1):
        wg = wg_names[(i - 1) * n_wg // agents]
        uid = f"agent{i}"
        members[wg].append(uid)
        extension += 1
        users.append(
            {
                "id": uid,
                "displayName": f"Agent {i}",
                "extension": str(extension),
                "passwordHash": pw,
                "workgroups": [wg],
                "rights": [f"view:{wg}"],
                "role": "agent",
            }
        )
    all_views = [f"view:{wg}" for wg in wg_names]
    for i in range(1, n_sup + 1):
        extension += 1
        users.append(
            {
                "id": f"supervisor{i}",
                "displayName": f"Supervisor {i}",
                "extension": str(extension),
                "passwordHash": pw,
                "rights": all_views,
                "role": "supervisor",
            }
        )
    n_dep = math.ceil(business / USERS_PER_DEPARTMENT)
    departments: dict[str, list[str]] = {f"Department{k}": [] for k in range(1, n_dep + 1)}
    dep_names = list(departments)
    for i in range(1, business + 1):
        uid = f"user{i}"
        departments[dep_names[(i - 1) * n_dep // business]].append(uid)
        extension += 1
        users.append(
            {
                "id": uid,
                "displayName": f"User {i}",
                "extension": str(extension),
                "passwordHash": pw,
                "role": "business",
            }
        )

    business_call_seconds = RING_SECONDS + HANDLE_SECONDS
    directories: dict[str, list[Any]] = {COMPANY_DIRECTORY: [u["id"] for u in users]}
    directories.update(members)
    directories.update(departments)
    return {
        "name": f"sizing-{agents}a-{n_sup}s-{business}b",
        "cic": {"name": cic_name, "role": "primary"},
        "locations": [location],
        "users": users,
        "workgroups": [{"name": wg} for wg in wg_names],
        "directories": directories,
        "parameters": {
            "DirectoriestoCacheOnSMStartup": COMPANY_DIRECTORY,
            "TransferDialogDirectories": COMPANY_DIRECTORY,
            "RestrictUserVisibility": "No",
        },
        "licenses": {"Interaction Desktop": len(users), "Interaction Supervisor": n_sup},
        "bridges": [
            {
                "name": "bridge1",
                "fqdn": bridge_fqdn,
                "kind": "on-server",
                "location": location,
                "ports": dict(ports or DEFAULT_PORTS),
            }
        ],
        "traffic": {
            "callsPerSecond": round(agents * CALLS_PER_AGENT_SECOND, 3),
            "businessCallsPerSecond": round(business * BUSINESS_ON_CALL / business_call_seconds, 3),
            "handleSeconds": HANDLE_SECONDS,
            "followUpSeconds": FOLLOW_UP_SECONDS,
            "maxQueueLength": max(50, 2 * math.ceil(agents / n_wg)) if n_wg else 50,
            "seed": seed,
        },
    }


def sizing_site(
    agents: int,
    supervisors: int | None = None,
    business: int = 0,
    workgroups: int | None = None,
    seed: int = 0,
    **options: Any,
) -> Site:
    """The :func:`sizing_site_dict` site, loaded and validated."""
    data = sizing_site_dict(agents, supervisors, business, workgroups, seed, **options)
    return Site.from_dict(data)
