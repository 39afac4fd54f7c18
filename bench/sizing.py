"""Sizing benchmark: a contact center's worth of sessions on one bridge process.

    python bench/sizing.py                 # 1,000 and 5,000 sessions (a few minutes)
    python bench/sizing.py --sizes 200     # one small size, to check that it works
    python bench/sizing.py --quick         # 200 sessions, 2 s: what the tests run

For each size, a generated site (bench-only: every user's password is ``demo``) with
the note's mix: 20 % business users, the rest call-center agents and supervisors
10:1. Each session watches what the note's scenarios describe:

- agents: My Interactions, the Company Directory, their workgroup's directory and
  statistics; one agent in five also watches their workgroup's queue;
- supervisors: a workgroup's queue, statistics (with the agents' statistics) and
  directory, and the status of up to 20 of its members;
- business users: My Interactions, the Company Directory and one smaller directory.

Measured while the Notifier's traffic generator runs: deliveries per second,
bridge CPU per delivery, the delay from the Notifier stamping an event (``at``) to
a client reading it (p50/p99, from a sample of clients), and bridge memory per
idle TLS session (resident size before and after the sessions logged on). The
reference, in the same run, is ``minimal_router.py``: the same clients and watch
plan, the same Notifier and traffic, and a fan-out with no session logic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402

from bench.common import (
    Counter,
    Server,
    bridge_args,
    free_port,
    notifier_args,  # noqa: E402
    request,
    wait_for_port,
    wait_registered,
    write_results,
)
from smbridge import pki  # noqa: E402
from smbridge.codec import Kind  # noqa: E402
from smbridge.codec import catalog as c  # noqa: E402
from smbridge.testing import http_json  # noqa: E402

COMPANY = "Company Directory"
LATENCY_SAMPLE_EVERY = 10  # every tenth client reads event timestamps


def mix(sessions: int) -> dict[str, int]:
    """The note's mix: 20 % business users, agents and supervisors 10:1."""
    business = sessions // 5
    supervisors = (sessions - business) // 11
    return {
        "business": business,
        "supervisors": supervisors,
        "agents": sessions - business - supervisors,
    }


def plan_for(site: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, list[bytes]]]:
    """Topics each user watches, and the requests that make a bridge hold them."""
    workgroups = [w["name"] for w in site.get("workgroups", [])]
    directories = site.get("directories", {})
    members: dict[str, list[str]] = {w: [] for w in workgroups}
    for user in site["users"]:
        for wg in user.get("workgroups", []):
            members.setdefault(wg, []).append(user["id"])
    topics: dict[str, list[str]] = {}
    scripts: dict[str, list[bytes]] = {}
    for i, user in enumerate(site["users"]):
        uid = user["id"]
        mine = [f"user:{uid}"]
        script = [request(c.CREATE_SESSION, {"user": uid, "password": "demo"})]

        def directory(name: str, mine: list[str] = mine, script: list[bytes] = script) -> None:
            if name in directories or name == COMPANY:
                mine.append(f"directory:{name}")
                script.append(request(c.GET_DIRECTORY, {"name": name}, rid=len(script) + 1))

        if uid.startswith("supervisor"):
            wg = workgroups[i % len(workgroups)]
            mine += [f"queue:{wg}", f"statistics:{wg}"]
            script.append(request(c.WATCH_QUEUE, {"queue": wg}, rid=2))
            script.append(request(c.WATCH_STATISTICS, {"workgroup": wg}, rid=3))
            directory(wg)
            watched = [m for m in members.get(wg, []) if m != uid][:20]
            if watched:
                mine += [f"status:{m}" for m in watched]
                script.append(request(c.WATCH_STATUS, {"users": watched}, rid=5))
        elif user.get("workgroups"):
            wg = user["workgroups"][0]
            directory(COMPANY)
            directory(wg)
            mine.append(f"statistics:{wg}")
            script.append(request(c.WATCH_STATISTICS, {"workgroup": wg}, rid=6))
            if i % 5 == 0:
                mine.append(f"queue:{wg}")
                script.append(request(c.WATCH_QUEUE, {"queue": wg}, rid=7))
        else:
            directory(COMPANY)
            if workgroups:
                directory(workgroups[i % len(workgroups)])
        topics[uid] = mine
        scripts[uid] = script
    return topics, scripts


