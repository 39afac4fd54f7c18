"""The supervisor's admin API over canned worker answers: token, routes, fan-out, merging."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from smbridge.options import parse
from smbridge.workers.admin import SupervisorRoot

TOKEN = "a-token-of-sixteen-chars"


@dataclass
class Slot:
    index: int
    pid: int | None = 100
    restarts: int = 0
    alive: bool = True


@dataclass
class FakeClient:
    """Answers by (worker, method, path); records every request."""

    answers: dict[tuple[int, bytes, bytes], tuple[int, Any]]
    asked: list[tuple[int, bytes, bytes, bytes | None]] = field(default_factory=list)

    def request(
        self, index: int, method: bytes, path: bytes, body: bytes | None = None
    ) -> defer.Deferred[tuple[int, bytes]]:
        self.asked.append((index, method, path, body))
        code, answer = self.answers.get((index, method, path), (404, {"error": "no"}))
        return defer.succeed((code, json.dumps(answer).encode()))


@dataclass
class FakeSupervisor:
    config: Any
    client: FakeClient
    slots: list[Slot]
    argv: list[str] = field(default_factory=list)
    count: int = 2
    accept_mode: str | None = None
    reactor: Any = field(default_factory=Clock)
    parse: Any = None


def supervisor(
    answers: dict[tuple[int, bytes, bytes], tuple[int, Any]], token: bool = False
) -> Any:
    config = parse(["--demo", "--workers", "2"])
    if token:
        from dataclasses import replace

        config = replace(config, admin_token=TOKEN)
    return FakeSupervisor(config, FakeClient(answers), [Slot(0, 100), Slot(1, 101)])


def call(root: SupervisorRoot, method: bytes, path: bytes, body: Any = None, **headers: str) -> Any:
    request = DummyRequest(path.split(b"/")[1:])
    request.method = method
    request.path = path
    request.uri = path
    for name, value in {"host": "127.0.0.1:8080", **headers}.items():
        request.requestHeaders.setRawHeaders(name.replace("_", "-"), [value])
    if body is not None:
        import io

        request.content = io.BytesIO(json.dumps(body).encode())
        request.requestHeaders.setRawHeaders("content-type", ["application/json"])
    from twisted.internet.address import IPv4Address

    request.client = IPv4Address("TCP", "127.0.0.1", 5000)
    result = root.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    assert request.finished
    raw = b"".join(request.written)
    return request.responseCode or 200, json.loads(raw) if raw.startswith(b"{") else raw


def test_a_token_is_required_when_configured() -> None:
    """With a token, an API request without it is 401 and no worker is asked."""
    sup = supervisor({}, token=True)
    root = SupervisorRoot(sup)
    code, body = call(root, b"GET", b"/api/status")
    assert (code, sup.client.asked) == (401, [])
    code, _ = call(root, b"GET", b"/api/status", authorization=f"Bearer {TOKEN}")
    assert code == 200 and len(sup.client.asked) == 2


def test_unknown_route_and_wrong_method() -> None:
    """Unknown paths are 404, a wrong method 405 with Allow; the dashboard is served."""
    root = SupervisorRoot(supervisor({}))
    assert call(root, b"GET", b"/api/nothing")[0] == 404
    assert call(root, b"GET", b"/api/mode")[0] == 405
    code, page = call(root, b"GET", b"/")
    assert code == 200 and b"<html" in page.lower()


def test_ending_a_session_asks_every_worker_and_names_the_holder() -> None:
    """DELETE goes to each worker; the one holding the session answers; nobody: 404."""
    held = {(1, b"DELETE", b"/api/sessions/s1"): (200, {"terminated": True})}
    sup = supervisor(held)
    root = SupervisorRoot(sup)
    code, body = call(root, b"DELETE", b"/api/sessions/s1", body={})
    assert (code, body["worker"], body["terminated"]) == (200, 1, True)
    code, body = call(root, b"DELETE", b"/api/sessions/s9", body={})
    assert code == 404 and "s9" in body["error"]


def test_mode_goes_to_every_worker_and_is_remembered_for_restarts() -> None:
    """POST /api/mode: same body to each worker; drained summed; the mode kept for restarts."""
    answer = {"accept": "maintenance", "accepting": False, "drained": 3}
    answers = {(i, b"POST", b"/api/mode"): (200, {**answer, "drained": 3 + i}) for i in (0, 1)}
    sup = supervisor(answers)
    code, body = call(SupervisorRoot(sup), b"POST", b"/api/mode", body={"drain": True})
    assert (code, body["drained"], body["workers"]) == (200, 7, 2)
    assert [a[3] for a in sup.client.asked] == [b'{"drain": true}'] * 2
    assert sup.accept_mode == "maintenance"


def test_a_refusal_by_the_workers_is_passed_on() -> None:
    """A 400 from the workers is the answer, and the mode is not remembered."""
    refusal = (400, {"error": "accept must be default, all or maintenance"})
    sup = supervisor({(i, b"POST", b"/api/mode"): refusal for i in (0, 1)})
    code, body = call(SupervisorRoot(sup), b"POST", b"/api/mode", body={"accept": "x"})
    assert (code, body["error"], sup.accept_mode) == (400, refusal[1]["error"], None)


def test_a_cross_site_change_is_refused_before_any_worker_is_asked() -> None:
    """The same cross-site rules as one bridge: another Origin's change is 403."""
    sup = supervisor({})
    code, _ = call(
        SupervisorRoot(sup), b"POST", b"/api/mode", body={"accept": "all"},
        origin="http://evil.example",
    )  # fmt: skip
    assert (code, sup.client.asked) == (403, [])
