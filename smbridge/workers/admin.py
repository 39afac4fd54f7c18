"""The supervisor's admin API: the same routes and token rules as one bridge's, over the workers'.

The supervisor listens on ``--admin-port`` (the dashboard and every route of
docs/operations.md) and asks the workers on their private sockets
(``<run dir>/admin-<I>.sock``), passing the same bearer token:

- ``GET /api/status``, ``/api/sessions``, ``/api/bandwidth``, ``/metrics``: every
  worker's answer, merged (:mod:`smbridge.workers.aggregate`);
- ``POST /api/mode`` and ``POST /api/reload``: sent to every running worker; the
  answer is the first refusal if any, else the first worker's with the counts summed;
  a mode set here is the one a restarted worker starts in;
- ``GET``/``DELETE /api/sessions/{id}``: asked of every worker; the one that holds
  the session answers;
- ``GET /healthz``: healthy while any worker's Notifier link is up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXClientEndpoint
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
    readBody,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from smbridge.admin.api import change_refusal
from smbridge.admin.web import front_door
from smbridge.admin.web import json_answer as _json
from smbridge.listening import ListenerService
from smbridge.workers.aggregate import (
    WorkerAnswer,
    merge_bandwidth,
    merge_metrics,
    merge_sessions,
    merge_status,
)
from smbridge.workers.worker import admin_socket

if TYPE_CHECKING:
    from smbridge.config import BridgeConfig


class WorkerView(Protocol):
    """One worker as the admin API reads it (``supervisor.WorkerSlot``)."""

    index: int
    pid: int | None
    restarts: int

    @property
    def alive(self) -> bool: ...


class Supervisor(Protocol):
    """What the admin API needs of the supervisor (``supervisor.Supervisor`` satisfies it)."""

    config: BridgeConfig  # its token is the one in force
    argv: list[str]
    count: int
    accept_mode: str | None
    client: WorkerClient
    reactor: Any
    parse: Callable[[list[str]], BridgeConfig] | None

    @property
    def slots(self) -> Sequence[WorkerView]: ...


log = Logger(namespace="smbridge.workers.admin")
ASK_TIMEOUT = 5.0  # seconds a worker has to answer the supervisor
METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
Answer = tuple[int, bytes]


@implementer(IAgentEndpointFactory)
class _WorkerSockets:
    """``http://worker-<I>/...`` goes to worker I's admin socket."""

    def __init__(self, reactor: Any, run_dir: Path) -> None:
        self.reactor = reactor
        self.run_dir = run_dir

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:  # noqa: N802
        index = int(uri.host.decode().rpartition("-")[2])
        return UNIXClientEndpoint(self.reactor, str(admin_socket(self.run_dir, index)), timeout=5)


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class WorkerClient:
    """HTTP requests to the workers' admin sockets, with the bearer token in force."""

    def __init__(self, reactor: Any, run_dir: Path, token: Callable[[], str | None]) -> None:
        self.reactor = reactor
        self.token = token
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool._factory = _QuietClientFactory  # no "Starting factory" line per request
        self.agent = Agent.usingEndpointFactory(reactor, _WorkerSockets(reactor, run_dir), pool)

    def request(
        self, index: int, method: bytes, path: bytes, body: bytes | None = None
    ) -> defer.Deferred[Answer]:
        headers = Headers()
        token = self.token()
        if token:
            headers.addRawHeader(b"authorization", b"Bearer " + token.encode())
        producer = None
        if body is not None:
            headers.addRawHeader(b"content-type", b"application/json")
            producer = FileBodyProducer(BytesIO(body))
        uri = b"http://worker-%d%s" % (index, path)
        d = self.agent.request(method, uri, headers, producer)

        def read(response: Any) -> defer.Deferred[Answer]:
            return readBody(response).addCallback(lambda data: (int(response.code), data))

        answer: defer.Deferred[Answer] = d.addCallback(read)
        answer.addTimeout(ASK_TIMEOUT, self.reactor)
        return answer