class Watcher(Counter):
    """Counts frames; a sample also reads each notification's ``at`` stamp."""

    def __init__(self, script: list[bytes], sample: bool) -> None:
        super().__init__(script)
        self.sample = sample
        self.delays: list[float] = []
        self._pending = b""

    def dataReceived(self, data: bytes) -> None:
        if self.sample and self.running:
            now = time.time()
            buf = self._pending + data
            pos = 0
            while len(buf) - pos >= 14:
                n = int.from_bytes(buf[pos : pos + 4], "big")
                if len(buf) - pos < 4 + n:
                    break
                if buf[pos + 5] == Kind.NOTIFICATION:
                    at = json.loads(buf[pos + 14 : pos + 4 + n]).get("at")
                    if isinstance(at, int | float):
                        self.delays.append(now - at)
                pos += 4 + n
            self._pending = buf[pos:]
        super().dataReceived(data)


class SupervisorSwitcher:
    """Supervisors move their queue and statistics watches to another workgroup.

    The note's supervisors switch every 5-10 minutes; the bench compresses time 60x,
    so each switches about every 7.5 s (at random, seeded). Only the bridge run does
    this: the minimal reference has a fixed plan, which can only flatter it.
    """

    def __init__(
        self,
        clients: dict[str, Watcher],
        topics: dict[str, list[str]],
        workgroups: list[str],
        every: float = 7.5,
        seed: int = 11,
    ) -> None:
        import random

        self.rng = random.Random(seed)
        self.every = every
        self.workgroups = workgroups
        self.current = {
            uid: next(t.split(":", 1)[1] for t in ts if t.startswith("queue:"))
            for uid, ts in topics.items()
            if uid.startswith("supervisor")
        }
        self.clients = {uid: clients[uid] for uid in self.current}
        self.switches = 0

    def tick(self, period: float = 0.5) -> None:
        if len(self.workgroups) < 2:
            return
        for uid, old in self.current.items():
            if self.rng.random() >= period / self.every:
                continue
            new = self.rng.choice([w for w in self.workgroups if w != old])
            self.current[uid] = new
            self.clients[uid].transport.write(  # type: ignore[union-attr]
                request(c.UNWATCH_QUEUE, {"queue": old}, rid=20)
                + request(c.UNWATCH_STATISTICS, {"workgroup": old}, rid=21)
                + request(c.WATCH_QUEUE, {"queue": new}, rid=22)
                + request(c.WATCH_STATISTICS, {"workgroup": new}, rid=23)
            )
            self.switches += 1


