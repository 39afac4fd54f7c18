"""The reference Notifier's HTTP control API (JSON in and out, localhost by default).

Tests, demos and benchmarks drive the Notifier through it: read its state,
publish an event on a topic, change the traffic settings and server parameters. Errors are JSON too,
``{"error": "..."}`` with 400 (bad input), 404 (no such path or topic) or 405
(wrong method), so scripts never have to parse HTML. See docs/site-file.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from smbridge.codec.frames import MAX_EVENT_ID
from smbridge.errors import BadRequest, NotFound
from smbridge.notifier.model import Notifier
from smbridge.notifier.traffic import Traffic, checked_settings

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _int(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HTTPError(400, f"{key} must be an integer in {low}..{high}")
    return value


class ControlResource(Resource):
    """``/api/state``, ``/api/publish``, ``/api/traffic``, ``/api/parameters`` (one leaf)."""

    isLeaf = True

    def __init__(self, notifier: Notifier, traffic: Traffic) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.notifier = notifier
        self.traffic = traffic
        self.routes: dict[str, tuple[bytes, Handler, bool]] = {
            "/api/state": (b"GET", self.get_state, False),
            "/api/publish": (b"POST", self.post_publish, True),
            "/api/traffic": (b"POST", self.post_traffic, True),
            "/api/parameters": (b"POST", self.post_parameters, True),
        }

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        path = (request.path or b"").decode("utf-8", "replace").rstrip("/")
        try:
            route = self.routes.get(path)
            if route is None:
                raise HTTPError(404, f"no such resource {path!r}")
            method, handler, has_body = route
            if request.method not in (method, b"HEAD" if method == b"GET" else method):
                request.setHeader(b"allow", method)
                raise HTTPError(405, f"{path} accepts {method.decode()} only")
            result = handler(self._body(request) if has_body else {})
            return json.dumps(result).encode("utf-8")
        except HTTPError as e:
            request.setResponseCode(e.status)
            return json.dumps({"error": e.message}).encode("utf-8")

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        raw = request.content.read() if request.content is not None else b""
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

    def post_publish(self, body: dict[str, Any]) -> dict[str, Any]:
        object_type = _int(body, "objectType", 0, 0xFFFF)
        event_id = _int(body, "eventId", 1, MAX_EVENT_ID)
        topic = body.get("topic")
        payload = body.get("payload", {})
        if not isinstance(topic, str):
            raise HTTPError(400, "topic must be a string")
        if not isinstance(payload, dict):
            raise HTTPError(400, "payload must be a JSON object")
        try:
            delivered = self.notifier.publish(topic, object_type, event_id, payload)
        except NotFound as e:
            raise HTTPError(404, e.message) from e
        except BadRequest as e:
            raise HTTPError(400, e.message) from e
        return {"delivered": delivered}

    def post_traffic(self, body: dict[str, Any]) -> dict[str, Any]:
        """Change any of the traffic settings at once; a bad value changes none of them."""
        try:
            changes = checked_settings(body)
        except ValueError as e:
            raise HTTPError(400, str(e)) from e
        self.traffic.configure(**changes)
        return self.traffic.settings()

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


def control_site(notifier: Notifier, traffic: Traffic) -> Site:
    """The twisted.web site serving the control API."""
    site = Site(ControlResource(notifier, traffic))
    site.noisy = False
    return site
