"""The admin HTTP API and dashboard: a thin twisted.web adapter over the admin modules.

Bound to 127.0.0.1 unless a bearer token is configured; with a token, every API
request must carry ``Authorization: Bearer <token>``, compared in constant time.
The dashboard's static files (``/``, ``/dashboard.js``, ``/dashboard.css``) hold
no data and are served without it; the page asks for the token when the API
answers 401. Errors are JSON: ``{"error": "..."}``; a wrong method gets 405 with
``Allow``.

No other site can drive a change (:func:`change_refusal`): a request that changes
the bridge is refused when the browser says it comes from another site or origin,
and, without a token, unless it comes from this host, names it as a loopback
address and is JSON (which a cross-site form cannot send). The API grants no CORS.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from smbridge.admin.bandwidth import BandwidthHistory
from smbridge.admin.metrics import CONTENT_TYPE, bridge_registry, exposition
from smbridge.admin.reload import ReloadRefused, reload
from smbridge.admin.sessions import session_row, session_rows, terminate
from smbridge.admin.status import healthy, status
from smbridge.admin.web import front_door
from smbridge.admin.web import json_answer as _json
from smbridge.errors import ProtocolError

if TYPE_CHECKING:
    from smbridge.admin.view import BridgeView, Parse

log = Logger(namespace="smbridge.admin")

SAFE_METHODS = (b"GET", b"HEAD")  # change nothing: no cross-site check
SAME_SITE_FETCH = ("same-origin", "none")  # Sec-Fetch-Site values a change may carry
MODE_FIELDS: dict[str, Any] = {"accept": str, "drain": bool, "spread": (int, float)}
MAX_SPREAD = 3600.0
DEFAULT_SPREAD = 30.0  # seconds over which a drain's Migrates are spread


class BadInput(Exception):
    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def _body(request: Request) -> dict[str, Any]:
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise BadInput(400, f"the body is not JSON: {e}") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadInput(400, "the body must be a JSON object")
    return body


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return None


def change_refusal(
    method: bytes, header: Callable[[bytes], bytes | None], peer: str | None, token: bool
) -> tuple[int, str] | None:
    """Why a request that changes the bridge is refused as possibly cross-site; None: taken.

    ``header`` reads a request header (``Request.getHeader``), ``peer`` is the client's
    address, ``token`` whether the API has a token (already checked by then). A browser
    marks a request from another site (``Sec-Fetch-Site``) and from another origin
    (``Origin`` other than the ``Host`` asked for). Without a token the change must come
    from this host, to a loopback name (not a name an attacker re-pointed: DNS
    rebinding), as JSON: a form or a ``text/plain`` post from another site cannot set
    that content type without a preflight this API never grants.
    """
    if method in SAFE_METHODS:
        return None
    site = (header(b"sec-fetch-site") or b"").decode("latin-1").strip().lower()
    if site and site not in SAME_SITE_FETCH:
        return 403, f"a change sent from another site is refused (Sec-Fetch-Site: {site[:40]})"
    host = (header(b"host") or b"").decode("latin-1").strip().lower()
    origin = header(b"origin")
    if origin is not None:
        shown = origin.decode("latin-1").strip()[:100]
        if shown.lower() == "null" or _netloc(shown) != host:
            return 403, f"a change sent from another origin ({shown}) is refused"
    if token:
        return None
    if not _loopback(peer):
        return 403, "without an admin token, changes are taken from this host only"
    if not _loopback(urlsplit("//" + host).hostname if _netloc("//" + host) else None):
        return 403, (
            f"without an admin token, a change must name this host as localhost or a "
            f"loopback address (Host: {host[:100]})"
        )
    content_type = (header(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        return 415, (
            "send Content-Type: application/json: without an admin token a change must "
            "be a JSON request, which a form on another site cannot send"
        )
    return None


class AdminRoot(Resource):
    isLeaf = True

    def __init__(
        self, bridge: BridgeView, token: str | None = None, parse: Parse | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.bridge = bridge
        self.parse = parse  # re-reads the configuration file (POST /api/reload)
        self.bandwidth = BandwidthHistory(
            bridge.reactor, lambda: bridge.connections.sender.status().get("byPriority", {})
        )
        self.registry = bridge_registry(bridge)
        Route = tuple[tuple[bytes, ...], Callable[[Request], bytes]]
        self.routes: dict[bytes, Route] = {
            b"/api/status": ((b"GET",), self._status),
            b"/api/sessions": ((b"GET",), self._sessions),
            b"/api/mode": ((b"POST",), self._mode),
            b"/api/reload": ((b"POST",), self._reload),
            b"/api/bandwidth": ((b"GET",), self._bandwidth),
            b"/metrics": ((b"GET",), self._metrics),
            b"/healthz": ((b"GET",), self._health),
        }

    @property
    def token(self) -> bytes | None:
        """The token in force now (a reload may change it; docs/operations.md)."""
        token = self.bridge.config.admin_token
        return token.encode() if token else None

    def render(self, request: Request) -> bytes:
        path, settled = front_door(request, self.token)
        if settled is not None:
            return settled
        try:
            if path.startswith(b"/api/sessions/"):
                methods: tuple[bytes, ...] = (b"GET", b"DELETE")
                handler: Callable[[Request], bytes] = self._one_session
            elif path in self.routes:
                methods, handler = self.routes[path]
            else:
                return _json(
                    request, 404, {"error": f"no such resource: {path.decode(errors='replace')}"}
                )
            self._allow(request, methods)
            self._refuse_cross_site(request, path)
            return handler(request)
        except BadInput as e:
            return _json(request, e.code, {"error": e.message, **e.extra})

    @staticmethod
    def _allow(request: Request, methods: tuple[bytes, ...]) -> None:
        allowed = methods + ((b"HEAD",) if b"GET" in methods else ())
        if request.method not in allowed:
            request.setHeader(b"allow", b", ".join(allowed))
            raise BadInput(
                405,
                f"{request.method.decode(errors='replace')} is not allowed here; "
                f"use {' or '.join(m.decode() for m in methods)}",
            )

    def _refuse_cross_site(self, request: Request, path: bytes) -> None:
        address = request.getClientAddress()
        if isinstance(address, UNIXAddress):  # a worker's private socket: its supervisor
            return  # (0600 in a 0700 run dir; the supervisor checked the request itself)
        peer = getattr(address, "host", None)
        refusal = change_refusal(request.method, request.getHeader, peer, self.token is not None)
        if refusal is None:
            return
        code, why = refusal
        log.warn(
            "Refused {method} {path} from {peer}: {why}",
            method=request.method.decode(errors="replace"),
            path=path.decode(errors="replace"),
            peer=peer,
            why=why,
            code=code,
            event="admin.refused",
        )
        raise BadInput(code, why)

    # --- handlers -------------------------------------------------------------------
    def _status(self, request: Request) -> bytes:
        body = status(self.bridge)
        drainer = getattr(self.bridge, "drainer", None)
        body["drain"] = (
            None
            if drainer is None
            else {"active": bool(drainer.active), "pending": int(drainer.pending)}
        )
        body["configFile"] = (
            str(self.bridge.config.config_file) if self.bridge.config.config_file else None
        )
        return _json(request, 200, body)

    def _sessions(self, request: Request) -> bytes:
        rows = session_rows(self.bridge)
        return _json(request, 200, {"count": len(rows), "sessions": rows})

    def _one_session(self, request: Request) -> bytes:
        raw_id = request.path.rstrip(b"/")[len(b"/api/sessions/") :]
        session_id = unquote(raw_id.decode(errors="replace"))
        if request.method == b"DELETE":
            row = terminate(self.bridge, session_id)
            if row is None:
                raise BadInput(404, f"no session {session_id!r} on this bridge")
            log.info(
                "Session {session_id} of {user} ended by the administrator",
                session_id=session_id,
                user=row["userId"],
                event="admin.session_terminated",
            )
            return _json(request, 200, {"terminated": True, "reason": "logout", "session": row})
        session = self.bridge.registry.get(session_id)
        if session is None:
            raise BadInput(404, f"no session {session_id!r} on this bridge")
        return _json(request, 200, session_row(self.bridge, session))

    def _mode(self, request: Request) -> bytes:
        """``POST /api/mode {"accept": ..., "drain": bool, "spread": seconds}``."""
        body = _body(request)
        unknown = sorted(set(body) - set(MODE_FIELDS))
        if unknown:
            raise BadInput(
                400,
                f"unknown field(s) {', '.join(unknown)}; expected {', '.join(MODE_FIELDS)}",
            )
        if not body:
            raise BadInput(400, 'give "accept" (default, all or maintenance) and/or "drain"')
        for name, kind in MODE_FIELDS.items():
            value = body.get(name)
            if name in body and (
                not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))
            ):
                expected = {
                    "accept": "a string",
                    "drain": "true or false",
                    "spread": "a number of seconds",
                }
                raise BadInput(400, f"{name} must be {expected[name]}, not {json.dumps(value)}")
        spread = float(body.get("spread", DEFAULT_SPREAD))
        if not 0 <= spread <= MAX_SPREAD:
            raise BadInput(400, f"spread must be 0..{MAX_SPREAD:g} seconds")
        if "spread" in body and body.get("drain") is not True:
            raise BadInput(400, 'spread goes with "drain": true')
        if body.get("drain") is True and body.get("accept", "maintenance") != "maintenance":
            raise BadInput(400, 'a drain switches to maintenance: leave "accept" out')
        drainer = getattr(self.bridge, "drainer", None)
        if body.get("drain") is True and drainer is None:
            return _json(request, 503, {"error": "drain is not available on this bridge"})
        if "accept" in body:
            try:
                self.bridge.router.set_accept_mode(body["accept"])
            except ProtocolError as e:
                raise BadInput(400, e.message) from None
        answer: dict[str, Any] = {}
        if body.get("drain") is True:
            assert drainer is not None
            answer["drained"] = int(drainer.start(spread, reason="drain"))
            log.info(
                "Drain started: {count} session(s) over {spread} s",
                count=answer["drained"],
                spread=spread,
                event="admin.drain",
            )
        elif body.get("drain") is False and drainer is not None:
            answer["cancelled"] = int(drainer.cancel())
        accepting, reason = self.bridge.router.accept_state()
        answer.update(
            accept=self.bridge.router.accept_mode, accepting=accepting, acceptReason=reason
        )
        if drainer is not None:
            answer["drain"] = {"active": bool(drainer.active), "pending": int(drainer.pending)}
        return _json(request, 200, answer)

    def _reload(self, request: Request) -> bytes:
        body = _body(request)
        if body:
            raise BadInput(400, "reload takes no fields: it re-reads the configuration file")
        try:
            result = reload(self.bridge, self.parse, how="api")
        except ReloadRefused as e:
            code = 409 if self.bridge.config.config_file is None else 400
            raise BadInput(code, e.message, key=e.key) from None
        return _json(request, 200, result)

    def _bandwidth(self, request: Request) -> bytes:
        sender = self.bridge.connections.sender.status()
        return _json(
            request,
            200,
            {
                **self.bandwidth.snapshot(),
                "limiterEnabled": sender.get("limiterEnabled"),
                "totalBytesPerInterval": sender.get("totalBytesPerInterval"),
                "intervalMs": sender.get("intervalMs"),
            },
        )

    def _metrics(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        request.setHeader(b"cache-control", b"no-store")
        return exposition(self.registry)

    def _health(self, request: Request) -> bytes:
        ok, why = healthy(self.bridge)
        return _json(request, 200 if ok else 503, {"healthy": ok, "reason": why})


class AdminSite(Site):
    """The admin site; samples outgoing bandwidth while it listens."""

    def __init__(self, root: AdminRoot) -> None:
        super().__init__(root)  # type: ignore[no-untyped-call]
        self.admin = root
        self.displayTracebacks = False
        self.noisy = False

    def startFactory(self) -> None:
        super().startFactory()
        self.admin.bandwidth.start()

    def stopFactory(self) -> None:
        self.admin.bandwidth.stop()
        super().stopFactory()


def admin_site(
    bridge: BridgeView, token: str | None = None, parse: Parse | None = None
) -> AdminSite:
    """The admin site for ``bridge`` (the token is read from ``bridge.config`` per request).

    ``parse`` is the option parser a reload re-runs (the service passes its own).
    """
    return AdminSite(AdminRoot(bridge, token, parse))
