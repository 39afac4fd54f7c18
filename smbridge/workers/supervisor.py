"""``twistd smbridge --workers N``: the supervisor, N worker processes presented as one bridge.

The supervisor serves no client. At start it makes the run directory (0700),
reserves the client port, ws and wss (:func:`smbridge.workers.reuseport.reserve`: a
taken port fails here, once, naming its option), serves the admin API over the
workers' (:mod:`smbridge.workers.admin`) and spawns worker ``I`` as ``twistd -n
smbridge <the same options> --worker I/N --run-dir <run dir>`` with the port numbers
it reserved. Each worker listens on the shared ports itself (SO_REUSEPORT), opens
its own Notifier link and serves its admin API on ``<run dir>/admin-<I>.sock``.

A worker that exits is started again after a backoff (:mod:`smbridge.workers.restart`),
with the accept mode last set through the supervisor; one that stops answering its
admin socket for :data:`HUNG_AFTER` seconds while its process runs is killed (so it
does not keep taking its share of new connections) and restarted. Stopping the
supervisor (SIGTERM) sends SIGTERM to every worker, which shuts down as a single
bridge does (Migrate or SessionTerminated to each session), and waits for them,
killing any still there after ``--shutdown-grace`` plus :data:`STOP_MARGIN` seconds.
Workers inherit the supervisor's standard output and error (their log lines); with
``--config``, SIGHUP to the supervisor is passed to every worker (each re-reads it).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.config import BridgeConfig
from smbridge.listening import ListenFailed
from smbridge.workers.admin import WorkerClient, supervisor_admin
from smbridge.workers.restart import RestartPolicy
from smbridge.workers.reuseport import reserve

READY_INTERVAL = 0.2  # seconds between readiness checks at start
HEALTH_INTERVAL = 2.0  # seconds between the supervisor's checks of each worker
HUNG_AFTER = 30.0  # a running worker silent on its admin socket this long is killed
STOP_MARGIN = 10.0  # beyond --shutdown-grace before a worker that will not stop is killed
TWISTD = "from twisted.scripts.twistd import run; run()"

# The option that sets each shared port, named when the supervisor cannot reserve it.
PORT_OPTIONS = {
    "client-listener": "--port",
    "ws-listener": "--ws-port",
    "wss-listener": "--wss-port",
}


@dataclass
class WorkerSlot:
    """One worker: its process (None while it is down), pid, restarts and health."""

    index: int
    process: IProcessTransport | None = None
    pid: int | None = None
    started: float = 0.0
    restarts: int = 0
    answered: float | None = None  # the last time its admin socket answered
    healthy: bool = False  # its last /healthz said 200 (its Notifier link is up)
    pending: IDelayedCall | None = None  # its restart, scheduled
    ended: defer.Deferred[None] | None = None  # fires when the running process ends

    @property
    def alive(self) -> bool:
        return self.process is not None


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.supervisor.worker_ended(self.index, reason)


class Supervisor(MultiService):
    """Runs ``config.workers`` bridge processes and their one admin surface."""

    log = Logger()

    def __init__(
        self,
        config: BridgeConfig,
        argv: tuple[str, ...] | list[str],
        reactor: Any,
        parse: Callable[[list[str]], BridgeConfig] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.argv = list(argv)
        self.reactor = reactor
        self.parse = parse  # the supervisor re-reads its own token on a reload
        assert config.run_dir is not None
        self.run_dir: Path = config.run_dir
        self.count = config.workers
        self.slots = [WorkerSlot(i) for i in range(self.count)]
        self.policy = RestartPolicy()
        self.accept_mode: str | None = None  # set through the admin API; given to restarts
        self.extra_args: list[str] = []  # the demo adds its Notifier's ports
        self.ports: dict[str, int | None] = {}
        self._reserved: list[socket.socket] = []
        self._health = LoopingCall(self._check_health)
        self._health.clock = reactor
        self._stopping = False
        self._previous_hup: Any = None
        self._ready: list[defer.Deferred[None]] = []
        self.ready = False  # every worker has answered healthy once
        self._readiness = LoopingCall(self._check_ready)
        self._readiness.clock = reactor
        self.admin: Any = None  # the admin ListenerService (smbridge.workers.admin)
        self.client = WorkerClient(reactor, self.run_dir, lambda: self.config.admin_token)

    # --- start -------------------------------------------------------------------------
    def startService(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o700)  # the workers' private sockets
        self._reserve_ports()
        self.admin = supervisor_admin(self)
        if self.admin is not None:
            self.admin.setServiceParent(self)
        try:
            super().startService()  # type: ignore[no-untyped-call]
        except ListenFailed as e:
            e.option = e.option or "--admin-port"
            self._release_ports()
            raise
        self.log.info(
            "Supervisor: {count} workers on the client port {port} (run dir {run_dir})",
            count=self.count,
            port=self.ports.get("port"),
            run_dir=str(self.run_dir),
            event="workers.start",
        )
        if self.config.config_file is not None:  # SIGHUP: every worker re-reads the file
            self._previous_hup = signal.signal(signal.SIGHUP, self._sighup)
        if not self.extra_args_needed:
            self.start_workers()

    def _sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.signal_all, signal.SIGHUP)

    extra_args_needed = False  # the demo sets it: workers start once its Notifier is bound

    def start_workers(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        self._health.start(HEALTH_INTERVAL, now=False)
        self._readiness.start(READY_INTERVAL, now=False)

    def when_ready(self) -> defer.Deferred[None]:
        """Fire once every worker has answered healthy (its ports bound, its link up)."""
        if self.ready:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._ready.append(d)
        return d

    def _check_ready(self) -> None:
        """At start: ask every worker often until each is healthy, then fire when_ready."""
        if all(slot.healthy for slot in self.slots):
            self._readiness.stop()
            self.ready = True
            self.log.info("All {count} workers are up", count=self.count, event="workers.ready")
            waiters, self._ready = self._ready, []
            for waiter in waiters:
                waiter.callback(None)
            return
        for slot in self.slots:
            if slot.process is not None and not slot.healthy:
                d = self.client.request(slot.index, b"GET", b"/healthz")
                d.addCallbacks(self._answered, lambda _: None, callbackArgs=(slot, slot.pid))

    def _reserve_ports(self) -> None:
        config = self.config
        wanted = [("client-listener", "port", config.port)]
        if config.ws_port is not None:
            wanted.append(("ws-listener", "ws-port", config.ws_port))
        if config.wss_port is not None:
            wanted.append(("wss-listener", "wss-port", config.wss_port))
        self.ports = {"port": None, "ws-port": None, "wss-port": None}
        for name, flag, port in wanted:
            try:
                sock = reserve(config.interface, port)
            except CannotListenError as e:
                self._release_ports()
                failed = ListenFailed.of(name, Failure(e))
                failed.option = PORT_OPTIONS[name]
                raise failed from None
            self._reserved.append(sock)
            self.ports[flag] = int(sock.getsockname()[1])

    def _release_ports(self) -> None:
        for sock in self._reserved:
            sock.close()
        self._reserved = []

    def worker_args(self, index: int) -> list[str]:
        """Worker ``index``'s command line after ``twistd -n --pidfile=``."""
        args = ["smbridge", *self.argv]
        for flag, port in self.ports.items():
            args += [f"--{flag}", "off" if port is None else str(port)]
        if self.accept_mode is not None:
            args += ["--accept", self.accept_mode]
        args += [*self.extra_args, "--worker", f"{index}/{self.count}"]
        return [*args, "--run-dir", str(self.run_dir)]

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.pending = None
        if self._stopping:
            return
        args = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", *self.worker_args(slot.index)]
        process = self.reactor.spawnProcess(
            _WorkerProtocol(self, slot.index),
            sys.executable,
            args,
            env=dict(os.environ),
            path=os.getcwd(),
            childFDs={0: "w", 1: 1, 2: 2},
        )
        slot.process, slot.pid = process, process.pid
        slot.started = self.reactor.seconds()
        slot.answered, slot.healthy = None, False
        slot.ended = defer.Deferred()
        self.policy.started(slot.index, slot.started)
        self.log.info(
            "Worker {index} started (pid {pid})",
            index=slot.index,
            pid=slot.pid,
            event="workers.spawned",
        )

    # --- exits and health --------------------------------------------------------------
    def worker_ended(self, index: int, reason: Failure) -> None:
        slot = self.slots[index]
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        pid, slot.process, slot.pid, slot.healthy = slot.pid, None, None, False
        ended, slot.ended = slot.ended, None
        if ended is not None:
            ended.callback(None)
        if self._stopping:
            self.log.info(
                "Worker {index} (pid {pid}) stopped", index=index, pid=pid, event="workers.stopped"
            )
            return
        delay = self.policy.exited(index, self.reactor.seconds())
        slot.restarts += 1
        self.log.error(
            "Worker {index} (pid {pid}) exited ({how}); restarting it in {delay} s",
            index=index,
            pid=pid,
            how=f"signal {sig}" if sig else f"status {code}",
            delay=delay,
            event="workers.exited",
        )
        slot.pending = self.reactor.callLater(delay, self._spawn, slot)

    def _check_health(self) -> None:
        now = self.reactor.seconds()
        for slot in self.slots:
            if slot.process is None:
                continue
            since = slot.answered if slot.answered is not None else slot.started
            if now - since > HUNG_AFTER:
                self.log.error(
                    "Worker {index} (pid {pid}) has not answered for {silent:.0f} s; killing it",
                    index=slot.index,
                    pid=slot.pid,
                    silent=now - since,
                    event="workers.hung",
                )
                self._signal(slot, signal.SIGKILL)
                continue
            d = self.client.request(slot.index, b"GET", b"/healthz")
            d.addCallbacks(self._answered, lambda _: None, callbackArgs=(slot, slot.pid))

    def _answered(self, answer: tuple[int, bytes], slot: WorkerSlot, pid: int | None) -> None:
        if slot.pid == pid and slot.process is not None:
            slot.answered = self.reactor.seconds()
            slot.healthy = answer[0] == 200

    def _signal(self, slot: WorkerSlot, sig: int) -> None:
        if slot.process is not None:
            try:
                slot.process.signalProcess(sig)
            except OSError:  # already gone; processEnded follows
                pass

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every running worker (the supervisor's SIGHUP: reload)."""
        for slot in self.slots:
            self._signal(slot, sig)

    # --- stop --------------------------------------------------------------------------
    def stopService(self) -> defer.Deferred[None]:
        self._stopping = True
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        for loop in (self._health, self._readiness):
            if loop.running:
                loop.stop()
        waits: list[defer.Deferred[Any]] = []
        for slot in self.slots:
            if slot.pending is not None and slot.pending.active():
                slot.pending.cancel()
            slot.pending = None
            if slot.process is not None and slot.ended is not None:
                waits.append(slot.ended)
                self._signal(slot, signal.SIGTERM)
        grace = self.config.shutdown_grace + STOP_MARGIN
        killer = self.reactor.callLater(grace, self._kill_all)
        done = defer.DeferredList(waits)

        def finished(_: object) -> defer.Deferred[Any]:
            if killer.active():
                killer.cancel()
            self._release_ports()
            return defer.maybeDeferred(super(Supervisor, self).stopService)

        return done.addCallback(finished).addCallback(lambda _: None)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                self.log.warn(
                    "Worker {index} (pid {pid}) did not stop; killing it",
                    index=slot.index,
                    pid=slot.pid,
                    event="workers.killed",
                )
                self._signal(slot, signal.SIGKILL)