def rss_kb(server: Server) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@defer.inlineCallbacks
def connect_all(
    reactor: Any, port: int, ca: Path, scripts: dict[str, list[bytes]], logon_only: bool
) -> Any:
    """Connect a TLS client per user; run its logon (and, unless logon_only, its watches)."""
    watchers = []
    tls = pki.client_options("localhost", ca)
    for i, script in enumerate(scripts.values()):
        w = Watcher(script[:1] if logon_only else script, sample=i % LATENCY_SAMPLE_EVERY == 0)
        w.rest = script[1:]  # type: ignore[attr-defined]
        endpoint = wrapClientTLS(tls, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        yield endpoint.connect(Factory.forProtocol(lambda w=w: w))
        watchers.append(w)
        if i % 200 == 199:
            yield defer.gatherResults([x.ready for x in watchers[-200:]])
    yield defer.gatherResults([x.ready for x in watchers])
    return watchers


@defer.inlineCallbacks
def run_watches(watchers: list[Watcher]) -> Any:
    """Send each client's remaining script (its watches) and wait for every answer."""
    for w in watchers:
        w.script = list(w.rest)  # type: ignore[attr-defined]
        w.ready = defer.Deferred()
        w._scripted = True
        w._next_step()
    yield defer.gatherResults([w.ready for w in watchers])


@defer.inlineCallbacks
def measure(
    reactor: Any,
    control: str,
    watchers: list[Watcher],
    procs: list[Server],
    traffic: dict[str, Any],
    seconds: float,
) -> Any:
    for w in watchers:
        w.start()
    yield http_json(reactor, "POST", f"{control}/api/traffic", traffic)
    yield task.deferLater(reactor, 3.0, lambda: None)  # warm up
    f0 = sum(w.frames for w in watchers)
    for w in watchers:
        w.delays.clear()
    cpu0 = [p.cpu_seconds() for p in procs]
    t0 = time.monotonic()
    yield task.deferLater(reactor, seconds, lambda: None)
    t1 = time.monotonic()
    cpu1 = [p.cpu_seconds() for p in procs]
    f1 = sum(w.frames for w in watchers)
    yield http_json(
        reactor,
        "POST",
        f"{control}/api/traffic",
        {"callsPerSecond": 0, "businessCallsPerSecond": 0},
    )
    delays = sorted(d for w in watchers for d in w.delays)
    deliveries = f1 - f0
    cpu = cpu1[0] - cpu0[0]
    return {
        "deliveries_per_s": round(deliveries / (t1 - t0)),
        "server_cpu_s": round(cpu, 2),
        "notifier_cpu_s": round(cpu1[1] - cpu0[1], 2) if len(procs) > 1 else None,
        "cpu_us_per_delivery": round(cpu / deliveries * 1e6, 2) if deliveries else None,
        "deliveries_per_cpu_s": round(deliveries / cpu) if cpu else None,
        "delay_ms_p50": round(statistics.median(delays) * 1000, 2) if delays else None,
        "delay_ms_p99": round(delays[int(len(delays) * 0.99)] * 1000, 2) if delays else None,
        "delay_samples": len(delays),
        "errors": sum(w.errors for w in watchers),
        "seconds": round(t1 - t0, 2),
    }


def start_notifier(
    name: str, site_file: Path, files: pki.SitePKI, work: Path
) -> tuple[Server, int, str]:
    n_port, c_port = free_port(), free_port()
    notifier = Server(name, notifier_args(n_port, c_port, files, site_file), work)
    wait_for_port(c_port)
    return notifier, n_port, f"http://127.0.0.1:{c_port}"


@defer.inlineCallbacks
def bridge_run(
    reactor: Any,
    sessions: int,
    seconds: float,
    work: Path,
    site_file: Path,
    scripts: dict[str, list[bytes]],
    traffic: dict[str, Any],
    topics: dict[str, list[str]],
) -> Any:
    """The bridge: memory per idle session, then deliveries under traffic."""
    files = pki.SitePKI.in_dir(work / "pki")
    notifier, n_port, control = start_notifier(
        f"notifier-bridge-{sessions}", site_file, files, work
    )
    b_port = free_port()
    bridge = Server(
        f"bridge-{sessions}",
        bridge_args(n_port, b_port, work, "--session-timeout", "3600", "--trim-interval", "2"),
        work,
    )
    out: dict[str, Any] = {}
    try:
        wait_for_port(b_port)
        yield wait_registered(reactor, control)
        # Memory as the marginal cost of a session: from the first tenth to all of them,
        # so that one-time growth (caches, the first heap arenas) is not counted per session.
        users = list(scripts)
        first = max(1, sessions // 10)
        head = {u: scripts[u] for u in users[:first]}
        tail = {u: scripts[u] for u in users[first:]}
        watchers = yield connect_all(reactor, b_port, files.ca, head, logon_only=True)
        yield task.deferLater(reactor, 0.5, lambda: None)
        rss0 = rss_kb(bridge)
        watchers += yield connect_all(reactor, b_port, files.ca, tail, logon_only=True)
        yield task.deferLater(reactor, 0.5, lambda: None)
        out["bridge_kb_per_idle_tls_session"] = round((rss_kb(bridge) - rss0) / len(tail), 1)
        out["logon_errors"] = sum(w.errors for w in watchers)
        yield run_watches(watchers)
        out["bridge_rss_mb_after_watches"] = round(rss_kb(bridge) / 1024, 1)
        yield task.deferLater(reactor, 3.0, lambda: None)  # a trim (--trim-interval 2) ran
        out["bridge_rss_mb_watching"] = round(rss_kb(bridge) / 1024, 1)
        workgroups = sorted(
            {
                t.split(":", 1)[1]
                for ts in topics.values()
                for t in ts
                if t.startswith("statistics:")
            }
        )
        switcher = SupervisorSwitcher(dict(zip(scripts, watchers, strict=True)), topics, workgroups)
        switching = task.LoopingCall(switcher.tick)
        switching.clock = reactor
        switching.start(0.5, now=False)
        out["bridge"] = yield measure(
            reactor, control, watchers, [bridge, notifier], traffic, seconds
        )
        switching.stop()
        out["bridge"]["supervisor_switches"] = switcher.switches
        for w in watchers:
            w.transport.loseConnection()
    finally:
        bridge.stop()
        notifier.stop()
    return out


@defer.inlineCallbacks
def reference_run(
    reactor: Any,
    sessions: int,
    seconds: float,
    work: Path,
    site_file: Path,
    plan_file: Path,
    scripts: dict[str, list[bytes]],
    traffic: dict[str, Any],
) -> Any:
    """The minimal fan-out server on a fresh Notifier with the same site, seed and traffic."""
    files = pki.SitePKI.in_dir(work / "pki")
    notifier, n_port, control = start_notifier(
        f"notifier-minimal-{sessions}", site_file, files, work
    )
    r_port = free_port()
    ref = Server.script(
        f"minimal-{sessions}",
        "minimal_router.py",
        [
            "--port",
            str(r_port),
            "--notifier-port",
            str(n_port),
            "--pki",
            str(work / "pki"),
            "--plan",
            str(plan_file),
        ],
        work,
    )
    try:
        wait_for_port(r_port)
        yield wait_registered(reactor, control)
        watchers = yield connect_all(reactor, r_port, files.ca, scripts, logon_only=False)
        result = yield measure(reactor, control, watchers, [ref, notifier], traffic, seconds)
        for w in watchers:
            w.transport.loseConnection()
    finally:
        ref.stop()
        notifier.stop()
    return result


@defer.inlineCallbacks
def one_size(reactor: Any, sessions: int, seconds: float, work: Path) -> Any:
    from smbridge.notifier.sizing import sizing_site_dict

    m = mix(sessions)
    site = sizing_site_dict(
        agents=m["agents"], supervisors=m["supervisors"], business=m["business"], seed=1
    )
    site.setdefault("traffic", {})["callsPerSecond"] = 0
    site_file = work / f"site-{sessions}.yaml"
    site_file.write_text(yaml.safe_dump(site, sort_keys=False))
    topics, scripts = plan_for(site)
    plan_file = work / f"plan-{sessions}.json"
    plan_file.write_text(json.dumps(topics))
    pki.ensure_site_pki(work / "pki")
    # Agents at about 80 % of what they can handle (handle 15 s + follow-up 3 s), so
    # pickups, My Interactions and status changes all happen within the window.
    traffic = {
        "callsPerSecond": round(0.8 * m["agents"] / 18, 1),
        "handleSeconds": 15,
        "followUpSeconds": 3,
        "businessCallsPerSecond": round(m["business"] / 300, 2),
        "seed": 7,
    }
    result: dict[str, Any] = {
        "sessions": sessions,
        "mix": m,
        "traffic": traffic,
        "watches": sum(len(t) for t in topics.values()),
    }
    result.update(
        (yield bridge_run(reactor, sessions, seconds, work, site_file, scripts, traffic, topics))
    )
    result["minimal"] = yield reference_run(
        reactor, sessions, seconds, work, site_file, plan_file, scripts, traffic
    )
    b, r = result["bridge"], result["minimal"]
    if b["deliveries_per_cpu_s"] and r["deliveries_per_cpu_s"]:
        result["ratio_deliveries_per_cpu_s"] = round(
            b["deliveries_per_cpu_s"] / r["deliveries_per_cpu_s"], 3
        )
    return result


@defer.inlineCallbacks
def main(reactor: Any, args: argparse.Namespace) -> Any:
    work = Path(tempfile.mkdtemp(prefix="smbridge-sizing-"))
    results: dict[str, Any] = {"seconds": args.seconds, "runs": []}
    for size in args.sizes:
        r = yield one_size(reactor, size, args.seconds, work)
        results["runs"].append(r)
        b, m = r["bridge"], r["minimal"]
        print(
            f"{size} sessions: bridge {b['deliveries_per_s']}/s "
            f"({b['cpu_us_per_delivery']} us CPU each, p50 {b['delay_ms_p50']} ms, "
            f"p99 {b['delay_ms_p99']} ms), minimal {m['deliveries_per_s']}/s "
            f"({m['cpu_us_per_delivery']} us), ratio per CPU-s "
            f"{r.get('ratio_deliveries_per_cpu_s')}, "
            f"{r['bridge_kb_per_idle_tls_session']} KB per idle TLS session",
            flush=True,
        )
    path = write_results(args.name, results)
    print(f"results: {path}  (work: {work})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--name", default="sizing")
    parser.add_argument(
        "--quick", action="store_true", help="200 sessions for 2 s (tests/test_sizing_bench.py)"
    )
    options = parser.parse_args()
    if options.quick:
        options.sizes, options.seconds, options.name = [200], 2.0, "sizing-quick"
    task.react(main, [options])
