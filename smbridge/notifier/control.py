"""The reference Notifier's HTTP control API (JSON in and out, localhost by default).

Tests, demos and benchmarks drive the Notifier through it: read its state,
publish an event on a topic, change the traffic settings and server parameters,
replace the whole site (``PUT /api/site``, notifier/replace.py). Errors are JSON too,
``{"error": "..."}`` with 400 (bad input), 404 (no such path or topic) or 405
(wrong method), so scripts never have to parse HTML. See docs/site-file.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from smbridge.codec.frames import MAX_EVENT_ID
from smbridge.errors import BadRequest, NotFound
from smbridge.notifier.model import Notifier
from smbridge.notifier.pair import ROLES
from smbridge.notifier.replace import replace_site
from smbridge.notifier.site import Site as SiteModel
from smbridge.notifier.site import SiteError
from smbridge.notifier.store import StoreError
from smbridge.notifier.traffic import Traffic, checked_settings
from smbridge.notifier.trust import CertificateTrust, TrustStoreError

Handler = Callable[[dict[str, Any]], "dict[str, Any] | Deferred[dict[str, Any]]"]


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _name(body: dict[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise HTTPError(400, "name must be a non-empty string")
    return name


MAX_REPEAT = 100_000  # events one POST /api/publish may send


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HTTPError(400, f"{key} must be an integer in {low}..{high}")
    return value


def _site_body(raw: bytes) -> dict[str, Any]:
    """A site file's content: YAML, or JSON (which YAML reads as well)."""
    try:
        body = yaml.safe_load(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise HTTPError(400, f"the body is not a YAML or JSON site: {e}") from e
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a site (a YAML or JSON mapping)")
    return body


class ControlResource(Resource):
    """``/api/state``, ``/api/publish``, ``/api/traffic``, ``/api/parameters`` (one leaf)."""

    isLeaf = True

    def __init__(self, notifier: Notifier, traffic: Traffic) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.notifier = notifier
        self.traffic = traffic
        self.routes: dict[str, tuple[bytes, Handler, bool]] = {
            "/api/state": (b"GET", self.get_state, False),
            "/api/tenants": (b"GET", self.get_tenants, False),
            "/api/ping": (b"GET", self.get_ping, False),
            "/api/publish": (b"POST", self.post_publish, True),
            "/api/traffic": (b"POST", self.post_traffic, True),
            "/api/parameters": (b"POST", self.post_parameters, True),
            "/api/switchover": (b"POST", self.post_switchover, True),
            "/api/role": (b"POST", self.post_role, True),
            "/api/pair/roster": (b"POST", self.post_pair_roster, True),
            "/api/load": (b"POST", self.post_load, True),
            "/api/bridges/retire": (b"POST", self.post_retire, True),
            "/api/bridges/accept": (b"POST", self.post_accept, True),
            "/api/certificates": (b"GET", self.get_certificates, False),
            "/api/site": (b"PUT", self.put_site, True),
        }

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"content-type", b"application/json")
        path = (request.path or b"").decode("utf-8", "replace").rstrip("/")
        try:
            route = self.routes.get(path) or self._certificate_route(path)
            if route is None:
                raise HTTPError(404, f"no such resource {path!r}")
            method, handler, has_body = route
            if request.method not in (method, b"HEAD" if method == b"GET" else method):
                request.setHeader(b"allow", method)
                raise HTTPError(405, f"{path} accepts {method.decode()} only")
            result = handler(self._body(request) if has_body else {})
            if isinstance(result, Deferred):
                result.addCallbacks(
                    lambda answer: self._finish(request, 200, answer),
                    lambda f: self._failed(request, f),
                )
                return NOT_DONE_YET
            return json.dumps(result).encode("utf-8")
        except HTTPError as e:
            request.setResponseCode(e.status)
            return json.dumps({"error": e.message}).encode("utf-8")

    def _certificate_route(self, path: str) -> tuple[bytes, Handler, bool] | None:
        """``/api/certificates/{fingerprint}/trust``."""
        prefix, suffix = "/api/certificates/", "/trust"
        if not (path.startswith(prefix) and path.endswith(suffix)):
            return None
        fingerprint = path[len(prefix) : -len(suffix)]
        return b"POST", lambda body: self.post_trust(fingerprint), True

    @staticmethod
    def _finish(request: Request, status: int, answer: dict[str, Any]) -> None:
        if request.finished or request._disconnected:
            return
        request.setResponseCode(status)
        request.write(json.dumps(answer).encode("utf-8"))
        request.finish()

    def _failed(self, request: Request, failure: Failure) -> None:
        self._finish(request, 500, {"error": failure.getErrorMessage()})

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        raw = request.content.read() if request.content is not None else b""
        if request.path.rstrip(b"/") == b"/api/site":
            return _site_body(raw)
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise HTTPError(400, f"the body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return body

    def get_state(self, _: dict[str, Any]) -> dict[str, Any]:
        t = self.traffic
        return {
            **self.notifier.state(),
            "traffic": {
                **t.settings(),
                "running": t.running,
                "callsInProgress": t.calls_in_progress,
                "callsMade": t.calls_made,
                "businessCalls": t.business_calls,
            },
        }

    def get_tenants(self, _: dict[str, Any]) -> dict[str, Any]:
        """Every tenant's limits and site-wide use (notifier/tenants.py)."""
        return {"tenants": self.notifier.tenants.state()}

    def get_ping(self, _: dict[str, Any]) -> dict[str, Any]:
        """The pair's liveness probe (notifier/peer.py): answered by the running reactor,
        so a frozen process does not answer it; says the role and whether it took over."""
        pair = self.notifier.pair
        return {"role": pair.role, "tookOver": pair.took_over}

    def post_publish(self, body: dict[str, Any]) -> dict[str, Any]:
        object_type = _int(body, "objectType", 0, 0xFFFF)
        event_id = _int(body, "eventId", 1, MAX_EVENT_ID)
        topic = body.get("topic")
        payload = body.get("payload", {})
        if not isinstance(topic, str):
            raise HTTPError(400, "topic must be a string")
        if not isinstance(payload, dict):
            raise HTTPError(400, "payload must be a JSON object")
        # ``repeat``: the same event N times in one go, a backlog on every subscriber's link
        # (bench/fanout.py drains one); the answer says how many were sent.
        repeat = _int(body, "repeat", 1, MAX_REPEAT) if "repeat" in body else 1
        try:
            delivered = self.notifier.publish(topic, object_type, event_id, payload)
            for _ in range(repeat - 1):
                self.notifier.publish(topic, object_type, event_id, payload)
        except NotFound as e:
            raise HTTPError(404, e.message) from e
        except BadRequest as e:
            raise HTTPError(400, e.message) from e
        answer: dict[str, Any] = {"delivered": delivered}
        if repeat > 1:
            answer["events"] = repeat
        return answer

    def post_traffic(self, body: dict[str, Any]) -> dict[str, Any]:
        """Change any of the traffic settings at once; a bad value changes none of them."""
        try:
            changes = checked_settings(body)
        except ValueError as e:
            raise HTTPError(400, str(e)) from e
        self.traffic.configure(**changes)
        return self.traffic.settings()

    def put_site(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the running site (docs/site-file.md): checked whole, else nothing changes."""
        try:
            site = SiteModel.from_dict(body)
        except SiteError as e:
            raise HTTPError(400, str(e)) from e
        return replace_site(self.notifier, site)

    def post_parameters(self, body: dict[str, Any]) -> dict[str, Any]:
        """Set (a string) or remove (null) server parameters; answer them all."""
        for name, value in body.items():
            if not name.strip():
                raise HTTPError(400, "parameter names must be non-empty strings")
            if value is not None and not isinstance(value, str):
                raise HTTPError(
                    400, f"parameter {name!r}: the value must be a string or null to remove it"
                )
        if not body:
            raise HTTPError(400, 'give at least one parameter: {"name": "value" or null}')
        return {"parameters": self.notifier.set_parameters(body)}

    def post_switchover(self, body: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Swap the roles of the pair: this side takes the other role and tells the peer."""
        return self.notifier.pair.switchover()

    def post_role(self, body: dict[str, Any]) -> dict[str, Any]:
        """Take a role (what a peer asks during a switchover): ``{"role": "primary"|"backup"}``."""
        role = body.get("role")
        if role not in ROLES:
            raise HTTPError(400, f"role must be one of {', '.join(ROLES)}")
        changed = self.notifier.pair.set_role(role, "told by the peer")
        return {"role": role, "changed": changed}

    def post_pair_roster(self, body: dict[str, Any]) -> dict[str, Any]:
        """The peer's half of the pair's roster; the answer is ours (notifier/pair_roster.py)."""
        try:
            return self.notifier.share.receive(body)
        except BadRequest as e:
            raise HTTPError(400, e.message) from e

    def post_load(self, body: dict[str, Any]) -> dict[str, Any]:
        """Simulate load: every link Ping is answered ``pingDelayMs`` late (0: at once)."""
        delay = _int(body, "pingDelayMs", 0, 600_000)
        self.notifier.ping_delay = delay / 1000.0
        return {"pingDelayMs": delay}

    def post_retire(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{"name"}``: leave a bridge that is down out of the roster (docs/roster.md)."""
        try:
            self.notifier.retire_bridge(_name(body))
        except NotFound as e:
            raise HTTPError(404, e.message) from e
        except BadRequest as e:
            raise HTTPError(409, e.message) from e
        except StoreError as e:  # retired until a restart
            raise HTTPError(500, f"retired, but not saved: {e}") from e
        return {"roster": self.notifier.roster()}

    def post_accept(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{"name", "accept"}``: tell a connected bridge to switch its accept mode."""
        name = _name(body)
        try:
            self.notifier.set_bridge_accept(name, body.get("accept"))
        except NotFound as e:
            raise HTTPError(404, e.message) from e
        except BadRequest as e:
            raise HTTPError(400, e.message) from e
        return {"name": name, "accept": body.get("accept"), "sent": True}

    def _trust(self) -> CertificateTrust:
        if self.notifier.trust is None:
            raise HTTPError(404, "this Notifier accepts every certificate its CA signed")
        return self.notifier.trust

    def get_certificates(self, _: dict[str, Any]) -> dict[str, Any]:
        """Bridge certificates seen or trusted: ``new`` ones wait for an administrator."""
        return {"certificates": self._trust().listing()}

    def post_trust(self, fingerprint: str) -> dict[str, Any]:
        """Trust one bridge certificate; its bridge's next attempt registers."""
        try:
            return self._trust().trust(fingerprint)
        except ValueError as e:
            raise HTTPError(400, str(e)) from e
        except TrustStoreError as e:  # not trusted: it would be lost at the next start
            raise HTTPError(500, str(e)) from e


def control_site(notifier: Notifier, traffic: Traffic) -> Site:
    """The twisted.web site serving the control API."""
    site = Site(ControlResource(notifier, traffic))
    site.noisy = False
    return site
