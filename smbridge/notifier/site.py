"""The site model of the reference Notifier, loaded from a YAML file.

A site is everything the CIC server would know that bridges and clients see:
users, stations, locations, workgroups and their queues, directories, server
parameters, the bridges roster and the traffic the generator simulates. The
format is documented in docs/site-file.md.

Loading is strict: a wrong type, an unknown key or a dangling reference raises
:class:`SiteError` naming the field (``users[3].location``), because a typo in
a site file should stop the Notifier at start, not surface as a puzzling logon
failure later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

COMPANY_DIRECTORY = "Company Directory"
BRIDGE_KINDS = ("on-server", "off-server")
CIC_ROLES = ("primary", "backup")
DEFAULT_PORTS = {"tls": 3952, "ws": 8951, "wss": 8952}
AVAILABLE, ON_PHONE, FOLLOW_UP = "Available", "On Phone", "Follow Up"
DEFAULT_STATUSES = (
    AVAILABLE,
    "Away",
    "At Lunch",
    "Do Not Disturb",
    FOLLOW_UP,
    ON_PHONE,
    "Gone Home",
)
REQUIRED_STATUSES = (AVAILABLE, FOLLOW_UP, ON_PHONE)  # the call model moves agents through them
ROLES = ("agent", "supervisor", "business")


class SiteError(ValueError):
    """A site file or dict that is not a valid site; the message names the field."""


@dataclass(frozen=True)
class User:
    id: str
    display_name: str
    extension: str
    password_hash: str
    location: str | None = None
    workgroups: tuple[str, ...] = ()
    rights: tuple[str, ...] = ()
    status: str = AVAILABLE
    role: str = ""  # agent | supervisor | business; the loader fills in the default


@dataclass(frozen=True)
class Station:
    id: str
    location: str | None = None
    extension: str | None = None


@dataclass(frozen=True)
class Workgroup:
    name: str
    queue: str
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class DirectoryEntry:
    id: str
    display_name: str
    extension: str
    location: str | None = None
    workgroups: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "extension": self.extension,
            "location": self.location,
            "workgroups": list(self.workgroups),
        }


@dataclass(frozen=True)
class Bridge:
    name: str
    fqdn: str
    kind: str
    location: str | None
    ports: Mapping[str, int]

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fqdn": self.fqdn,
            "kind": self.kind,
            "location": self.location,
            "ports": dict(self.ports),
        }


@dataclass(frozen=True)
class Cic:
    name: str
    role: str = "primary"


@dataclass(frozen=True)
class TrafficConfig:
    """The call generator's settings (docs/site-file.md, traffic)."""

    calls_per_second: float = 0.0
    handle_seconds: float = 8.0
    max_queue_length: int = 50
    business_calls_per_second: float = 0.0
    follow_up_seconds: float = 2.0
    seed: int = 0


@dataclass(frozen=True)
class Site:
    name: str
    cic: Cic
    locations: tuple[str, ...]
    default_location: str
    users: Mapping[str, User]
    stations: Mapping[str, Station] = field(default_factory=dict)
    workgroups: Mapping[str, Workgroup] = field(default_factory=dict)
    directories: Mapping[str, tuple[DirectoryEntry, ...]] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    bridges: tuple[Bridge, ...] = ()
    selection_rules: Any = None
    traffic: TrafficConfig = TrafficConfig()
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    licenses: Mapping[str, int] = field(default_factory=dict)

    @property
    def queues(self) -> tuple[str, ...]:
        """Distinct queue names, in workgroup order."""
        return tuple(dict.fromkeys(w.queue for w in self.workgroups.values()))

    @classmethod
    def from_dict(cls, data: Any) -> Site:
        """Build and validate a site from plain data (the parsed YAML)."""
        from smbridge.notifier.site_parse import parse_site

        return parse_site(data)


def load_site(path: str | Path) -> Site:
    """Read and validate a site file; any problem raises :class:`SiteError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SiteError(f"{path}: cannot read the site file: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SiteError(f"{path}: not valid YAML: {e}") from e
    try:
        return Site.from_dict(data)
    except SiteError as e:
        raise SiteError(f"{path}: {e}") from e
