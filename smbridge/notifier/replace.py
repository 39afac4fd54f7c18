"""Replacing a running Notifier's site (control API ``PUT /api/site``).

The new site is parsed and checked whole first (``parse_site``: unknown
locations in selection rules, duplicate bridge names... are refused naming the
entry) and nothing changes when it is refused. A valid site then takes effect
without a restart and without dropping a link:

* server parameters: the differences go out as one ParametersChanged, so every
  bridge follows at once (parameters set through ``POST /api/parameters`` since
  start are replaced by the file's, as a restart with the new file would);
* users, stations, locations, workgroups, statuses: logons use the new site from
  the next one on; new users, queues and workgroups get their topics;
* directories: each one's entries are diffed and the difference published as
  DirectoryChanged, so the bridges' directory caches follow;
* the roster and the selection rules: pushed to every bridge (RosterChanged);
* licenses: the new pool; seats held under a license that stays are kept;
* tenants: the new membership and limits apply from the next logon on and are
  pushed to every bridge (TenantsChanged, for the watch limit); a lowered limit
  ends no session, it refuses new ones until use is under it.

The CIC server's name and role and the traffic generator's settings are read
at start only; a change to them is reported under ``needsRestart``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smbridge.codec.catalog import DIRECTORY_CHANGED, LINK_TENANTS_CHANGED
from smbridge.codec.frames import Kind, encode
from smbridge.notifier.auth import Authenticator
from smbridge.notifier.site import Site
from smbridge.topics import (
    ItemSetState,
    TopicState,
    directory_topic,
    queue_topic,
    statistics_topic,
    status_topic,
    user_topic,
)

if TYPE_CHECKING:
    from smbridge.notifier.model import Notifier


def replace_site(notifier: Notifier, new: Site) -> dict[str, Any]:
    """Make ``new`` the running site; answer what changed and what needs a restart."""
    old = notifier.site
    changed: list[str] = []
    notifier.site = new
    notifier.registry.site = new
    notifier.auth = Authenticator(new)
    if _add_topics(notifier, new):
        changed.append("topics")
    if _parameters(notifier, new):
        changed.append("parameters")
    changed += [f"directory:{name}" for name in _directories(notifier, new)]
    _licenses(notifier, new)
    if notifier.tenants.set_site(new):
        changed.append("tenants")
        push_tenants(notifier)
    if old.bridges != new.bridges or old.selection_rules != new.selection_rules:
        changed.append("roster")
    notifier.push_roster(force=True)
    restart = [
        name
        for name, before, after in (
            ("cic", old.cic, new.cic),
            ("traffic", old.traffic, new.traffic),
        )
        if before != after
    ]
    notifier.log.info(
        "Site replaced by {site}: {changed}",
        site=new.name,
        changed=", ".join(changed) or "no runtime change",
        event="notifier.site.replaced",
    )
    return {"site": new.name, "changed": changed, "needsRestart": restart}


def _add_topics(notifier: Notifier, site: Site) -> bool:
    """Topics for the users, queues and workgroups the new site adds."""
    topics = notifier.topics
    before = len(topics)
    started = notifier.clock.seconds()
    workgroups: dict[str, tuple[str, ...]] = {}
    for wg in site.workgroups.values():
        workgroups[wg.queue] = (*workgroups.get(wg.queue, ()), wg.name)
        topics.setdefault(
            statistics_topic(wg.name), TopicState.for_topic(statistics_topic(wg.name))
        )
    notifier.queue_workgroups = workgroups
    for queue in site.queues:
        topics.setdefault(queue_topic(queue), TopicState.for_topic(queue_topic(queue)))
    for uid, user in site.users.items():
        topics.setdefault(user_topic(uid), TopicState.for_topic(user_topic(uid)))
        if status_topic(uid) not in topics:
            status = TopicState.for_topic(status_topic(uid))
            status.apply({"status": user.status, "since": started})
            topics[status_topic(uid)] = status
    return len(topics) != before


def _parameters(notifier: Notifier, new: Site) -> bool:
    current = notifier.parameters
    changes: dict[str, str | None] = {
        name: value for name, value in new.parameters.items() if current.get(name) != value
    }
    changes.update({name: None for name in current if name not in new.parameters})
    if changes:
        notifier.set_parameters(changes)
    return bool(changes)


def _directories(notifier: Notifier, site: Site) -> list[str]:
    """Publish each directory's difference; return the names that changed."""
    names = []
    for name, entries in site.directories.items():
        topic = directory_topic(name)
        state = notifier.topics.get(topic)
        wanted = {e.id: e.to_wire() for e in entries}
        if not isinstance(state, ItemSetState):
            notifier.topics[topic] = TopicState.for_topic(topic, list(wanted.values()))
            names.append(name)
            continue
        added = [item for key, item in wanted.items() if key not in state.items]
        changed = [
            item for key, item in wanted.items() if key in state.items and state.items[key] != item
        ]
        removed = [key for key in state.items if key not in wanted]
        if added or changed or removed:
            payload = {"name": name, "added": added, "changed": changed, "removed": removed}
            notifier.emit(topic, DIRECTORY_CHANGED, payload)
            names.append(name)
    return names


def _licenses(notifier: Notifier, site: Site) -> None:
    licenses = notifier.actions.licenses
    held = licenses.held
    licenses.total = dict(site.licenses)
    licenses.held = {name: held.get(name, set()) for name in site.licenses}


def push_tenants(notifier: Notifier) -> None:
    """Send every registered bridge the tenants' limits (TenantsChanged)."""
    raw = encode(
        Kind.NOTIFICATION,
        *LINK_TENANTS_CHANGED,
        0,
        {"tenants": notifier.tenants.wire_limits()},
    )
    for link in notifier.registry.links():
        link.send_event(0, raw)
