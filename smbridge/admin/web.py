"""What one bridge's admin API and the supervisor's (``--workers``) answer alike.

The dashboard's files (read without a token), the bearer-token check and the JSON
answer: :mod:`smbridge.admin.api` and :mod:`smbridge.workers.admin` both serve them
through :func:`front_door` and :func:`json_answer`, so the two cannot drift apart.
"""

from __future__ import annotations

import hmac
import json
from importlib import resources
from typing import Any

from twisted.web.server import Request

STATIC = {
    b"/": ("dashboard.html", b"text/html; charset=utf-8"),
    b"/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    b"/dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
}
CSP = b"default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"


def json_answer(request: Request, code: int, body: Any) -> bytes:
    """``body`` as the JSON answer with status ``code`` (never cached)."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


def bearer_authorized(request: Request, token: bytes | None) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (any, without a token)."""
    if token is None:
        return True
    header = request.getHeader(b"authorization") or b""
    given = header[7:] if header.startswith(b"Bearer ") else b""
    return hmac.compare_digest(given, token)


def static_file(request: Request, path: bytes) -> bytes:
    """One of the dashboard's files (GET or HEAD only), with its type and the CSP."""
    if request.method not in (b"GET", b"HEAD"):
        request.setHeader(b"allow", b"GET, HEAD")
        return json_answer(request, 405, {"error": "the dashboard's files are read with GET"})
    name, content_type = STATIC[path]
    data = resources.files("smbridge.admin").joinpath(name).read_bytes()
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-security-policy", CSP)
    return data


def front_door(request: Request, token: bytes | None) -> tuple[bytes, bytes | None]:
    """The path asked for, and the answer when the door settles it: a dashboard file
    (no token needed) or 401 without the bearer token; None lets the request in."""
    path = request.path.rstrip(b"/") or b"/"
    if path in STATIC:
        return path, static_file(request, path)
    if not bearer_authorized(request, token):
        request.setHeader(b"www-authenticate", b'Bearer realm="smbridge"')
        return path, json_answer(request, 401, {"error": "a valid bearer token is required"})
    return path, None
