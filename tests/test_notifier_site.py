"""Site files: loading, defaults, cross-references and clear errors for bad input."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from smbridge.notifier.demo import demo_site
from smbridge.notifier.passwords import hash_password, verify_password
from smbridge.notifier.site import COMPANY_DIRECTORY, Site, SiteError, load_site

HASH = hash_password("pw", iterations=1000)
REPO = Path(__file__).resolve().parent.parent

MINIMAL: dict[str, Any] = {
    "name": "test",
    "cic": {"name": "cic1"},
    "locations": ["Indianapolis", "London"],
    "users": [
        {
            "id": "alice",
            "displayName": "Alice",
            "extension": 1001,
            "passwordHash": HASH,
            "location": "London",
            "workgroups": ["Sales"],
            "rights": ["view:Sales"],
        },
        {"id": "bob", "displayName": "Bob", "extension": "1002", "passwordHash": HASH},
    ],
    "workgroups": [{"name": "Sales", "members": ["bob"]}, {"name": "Support", "queue": "Help"}],
    "stations": [{"id": "IND-01", "location": "Indianapolis", "extension": 2001}],
    "bridges": [{"name": "b1", "kind": "off-server", "location": "London", "ports": {"tls": 4000}}],
    "parameters": {
        "DirectoriestoCacheOnSMStartup": "Company Directory",
        "Limiter Enabled": False,
        "Interval": 1000,
    },
    "traffic": {"callsPerSecond": 0.5, "handleSeconds": 4},
}


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def test_minimal_site_defaults() -> None:
    """A minimal site gets its default location, role, queue names and ports filled in."""
    site = Site.from_dict(MINIMAL)
    assert site.default_location == "Indianapolis"
    assert site.cic.role == "primary"
    assert site.workgroups["Support"].queue == "Help"
    assert site.queues == ("Sales", "Help")
    assert dict(site.bridges[0].ports) == {"tls": 4000, "ws": 8951, "wss": 8952}
    assert site.bridges[0].fqdn == "b1"
    assert site.users["bob"].status == "Available"
    assert site.traffic.calls_per_second == 0.5


def test_statuses_roles_licenses_and_traffic_keys() -> None:
    """statuses, user roles, licenses and every traffic key are read, with documented defaults."""
    data = with_change(["licenses"], {"Desktop": 2})
    data["statuses"] = ["Available", "Follow Up", "On Phone", "In a meeting"]
    data["users"][1]["status"] = "In a meeting"
    data["users"][1]["role"] = "supervisor"
    data["traffic"] = {
        "callsPerSecond": 1,
        "businessCallsPerSecond": 0.5,
        "handleSeconds": 30,
        "followUpSeconds": 5,
        "maxQueueLength": 9,
        "seed": 11,
    }
    site = Site.from_dict(data)
    assert site.statuses == ("Available", "Follow Up", "On Phone", "In a meeting")
    assert (site.users["bob"].status, site.users["bob"].role) == ("In a meeting", "supervisor")
    assert site.users["alice"].role == "agent"
    assert dict(site.licenses) == {"Desktop": 2}
    t = site.traffic
    assert (t.calls_per_second, t.business_calls_per_second, t.handle_seconds) == (1.0, 0.5, 30.0)
    assert (t.follow_up_seconds, t.max_queue_length, t.seed) == (5.0, 9, 11)
    default = Site.from_dict(with_change(["workgroups", 0, "members"], []))
    assert default.statuses[:2] == ("Available", "Away") and "Gone Home" in default.statuses
    assert default.users["bob"].role == "business"
    assert dict(default.licenses) == {}
    assert (default.traffic.follow_up_seconds, default.traffic.seed) == (2.0, 0)


def test_membership_is_merged_both_ways() -> None:
    """A workgroup's members and a user's workgroups end up agreeing whichever side listed them."""
    site = Site.from_dict(MINIMAL)
    assert site.workgroups["Sales"].members == ("bob", "alice")
    assert site.users["bob"].workgroups == ("Sales",)
    assert site.users["alice"].workgroups == ("Sales",)


def test_numbers_become_strings_where_text_is_expected() -> None:
    """Extensions written as numbers and parameter booleans/numbers are read as strings."""
    site = Site.from_dict(MINIMAL)
    assert site.users["alice"].extension == "1001"
    assert site.stations["IND-01"].extension == "2001"
    assert site.parameters["Limiter Enabled"] == "No"
    assert site.parameters["Interval"] == "1000"


def test_company_directory_generated_from_users() -> None:
    """Without an explicit Company Directory, one entry per user is generated."""
    site = Site.from_dict(MINIMAL)
    entries = site.directories[COMPANY_DIRECTORY]
    assert [e.id for e in entries] == ["alice", "bob"]
    assert entries[0].to_wire() == {
        "id": "alice",
        "displayName": "Alice",
        "extension": "1001",
        "location": "London",
        "workgroups": ["Sales"],
    }


def test_directory_entries_by_user_id_or_in_full() -> None:
    """A directory entry may name a user by id or be written out in full."""
    data = with_change(
        ["directories"],
        {
            "Mixed": ["bob", {"id": "lobby", "displayName": "Lobby phone", "extension": 9000}],
        },
    )
    site = Site.from_dict(data)
    assert [(e.id, e.extension) for e in site.directories["Mixed"]] == [
        ("bob", "1002"),
        ("lobby", "9000"),
    ]
    assert COMPANY_DIRECTORY in site.directories


def test_load_site_from_yaml_file(tmp_path: Path) -> None:
    """load_site reads YAML with safe_load and returns the same site as from_dict."""
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(MINIMAL), encoding="utf-8")
    assert load_site(path) == Site.from_dict(MINIMAL)


def test_example_site_file_loads() -> None:
    """deploy/site.example.yaml is a valid site whose documented password works."""
    site = load_site(REPO / "deploy" / "site.example.yaml")
    assert verify_password("example", site.users["agent1"].password_hash)
    assert site.parameters["TransferDialogDirectories"] == COMPANY_DIRECTORY


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["users", 0, "color"], "red", "users[0]: unknown key(s) color"),
        (["surprise"], 1, "site: unknown key(s) surprise"),
        (["users", 0, "location"], "Paris", "users[0].location: unknown location 'Paris'"),
        (["users", 0, "passwordHash"], "secret", "users[0].passwordHash: not a pbkdf2_sha256"),
        (["users", 0, "workgroups"], ["Nope"], "users[0].workgroups: unknown workgroup 'Nope'"),
        (["users", 1, "id"], "alice", "users: duplicate id 'alice'"),
        (["users", 1, "displayName"], 3, "users[1].displayName: expected a non-empty string"),
        (["workgroups", 0, "members"], ["carol"], "workgroups[0].members: unknown user 'carol'"),
        (["bridges", 0, "kind"], "cloud", "bridges[0].kind: expected one of on-server, off-server"),
        (["bridges", 0, "ports", "ws"], -1, "bridges[0].ports.ws: expected a number >= 0"),
        (["cic", "role"], "tertiary", "cic.role: expected one of primary, backup"),
        (["locations"], [], "locations: at least one location is required"),
        (["defaultLocation"], "Paris", "defaultLocation: 'Paris' is not in locations"),
        (["traffic", "callsPerSecond"], -1, "traffic.callsPerSecond: expected a number >= 0"),
        (["stations", 0, "location"], "Mars", "stations[0].location: unknown location 'Mars'"),
        (["directories"], {"D": ["zed"]}, "directories['D'][0]: unknown user 'zed'"),
        (["users"], {"alice": 1}, "users: expected a list"),
        (["users", 0, "status"], "Asleep", "users[0].status: 'Asleep' is not one of the site's"),
        (
            ["users", 0, "role"],
            "boss",
            "users[0].role: expected one of agent, supervisor, business",
        ),
        (["statuses"], ["Available", "Away"], "statuses: must include Follow Up, On Phone"),
        (["licenses"], {"Desktop": -1}, "licenses.Desktop: expected an integer >= 0"),
        (["licenses"], {"Desktop": 1.5}, "licenses.Desktop: expected an integer >= 0"),
        (["traffic", "seed"], "x", "traffic.seed: expected an integer"),
        (["traffic", "followUpSeconds"], -2, "traffic.followUpSeconds: expected a number >= 0"),
        (["traffic", "rate"], 1, "traffic: unknown key(s) rate"),
    ],
)
def test_bad_input_names_the_field(path: list[Any], value: Any, message: str) -> None:
    """Each kind of bad input raises SiteError whose message names the offending field."""
    with pytest.raises(SiteError) as caught:
        Site.from_dict(with_change(path, value))
    assert str(caught.value).startswith(message)


def test_missing_required_field() -> None:
    """A missing required key is reported with the section that lacks it."""
    data = copy.deepcopy(MINIMAL)
    del data["users"][1]["passwordHash"]
    with pytest.raises(SiteError, match=r"^users\[1\]: missing passwordHash$"):
        Site.from_dict(data)


def test_not_a_mapping_at_top_level() -> None:
    """A site that is not a mapping at all is refused."""
    with pytest.raises(SiteError, match="^site: expected a mapping, got list$"):
        Site.from_dict([1, 2])


def test_bad_yaml_and_missing_file_name_the_path(tmp_path: Path) -> None:
    """Unreadable files and invalid YAML raise SiteError starting with the file path."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("users: [unclosed", encoding="utf-8")
    with pytest.raises(SiteError, match="not valid YAML") as caught:
        load_site(bad)
    assert str(caught.value).startswith(str(bad))
    with pytest.raises(SiteError, match="cannot read the site file"):
        load_site(tmp_path / "absent.yaml")


def test_error_in_file_is_prefixed_with_path(tmp_path: Path) -> None:
    """Validation errors from a file carry the file name before the field name."""
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(with_change(["cic", "role"], "x")), encoding="utf-8")
    with pytest.raises(SiteError, match=r"site\.yaml: cic\.role"):
        load_site(path)


