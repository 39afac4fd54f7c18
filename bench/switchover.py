"""Switchover benchmark: time from ``POST /api/switchover`` to every session receiving events again.

Two ``twistd notifier`` processes (a primary and its backup, a generated sizing
site) and one ``twistd smbridge`` given both addresses; this process holds N
client sessions (clear text on loopback), each watching its workgroup's queue.
It asks the primary to switch over, then publishes an event on every queue of
the new primary every 100 ms, and records for each session when it got the
``Switchover completed`` notice and when its first event from the new primary
arrived. The figure is the time until the last session has its event (target:
under 2 s for 1,000 sessions, under 5 s for 5,000). The bridge's CPU during the
switchover is read from /proc. The clients share the machine with the servers, so
the figures include their cost too.

    .venv/bin/python bench/switchover.py --sizes 1000 5000
    .venv/bin/python bench/switchover.py --quick     # 100 sessions: what the tests run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Server,
    bridge_args,
    free_port,
    notifier_args,
    wait_for_port,
    wait_registered,
    write_results,
)
from smbridge import pki  # noqa: E402
from smbridge.client import connect  # noqa: E402
from smbridge.codec import catalog  # noqa: E402
from smbridge.notifier.sizing import sizing_site_dict  # noqa: E402
from smbridge.testing import http_json  # noqa: E402


class Session:
    __slots__ = ("client", "queue", "completed_at", "event_at", "armed")

    def __init__(self, client: Any, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.completed_at: float | None = None
        self.event_at: float | None = None
        self.armed = False
        client.add_listener(self._notice)

    def _notice(self, name: str, frame: Any) -> None:
        key = (frame.object_type, frame.event_id)
        now = time.monotonic()
        if key == catalog.SWITCHOVER and frame.parsed().get("phase") == "completed":
            self.completed_at = now
        elif key == catalog.QUEUE_CHANGED and self.armed and self.event_at is None:
            if any(str(i["id"]).startswith("after-") for i in frame.parsed().get("added", ())):
                self.event_at = now


@defer.inlineCallbacks
def one_size(reactor: Any, sessions: int, work: Path) -> Any:
    workgroups = max(1, sessions // 100)
    data = sizing_site_dict(sessions, supervisors=0, workgroups=workgroups)
    data["traffic"] = {**data.get("traffic", {}), "callsPerSecond": 0}
    site_file = work / f"site-{sessions}.yaml"
    site_file.write_text(yaml.safe_dump(data))
    files = pki.ensure_site_pki(work / "pki")
    link = {s: free_port() for s in "ab"}
    control = {s: free_port() for s in "ab"}
    servers: list[Server] = []
    try:
        for side, role in (("a", "primary"), ("b", "backup")):
            peer = "b" if side == "a" else "a"
            extra = [
                "--role", role, "--cic-name", f"cic-{side}",
                "--peer", f"127.0.0.1:{link[peer]}",
                "--peer-control", f"http://127.0.0.1:{control[peer]}",
            ]  # fmt: skip
            args = notifier_args(link[side], control[side], files, site_file, *extra)
            servers.append(Server(f"notifier-{side}-{sessions}", args, work))
        for side in "ab":
            wait_for_port(control[side])
        port = free_port()
        args = bridge_args(
            link["a"], port, work, "--notifier", f"127.0.0.1:{link['b']}", "--allow-cleartext"
        )
        bridge = Server(f"bridge-{sessions}", args, work)
        servers.append(bridge)
        wait_for_port(port)
        yield wait_registered(reactor, f"http://127.0.0.1:{control['a']}")
        queues = [f"WG{i}" for i in range(1, workgroups + 1)]
        clients: list[Session] = []
        t_logon = time.monotonic()
        for n in range(1, sessions + 1):
            client = yield connect(reactor, f"tcp://127.0.0.1:{port}")
            yield client.logon(f"agent{n}", "demo")
            queue = queues[(n - 1) // 100 % len(queues)]
            yield client.watch_queue(queue)
            clients.append(Session(client, queue))
        logon_s = time.monotonic() - t_logon
        for s in clients:
            s.armed = True
        cpu0 = bridge.cpu_seconds()
        t0 = time.monotonic()
        yield http_json(reactor, "POST", f"http://127.0.0.1:{control['a']}/api/switchover", {})
        tick = 0
        deadline = t0 + 60
        while time.monotonic() < deadline and not all(s.event_at for s in clients):
            tick += 1
            for q in queues:
                call = {"id": f"after-{tick}-{q}", "state": "alerting", "queue": q}
                body = {"queue": q, "added": [call], "changed": [], "removed": []}
                yield http_json(
                    reactor,
                    "POST",
                    f"http://127.0.0.1:{control['b']}/api/publish",
                    {"objectType": 173, "eventId": 3, "topic": f"queue:{q}", "payload": body},
                )
            yield task.deferLater(reactor, 0.1, lambda: None)
        cpu = bridge.cpu_seconds() - cpu0
        got = [s.event_at - t0 for s in clients if s.event_at is not None]
        notices = [s.completed_at - t0 for s in clients if s.completed_at is not None]
        for s in clients:
            yield s.client.close()
        return {
            "sessions": sessions,
            "workgroups": workgroups,
            "logon_s": round(logon_s, 2),
            "sessions_with_events_again": len(got),
            "sessions_with_notice": len(notices),
            "events_again_max_s": round(max(got), 3) if got else None,
            "events_again_p50_s": round(statistics.median(got), 3) if got else None,
            "notice_max_s": round(max(notices), 3) if notices else None,
            "bridge_cpu_s": round(cpu, 2),
            "target_s": 2.0 if sessions <= 1000 else 5.0,
        }
    finally:
        for server in reversed(servers):
            server.stop()


@defer.inlineCallbacks
def main(reactor: Any, args: argparse.Namespace) -> Any:
    results = []
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"smbridge-switchover-{size}-"))
        r = yield one_size(reactor, size, work)
        results.append(r)
        print(
            f"{size} sessions: all receiving events again after {r['events_again_max_s']} s "
            f"(p50 {r['events_again_p50_s']} s, notice max {r['notice_max_s']} s, "
            f"bridge CPU {r['bridge_cpu_s']} s, target {r['target_s']} s)"
        )
    path = write_results(args.output, {"switchover": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--output", default="switchover")
    parser.add_argument(
        "--quick", action="store_true", help="100 sessions (tests/test_switchover_bench.py)"
    )
    options = parser.parse_args()
    if options.quick:
        options.sizes, options.output = [100], "switchover-quick"
    task.react(main, [options])
