"""Client requests the bridge forwards to the Notifier (docs/protocol.md).

A forwarded request carries the client's payload plus ``_session: {id, user}``.
:class:`Actions` checks the payload, refuses with a :class:`ProtocolError` whose
code and message say what is wrong, and otherwise performs the request on the
model through :class:`~smbridge.notifier.interactions.Interactions` (which
publishes the events). Licenses come from the site's pool and are held per
session: SessionClosed returns them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import Logger

from smbridge.codec.catalog import (
    ACQUIRE_LICENSE,
    CALLBACK,
    CHANGE_STATION,
    DISCONNECT,
    MAKE_CALL,
    PICKUP,
    RELEASE_LICENSE,
    SEND_CHAT,
    SEND_EMAIL,
    SET_STATUS,
    TRANSFER,
    MessageType,
    name_of,
)
from smbridge.errors import BadRequest, NotFound, ProtocolError
from smbridge.notifier.interactions import Interactions
from smbridge.notifier.site import Site


class ActionsModel(Protocol):
    """What forwarded requests need of the Notifier's model (the ``Notifier``)."""

    @property
    def site(self) -> Site: ...

    @property
    def log(self) -> Logger: ...

    @property
    def interactions(self) -> Interactions: ...

    def session_station(self, session_id: str, station: str) -> None: ...


Handler = Callable[[str, str, dict[str, Any]], dict[str, Any]]
MAX_TEXT = 10_000


class LicenseUnavailable(ProtocolError):
    code = "license-unavailable"


def _text(body: dict[str, Any], key: str, request: str, empty: bool = False) -> str:
    value = body.get(key)
    if not isinstance(value, str) or (not value and not empty) or len(value) > MAX_TEXT:
        raise BadRequest(
            f"{request} needs {key}: a {'' if empty else 'non-empty '}string "
            f"of at most {MAX_TEXT} characters"
        )
    return value


class Licenses:
    """The site's license pool; each license is held by sessions, one seat each."""

    def __init__(self, pool: dict[str, int]) -> None:
        self.total = dict(pool)
        self.held: dict[str, set[str]] = {name: set() for name in pool}

    def available(self, name: str) -> int:
        return self.total[name] - len(self.held[name])

    def _known(self, name: str) -> None:
        if name not in self.total:
            have = ", ".join(self.total) or "none"
            raise NotFound(f"no license {name!r} (the site has: {have})")

    def acquire(self, name: str, session: str) -> dict[str, Any]:
        self._known(name)
        if session not in self.held[name]:
            if self.available(name) <= 0:
                raise LicenseUnavailable(
                    f"all {self.total[name]} {name!r} licenses are in use", license=name
                )
            self.held[name].add(session)
        return {"license": name, "granted": True, "available": self.available(name)}

    def release(self, name: str, session: str) -> dict[str, Any]:
        self._known(name)
        released = session in self.held[name]
        self.held[name].discard(session)
        return {"license": name, "released": released}

    def release_session(self, session: str) -> None:
        for holders in self.held.values():
            holders.discard(session)

    def state(self) -> dict[str, dict[str, int]]:
        return {n: {"total": t, "available": self.available(n)} for n, t in self.total.items()}


class Actions:
    """Dispatch of forwarded requests by (objectType, eventId)."""

    def __init__(self, notifier: ActionsModel) -> None:
        self.notifier = notifier
        self.licenses = Licenses(dict(notifier.site.licenses))
        self.handlers: dict[MessageType, Handler] = {
            SET_STATUS: self.set_status,
            CHANGE_STATION: self.change_station,
            MAKE_CALL: self.make_call,
            PICKUP: self.pickup,
            DISCONNECT: self.disconnect,
            TRANSFER: self.transfer,
            SEND_CHAT: self.send_chat,
            SEND_EMAIL: self.send_email,
            CALLBACK: self.callback,
            ACQUIRE_LICENSE: self.acquire_license,
            RELEASE_LICENSE: self.release_license,
        }

    def handle(self, object_type: int, event_id: int, body: dict[str, Any]) -> dict[str, Any]:
        handler = self.handlers.get((object_type, event_id))
        name = name_of(object_type, event_id)
        if handler is None:
            raise ProtocolError(f"the Notifier does not implement {name}", code="unknown-request")
        session = body.get("_session")
        user = session.get("user") if isinstance(session, dict) else None
        if not isinstance(user, str) or user not in self.notifier.site.users:
            raise BadRequest(f"{name} needs _session.user naming a known user")
        session_id = session.get("id") if isinstance(session, dict) else None
        return handler(user, str(session_id), body)

    def set_status(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        status = body.get("status")
        statuses = self.notifier.site.statuses
        if not isinstance(status, str) or status not in statuses:
            raise BadRequest(
                f"unknown status {status!r}; the valid ones are: {', '.join(statuses)}",
                statuses=list(statuses),
            )
        answer = self.notifier.interactions.set_status(user, status)
        self.notifier.log.info(
            "{user} set status {status}", user=user, status=status, event="notifier.status.set"
        )
        return answer

    def change_station(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        station_id = _text(body, "station", "ChangeStation")
        site = self.notifier.site
        station = site.stations.get(station_id)
        if station is None:
            raise NotFound(f"no station {station_id!r}")
        self.notifier.session_station(session, station_id)
        location = station.location or site.users[user].location or site.default_location
        return {"station": station_id, "location": location}

    def make_call(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        target = _text(body, "target", "MakeCall")
        return {"interaction": self.notifier.interactions.make_call(user, target)}

    def pickup(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        interaction_id = _text(body, "interactionId", "Pickup")
        return {"interaction": self.notifier.interactions.pickup(user, interaction_id)}

    def disconnect(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        interaction_id = _text(body, "interactionId", "Disconnect")
        return {"interaction": self.notifier.interactions.disconnect(user, interaction_id)}

    def transfer(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        interaction_id = _text(body, "interactionId", "Transfer")
        target = _text(body, "target", "Transfer")
        return {"interaction": self.notifier.interactions.transfer(user, interaction_id, target)}

    def send_chat(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        to = _text(body, "to", "SendChat")
        text = _text(body, "text", "SendChat", empty=True)
        if to not in self.notifier.site.users:
            raise NotFound(f"no user {to!r} to chat with")
        if to == user:
            raise BadRequest("SendChat needs another user than yourself in to")
        return {"interaction": self.notifier.interactions.chat(user, to, text)}

    def send_email(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        to = _text(body, "to", "SendEmail")
        subject = _text(body, "subject", "SendEmail", empty=True)
        return {"interaction": self.notifier.interactions.email(user, to, subject)}

    def callback(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        number = _text(body, "number", "Callback")
        own = self.notifier.site.users[user].workgroups
        workgroup = body.get("workgroup")
        if workgroup is None:
            if not own:
                raise BadRequest(f"Callback needs a workgroup: {user} is in none")
            workgroup = own[0]
        if not isinstance(workgroup, str):
            raise BadRequest("Callback's workgroup must be a string")
        if workgroup not in self.notifier.site.workgroups:
            raise NotFound(f"no workgroup {workgroup!r}")
        return {"interaction": self.notifier.interactions.callback(user, number, workgroup)}

    def acquire_license(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.licenses.acquire(_text(body, "license", "AcquireLicense"), session)

    def release_license(self, user: str, session: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.licenses.release(_text(body, "license", "ReleaseLicense"), session)
