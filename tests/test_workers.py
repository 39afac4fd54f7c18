"""Several bridge processes as one bridge: pure parts, the Notifier's one record, sockets."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from smbridge.codec.frames import Decoder, Frame
from smbridge.errors import BadRequest
from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.options import parse
from smbridge.workers.aggregate import (
    WorkerAnswer,
    merge_bandwidth,
    merge_metrics,
    merge_sessions,
    merge_status,
    parse_exposition,
)
from smbridge.workers.restart import RestartPolicy
from smbridge.workers.reuseport import ReusePortEndpoint, reserve
from smbridge.workers.supervisor import Supervisor
from smbridge.workers.worker import ParentWatch, admin_socket

WORKER_0 = """# HELP smbridge_sessions Sessions, by state and transport.
# TYPE smbridge_sessions gauge
smbridge_sessions{state="active",transport="tls"} 3.0
# HELP smbridge_logons_total Logons.
# TYPE smbridge_logons_total counter
smbridge_logons_total{outcome="ok"} 5.0
# HELP smbridge_accepting 1 while the bridge takes new sessions.
# TYPE smbridge_accepting gauge
smbridge_accepting 1.0
# HELP process_start_time_seconds Start time of the process.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1000.5
# HELP smbridge_logon_duration_seconds Logon time.
# TYPE smbridge_logon_duration_seconds histogram
smbridge_logon_duration_seconds_bucket{le="0.01"} 2.0
smbridge_logon_duration_seconds_bucket{le="+Inf"} 5.0
smbridge_logon_duration_seconds_sum 0.25
smbridge_logon_duration_seconds_count 5.0
"""
WORKER_1 = """# HELP smbridge_sessions Sessions, by state and transport.
# TYPE smbridge_sessions gauge
smbridge_sessions{state="active",transport="tls"} 4.0
smbridge_sessions{state="active",transport="wss"} 1.0
# HELP smbridge_logons_total Logons.
# TYPE smbridge_logons_total counter
smbridge_logons_total{outcome="ok"} 7.0
# HELP smbridge_accepting 1 while the bridge takes new sessions.
# TYPE smbridge_accepting gauge
smbridge_accepting 1.0
# HELP process_start_time_seconds Start time of the process.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 999.25
# HELP smbridge_logon_duration_seconds Logon time.
# TYPE smbridge_logon_duration_seconds histogram
smbridge_logon_duration_seconds_bucket{le="0.01"} 1.0
smbridge_logon_duration_seconds_bucket{le="+Inf"} 7.0
smbridge_logon_duration_seconds_sum 0.5
smbridge_logon_duration_seconds_count 7.0
"""


def samples(text: str) -> dict[tuple[str, str], float]:
    return {k: v for f in parse_exposition(text) for k, v in f.samples.items()}


def test_metrics_sum_counters_gauges_and_histograms_and_keep_one_start_time() -> None:
    """Same name and labels are summed; the start time is the earliest; a flag is not summed."""
    answers = [WorkerAnswer(0, 10, True, 0, ""), WorkerAnswer(1, 11, True, 2, "")]
    text = merge_metrics([WORKER_0, WORKER_1], answers, 2)
    got = samples(text)
    assert got[("smbridge_sessions", '{state="active",transport="tls"}')] == 7
    assert got[("smbridge_sessions", '{state="active",transport="wss"}')] == 1
    assert got[("smbridge_logons_total", '{outcome="ok"}')] == 12
    assert got[("smbridge_accepting", "")] == 1
    assert got[("process_start_time_seconds", "")] == 999.25
    assert got[("smbridge_logon_duration_seconds_bucket", '{le="0.01"}')] == 3
    assert got[("smbridge_logon_duration_seconds_bucket", '{le="+Inf"}')] == 12
    assert got[("smbridge_logon_duration_seconds_sum", "")] == 0.75
    assert got[("smbridge_logon_duration_seconds_count", "")] == 12
    assert got[("smbridge_workers", "")] == 2
    assert got[("smbridge_worker_up", '{worker="0"}')] == 1
    assert got[("smbridge_worker_restarts_total", '{worker="1"}')] == 2
    assert text.count("# TYPE smbridge_sessions gauge") == 1


def test_metrics_name_a_worker_that_is_down() -> None:
    """A worker that did not answer is up 0 and adds nothing."""
    answers = [WorkerAnswer(0, 10, True, 0, ""), WorkerAnswer(1, None, False, 1, None)]
    got = samples(merge_metrics([WORKER_0], answers, 2))
    assert got[("smbridge_worker_up", '{worker="1"}')] == 0
    assert got[("smbridge_workers_alive", "")] == 1
    assert got[("smbridge_logons_total", '{outcome="ok"}')] == 5


def _status(total: int, tls: int, accepting: bool, pending: int) -> dict[str, Any]:
    return {
        "name": "bridge1",
        "accepting": accepting,
        "acceptMode": "default",
        "sessions": {"total": total, "byTransport": {"tls": tls, "wss": total - tls}},
        "topics": 2,
        "memory": {"returnedKb": 1},
        "notifier": {"state": "up"},
        "drain": {"active": pending > 0, "pending": pending},
    }


def test_status_sums_counts_and_lists_each_worker() -> None:
    """One status: sessions, transports, topics and drain summed; each worker's pid and count."""
    answers = [
        WorkerAnswer(0, 10, True, 0, _status(3, 2, True, 0)),
        WorkerAnswer(1, 11, True, 1, _status(4, 4, False, 2)),
        WorkerAnswer(2, None, False, 3, None),
    ]
    merged = merge_status(answers, 3)
    assert merged["sessions"] == {"total": 7, "byTransport": {"tls": 6, "wss": 1}}
    assert (merged["topics"], merged["memory"], merged["accepting"]) == (4, {"returnedKb": 2}, True)
    assert merged["drain"] == {"active": True, "pending": 2}
    assert merged["notifier"]["linksUp"] == 2
    workers = merged["workers"]
    assert (workers["count"], workers["alive"]) == (3, 2)
    assert [(w["pid"], w["alive"], w["sessions"], w["restarts"]) for w in workers["list"]] == [
        (10, True, 3, 0),
        (11, True, 4, 1),
        (None, False, None, 3),
    ]


