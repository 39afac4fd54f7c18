"""Generated sizing sites: the note's user mix, one shared hash, quick to build, YAML-loadable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from twisted.internet.task import Clock

from smbridge.notifier.model import Notifier
from smbridge.notifier.passwords import verify_password
from smbridge.notifier.site import COMPANY_DIRECTORY, Site, load_site
from smbridge.notifier.sizing import sizing_site, sizing_site_dict


def test_user_mix_workgroups_and_directories() -> None:
    """Agents fill workgroups of 100; supervisors default to one per ten agents and view all."""
    site = sizing_site(250, business=150)
    assert sum(u.role == "agent" for u in site.users.values()) == 250
    assert [u for u in site.users if u.startswith("supervisor")] == [
        f"supervisor{i}" for i in range(1, 26)
    ]
    assert sum(u.role == "business" for u in site.users.values()) == 150
    assert list(site.workgroups) == ["WG1", "WG2", "WG3"]
    assert [len(w.members) for w in site.workgroups.values()] == [84, 83, 83]
    assert site.users["agent1"].workgroups == ("WG1",)
    assert site.users["agent1"].rights == ("view:WG1",)
    assert site.users["supervisor3"].rights == ("view:WG1", "view:WG2", "view:WG3")
    assert site.users["supervisor3"].workgroups == ()
    assert site.users["user7"].workgroups == ()
    assert site.queues == ("WG1", "WG2", "WG3")
    assert set(site.directories) == {
        COMPANY_DIRECTORY,
        "WG1",
        "WG2",
        "WG3",
        "Department1",
        "Department2",
    }
    assert len(site.directories[COMPANY_DIRECTORY]) == 425
    assert [len(site.directories[f"Department{k}"]) for k in (1, 2)] == [75, 75]
    assert site.parameters["RestrictUserVisibility"] == "No"
    assert site.traffic.calls_per_second == 2.0
    assert site.traffic.seed == 0


def test_explicit_counts_and_seed() -> None:
    """Supervisors, workgroups and the traffic seed can be given."""
    site = sizing_site(10, supervisors=3, workgroups=5, seed=42)
    assert [len(w.members) for w in site.workgroups.values()] == [2, 2, 2, 2, 2]
    assert sum(u.role == "supervisor" for u in site.users.values()) == 3
    assert site.traffic.seed == 42
    with pytest.raises(ValueError):
        sizing_site(-1)
    with pytest.raises(ValueError):
        sizing_site(10, workgroups=0)


def test_one_hash_for_everyone_and_the_password_works() -> None:
    """Every user carries the same hash string, and 'demo' logs any of them on."""
    site = sizing_site(20, business=5)
    hashes = {u.password_hash for u in site.users.values()}
    assert len(hashes) == 1
    assert verify_password("demo", hashes.pop())
    n = Notifier(site, Clock())
    assert n.authenticate("user5", "demo")["user"]["id"] == "user5"
    assert n.authenticate("supervisor2", "demo")["user"]["rights"] == ["view:WG1"]


def test_five_thousand_users_build_in_under_a_second() -> None:
    """A 5,500-user site (5,000 agents, 500 supervisors) builds and loads in under 1 s."""
    started = time.perf_counter()
    site = sizing_site(5000)
    Notifier(site, Clock())
    assert time.perf_counter() - started < 1.0
    assert len(site.users) == 5500
    assert len(site.workgroups) == 50


def test_the_dict_round_trips_through_a_yaml_site_file(tmp_path: Path) -> None:
    """sizing_site_dict dumped as YAML loads with load_site into the same site."""
    data = sizing_site_dict(30, business=10, seed=3)
    path = tmp_path / "sizing.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    site = load_site(path)
    assert site == Site.from_dict(data)
    assert site.traffic.seed == 3
