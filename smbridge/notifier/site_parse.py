"""Parsing and validating a site file's data into :class:`smbridge.notifier.site.Site`.

Kept apart from the model so that the model reads as a description of a site and
this module as the rules a site file must follow. Every problem raises
:class:`SiteError` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from smbridge.notifier.passwords import is_password_hash
from smbridge.notifier.site_certs import CERTIFICATE_KEYS, parse_user_certificate
from smbridge.notifier.site_tenants import parse_tenants
from smbridge.notifier.site_types import (
    AVAILABLE,
    BRIDGE_KINDS,
    CIC_ROLES,
    COMPANY_DIRECTORY,
    DEFAULT_PORTS,
    DEFAULT_STATUSES,
    REQUIRED_STATUSES,
    ROLES,
    Bridge,
    Cic,
    DirectoryEntry,
    SiteError,
    Station,
    TrafficConfig,
    User,
    Workgroup,
)
from smbridge.roster.selection import RuleError, parse_rules, unknown_locations

_MISSING: Any = object()
_S = TypeVar("_S")


def _mapping(value: Any, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SiteError(f"{where}: expected a mapping, got {type(value).__name__}")
    missing = sorted(required - value.keys())
    if missing:
        raise SiteError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(str(k) for k in value.keys() - required - optional)
    if unknown:
        raise SiteError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return value


def _str(
    d: dict[str, Any], key: str, where: str, default: Any = _MISSING, numbers: bool = False
) -> Any:
    value = d.get(key, default)
    if value is _MISSING:
        raise SiteError(f"{where}.{key}: missing")
    if key not in d or (value is None and default is None):
        return value
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise SiteError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _str_list(d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = d.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SiteError(f"{where}.{key}: expected a list of non-empty strings")
    return tuple(value)


def _number(d: dict[str, Any], key: str, where: str, default: float, minimum: float) -> float:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise SiteError(f"{where}.{key}: expected a number >= {minimum}, got {value!r}")
    return float(value)


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise SiteError(f"{key}: expected a list, got {type(value).__name__}")
    return value


def _unique(items: list[Any], where: str, key: str = "id") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name = getattr(item, key)
        if name in out:
            raise SiteError(f"{where}: duplicate {key} {name!r}")
        out[name] = item
    return out


def _location(value: str | None, locations: tuple[str, ...], where: str) -> str | None:
    if value is not None and value not in locations:
        raise SiteError(f"{where}.location: unknown location {value!r}")
    return value


def _parameter_value(value: Any, where: str) -> str:
    if isinstance(value, bool):  # YAML 1.1 reads Yes/No as booleans
        return "Yes" if value else "No"
    if isinstance(value, int | float | str):
        return str(value)
    raise SiteError(f"{where}: expected a string or number, got {type(value).__name__}")


TRAFFIC_KEYS = (
    "callsPerSecond",
    "businessCallsPerSecond",
    "handleSeconds",
    "followUpSeconds",
    "maxQueueLength",
    "seed",
)
_SITE_KEYS = {"cic", "locations", "users"}
_SITE_OPTIONAL = {
    "name",
    "defaultLocation",
    "stations",
    "workgroups",
    "directories",
    "parameters",
    "bridges",
    "selectionRules",
    "traffic",
    "statuses",
    "licenses",
    "tenants",
}


def parse_site(data: Any, make_site: Callable[..., _S]) -> _S:
    """Validate site-file data and build the site with ``make_site`` (the ``Site`` class)."""
    data = _mapping(data, "site", _SITE_KEYS, _SITE_OPTIONAL)
    name = _str(data, "name", "site", default="site")
    c = _mapping(data["cic"], "cic", {"name"}, {"role"})
    cic = Cic(_str(c, "name", "cic"), _str(c, "role", "cic", default="primary"))
    if cic.role not in CIC_ROLES:
        raise SiteError(f"cic.role: expected one of {', '.join(CIC_ROLES)}, got {cic.role!r}")

    locations = _str_list(data, "locations", "site")
    if not locations:
        raise SiteError("locations: at least one location is required")
    default_location = _str(data, "defaultLocation", "site", default=locations[0])
    if default_location not in locations:
        raise SiteError(f"defaultLocation: {default_location!r} is not in locations")

    statuses = _str_list(data, "statuses", "site") if "statuses" in data else DEFAULT_STATUSES
    missing_statuses = [st for st in REQUIRED_STATUSES if st not in statuses]
    if missing_statuses:
        raise SiteError(
            f"statuses: must include {', '.join(missing_statuses)} (the call model uses them)"
        )

    wgs: list[Workgroup] = []
    for i, w in enumerate(_list(data, "workgroups")):
        where = f"workgroups[{i}]"
        w = _mapping(w, where, {"name"}, {"queue", "members"})
        wg_name = _str(w, "name", where)
        wgs.append(
            Workgroup(
                wg_name, _str(w, "queue", where, default=wg_name), _str_list(w, "members", where)
            )
        )
    workgroups = _unique(wgs, "workgroups", "name")

    users_list: list[User] = []
    for i, u in enumerate(_list(data, "users")):
        where = f"users[{i}]"
        u = _mapping(
            u,
            where,
            {"id", "displayName", "extension", "passwordHash"},
            {"location", "workgroups", "rights", "status", "role"} | CERTIFICATE_KEYS,
        )
        pw = _str(u, "passwordHash", where)
        if not is_password_hash(pw):
            raise SiteError(
                f"{where}.passwordHash: not a pbkdf2_sha256 hash "
                "(make one with: python -m smbridge.notifier.passwords)"
            )
        user_wgs = _str_list(u, "workgroups", where)
        for wg in user_wgs:
            if wg not in workgroups:
                raise SiteError(f"{where}.workgroups: unknown workgroup {wg!r}")
        status = _str(u, "status", where, default=AVAILABLE)
        if status not in statuses:
            raise SiteError(f"{where}.status: {status!r} is not one of the site's statuses")
        role = _str(u, "role", where, default="")
        if role and role not in ROLES:
            raise SiteError(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}")
        certificate, require_certificate = parse_user_certificate(u, where)
        users_list.append(
            User(
                _str(u, "id", where),
                _str(u, "displayName", where),
                _str(u, "extension", where, numbers=True),
                pw,
                _location(_str(u, "location", where, default=None), locations, where),
                user_wgs,
                _str_list(u, "rights", where),
                status,
                role,
                certificate,
                require_certificate,
            )
        )
    users = _unique(users_list, "users")
    users, workgroups = _merge_membership(users, workgroups)

    st_list: list[Station] = []
    for i, s in enumerate(_list(data, "stations")):
        where = f"stations[{i}]"
        s = _mapping(s, where, {"id"}, {"location", "extension"})
        st_list.append(
            Station(
                _str(s, "id", where),
                _location(_str(s, "location", where, default=None), locations, where),
                _str(s, "extension", where, default=None, numbers=True),
            )
        )
    stations = _unique(st_list, "stations")

    bridges: list[Bridge] = []
    for i, b in enumerate(_list(data, "bridges")):
        where = f"bridges[{i}]"
        b = _mapping(b, where, {"name", "kind"}, {"fqdn", "location", "ports"})
        kind = _str(b, "kind", where)
        if kind not in BRIDGE_KINDS:
            raise SiteError(
                f"{where}.kind: expected one of {', '.join(BRIDGE_KINDS)}, got {kind!r}"
            )
        p = _mapping(b.get("ports", {}), f"{where}.ports", set(), set(DEFAULT_PORTS))
        ports = {
            k: int(_number(p, k, f"{where}.ports", DEFAULT_PORTS[k], 0)) for k in DEFAULT_PORTS
        }
        bridge_name = _str(b, "name", where)
        bridges.append(
            Bridge(
                bridge_name,
                _str(b, "fqdn", where, default=bridge_name),
                kind,
                _location(_str(b, "location", where, default=None), locations, where),
                ports,
            )
        )
    _unique(bridges, "bridges", "name")

    params = data.get("parameters", {})
    if not isinstance(params, dict):
        raise SiteError("parameters: expected a mapping of name to value")
    parameters = {str(k): _parameter_value(v, f"parameters.{k}") for k, v in params.items()}

    t = _mapping(data.get("traffic", {}), "traffic", set(), set(TRAFFIC_KEYS))
    seed = t.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SiteError(f"traffic.seed: expected an integer, got {seed!r}")
    traffic = TrafficConfig(
        _number(t, "callsPerSecond", "traffic", 0.0, 0),
        _number(t, "handleSeconds", "traffic", 8.0, 0),
        int(_number(t, "maxQueueLength", "traffic", 50, 1)),
        _number(t, "businessCallsPerSecond", "traffic", 0.0, 0),
        _number(t, "followUpSeconds", "traffic", 2.0, 0),
        seed,
    )

    lic = data.get("licenses", {})
    if not isinstance(lic, dict):
        raise SiteError("licenses: expected a mapping of license name to count")
    licenses: dict[str, int] = {}
    for k, count in lic.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SiteError(f"licenses.{k}: expected an integer >= 0, got {count!r}")
        licenses[str(k)] = count
    _check_selection_rules(data.get("selectionRules"), locations)
    tenants = parse_tenants(data.get("tenants", []), users)

    return make_site(
        name=name,
        cic=cic,
        locations=locations,
        default_location=default_location,
        users=users,
        stations=stations,
        workgroups=workgroups,
        directories=_parse_directories(data.get("directories", {}), users, locations),
        parameters=parameters,
        bridges=tuple(bridges),
        selection_rules=data.get("selectionRules"),
        traffic=traffic,
        statuses=statuses,
        licenses=licenses,
        tenants=tenants,
    )


def _check_selection_rules(data: Any, locations: Iterable[str]) -> None:
    """Refuse selection rules that cannot be read or name unknown locations (docs/roster.md)."""
    try:
        rules = parse_rules(data)
    except RuleError as e:
        raise SiteError(str(e)) from None
    bad = unknown_locations(rules, locations)
    if bad:
        raise SiteError(f"{bad[0]} is not one of the site's locations")


def _merge_membership(
    users: dict[str, User], workgroups: dict[str, Workgroup]
) -> tuple[dict[str, User], dict[str, Workgroup]]:
    """Make ``user.workgroups`` and ``workgroup.members`` agree (either side may list it)."""
    members: dict[str, dict[str, None]] = {name: {} for name in workgroups}
    for i, wg in enumerate(workgroups.values()):
        for m in wg.members:
            if m not in users:
                raise SiteError(f"workgroups[{i}].members: unknown user {m!r}")
            members[wg.name][m] = None
    for user in users.values():
        for wg_name in user.workgroups:
            members[wg_name][user.id] = None
    new_wgs = {n: Workgroup(w.name, w.queue, tuple(members[n])) for n, w in workgroups.items()}
    user_wgs: dict[str, list[str]] = {uid: [] for uid in users}
    for wg_name, names in members.items():
        for uid in names:
            user_wgs[uid].append(wg_name)
    new_users = {
        uid: replace(
            u,
            workgroups=tuple(user_wgs[uid]),
            role=u.role or ("agent" if user_wgs[uid] else "business"),
        )
        for uid, u in users.items()
    }
    return new_users, new_wgs


def entry_for(user: User) -> DirectoryEntry:
    """The directory entry that describes a user."""
    return DirectoryEntry(
        user.id, user.display_name, user.extension, user.location, user.workgroups
    )


def _parse_directories(
    value: Any, users: dict[str, User], locations: tuple[str, ...]
) -> dict[str, tuple[DirectoryEntry, ...]]:
    if not isinstance(value, dict):
        raise SiteError("directories: expected a mapping of directory name to entries")
    out: dict[str, tuple[DirectoryEntry, ...]] = {}
    for name, entries in value.items():
        where = f"directories[{name!r}]"
        if not isinstance(entries, list):
            raise SiteError(f"{where}: expected a list of entries")
        parsed: list[DirectoryEntry] = []
        for i, e in enumerate(entries):
            ewhere = f"{where}[{i}]"
            if isinstance(e, str):  # a user id: the entry describes that user
                if e not in users:
                    raise SiteError(f"{ewhere}: unknown user {e!r}")
                parsed.append(entry_for(users[e]))
                continue
            e = _mapping(e, ewhere, {"id", "displayName", "extension"}, {"location", "workgroups"})
            parsed.append(
                DirectoryEntry(
                    _str(e, "id", ewhere),
                    _str(e, "displayName", ewhere),
                    _str(e, "extension", ewhere, numbers=True),
                    _location(_str(e, "location", ewhere, default=None), locations, ewhere),
                    _str_list(e, "workgroups", ewhere),
                )
            )
        _unique(parsed, where)
        out[str(name)] = tuple(parsed)
    if COMPANY_DIRECTORY not in out:
        out[COMPANY_DIRECTORY] = tuple(entry_for(u) for u in users.values())
    return out
