"""The admin HTTP API: a thin twisted.web adapter over admin.status.

Bound to 127.0.0.1 unless a bearer token is configured; with a token, every
request must carry ``Authorization: Bearer <token>``, compared in constant time.
Errors are JSON: ``{"error": "..."}``.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from smbridge.admin.status import healthy, status
from smbridge.errors import ProtocolError

if TYPE_CHECKING:
    from smbridge.service import BridgeService


def _json(request: Request, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


class AdminRoot(Resource):
    isLeaf = True

    def __init__(self, bridge: BridgeService, token: str | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.bridge = bridge
        self.token = token.encode() if token else None

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        header = request.getHeader(b"authorization") or b""
        given = header[7:] if header.startswith(b"Bearer ") else b""
        return hmac.compare_digest(given, self.token)

    def render(self, request: Request) -> bytes:
        if not self._authorized(request):
            request.setHeader(b"www-authenticate", b'Bearer realm="smbridge"')
            return _json(request, 401, {"error": "a valid bearer token is required"})
        path = request.path.rstrip(b"/") or b"/"
        if path == b"/api/mode":
            return self._mode(request)
        routes = {b"/api/status": self._status, b"/healthz": self._health}
        handler = routes.get(path)
        if handler is None:
            return _json(
                request, 404, {"error": f"no such resource: {path.decode(errors='replace')}"}
            )
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return _json(request, 405, {"error": f"{request.method.decode()} is not allowed here"})
        return handler(request)

    def _status(self, request: Request) -> bytes:
        return _json(request, 200, status(self.bridge))

    def _mode(self, request: Request) -> bytes:
        """``POST /api/mode {"accept": "default|all|maintenance"}``: switch the accept mode."""
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return _json(request, 405, {"error": f"{request.method.decode()} is not allowed here"})
        try:
            body = json.loads(request.content.read() if request.content else b"")
        except ValueError:
            return _json(request, 400, {"error": "the body must be JSON"})
        mode = body.get("accept") if isinstance(body, dict) else None
        try:
            self.bridge.router.set_accept_mode(mode if isinstance(mode, str) else "")
        except ProtocolError as e:
            return _json(request, 400, {"error": e.message})
        accepting, reason = self.bridge.router.accept_state()
        return _json(request, 200, {"accept": mode, "accepting": accepting, "acceptReason": reason})

    def _health(self, request: Request) -> bytes:
        ok, why = healthy(self.bridge)
        return _json(request, 200 if ok else 503, {"healthy": ok, "reason": why})


def admin_site(bridge: BridgeService, token: str | None) -> Site:
    site = Site(AdminRoot(bridge, token))
    site.displayTracebacks = False
    return site
