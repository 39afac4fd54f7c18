"""The core of :class:`smbridge.client.keeper.SessionKeeper`: state, public API, connections.

The recovery steps are subclasses in their own modules (keeper_resume,
keeper_relogon, keeper_migrate); see :mod:`smbridge.client.keeper`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge.client.continued import gather
from smbridge.client.directory import read_directory
from smbridge.client.discovery import (
    Dial,
    Landing,
    default_dial,
    first_logon,
    resolve_all,
    resolve_quietly,
)
from smbridge.client.keeper_state import (
    _TRANSITIONS,
    CONNECTION_CODES,
    FINAL_REASONS,
    EventListener,
    InvalidTransition,
    KeeperEvent,
    State,
)
from smbridge.client.order import (
    DEFAULT_BACKOFF,
    Backoff,
)
from smbridge.client.protocol import ClientError
from smbridge.client.roster_cache import KEPT, RosterCache
from smbridge.client.session import BridgeClient, NotificationListener
from smbridge.client.uri import parse_bridge_uri
from smbridge.client.watchset import WatchSet
from smbridge.codec import Frame, name_of
from smbridge.codec.catalog import (
    GET_DIRECTORY,
    MIGRATE,
    QUEUE_CHANGED,
    SESSION_TERMINATED,
    UNWATCH_QUEUE,
    WATCH_QUEUE,
    MessageType,
)
from smbridge.roster.attempts import RECONNECT_TOP_TRIES


class KeeperCore:
    """The keeper's state, public API and connections; the recovery steps (resume,
    a fresh logon, Migrate) are its subclasses' and :class:`SessionKeeper` joins them."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        typed: str,
        user: str,
        password: str = "",
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
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
        self.cert = cert  # set: every logon is by this client certificate, no password
        self._options = {"host": self._host, **logon}
        self._cache = cache
        self._dial: Dial = (
            dial
            if dial is not None
            else default_dial(reactor, self._host, ca, address, cert=cert, key=key)
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
        """WatchQueue, remembered; fires with the whole snapshot ``{queue, interactions}``."""

        def whole(reply: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
            assert self.client is not None
            return gather(self.client, reply, QUEUE_CHANGED, "queue", "interactions")

        return self.request(WATCH_QUEUE, {"queue": name}).addCallback(whole)

    def unwatch_queue(self, name: str) -> defer.Deferred[dict[str, Any]]:
        return self.request(UNWATCH_QUEUE, {"queue": name})

    def get_directory(self, name: str) -> defer.Deferred[dict[str, Any]]:
        """Every entry of a directory, its pages followed (client/directory.py)."""
        d: defer.Deferred[dict[str, Any]] = read_directory(
            lambda body: self.request(GET_DIRECTORY, body), name
        )
        return d

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
        if self.cert is not None:  # the connection presented the certificate (default_dial)
            logon = client.logon_certificate(self.user or None, **self._options)
        else:
            logon = client.logon(self.user, self._password, **self._options)
        return self._timed(client, logon)

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

    # --- the recovery steps (keeper_resume, keeper_relogon, keeper_migrate) -------------
    def _resume(self, old: BridgeClient) -> Any:
        raise NotImplementedError

    def _redirected(self, error: ClientError, leaving: str | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _relogon(self) -> Any:
        raise NotImplementedError

    def _fresh(self, landing: Landing, kind: str, reason: str | None = None) -> Any:
        raise NotImplementedError

    def _migrate(self, old: BridgeClient, body: dict[str, Any]) -> None:
        raise NotImplementedError