def test_sessions_and_bandwidth_merge() -> None:
    """Sessions: every row once, naming its worker; bandwidth: newest samples added together."""
    rows = merge_sessions(
        [
            WorkerAnswer(0, 1, True, 0, {"sessions": [{"sessionId": "a"}]}),
            WorkerAnswer(1, 2, True, 0, {"sessions": [{"sessionId": "b"}, {"sessionId": "c"}]}),
        ]
    )
    assert rows["count"] == 3
    assert [(r["sessionId"], r["worker"]) for r in rows["sessions"]] == [
        ("a", 0),
        ("b", 1),
        ("c", 1),
    ]

    def band(*highs: int) -> dict[str, Any]:
        return {
            "stepSeconds": 1.0,
            "totalBytesPerInterval": 100,
            "samples": [{"t": i, "high": h, "medium": 0, "low": 1} for i, h in enumerate(highs)],
        }

    merged = merge_bandwidth(
        [WorkerAnswer(0, 1, True, 0, band(1, 2, 3)), WorkerAnswer(1, 2, True, 0, band(10, 20))]
    )
    assert [s["high"] for s in merged["samples"]] == [1, 12, 23]
    assert [s["low"] for s in merged["samples"]] == [1, 2, 2]
    assert merged["totalBytesPerInterval"] == 200


# --- restart backoff -------------------------------------------------------------------
def naive_delays(runs: list[float], base: float, cap: float, stable: float) -> list[float]:
    """The reference: count the short runs in a row before each exit."""
    delays, streak = [], 0
    for ran in runs:
        if ran >= stable:
            streak = 0
        delays.append(min(cap, base * 2**streak))
        streak += 1
    return delays


@settings(max_examples=200, deadline=None)
# Run lengths in quarter seconds: sums stay exact, so a run of exactly ``stable`` seconds
# is not read back as 29.999... from the clock's differences (the boundary is the model's).
@given(st.lists(st.integers(min_value=0, max_value=400).map(lambda q: q / 4), max_size=30))
def test_restart_backoff_matches_the_reference(runs: list[float]) -> None:
    """Each exit waits base * 2^(short runs in a row), capped; a stable run starts over."""
    policy = RestartPolicy(base=0.5, cap=30.0, stable=30.0)
    now, got = 0.0, []
    for ran in runs:
        policy.started(0, now)
        now += ran
        delay = policy.exited(0, now)
        got.append(delay)
        now += delay
    assert got == naive_delays(runs, 0.5, 30.0, 30.0)


def test_restart_backoff_is_per_worker() -> None:
    """One worker's failures do not slow another's restart."""
    policy = RestartPolicy()
    for _ in range(4):
        policy.started(0, 0.0)
        policy.exited(0, 1.0)
    policy.started(1, 0.0)
    assert (policy.failures(0), policy.exited(1, 1.0)) == (4, 0.5)