def _parsed(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class SupervisorRoot(Resource):
    """The admin routes of one bridge, answered from the supervisor's workers."""

    isLeaf = True

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.supervisor = supervisor
        self.routes: dict[bytes, tuple[bytes, Callable[[Request], defer.Deferred[bytes]]]] = {
            b"/api/status": (b"GET", self._status),
            b"/api/sessions": (b"GET", self._sessions),
            b"/api/bandwidth": (b"GET", self._bandwidth),
            b"/metrics": (b"GET", self._metrics),
            b"/healthz": (b"GET", self._health),
            b"/api/mode": (b"POST", self._mode),
            b"/api/reload": (b"POST", self._reload),
        }

    def render(self, request: Request) -> Any:
        token = self.supervisor.config.admin_token
        path, settled = front_door(request, token.encode() if token else None)
        if settled is not None:
            return settled
        allowed: tuple[bytes, ...]
        if path.startswith(b"/api/sessions/"):
            allowed = (b"GET", b"HEAD", b"DELETE")
            handler: Callable[[Request], defer.Deferred[bytes]] = self._one_session
        elif path in self.routes:
            method, handler = self.routes[path]
            allowed = (method, b"HEAD") if method == b"GET" else (method,)
        else:
            return _json(
                request, 404, {"error": f"no such resource: {path.decode(errors='replace')}"}
            )
        if request.method not in allowed:
            request.setHeader(b"allow", b", ".join(allowed))
            return _json(request, 405, {"error": f"use {' or '.join(m.decode() for m in allowed)}"})
        address = request.getClientAddress()  # the same cross-site rules as one bridge
        refusal = change_refusal(
            request.method,
            request.getHeader,
            getattr(address, "host", None),
            bool(self.supervisor.config.admin_token),
        )
        if refusal is not None:
            log.warn(
                "Refused {method} {path}: {why}",
                method=request.method.decode(errors="replace"),
                path=path.decode(errors="replace"),
                why=refusal[1],
                event="admin.refused",
            )
            return _json(request, refusal[0], {"error": refusal[1]})
        d = defer.maybeDeferred(handler, request)
        d.addErrback(self._failed, request)
        d.addCallback(self._finish, request)
        return NOT_DONE_YET

    @staticmethod
    def _finish(data: bytes, request: Request) -> None:
        if not request.finished and not getattr(request, "_disconnected", False):
            request.write(data)
            request.finish()

    def _failed(self, failure: Any, request: Request) -> bytes:
        log.failure("Admin request failed", failure=failure, event="workers.admin_failed")
        return _json(request, 500, {"error": "the supervisor could not answer"})

    # --- asking the workers --------------------------------------------------------------
    @defer.inlineCallbacks
    def ask_all(self, method: bytes, path: bytes, body: bytes | None = None) -> Any:
        """Every worker's answer (a worker that is down or silent: body None)."""
        slots = self.supervisor.slots
        asks = [
            self.supervisor.client.request(s.index, method, path, body)
            if s.alive
            else defer.succeed(None)
            for s in slots
        ]
        results = yield defer.DeferredList(asks, consumeErrors=True)
        answers: list[tuple[WorkerAnswer, int | None, bytes]] = []
        for slot, (ok, result) in zip(slots, results, strict=True):
            code, data = result if ok and result is not None else (None, b"")
            answers.append(
                (WorkerAnswer(slot.index, slot.pid, slot.alive, slot.restarts, data), code, data)
            )
        return answers

    @staticmethod
    def _json_answers(answers: list[tuple[WorkerAnswer, int | None, bytes]]) -> list[WorkerAnswer]:
        out = []
        for answer, code, data in answers:
            body = _parsed(data) if code == 200 else None
            out.append(WorkerAnswer(answer.index, answer.pid, answer.alive, answer.restarts, body))
        return out

    @defer.inlineCallbacks
    def _status(self, request: Request) -> Any:
        answers = self._json_answers((yield self.ask_all(b"GET", b"/api/status")))
        return _json(request, 200, merge_status(answers, self.supervisor.count))

    @defer.inlineCallbacks
    def _sessions(self, request: Request) -> Any:
        answers = self._json_answers((yield self.ask_all(b"GET", b"/api/sessions")))
        return _json(request, 200, merge_sessions(answers))

    @defer.inlineCallbacks
    def _bandwidth(self, request: Request) -> Any:
        answers = self._json_answers((yield self.ask_all(b"GET", b"/api/bandwidth")))
        return _json(request, 200, merge_bandwidth(answers))

    @defer.inlineCallbacks
    def _metrics(self, request: Request) -> Any:
        raw = yield self.ask_all(b"GET", b"/metrics")
        texts = [data.decode(errors="replace") for _, code, data in raw if code == 200]
        answers = [
            WorkerAnswer(a.index, a.pid, a.alive, a.restarts, data if code == 200 else None)
            for a, code, data in raw
        ]
        request.setHeader(b"content-type", METRICS_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return merge_metrics(texts, answers, self.supervisor.count).encode()

    @defer.inlineCallbacks
    def _health(self, request: Request) -> Any:
        answers = yield self.ask_all(b"GET", b"/healthz")
        up = [a.index for a, code, _ in answers if code == 200]
        workers = [
            {"index": a.index, "alive": a.alive, "healthy": code == 200} for a, code, _ in answers
        ]
        if up:
            body = {"healthy": True, "reason": "ok", "workers": workers}
        else:
            body = {
                "healthy": False,
                "reason": "no worker has its Notifier link up",
                "workers": workers,
            }
        return _json(request, 200 if up else 503, body)

    @defer.inlineCallbacks
    def _one_session(self, request: Request) -> Any:
        raw_id = request.path[len(b"/api/sessions/") :]
        method = b"GET" if request.method == b"HEAD" else request.method
        answers = yield self.ask_all(method, b"/api/sessions/" + raw_id)
        for answer, code, data in answers:
            if code == 200:
                body = _parsed(data)
                if isinstance(body, dict):
                    body = {**body, "worker": answer.index}
                return _json(request, 200, body)
        session_id = raw_id.decode(errors="replace")
        return _json(request, 404, {"error": f"no session {session_id!r} on this bridge"})

    @defer.inlineCallbacks
    def _forward(self, request: Request) -> Any:
        """POST the request's body to every running worker: (refusal or None, answers)."""
        body = request.content.read() if request.content is not None else b""
        answers = yield self.ask_all(request.method, request.path, body)
        given = [(a, code, _parsed(data)) for a, code, data in answers if code is not None]
        if not given:
            return _json(request, 503, {"error": "no worker is running"}), []
        refused = [(a, code, parsed) for a, code, parsed in given if code != 200]
        if refused:
            _, code, parsed = refused[0]
            return _json(request, code or 502, parsed), []
        return None, given

    @defer.inlineCallbacks
    def _mode(self, request: Request) -> Any:
        refusal, given = yield self._forward(request)
        if refusal is not None:
            return refusal
        bodies = [parsed for _, _, parsed in given if isinstance(parsed, dict)]
        merged = dict(bodies[0])
        for key in ("drained", "cancelled"):
            if key in merged:
                merged[key] = sum(int(b.get(key) or 0) for b in bodies)
        drains = [b["drain"] for b in bodies if isinstance(b.get("drain"), dict)]
        if drains:
            merged["drain"] = {
                "active": any(d.get("active") for d in drains),
                "pending": sum(int(d.get("pending") or 0) for d in drains),
            }
        merged["accepting"] = any(b.get("accepting") for b in bodies)
        merged["workers"] = len(bodies)
        if isinstance(merged.get("accept"), str):
            self.supervisor.accept_mode = merged["accept"]
        return _json(request, 200, merged)

    @defer.inlineCallbacks
    def _reload(self, request: Request) -> Any:
        refusal, given = yield self._forward(request)
        if refusal is not None:
            return refusal
        supervisor = self.supervisor
        if supervisor.parse is not None:  # the supervisor's own token follows the file
            try:
                fresh = supervisor.parse(list(supervisor.argv))
                from dataclasses import replace

                supervisor.config = replace(supervisor.config, admin_token=fresh.admin_token)
            except Exception as e:  # the workers took it; keep the token in force
                log.warn(
                    "Supervisor kept its admin token: {error}",
                    error=str(e),
                    event="workers.reload_token",
                )
        first = given[0][2] if isinstance(given[0][2], dict) else {}
        return _json(
            request,
            200,
            {**first, "workers": [{"index": a.index, "answer": parsed} for a, _, parsed in given]},
        )


class SupervisorSite(Site):
    def __init__(self, root: SupervisorRoot) -> None:
        super().__init__(root)  # type: ignore[no-untyped-call]
        self.displayTracebacks = False
        self.noisy = False


def supervisor_admin(supervisor: Supervisor) -> ListenerService | None:
    """The supervisor's admin listener on ``--admin-port`` (None when it is off)."""
    config = supervisor.config
    if config.admin_port is None:
        return None
    interface, reactor = config.admin_interface, supervisor.reactor
    endpoint: Any = (
        TCP6ServerEndpoint(reactor, config.admin_port, interface=interface)
        if ":" in interface
        else TCP4ServerEndpoint(reactor, config.admin_port, interface=interface)
    )
    return ListenerService("admin-api", endpoint, SupervisorSite(SupervisorRoot(supervisor)))
