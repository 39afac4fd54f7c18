"""No other site can drive the admin API: cross-site-style changes are refused, CSP is 'self'.

The pure rule (:func:`smbridge.admin.api.change_refusal`) is checked against a naive
model with hypothesis; the same refusals are then seen over real HTTP against a real
bridge and Notifier, with and without an admin token.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import treq
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from smbridge.admin.api import change_refusal
from smbridge.client import connect
from smbridge.testing import start_site

ADMIN = Path(__file__).resolve().parent.parent / "smbridge" / "admin"
TOKEN = "csrf-test-token-0123456789"
HOST = "127.0.0.1:8080"


def headers_of(**given: str | None) -> Any:
    """A ``request.getHeader`` stand-in over lower-case names (``content_type=``)."""
    table = {k.replace("_", "-").encode(): v.encode() for k, v in given.items() if v is not None}
    return lambda name: table.get(name.lower())


# --- the pure rule ---------------------------------------------------------------------
def test_reads_are_never_refused() -> None:
    """GET and HEAD change nothing, so no header makes them refused here."""
    hostile = headers_of(host="evil.example", origin="http://evil.example")
    assert change_refusal(b"GET", hostile, "10.1.2.3", token=False) is None
    assert change_refusal(b"HEAD", hostile, "10.1.2.3", token=False) is None


def test_a_json_change_from_this_host_is_taken() -> None:
    """Without a token: loopback peer, loopback Host, JSON, same Origin (or none): taken."""
    for origin in (None, f"http://{HOST}"):
        for host in (HOST, "localhost:8080", "[::1]:8080", "127.0.0.2"):
            head = headers_of(
                host=host,
                origin=origin and f"http://{host}",
                content_type="application/json; charset=UTF-8",
            )
            assert change_refusal(b"POST", head, "127.0.0.1", token=False) is None, host
            assert change_refusal(b"DELETE", head, "::1", token=False) is None


@pytest.mark.parametrize(
    ("given", "peer", "code", "says"),
    [
        ({"content_type": "application/x-www-form-urlencoded"}, "127.0.0.1", 415, "JSON"),
        ({"content_type": "multipart/form-data; boundary=x"}, "127.0.0.1", 415, "JSON"),
        ({"content_type": "text/plain"}, "127.0.0.1", 415, "application/json"),
        ({"content_type": None}, "127.0.0.1", 415, "Content-Type: application/json"),
        ({"origin": "http://evil.example"}, "127.0.0.1", 403, "http://evil.example"),
        ({"origin": "null"}, "127.0.0.1", 403, "another origin"),
        ({"origin": "http://127.0.0.1:9999"}, "127.0.0.1", 403, "another origin"),
        ({"sec_fetch_site": "cross-site"}, "127.0.0.1", 403, "cross-site"),
        ({"sec_fetch_site": "same-site"}, "127.0.0.1", 403, "same-site"),
        ({"host": "rebound.example:8080"}, "127.0.0.1", 403, "rebound.example"),
        ({}, "192.0.2.7", 403, "this host only"),
    ],
)
def test_cross_site_style_changes_are_refused(
    given: dict[str, str | None], peer: str, code: int, says: str
) -> None:
    """A form, text/plain or bodiless post, a foreign Origin or Host, a remote peer: refused."""
    head = {"host": HOST, "content_type": "application/json", **given}
    refusal = change_refusal(b"POST", headers_of(**head), peer, token=False)
    assert refusal is not None
    assert refusal[0] == code
    assert says in refusal[1]


def test_with_a_token_only_the_origin_checks_remain() -> None:
    """With a token (already checked) any content type from anywhere goes, but not cross-site."""
    plain = headers_of(host="10.0.0.5:8080", content_type="application/x-www-form-urlencoded")
    assert change_refusal(b"POST", plain, "10.9.9.9", token=True) is None
    foreign = headers_of(host="10.0.0.5:8080", origin="https://evil.example")
    assert change_refusal(b"POST", foreign, "10.9.9.9", token=True) == (
        403,
        "a change sent from another origin (https://evil.example) is refused",
    )
    proxied = headers_of(host="admin.example", origin="https://admin.example")
    assert change_refusal(b"DELETE", proxied, "10.9.9.9", token=True) is None


SIMPLE_TYPES = [None, "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]
HOSTS = ["127.0.0.1:8080", "localhost", "[::1]:81", "evil.example", "10.0.0.5:8080"]
ORIGINS = [None, "null", "http://evil.example", "http://127.0.0.1:8080", "http://localhost"]


def naive(
    method: str, host: str, origin: str | None, site: str | None, ctype: str | None, peer: str
) -> bool:
    """The rule written out the long way: is this request taken?"""
    if method in ("GET", "HEAD"):
        return True
    if site not in (None, "same-origin", "none"):
        return False
    if origin is not None and origin != f"http://{host}":
        return False
    local_peer = peer in ("127.0.0.1", "::1")
    local_host = host.split(":")[0] in ("127.0.0.1", "localhost") or host.startswith("[::1]")
    return local_peer and local_host and ctype == "application/json"


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH"]),
    host=st.sampled_from(HOSTS),
    origin=st.sampled_from(ORIGINS),
    site=st.sampled_from([None, "same-origin", "none", "same-site", "cross-site"]),
    ctype=st.sampled_from([*SIMPLE_TYPES, "application/json"]),
    peer=st.sampled_from(["127.0.0.1", "::1", "10.9.9.9"]),
)
def test_the_rule_matches_a_naive_model(
    method: str, host: str, origin: str | None, site: str | None, ctype: str | None, peer: str
) -> None:
    """Without a token, the rule takes exactly what the long-hand model takes."""
    head = headers_of(host=host, origin=origin, sec_fetch_site=site, content_type=ctype)
    taken = change_refusal(method.encode(), head, peer, token=False) is None
    assert taken == naive(method, host, origin, site, ctype, peer)


@given(
    host=st.binary(max_size=40),
    origin=st.one_of(st.none(), st.binary(max_size=40)),
    ctype=st.one_of(st.none(), st.binary(max_size=40)),
    peer=st.one_of(st.none(), st.text(max_size=20)),
)
def test_any_header_bytes_get_an_answer_not_an_exception(
    host: bytes, origin: bytes | None, ctype: bytes | None, peer: str | None
) -> None:
    """Whatever bytes Host, Origin and Content-Type hold, the rule answers (never raises)."""
    table = {b"host": host, b"origin": origin, b"content-type": ctype}
    refusal = change_refusal(b"POST", table.get, peer, token=False)
    assert refusal is None or refusal[0] in (403, 415)


def test_the_page_has_no_inline_script_or_style() -> None:
    """Every script is a file, no style attribute or element, no handler attribute, no HTML
    built from strings: a CSP of 'self' holds and no session field becomes markup."""
    page = (ADMIN / "dashboard.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts and all('src="' in s for s in scripts)
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)
    script = (ADMIN / "dashboard.js").read_text()
    for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function"):
        assert risky not in script, risky
    assert "document.cookie" not in script and 'credentials: "omit"' in script


# --- over real HTTP ----------------------------------------------------------------------
@pytest.mark.integration
class CrossSiteOverHttp(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-csrf-")), admin_port=0
        )
        self.addCleanup(self.site.stop)
        self.base = f"http://127.0.0.1:{self.site.bridge.admin_port}"
        self.client = yield connect(
            reactor, f"tls://localhost:{self.site.client_port}", ca=self.site.pki.ca
        )
        self.addCleanup(self.client.close)
        reply = yield self.client.logon("agent1", "demo")
        self.session_id = reply["sessionId"]
        self.events: list[dict[str, Any]] = []
        observer = self.events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    @defer.inlineCallbacks
    def send(self, method: str, path: str, data: bytes | None = None, **headers: str) -> Any:
        """One raw request; fires with (code, JSON body, response headers)."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        head = {k.replace("_", "-"): v for k, v in headers.items()}
        response = yield treq.request(
            method, self.base + path, data=data, headers=head or None, pool=pool
        )
        body = yield response.content()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body
        return response.code, parsed, response.headers

    @defer.inlineCallbacks
    def test_cross_site_style_requests_change_nothing(self) -> Any:
        """A form post, a text/plain JSON post, a bodiless reload, a foreign Origin, Host or
        Sec-Fetch-Site: each refused with its reason and a log line, and nothing changes."""
        router = self.site.bridge.router
        form = {"content_type": "application/x-www-form-urlencoded"}
        text = {"content_type": "text/plain"}
        json_type = {"content_type": "application/json"}
        cases: list[tuple[str, str, bytes | None, dict[str, str], int, str]] = [
            ("POST", "/api/mode", b"accept=maintenance", form, 415, "application/json"),
            ("POST", "/api/mode", b'{"accept": "maintenance"}', text, 415, "JSON"),
            ("POST", "/api/reload", None, {}, 415, "Content-Type"),
            ("DELETE", f"/api/sessions/{self.session_id}", None, {}, 415, "Content-Type"),
            (
                "POST",
                "/api/mode",
                b'{"accept": "maintenance"}',
                {**json_type, "origin": "http://evil.example"},
                403,
                "another origin (http://evil.example)",
            ),
            (
                "POST",
                "/api/mode",
                b'{"drain": true, "spread": 0}',
                {**json_type, "sec_fetch_site": "cross-site"},
                403,
                "cross-site",
            ),
            (
                "POST",
                "/api/mode",
                b'{"accept": "maintenance"}',
                {**json_type, "host": "rebound.example"},
                403,
                "Host: rebound.example",
            ),
        ]
        for method, path, data, headers, code, says in cases:
            got, body, _ = yield self.send(method, path, data, **headers)
            self.assertEqual(got, code, (method, path, headers, body))
            self.assertIn(says, body["error"])
        self.assertEqual(router.accept_mode, "default")
        self.assertEqual([s.id for s in self.site.bridge.registry], [self.session_id])
        self.assertIsNone(self.client.terminated_reason)
        refused = [e for e in self.events if e.get("event") == "admin.refused"]
        self.assertEqual(len(refused), len(cases))
        self.assertEqual(refused[0]["path"], "/api/mode")
        self.assertEqual(refused[0]["code"], 415)

    @defer.inlineCallbacks
    def test_the_same_page_origin_and_json_are_taken(self) -> Any:
        """What the dashboard sends (JSON, its own Origin, same-origin fetch) is taken."""
        code, body, _ = yield self.send(
            "POST",
            "/api/mode",
            b'{"accept": "maintenance"}',
            content_type="application/json",
            origin=self.base,
            sec_fetch_site="same-origin",
        )
        self.assertEqual((code, body["accept"]), (200, "maintenance"))
        code, body, _ = yield self.send(
            "DELETE",
            f"/api/sessions/{self.session_id}",
            content_type="application/json",
            origin=self.base,
        )
        self.assertEqual((code, body["terminated"]), (200, True))
        yield self.client.closed
        self.assertEqual(self.client.terminated_reason, "logout")

    @defer.inlineCallbacks
    def test_with_a_token_the_header_is_what_counts(self) -> Any:
        """With a token: none is 401, the token without JSON is taken (curl), a foreign
        Origin is refused even with the token."""
        self.site.bridge.config = dataclasses.replace(self.site.bridge.config, admin_token=TOKEN)
        auth = {"authorization": f"Bearer {TOKEN}"}
        code, _, _ = yield self.send(
            "POST", "/api/mode", b'{"accept": "all"}', content_type="application/json"
        )
        self.assertEqual(code, 401)
        code, body, _ = yield self.send(
            "POST", "/api/mode", b'{"accept": "all"}', content_type="text/plain", **auth
        )
        self.assertEqual((code, body.get("accept")), (200, "all"))
        code, body, _ = yield self.send(
            "POST",
            "/api/mode",
            b'{"accept": "default"}',
            content_type="application/json",
            origin="http://evil.example",
            **auth,
        )
        self.assertEqual(code, 403, body)
        self.assertEqual(self.site.bridge.router.accept_mode, "all")

    @defer.inlineCallbacks
    def test_the_page_is_served_with_a_self_only_policy(self) -> Any:
        """/, its script and style sheet carry CSP 'self' (no inline, no eval), nosniff and
        no framing; the API answers a preflight with no CORS grant."""
        for path in ("/", "/dashboard.js", "/dashboard.css"):
            code, _, headers = yield self.send("GET", path)
            self.assertEqual(code, 200, path)
            (csp,) = headers.getRawHeaders("content-security-policy")
            directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
            self.assertEqual(directives["default-src"], "'self'")
            self.assertEqual(directives["frame-ancestors"], "'none'")
            self.assertNotIn("unsafe-inline", csp)
            self.assertNotIn("unsafe-eval", csp)
            self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        code, _, headers = yield self.send(
            "OPTIONS",
            "/api/mode",
            origin="http://evil.example",
            access_control_request_method="POST",
        )
        self.assertNotEqual(code, 200)
        self.assertIsNone(headers.getRawHeaders("access-control-allow-origin"))


