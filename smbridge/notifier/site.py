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

from smbridge.notifier.site_parse import parse_site
from smbridge.notifier.site_types import (
    AVAILABLE,
    BRIDGE_KINDS,
    CIC_ROLES,
    COMPANY_DIRECTORY,
    DEFAULT_PORTS,
    DEFAULT_STATUSES,
    FOLLOW_UP,
    ON_PHONE,
    REQUIRED_STATUSES,
    ROLES,
    Bridge,
    Cic,
    DirectoryEntry,
    SiteError,
    Station,
    Tenant,
    TrafficConfig,
    User,
    Workgroup,
)

__all__ = [
    "AVAILABLE",
    "FOLLOW_UP",
    "ON_PHONE",
    "BRIDGE_KINDS",
    "Bridge",
    "CIC_ROLES",
    "COMPANY_DIRECTORY",
    "Cic",
    "DEFAULT_PORTS",
    "DEFAULT_STATUSES",
    "DirectoryEntry",
    "REQUIRED_STATUSES",
    "ROLES",
    "Site",
    "SiteError",
    "Station",
    "Tenant",
    "TrafficConfig",
    "User",
    "Workgroup",
    "load_site",
]


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
    tenants: Mapping[str, Tenant] = field(default_factory=dict)  # by name; see tenants.py

    @property
    def queues(self) -> tuple[str, ...]:
        """Distinct queue names, in workgroup order."""
        return tuple(dict.fromkeys(w.queue for w in self.workgroups.values()))

    @classmethod
    def from_dict(cls, data: Any) -> Site:
        """Build and validate a site from plain data (the parsed YAML)."""
        return parse_site(data, cls)


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