def test_demo_site_shape() -> None:
    """The demo site has 50 agents and a supervisor, three queues and per-workgroup directories."""
    site = demo_site(
        cic_name="cicX", bridge_fqdn="bridge.example", ports={"tls": 1, "ws": 2, "wss": 3}
    )
    assert len(site.users) == 51
    assert site.users["supervisor1"].workgroups == ("Sales", "Support", "Billing")
    assert site.users["supervisor1"].rights == ("view:Sales", "view:Support", "view:Billing")
    assert site.users["agent1"].extension == "1001"
    assert site.queues == ("Sales", "Support", "Billing")
    assert set(site.directories) == {COMPANY_DIRECTORY, "Sales", "Support", "Billing"}
    assert len(site.directories[COMPANY_DIRECTORY]) == 51
    assert {len(site.workgroups[w].members) for w in ("Sales", "Support", "Billing")} == {18, 17}
    assert site.parameters["DirectoriestoCacheOnSMStartup"] == COMPANY_DIRECTORY
    assert site.parameters["TransferDialogDirectories"] == COMPANY_DIRECTORY
    assert site.parameters["RestrictUserVisibility"] == "No"
    assert site.users["supervisor1"].role == "supervisor"
    assert site.users["agent1"].role == "agent"
    assert site.licenses["Interaction Supervisor"] == 2
    assert site.cic.name == "cicX"
    assert site.bridges[0].fqdn == "bridge.example"
    assert dict(site.bridges[0].ports) == {"tls": 1, "ws": 2, "wss": 3}
    assert len(site.locations) >= 2 and len(site.stations) >= 2
    assert site.traffic.calls_per_second > 0
    assert verify_password("demo", site.users["agent50"].password_hash)