# --- the Notifier: one record per bridge name ------------------------------------------
class Link:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_event(self, sub_id: int, frame: bytes) -> None:
        self.sent.append(frame)

    def frames(self) -> list[Frame]:
        out = []
        for raw in self.sent:
            (frame,) = Decoder().feed(raw)
            assert isinstance(frame, Frame)
            out.append(frame)
        return out


def worker_info(worker: int, workers: int = 2, accept: str = "default") -> dict[str, Any]:
    return {
        "name": "bridge1",
        "fqdn": "localhost",
        "kind": "on-server",
        "accept": accept,
        "worker": worker,
        "workers": workers,
    }


def roster_entry(n: Notifier) -> dict[str, Any]:
    (entry,) = [b for b in n.roster() if b["name"] == "bridge1"]
    return entry


def test_worker_links_make_one_bridge_available_while_any_is_up() -> None:
    """Two workers: one roster entry, sessions over both; up until the last link drops."""
    n, clock = Notifier(demo_site(), Clock()), None
    a, b = Link(), Link()
    n.register(worker_info(0), a)
    n.register(worker_info(1), b)
    assert len([e for e in n.roster() if e["name"] == "bridge1"]) == 1
    n.session_opened(a, {"sessionId": "s1", "user": "agent1"})
    n.session_opened(b, {"sessionId": "s2", "user": "agent2"})
    (state,) = n.registry.state()
    assert (state["sessions"], state["workersUp"], state["workers"]) == (2, 2, 2)
    n.link_lost(a)
    assert roster_entry(n)["available"] is True
    (state,) = n.registry.state()
    assert (state["sessions"], state["workersUp"]) == (1, 1)  # a's sessions went with it
    n.link_lost(b)
    assert roster_entry(n)["available"] is False
    assert clock is None


def test_set_accept_reaches_every_worker_and_the_mode_is_one_value() -> None:
    """The control API's SetAccept goes to each worker link; BridgeChanged sets the one mode."""
    n = Notifier(demo_site(), Clock())
    a, b = Link(), Link()
    n.register(worker_info(0), a)
    n.register(worker_info(1), b)
    a.sent.clear()
    b.sent.clear()
    n.set_bridge_accept("bridge1", "maintenance")
    for link in (a, b):
        assert [f.parsed() for f in link.frames()] == [{"accept": "maintenance"}]
    n.bridge_changed(a, {"accept": "maintenance"})
    assert roster_entry(n)["available"] is False


def test_a_joining_worker_is_told_the_bridges_mode() -> None:
    """A worker registering with another mode is sent the bridge's mode after Register."""
    clock = Clock()
    n = Notifier(demo_site(), clock)
    a, b = Link(), Link()
    n.register(worker_info(0, accept="maintenance"), a)
    n.register(worker_info(1, accept="default"), b)
    assert roster_entry(n)["available"] is False
    b.sent.clear()
    clock.advance(0)
    assert [f.parsed() for f in b.frames()] == [{"accept": "maintenance"}]


def test_a_restarted_worker_replaces_only_its_own_link() -> None:
    """The same worker index on a new link takes that worker's place; the other stays."""
    n = Notifier(demo_site(), Clock())
    a, b, a2 = Link(), Link(), Link()
    n.register(worker_info(0), a)
    n.register(worker_info(1), b)
    n.session_opened(a, {"sessionId": "s1"})
    n.register(worker_info(0), a2)
    assert (n.is_registered(a), n.is_registered(b), n.is_registered(a2)) == (False, True, True)
    (state,) = n.registry.state()
    assert (state["workersUp"], state["sessions"]) == (2, 0)


def test_a_single_process_register_still_replaces_the_bridge() -> None:
    """Without ``workers`` (or with another count) the same name on a new link replaces it."""
    n = Notifier(demo_site(), Clock())
    a, b, c = Link(), Link(), Link()
    n.register(worker_info(0), a)
    n.register(worker_info(1), b)
    n.register({"name": "bridge1", "fqdn": "localhost", "kind": "on-server"}, c)
    assert (n.is_registered(a), n.is_registered(b), n.is_registered(c)) == (False, False, True)
    (state,) = n.registry.state()
    assert (state["workersUp"], state["workers"]) == (1, 1)


