"""``twistd -n smbridge --demo --workers 2``: two real worker processes presented as one bridge."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.testing import TwistdProcess, http_json, poll
from smbridge.testing.tls_visit import tls_visit
from smbridge.workers.aggregate import parse_exposition

pytestmark = pytest.mark.integration
CLIENTS = 16


def demo_args(work: Path, workers: int) -> list[str]:
    args = ["smbridge", "--demo", "--workers", str(workers), "--work-path", str(work)]
    for flag in ("port", "notifier-port", "control-port", "admin-port", "ws-port", "wss-port"):
        args += [f"--{flag}", "0"]
    return [*args, "--notifier-http-port", "off", "--notifier-https-port", "off"]


@defer.inlineCallbacks
def metrics_text(url: str) -> Any:
    import treq
    from twisted.web.client import HTTPConnectionPool

    response = yield treq.get(url, pool=HTTPConnectionPool(reactor, persistent=False))
    assert response.code == 200
    text = yield treq.text_content(response)
    return text


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def sample(metrics: str, name: str) -> float:
    """The sum of every sample of ``name`` in an exposition."""
    return sum(
        value
        for family in parse_exposition(metrics)
        for (sample_name, _), value in family.samples.items()
        if sample_name == name
    )


class TwoWorkers(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-workers-"))
        self.twistd = TwistdProcess(self.work, demo_args(self.work, 2))
        self.addCleanup(self._kill_all)

    def _kill_all(self) -> None:
        for pid in children(self.twistd.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.twistd.kill()

    @defer.inlineCallbacks
    def _start(self) -> Any:
        ports_file = self.work / "ports.json"
        yield self.twistd.wait_for(ports_file.exists, "ports.json")
        self.ports = json.loads(ports_file.read_text())
        self.admin = f"http://127.0.0.1:{self.ports['admin']}"
        self.control = f"http://127.0.0.1:{self.ports['control']}"

    @defer.inlineCallbacks
    def _logons(self, count: int) -> Any:
        clients = []
        for n in range(1, count + 1):
            client = yield connect(
                reactor, f"tls://localhost:{self.ports['client']}", ca=self.work / "pki" / "ca.pem"
            )
            self.addCleanup(client.close)
            yield client.logon(f"agent{n}", "demo")
            clients.append(client)
        return clients

    @defer.inlineCallbacks
    def _get(self, base: str, path: str) -> Any:
        code, body = yield http_json(reactor, "GET", base + path)
        self.assertEqual(code, 200, body)
        return body

    @defer.inlineCallbacks
    def _bridges(self) -> Any:
        state = yield self._get(self.control, "/api/state")
        return state["bridges"]

    @defer.inlineCallbacks
    def test_clients_spread_over_both_workers_and_the_admin_api_is_one_bridge(self) -> Any:
        """Sessions land on both workers; status, sessions, metrics, mode and drain act as one."""
        yield self._start()
        clients = yield self._logons(CLIENTS)
        status = yield self._get(self.admin, "/api/status")
        workers = status["workers"]
        self.assertEqual((workers["count"], workers["alive"]), (2, 2))
        per_worker = [w["sessions"] for w in workers["list"]]
        self.assertEqual(sum(per_worker), CLIENTS)
        self.assertTrue(all(n > 0 for n in per_worker), per_worker)
        self.assertEqual(status["sessions"]["total"], CLIENTS)
        self.assertEqual(len({w["pid"] for w in workers["list"]}), 2)
        sessions = yield self._get(self.admin, "/api/sessions")
        ids = [row["sessionId"] for row in sessions["sessions"]]
        self.assertEqual((sessions["count"], len(set(ids))), (CLIENTS, CLIENTS))
        self.assertEqual({row["worker"] for row in sessions["sessions"]}, {0, 1})
        text = yield metrics_text(self.admin + "/metrics")
        self.assertEqual(sample(text, "smbridge_sessions"), CLIENTS)
        self.assertEqual(sample(text, "smbridge_workers"), 2)
        self.assertEqual(sample(text, "smbridge_worker_up"), 2)
        self.assertEqual(sample(text, "smbridge_accepting"), 1)  # a flag, not summed

        # The Notifier sees one bridge: both worker links, every session.
        bridges = yield self._bridges()
        self.assertEqual([b["name"] for b in bridges], ["bridge1"])
        self.assertEqual((bridges[0]["workersUp"], bridges[0]["sessions"]), (2, CLIENTS))

        # Accept mode through the admin API: every worker, one roster entry.
        code, answer = yield http_json(
            reactor, "POST", self.admin + "/api/mode", {"accept": "maintenance"}
        )
        self.assertEqual(code, 200, answer)
        self.assertEqual((answer["accept"], answer["workers"]), ("maintenance", 2))
        yield self._until_accepting(False)
        code, answer = yield http_json(
            reactor, "POST", self.admin + "/api/mode", {"accept": "default"}
        )
        yield self._until_accepting(True)

        # A drain reaches the clients of both workers.
        migrated: list[Any] = []
        for client in clients:
            client.add_listener(
                lambda name, frame, c=client: migrated.append(c) if name == "Migrate" else None
            )
        code, answer = yield http_json(
            reactor, "POST", self.admin + "/api/mode", {"drain": True, "spread": 0}
        )
        self.assertEqual((code, answer["drained"]), (200, CLIENTS))
        yield poll(lambda: len(migrated) == CLIENTS, deadline=10)
        self.assertEqual(len(set(map(id, migrated))), CLIENTS)

    @defer.inlineCallbacks
    def _until_accepting(self, wanted: bool) -> Any:
        for _ in range(200):
            bridges = yield self._bridges()
            self.assertEqual(len(bridges), 1)  # one bridge whatever its workers do
            if bridges[0]["accepting"] is wanted:
                return
            yield poll(lambda: True, deadline=0.05, step=0.05)
        self.fail(f"the roster never showed accepting={wanted}")

    @defer.inlineCallbacks
    def test_a_killed_worker_is_restarted_and_the_bridge_stays_available(self) -> Any:
        """kill -9 of a worker: the supervisor starts it again; the roster keeps the bridge."""
        yield self._start()
        status = yield self._get(self.admin, "/api/status")
        victim = status["workers"]["list"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        seen: list[tuple[bool, int]] = []
        for _ in range(400):
            bridges = yield self._bridges()
            seen.append(
                (bridges[0]["connected"] and bridges[0]["accepting"], bridges[0]["workersUp"])
            )
            status = yield self._get(self.admin, "/api/status")
            first = status["workers"]["list"][0]
            if first["pid"] not in (None, victim) and bridges[0]["workersUp"] == 2:
                break
            yield poll(lambda: True, deadline=0.05, step=0.05)
        else:
            self.fail(f"worker 0 was not restarted: {status['workers']}")
        self.assertTrue(all(available for available, _ in seen), seen)
        self.assertIn(1, [up for _, up in seen])  # the Notifier saw the one link go
        self.assertEqual(first["restarts"], 1)
        self.assertIn("Worker 0 (pid", self.twistd.output())
        yield self._logons(4)  # the restarted worker serves again
        status = yield self._get(self.admin, "/api/status")
        self.assertEqual(status["sessions"]["total"], 4)

    @defer.inlineCallbacks
    def test_tls_resumes_whichever_worker_takes_the_connection(self) -> Any:
        """Every return with a ticket resumes (client port and wss): the other worker hands it."""
        from twisted.internet import threads

        yield self._start()
        ca = self.work / "pki" / "ca.pem"
        for port, ws in ((self.ports["client"], False), (self.ports["wss"], True)):
            seen = yield threads.deferToThread(resumed_visits, port, ca, ws, 12)
            self.assertEqual(seen, [True] * 12, (port, ws))
        text = yield metrics_text(self.admin + "/metrics")
        handed = {
            key[1]: value
            for family in parse_exposition(text)
            for key, value in family.samples.items()
            if key[0] == "smbridge_tls_handoffs_total"
        }
        self.assertGreater(handed.get('{outcome="sent"}', 0), 0, handed)
        self.assertEqual(handed.get('{outcome="sent"}'), handed.get('{outcome="received"}'))

    @defer.inlineCallbacks
    def test_sigterm_stops_every_worker_and_tells_their_clients(self) -> Any:
        """SIGTERM to the supervisor: each worker shuts down as a bridge does, then all exit."""
        yield self._start()
        clients = yield self._logons(8)
        told: list[str] = []
        for client in clients:
            client.add_listener(
                lambda name, frame: (
                    told.append(name) if name in ("Migrate", "SessionTerminated") else None
                )
            )
        pids = children(self.twistd.proc.pid)
        self.assertEqual(len(pids), 2)
        self.twistd.proc.send_signal(signal.SIGTERM)
        yield self.twistd.wait_for(lambda: self.twistd.proc.poll() is not None, "exit", 30)
        self.assertEqual(self.twistd.proc.returncode, -signal.SIGTERM)  # as twistd -n always does
        self.assertEqual(len(told), 8)
        for pid in pids:
            self.assertFalse(Path(f"/proc/{pid}").exists() and _running(pid))


def reconnect(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None, ws: bool
) -> tuple[bool, ssl.SSLSession | None]:
    """A visit to the wss tunnel or a GetVersion on the client port."""
    return tls_visit(port, context, session, "/cic1/session" if ws else None)


def resumed_visits(port: int, ca: Path, ws: bool, visits: int) -> list[bool]:
    """Connect ``visits`` times offering the last session's ticket: resumed? for each return."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    _, session = reconnect(port, context, None, ws)
    seen = []
    for _ in range(visits):
        resumed, fresh = reconnect(port, context, session, ws)
        seen.append(resumed)
        session = fresh or session
    return seen


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