@pytest.mark.integration
class OverAUnixSocket(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_a_worker_socket_takes_a_bodiless_change(self) -> Any:
        """A Unix socket is a worker's private line to its supervisor (which checked the
        request itself): a bodiless DELETE to Host worker-1 ends the session."""
        from twisted.internet.endpoints import UNIXClientEndpoint
        from twisted.web.client import Agent

        from smbridge.admin.api import admin_site

        work = Path(tempfile.mkdtemp(prefix="smbridge-csrf-unix-"))
        site = yield start_site(reactor, work, admin_port=0)
        self.addCleanup(site.stop)
        port = reactor.listenUNIX(str(work / "admin.sock"), admin_site(site.bridge))
        self.addCleanup(port.stopListening)
        client = yield connect(reactor, f"tls://localhost:{site.client_port}", ca=site.pki.ca)
        self.addCleanup(client.close)
        reply = yield client.logon("agent1", "demo")

        class Sockets:
            def endpointForURI(self, uri: Any) -> Any:  # noqa: N802
                return UNIXClientEndpoint(reactor, str(work / "admin.sock"))

        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent.usingEndpointFactory(reactor, Sockets(), pool)
        url = f"http://worker-1/api/sessions/{reply['sessionId']}".encode()
        response = yield agent.request(b"DELETE", url)
        body = json.loads((yield treq.content(response)))
        self.assertEqual((response.code, body["terminated"]), (200, True))
        yield client.closed
        self.assertEqual(client.terminated_reason, "logout")