@pytest.mark.parametrize("worker, workers", [(2, 2), (-1, 2), ("0", 2), (0, 65), (True, 2), (0, 0)])
def test_bad_worker_members_are_refused(worker: Any, workers: Any) -> None:
    """worker and workers must be integers with 0 <= worker < workers <= 64."""
    n = Notifier(demo_site(), Clock())
    with pytest.raises(BadRequest):
        n.register(worker_info(0) | {"worker": worker, "workers": workers}, Link())


# --- the worker's side and the supervisor's command lines --------------------------------
def test_parent_watch_fires_once_when_the_parent_changes() -> None:
    """A worker whose supervisor died (its parent pid changed) stops, once."""
    clock, parent, gone = Clock(), [100], []
    watch = ParentWatch(clock, lambda: gone.append(1), interval=1.0, parent=lambda: parent[0])
    watch.start()
    clock.advance(5)
    assert gone == []
    parent[0] = 1
    clock.advance(1)
    clock.advance(5)
    assert (gone, watch.fired) == ([1], True)


def test_worker_command_line(tmp_path: Path) -> None:
    """Each worker gets the supervisor's options, the reserved ports, the mode, I/N, the run dir."""
    argv = ["--demo", "--workers", "2", "--work-path", str(tmp_path), "--wss-port", "off"]
    config = parse(argv)
    supervisor = Supervisor(config, argv, Clock())
    supervisor.ports = {"port": 4000, "ws-port": 4001, "wss-port": None}
    supervisor.accept_mode = "maintenance"
    args = supervisor.worker_args(1)
    assert args[: len(argv) + 1] == ["smbridge", *argv]
    assert args[len(argv) + 1 :] == [
        "--port", "4000", "--ws-port", "4001", "--wss-port", "off",
        "--accept", "maintenance", "--worker", "1/2", "--run-dir", str(tmp_path.resolve() / "run"),
    ]  # fmt: skip
    worker = parse(args[1:])
    assert (worker.worker_index, worker.worker_count, worker.port) == (1, 2, 4000)
    assert admin_socket(worker.run_dir or tmp_path, 1).name == "admin-1.sock"


class ReusePort(TestCase):
    def test_two_workers_listen_on_one_reserved_port(self) -> Any:
        """A reserved port takes workers' SO_REUSEPORT listeners, and no plain listener."""
        reserved = reserve("127.0.0.1", 0)
        self.addCleanup(reserved.close)
        number = reserved.getsockname()[1]
        factory = Factory.forProtocol(Protocol)
        ports = []
        for _ in range(2):
            port = self.successResultOf(
                ReusePortEndpoint(reactor, number, "127.0.0.1", 16).listen(factory)
            )
            ports.append(port)
            self.addCleanup(port.stopListening)
        assert [p.getHost().port for p in ports] == [number, number]
        plain = socket.socket()
        self.addCleanup(plain.close)
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", number))

    def test_a_taken_port_fails_as_listeners_do(self) -> None:
        """A port held without SO_REUSEPORT: CannotListenError (named by ListenFailed)."""
        plain = socket.socket()
        self.addCleanup(plain.close)
        plain.bind(("127.0.0.1", 0))
        plain.listen(1)
        number = plain.getsockname()[1]
        with pytest.raises(CannotListenError):
            reserve("127.0.0.1", number)
        failure = self.failureResultOf(
            ReusePortEndpoint(reactor, number, "127.0.0.1").listen(Factory.forProtocol(Protocol))
        )
        failure.trap(CannotListenError)


def test_ticket_owners_publish_and_find_another_workers_key(tmp_path: Path) -> None:
    """Each worker publishes its key names (0600); a name is found as its worker's, own ones not."""
    from smbridge.workers.handoff import TicketOwners, names_file

    clock = Clock()
    mine0, mine1 = {b"a" * 16}, {b"b" * 16, b"c" * 16}
    w0 = TicketOwners(tmp_path, 0, 2, lambda: mine0, clock)
    w1 = TicketOwners(tmp_path, 1, 2, lambda: mine1, clock)
    w0.publish()
    w1.publish()
    assert names_file(tmp_path, 1).stat().st_mode & 0o777 == 0o600
    assert (w0.owner(b"b" * 16), w0.owner(b"c" * 16), w0.owner(b"a" * 16)) == (1, 1, None)
    assert (w1.owner(b"a" * 16), w1.owner(b"z" * 16)) == (0, None)
    mine1.add(b"d" * 16)  # a rotation: published again, seen after the refresh interval
    w1.publish()
    assert w0.owner(b"d" * 16) is None
    clock.advance(1.0)
    assert w0.owner(b"d" * 16) == 1
