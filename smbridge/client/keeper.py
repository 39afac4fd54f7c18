"""One logical session that survives dropped connections and Migrate (PROTOCOL §4.4-4.6).

:class:`SessionKeeper` logs on like :func:`~smbridge.client.logon_anywhere` and then
keeps the session going without the application's help:

- **Dropped connection**: ResumeSession on the same bridge, a few times with a
  growing pause within the linger time (:func:`~smbridge.client.order.resume_delays`).
  It sends ``received``, the number of notification frames it has seen; the bridge
  replays the rest, so listeners get every notification exactly once and in order.
  With ``gap: true`` the bridge could not replay and sends fresh snapshots: the
  keeper says ``resynchronised`` (reason ``gap``) before them.
- **Session gone** (``unknown-session``, ``logon-failed``/``bad-resume-token``, or
  every resume attempt failed): a fresh logon by the reconnect order
  (:func:`~smbridge.client.order.reconnect_plan`: the top group ``top_tries`` times,
  then the full list), then every watch the application holds is re-issued and
  ``resynchronised`` (reason ``relogged``) carries their snapshots. A
  ``logon-failed`` answer stops it (``ended``); nothing else does.
- **Migrate**: a fresh logon on the first bridge of the notice's roster that takes
  it (each once; redirects followed), watches restored (``migrated``, then
  ``resynchronised``), then DestroySession of the old session.

The typed URI may be ``tls://`` (or ``tcp://``) or ``wss://`` (or ``ws://``) through
the public proxy: resumes go back to the URI the session was on, and a roster sent to
a WebSocket client names each bridge by a ``uri`` through the same proxy, which the
fresh logons and Migrate dial (:mod:`smbridge.client.reach`). ``logon-throttled`` is
no logon failure: the same bridge is tried again after ``retryAfter``.

A heartbeat unanswered for ``heartbeat_timeout`` seconds (default 60) counts as a
dropped connection, so a network that dies silently is noticed too; a CreateSession
or ResumeSession unanswered for ``request_timeout`` seconds (default 30) counts as a
failed attempt.

The password is kept in memory, for these automatic logons only; it is never
written anywhere nor logged, and neither is the resume token. Requests made while
the keeper reconnects wait for the session to be back.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.client.discovery import (
    Dial,
    Landing,
    default_dial,
    first_logon,
    resolve_all,
    resolve_quietly,
    retry_after,
    try_in_order,
)
from smbridge.client.order import (
    DEFAULT_BACKOFF,
    Backoff,
    migrate_plan,
    reconnect_plan,
    resume_delays,
)
from smbridge.client.protocol import ClientError
from smbridge.client.roster_cache import KEPT, RosterCache
from smbridge.client.session import BridgeClient, NotificationListener, ResumeState
from smbridge.client.uri import parse_bridge_uri
from smbridge.client.watchset import WatchSet
from smbridge.codec import Frame, name_of
from smbridge.codec.catalog import (
    MIGRATE,
    SESSION_TERMINATED,
    UNWATCH_QUEUE,
    WATCH_QUEUE,
    MessageType,
)
from smbridge.roster.attempts import RECONNECT_TOP_TRIES, attempt_groups

# Failures that say nothing about the session: the connection, not the bridge's answer.
CONNECTION_CODES = frozenset(
    {"connection-lost", "not-connected", "connect-timeout", "request-timeout", "bad-frame"}
)
# SessionTerminated reasons after which the keeper does not log on again.
FINAL_REASONS = frozenset({"logout", "expired"})


class State(enum.Enum):
    IDLE = "idle"
    CONNECTED = "connected"
    RESUMING = "resuming"
    RELOGGING = "relogging"
    MIGRATING = "migrating"
    ENDED = "ended"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.CONNECTED, State.ENDED}),
    State.CONNECTED: frozenset({State.RESUMING, State.RELOGGING, State.MIGRATING, State.ENDED}),
    State.RESUMING: frozenset({State.CONNECTED, State.RELOGGING, State.ENDED}),
    State.RELOGGING: frozenset({State.CONNECTED, State.RELOGGING, State.ENDED}),
    State.MIGRATING: frozenset({State.CONNECTED, State.RELOGGING, State.ENDED}),
    State.ENDED: frozenset(),
}


class InvalidTransition(Exception):
    pass


@dataclass(frozen=True)
class KeeperEvent:
    """What happened to the session, for the application.

    ``kind``: ``disconnected`` (the connection dropped; the keeper is on it),
    ``resumed`` (the same session is back; ``gap`` tells whether notifications were
    lost), ``relogged`` / ``migrated`` (a new session on ``server``),
    ``resynchronised`` (rebuild your view: ``snapshots`` maps each watch's topic to
    its fresh snapshot; with reason ``gap`` the snapshots follow as notifications),
    ``ended`` (for good: ``reason`` is ``logoff``, ``logon-failed``, ``no-bridge``
    or ``terminated:<reason>``).
    """

    kind: str
    reason: str | None = None
    session_id: str | None = None
    server: dict[str, Any] | None = None
    gap: bool = False
    snapshots: dict[str, Any] = field(default_factory=dict)


EventListener = Callable[[KeeperEvent], object]


class SessionKeeper:
    """A session that outlives its connections; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        typed: str,
        user: str,
        password: str,
        *,
        ca: Path | None = None,
        cache: RosterCache | None = None,
        dial: Dial | None = None,
        resolve: Callable[[str, int], defer.Deferred[list[str]]] = resolve_all,
        clock: IReactorTime | None = None,
        rng: random.Random | None = None,
        top_tries: int = RECONNECT_TOP_TRIES,
        backoff: Backoff = DEFAULT_BACKOFF,
        linger: float = 120.0,
        resume_tries: int = 4,
        rounds: int | None = None,
        heartbeat_timeout: float | None = 60.0,
        request_timeout: float = 30.0,
        **logon: Any,
    ) -> None:
        address = parse_bridge_uri(typed)
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor
        self.typed = typed
        self._host, self._port = address.host, address.port
        self.user = user
        self._password = password  # memory only, for automatic logons; never logged
        self._options = {"host": self._host, **logon}
        self._cache = cache
        self._dial: Dial = (
            dial if dial is not None else default_dial(reactor, self._host, ca, address)
        )
        self._resolve = resolve
        self._rng = rng
        self.top_tries = top_tries
        self.backoff = backoff
        self.linger = linger
        self.resume_tries = resume_tries
        self.heartbeat_timeout = heartbeat_timeout
        self.request_timeout = request_timeout  # CreateSession / ResumeSession unanswered
        self.rounds = rounds  # None: reconnect rounds go on until logoff or logon-failed
        self.state = State.IDLE
        self.client: BridgeClient | None = None
        self.reply: dict[str, Any] = {}
        self.watches = WatchSet()
        self._target: dict[str, Any] | None = None
        self._roster: dict[str, Any] | None = None
        self._addresses: list[str] = []
        self._delivered = 0  # the number of the last notification given to listeners
        self._held: list[Frame] | None = None  # notifications held while watches come back
        self._terminated: str | None = None
        self._listeners: list[NotificationListener] = []
        self._event_listeners: list[EventListener] = []
        self._waiters: list[defer.Deferred[None]] = []
        self._sleeping: defer.Deferred[None] | None = None

    # --- public ------------------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        return self.client.session_id if self.client is not None else None

    @property
    def ended(self) -> bool:
        """True once the keeper has stopped for good (logoff, logon-failed, ...)."""
        return self.state is State.ENDED

    @property
    def server(self) -> dict[str, Any] | None:
        """The bridge the session is on (the ``server`` of the last logon or resume)."""
        server = self.reply.get("server")
        return server if isinstance(server, dict) else None

    @defer.inlineCallbacks
    def start(self) -> Any:
        """The first logon (typed host, cached roster, raw addresses); fires with the reply."""
        if self.state is not State.IDLE:
            raise RuntimeError(f"already started ({self.state.value})")
        self._addresses = yield resolve_quietly(self._resolve, self._host, self._port)
        try:
            landing = yield first_logon(
                self._reactor,
                self.typed,
                self._logon,
                cache=self._cache,
                dial=self._dial,
                resolve=lambda h, p: defer.succeed(self._addresses),
                rng=self._rng,
                clock=self._clock,
            )
        except ClientError as e:
            self._end(e.code)
            raise
        self._attach(landing.client, landing.reply, landing.target)
        self._set(State.CONNECTED)
        return landing.reply

    def add_listener(self, listener: NotificationListener) -> None:
        """``listener(name, frame)`` for every notification of the session, once, in order."""
        self._listeners.append(listener)

    def remove_listener(self, listener: NotificationListener) -> None:
        self._listeners.remove(listener)

    def add_event_listener(self, listener: EventListener) -> None:
        """``listener(KeeperEvent)`` on each disconnect, resume, re-logon, migration, end."""
        self._event_listeners.append(listener)

    def remove_event_listener(self, listener: EventListener) -> None:
        self._event_listeners.remove(listener)

    def request(
        self, message: MessageType, body: dict[str, Any] | None = None
    ) -> defer.Deferred[dict[str, Any]]:
        """Any request; waits while the keeper reconnects. Watches are remembered.

        A watch is remembered from the moment it is asked until it is unwatched, or
        refused by the bridge; a fresh session gets every remembered watch again.
        Fails with ClientError ``session-ended`` once the keeper has ended.
        """
        payload = dict(body or {})
        if self.ended:
            return defer.fail(ClientError("session-ended", "the session has ended"))
        new = self.watches.record(message, payload)
        self.watches.forget(message, payload)

        def send(_: None) -> defer.Deferred[dict[str, Any]]:
            assert self.client is not None
            return self.client.request(message, payload)

        def refused(failure: Failure) -> Failure:
            error = failure.value
            if isinstance(error, ClientError) and error.code not in CONNECTION_CODES:
                self.watches.discard(new)
            return failure

        return self._when_connected().addCallback(send).addErrback(refused)

    def watch_queue(self, name: str) -> defer.Deferred[dict[str, Any]]:
        """WatchQueue, remembered; fires with the snapshot ``{queue, interactions}``."""
        return self.request(WATCH_QUEUE, {"queue": name})

    def unwatch_queue(self, name: str) -> defer.Deferred[dict[str, Any]]:
        return self.request(UNWATCH_QUEUE, {"queue": name})

    def logoff(self) -> defer.Deferred[None]:
        """End for good: stop reconnecting, DestroySession, close."""
        client = self.client
        self._end("logoff")
        if client is None:
            return defer.succeed(None)
        return client.logoff()

    # --- state -------------------------------------------------------------------------
    def _set(self, to: State) -> None:
        if to not in _TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.state.value} -> {to.value}")
        self.state = to
        if to is State.CONNECTED:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _when_connected(self) -> defer.Deferred[None]:
        if self.state is State.CONNECTED:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    def _end(self, reason: str) -> None:
        if self.state is State.ENDED:
            return
        self.state = State.ENDED
        sleeping, self._sleeping = self._sleeping, None
        if sleeping is not None:
            sleeping.cancel()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(ClientError("session-ended", f"the session has ended ({reason})"))
        self.log.info(
            "Session of {user} ended: {reason}", user=self.user, reason=reason, event="keeper.ended"
        )
        self._emit(KeeperEvent("ended", reason=reason, session_id=self.session_id))

    def _emit(self, event: KeeperEvent) -> None:
        for listener in list(self._event_listeners):
            try:
                listener(event)
            except Exception:
                self.log.failure(
                    "Event listener failed on {kind}",
                    kind=event.kind,
                    event="keeper.listener_failed",
                )

    def _sleep(self, delay: float) -> defer.Deferred[None]:
        d: defer.Deferred[None] = deferLater(self._clock, delay, lambda: None)
        self._sleeping = d
        return d

    def _run(self, work: defer.Deferred[Any]) -> None:
        def failed(failure: Failure) -> None:
            if failure.check(defer.CancelledError) and self.ended:
                return
            self.log.failure("Session keeper failed", failure, event="keeper.failed")
            self._end("unexpected")

        work.addErrback(failed)

    # --- connections -------------------------------------------------------------------
    def _logon(self, client: BridgeClient) -> defer.Deferred[dict[str, Any]]:
        return self._timed(client, client.logon(self.user, self._password, **self._options))

    def _timed(
        self, client: BridgeClient, d: defer.Deferred[dict[str, Any]]
    ) -> defer.Deferred[dict[str, Any]]:
        """No answer within ``request_timeout``: the connection is closed, ``request-timeout``."""

        def timed_out(result: dict[str, Any] | Failure, timeout: float) -> dict[str, Any]:
            client.protocol.close()
            raise ClientError("request-timeout", f"no answer within {timeout}s")

        return d.addTimeout(self.request_timeout, self._clock, onTimeoutCancel=timed_out)

    def _attach(self, client: BridgeClient, reply: dict[str, Any], target: dict[str, Any]) -> None:
        self.client = client
        self.reply = reply
        self._target = target
        self._terminated = None
        client.heartbeat_timeout = self.heartbeat_timeout
        if isinstance(reply.get("roster"), list):
            self._roster = {k: reply.get(k) for k in KEPT}
        client.protocol.add_listener(lambda frame: self._frame(client, frame))
        client.closed.addCallback(lambda reason: self._dropped(client, reason))

    def _frame(self, client: BridgeClient, frame: Frame) -> None:
        if client is not self.client:
            return  # a connection the keeper has left (Migrate, a resumed session)
        number = client.received  # BridgeClient counted this frame already
        if number <= self._delivered:
            self.log.debug("Dropped replayed notification {n}", n=number, event="keeper.duplicate")
            return
        self._delivered = number
        message = (frame.object_type, frame.event_id)
        if message == SESSION_TERMINATED:
            self._terminated = str(frame.parsed().get("reason", "unknown"))
        if self._held is not None:
            self._held.append(frame)
            return
        self._deliver(frame)
        self._act_on(client, frame)

    def _act_on(self, client: BridgeClient, frame: Frame) -> None:
        """Migrate and SessionTerminated, once delivered, make the keeper move."""
        if self.state is not State.CONNECTED or client is not self.client:
            return
        message = (frame.object_type, frame.event_id)
        if message == MIGRATE:
            self._migrate(client, frame.parsed())
        elif message == SESSION_TERMINATED:
            client.close()  # the session is over: act now, not when the bridge closes

    def _deliver(self, frame: Frame) -> None:
        name = name_of(frame.object_type, frame.event_id)
        for listener in list(self._listeners):
            try:
                listener(name, frame)
            except Exception:
                self.log.failure(
                    "Notification listener failed on {name}",
                    name=name,
                    event="keeper.listener_failed",
                )

    def _dropped(self, client: BridgeClient, reason: Exception) -> None:
        if client is not self.client or self.state is not State.CONNECTED:
            return  # ended, or a migration that is moving away from this connection
        self.log.info(
            "Connection of session {session} dropped: {why}",
            session=client.session_id,
            why=str(reason),
            event="keeper.disconnected",
        )
        self._emit(
            KeeperEvent(
                "disconnected",
                reason=self._terminated or "connection-lost",
                session_id=client.session_id,
            )
        )
        if self._terminated in FINAL_REASONS:
            self._end(f"terminated:{self._terminated}")
        elif self._terminated is not None:
            self._set(State.RELOGGING)
            self._run(self._relogon())
        else:
            self._set(State.RESUMING)
            self._run(self._resume(client))

    # --- resume ------------------------------------------------------------------------
    @defer.inlineCallbacks
    def _resume(self, old: BridgeClient) -> Any:
        state = old.resume_state
        if state is not None and self._target is not None:
            waited = False  # a logon-throttled pause stands in for the next one
            for delay in resume_delays(self.linger, self.resume_tries, self.backoff):
                if delay > 0 and not waited:
                    yield self._sleep(delay)
                waited = False
                try:
                    client = yield self._dial(self._target)
                except Exception as e:
                    self.log.info(
                        "Resume: cannot reach the bridge: {error}",
                        error=str(e),
                        event="keeper.resume_unreachable",
                    )
                    continue
                try:
                    reply = yield self._timed(
                        client,
                        client.resume(
                            ResumeState(state.session_id, state.resume_token, self._delivered)
                        ),
                    )
                except ClientError as e:
                    yield client.close()
                    if e.code == "logon-throttled":  # not a verdict: the same resume, later
                        yield self._sleep(retry_after(e.body))
                        waited = True
                        continue
                    if e.code in CONNECTION_CODES or e.retryable:
                        continue
                    self.log.info(
                        "Resume of {session} refused: {code} ({reason}); logging on afresh",
                        session=state.session_id,
                        code=e.code,
                        reason=e.reason,
                        event="keeper.resume_refused",
                    )
                    break
                if self.ended:
                    yield client.logoff()
                    return
                self._resumed(client, reply)
                return
        if not self.ended:
            self._set(State.RELOGGING)
            yield self._relogon()

    def _resumed(self, client: BridgeClient, reply: dict[str, Any]) -> None:
        assert self._target is not None
        self._attach(client, {**self.reply, **reply}, self._target)
        gap = reply.get("gap") is True
        position = client.received
        if not gap and position > self._delivered:
            self.log.warn(
                "Resume skipped notifications {first}..{last}",
                first=self._delivered + 1,
                last=position,
                event="keeper.resume_skip",
            )
            gap = True
        if gap:
            self._delivered = position
        self._set(State.CONNECTED)
        self.log.info(
            "Resumed session {session} at {position} (gap: {gap})",
            session=client.session_id,
            position=position,
            gap=gap,
            event="keeper.resumed",
        )
        self._emit(
            KeeperEvent("resumed", session_id=client.session_id, server=self.server, gap=gap)
        )
        if gap:
            snapshots = reply.get("snapshots")
            self._emit(
                KeeperEvent(
                    "resynchronised",
                    reason="gap",
                    session_id=client.session_id,
                    server=self.server,
                    gap=True,
                    snapshots=snapshots if isinstance(snapshots, dict) else {},
                )
            )

    # --- a fresh logon -----------------------------------------------------------------
    def _redirected(self, error: ClientError, leaving: str | None = None) -> list[dict[str, Any]]:
        """A redirect's roster as targets, ordered for the user, without ``leaving``."""
        groups = attempt_groups(error.body, self._host, self._port, self._addresses, self._rng)
        return [t for g in groups for t in g if leaving is None or t["name"] != leaving]

    @defer.inlineCallbacks
    def _relogon(self) -> Any:
        """Log on afresh by the reconnect order, round after round, until one takes it."""
        rounds = 0
        first_pass = 0
        while self.state is State.RELOGGING:
            if not self._addresses:
                self._addresses = yield resolve_quietly(self._resolve, self._host, self._port)
            groups = attempt_groups(
                self._roster, self._host, self._port, self._addresses, self._rng
            )
            plan = reconnect_plan(groups, self.top_tries, self.backoff, first_pass)
            first_pass = plan[-1].pass_number + 1 if plan else first_pass + 1
            try:
                landing = yield try_in_order(
                    plan,
                    self._dial,
                    self._logon,
                    clock=self._clock,
                    redirect=self._redirected,
                    site=self._host,
                    stopped=lambda: self.ended,
                )
            except ClientError as e:
                if self.ended:
                    return
                if e.code == "logon-failed":
                    self._end("logon-failed")
                    return
                rounds += 1
                if self.rounds is not None and rounds >= self.rounds:
                    self._end("no-bridge")
                    return
                self.log.info("No bridge took the logon; trying again", event="keeper.round")
                continue
            yield self._fresh(landing, "relogged")

    @defer.inlineCallbacks
    def _fresh(self, landing: Landing, kind: str, reason: str | None = None) -> Any:
        """A new session: attach it, hold its notifications, restore watches, then say so."""
        if self.ended:
            yield landing.client.logoff()
            return
        if self._cache is not None:
            self._cache.save(self._host, landing.reply)
        self._held = []
        self._delivered = 0
        self._attach(landing.client, landing.reply, landing.target)
        snapshots: dict[str, Any] = {}
        for message, body in self.watches.restore_requests():
            try:
                reply = yield landing.client.request(message, body)
            except ClientError as e:
                if e.code in CONNECTION_CODES:
                    break
                topics = self.watches.topics_of(message, body)
                self.watches.discard(topics)
                self.log.warn(
                    "Could not restore {topics}: {error}",
                    topics=topics,
                    error=str(e),
                    event="keeper.watch_lost",
                )
                continue
            snapshots.update(self.watches.snapshots(message, body, reply))
        held, self._held = self._held, None
        if self.ended:
            return
        if not landing.client.protocol.connected:
            self.log.info("Connection lost while restoring watches", event="keeper.restore_lost")
            self._set(State.RELOGGING)  # loop again (or start the loop, after Migrate)
            if kind != "relogged":
                self._run(self._relogon())
            return
        self._set(State.CONNECTED)
        self.log.info(
            "New session {session} on {server} ({kind}), {n} watch(es) restored",
            session=landing.client.session_id,
            server=(self.server or {}).get("name"),
            kind=kind,
            n=len(snapshots),
            event=f"keeper.{kind}",
        )
        event = {"session_id": landing.client.session_id, "server": self.server}
        self._emit(KeeperEvent(kind, reason=reason, **event))
        self._emit(KeeperEvent("resynchronised", reason=kind, snapshots=snapshots, **event))
        client: BridgeClient = landing.client
        for frame in held:
            if client is not self.client:
                break
            self._deliver(frame)
            self._act_on(client, frame)

    # --- Migrate -----------------------------------------------------------------------
    def _migrate(self, old: BridgeClient, body: dict[str, Any]) -> None:
        self._set(State.MIGRATING)
        self._run(self._migrating(old, body))

    @defer.inlineCallbacks
    def _migrating(self, old: BridgeClient, body: dict[str, Any]) -> Any:
        reason = str(body.get("reason", "migrate"))
        roster = body.get("roster")
        leaving = (self.server or {}).get("name")
        plan = migrate_plan(roster if isinstance(roster, list) else [], self._port, leaving)
        self.log.info(
            "Migrating session {session} ({reason}) to one of {n} bridge(s)",
            session=old.session_id,
            reason=reason,
            n=len(plan),
            event="keeper.migrate",
        )
        try:
            landing = yield try_in_order(
                plan,
                self._dial,
                self._logon,
                clock=self._clock,
                redirect=lambda e: self._redirected(e, leaving),
                site=self._host,
                stopped=lambda: self.ended,
            )
        except ClientError as e:
            if self.ended:
                return
            self.log.warn("Migrate failed: {error}", error=str(e), event="keeper.migrate_failed")
            if old.protocol.connected and old.session_id is not None:
                self._set(State.CONNECTED)  # stay where we are
            else:
                self._set(State.RELOGGING)
                yield self._relogon()
            return
        yield self._fresh(landing, "migrated", reason)
        if old is not self.client and old.protocol.connected:
            yield old.logoff()
