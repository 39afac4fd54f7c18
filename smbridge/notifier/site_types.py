"""The parts a site is made of: users, stations, workgroups, bridges and the constants.

Kept apart from :class:`smbridge.notifier.site.Site` so that the parser
(:mod:`smbridge.notifier.site_parse`) can build them without importing the
module that calls it; :mod:`smbridge.notifier.site` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smbridge.tenancy import TenantLimits

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
    # Certificate logon (site_certs.py): the certificate that logs this user on, and
    # whether a password alone is refused (reason certificate-required).
    certificate: Any = None  # site_certs.CertificateMatch | None
    require_certificate: bool = False


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
class Tenant:
    """A group of users with limits of its own (docs/site-file.md, tenants)."""

    name: str
    users: tuple[str, ...] = ()
    limits: TenantLimits = TenantLimits()