class OneWorker(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_workers_1_is_the_single_process(self) -> Any:
        """--workers 1: no supervisor and no child process; the status has no workers."""
        work = Path(tempfile.mkdtemp(prefix="smbridge-workers1-"))
        twistd = TwistdProcess(work, demo_args(work, 1))
        self.addCleanup(twistd.kill)
        yield twistd.wait_for((work / "ports.json").exists, "ports.json")
        ports = json.loads((work / "ports.json").read_text())
        code, status = yield http_json(
            reactor, "GET", f"http://127.0.0.1:{ports['admin']}/api/status"
        )
        self.assertEqual(code, 200)
        self.assertNotIn("workers", status)
        self.assertEqual(children(twistd.proc.pid), [])
        self.assertNotIn("Supervisor", twistd.output())
        self.assertFalse((work / "run").exists())


class TakenPort(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_a_taken_client_port_stops_the_supervisor_naming_the_option(self) -> Any:
        """A taken shared port ends the supervisor at start (exit 1, option named), no worker."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        work = Path(tempfile.mkdtemp(prefix="smbridge-workers-taken-"))
        args = demo_args(work, 2) + ["--port", str(holder.getsockname()[1])]
        twistd = TwistdProcess(work, args)
        self.addCleanup(twistd.kill)
        yield poll(lambda: twistd.proc.poll() is not None, deadline=30)
        self.assertEqual(twistd.proc.returncode, 1)
        self.assertIn("(--port)", twistd.output())
        self.assertNotIn("Worker 0 started", twistd.output())
