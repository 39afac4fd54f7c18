"""The router: what happens to each client request.

Only the requests of PROTOCOL §3 are taken (the allow-list, ``admission.py``); any
other frame, the bridge↔Notifier link's own messages included, is answered
``unknown-request`` and goes nowhere. GetVersion, CreateSession and ResumeSession
work without a session; everything else needs one. The ones §3 marks "upstream"
are forwarded to the Notifier with the session's identity and their answer relayed
back as bytes; the others go to a handler. ``Router`` is the dispatcher; the
handlers live by family in its bases, each module importing only the one below:
``state.py`` (shared state, server parameters), ``roster_requests.py`` (accept or
redirect, roster, GetServers, GetResourceUri), ``session_requests.py`` (CreateSession,
Heartbeat, DestroySession, lingering, shutdown) and ``link_events.py`` (what the
upstream link reports); watches and directories are ``watches.py`` and
``directory.py``, ResumeSession ``resume.py``.
A handler returns the reply payload, a Deferred of it, or ``None`` when it has
answered by itself; a ProtocolError becomes an ``error`` frame with its code.
CreateSession and ResumeSession first pass the logon throttle (``throttle.py``):
too soon after failed ones from the same source, or with too many from one address
still unanswered, they are answered ``logon-throttled`` ``{retryAfter}`` before the
Notifier is asked; each one let through is settled with its outcome on every path.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from twisted.internet import defer
from twisted.logger import LogLevel
from twisted.python.failure import Failure

import smbridge
from smbridge.codec import Frame, Kind, encode, encode_error, encode_raw
from smbridge.codec.catalog import (
    CREATE_SESSION,
    DESTROY_SESSION,
    GET_DIRECTORY,
    GET_RESOURCE_URI,
    GET_SERVERS,
    GET_TRANSFER_TARGETS,
    GET_VERSION,
    HEARTBEAT,
    RESUME_SESSION,
    SEARCH_DIRECTORY,
    UNWATCH_QUEUE,
    UNWATCH_STATISTICS,
    UNWATCH_STATUS,
    UPSTREAM_REQUESTS,
    WATCH_QUEUE,
    WATCH_STATISTICS,
    WATCH_STATUS,
    MessageType,
)
from smbridge.counters import Counters
from smbridge.errors import NoSession, ProtocolError
from smbridge.histograms import Timings
from smbridge.resources import NoResources, ResourceProvider
from smbridge.roster.reach import Aliases
from smbridge.router.admission import UnknownRequest, admit, upstream_payload
from smbridge.router.directory import Directories
from smbridge.router.fanout import FanOut
from smbridge.router.link_events import LinkEvents
from smbridge.router.reply import EncodedReply, Reply
from smbridge.router.resume import Resumer, check_allowed
from smbridge.router.state import BridgeIdentity as BridgeIdentity  # re-exported
from smbridge.router.throttle import LogBudget, LogonThrottle
from smbridge.router.visibility import Scope
from smbridge.router.watches import Watches
from smbridge.session.hook import HookRunner
from smbridge.session.registry import SessionRegistry
from smbridge.session.session import Session
from smbridge.topics import PARAMETERS_TOPIC

if TYPE_CHECKING:
    from smbridge.transports.connection import ClientConnection
    from smbridge.upstream.connector import UpstreamConnector

Handler = Callable[[Session, Frame], Reply]

VERSION_REPLY = {
    "server": "smbridge",
    "version": smbridge.__version__,
    "protocol": smbridge.PROTOCOL_VERSION,
}


class Router(LinkEvents):
    """The thin dispatcher: one method per frame, the families in their own modules."""

    def __init__(
        self,
        registry: SessionRegistry,
        upstream: UpstreamConnector,
        identity: BridgeIdentity,
        max_watches: int = 200,
    ) -> None:
        self.registry = registry
        self.upstream = upstream
        self.identity = identity
        # Accept mode (PROTOCOL §4.3), switchable at run time (set_accept_mode).
        self.accept_mode = identity.accept
        # Whether the site counts as loaded (the load meter sets this; docs/switchover.md).
        self.loaded: Callable[[], bool] = lambda: False
        self.rng = random.Random()
        # Event counts for the metrics endpoint (logons, failures, redirects, resumes...).
        self.counters = Counters()
        # Logon, request round trip, publish delay and resume times (smbridge/histograms.py).
        self.timings = Timings(registry.clock)
        self.fanout = FanOut(upstream, scope_of=self._scope)
        self.watches = Watches(self.fanout, max_watches)
        self.directories = Directories(self.fanout, self.watches, self.parameters, self._scope)
        self._restricted = False
        # Connections that already sent a frame outside the allow-list (logged once).
        self._refused_on: WeakSet[ClientConnection] = WeakSet()
        self._scopes: dict[str, tuple[bool, Scope]] = {}
        w, d = self.watches, self.directories
        self.handlers: dict[MessageType, Handler] = {
            HEARTBEAT: self._heartbeat,
            DESTROY_SESSION: self._destroy,
            GET_SERVERS: self._servers,
            WATCH_QUEUE: w.watch_queue,
            UNWATCH_QUEUE: w.unwatch_queue,
            WATCH_STATUS: w.watch_status,
            UNWATCH_STATUS: w.unwatch_status,
            WATCH_STATISTICS: w.watch_statistics,
            UNWATCH_STATISTICS: w.unwatch_statistics,
            GET_DIRECTORY: d.get_directory,
            SEARCH_DIRECTORY: d.search,
            GET_TRANSFER_TARGETS: d.transfer_targets,
            GET_RESOURCE_URI: self._resource_uri,
        }
        self.resources: ResourceProvider = NoResources()
        # Public aliases of bridges, for the roster's ``uri`` of tunnel clients (reach.py).
        self.alias_of = Aliases(self.parameters)
        # The session hook (docs/lifecycle.md); None: every session is allowed everything.
        self.hook: HookRunner | None = None
        # Failed logons slow down per (user, address) and per address (throttle.py).
        self.throttle = LogonThrottle(registry.clock)
        self._throttle_log = LogBudget(registry.clock)
        self.resumer = Resumer(registry, self.fanout, self.counters, self._describe)
        self.resumer.gate = self.admit_logon
        # Called with the parameters in force whenever they may have changed (the sender).
        self.parameter_listeners: list[Callable[[dict[str, Any]], object]] = []
        registry.on_end(self._session_ended)
        upstream.notification = self._upstream_notification
        upstream.on_up(self._link_up)
        upstream.on_switchover(self._switchover)
        self._ha_switched: set[str] = set()  # sessions whose next Heartbeat says haSwitchover
        self.fanout.on_change(PARAMETERS_TOPIC, lambda change: self._parameters_changed())

    def set_piece_bytes(self, size: int) -> None:
        """The largest piece of a large answer to clients (--piece-bytes, docs/protocol.md)."""
        self.directories.page_bytes = self.watches.piece_bytes = self.resumer.piece_bytes = size

    # --- dispatch ---------------------------------------------------------------
    def handle(self, conn: ClientConnection, frame: Frame) -> None:
        key = (frame.object_type, frame.event_id)
        try:
            admit(frame)  # the allow-list: nothing else is handled or forwarded
        except UnknownRequest as e:
            self._refuse(conn, frame, e)
            return
        except ProtocolError as e:  # a string that is not valid Unicode
            self._answer(conn.send, frame, e)
            return
        if key == GET_VERSION:
            conn.send(encode(Kind.RESPONSE, *key, frame.request_id, VERSION_REPLY))
            return
        timings = self.timings
        if key == CREATE_SESSION:
            timed = timings.timed(conn.send, timings.logon)  # observed when the reply goes
            self._answer(timed, frame, self._create(conn, frame))
            return
        if key == RESUME_SESSION:
            started = timings.now()
            try:
                self.resumer.resume(conn, frame)
            except ProtocolError as e:
                self._answer(conn.send, frame, e)
            timings.resume.observe(timings.now() - started)
            return
        session = conn.session
        if session is None:
            self._answer(conn.send, frame, NoSession("log on first (CreateSession)"))
            return
        session.touch()
        try:
            check_allowed(session, key, frame)
        except ProtocolError as e:
            self._answer(session.send, frame, e)
            return
        if key in UPSTREAM_REQUESTS:
            try:
                payload = upstream_payload(frame, session.identity)
            except ProtocolError as e:
                self._answer(session.send, frame, e)
                return
            # The answer comes back through ``.send`` (upstream.link.ReplyTarget): a
            # TimedSend observes the round trip as it goes.
            self.upstream.forward(timings.timed(session.send, timings.forwarded), frame, payload)
            return
        started = timings.now()
        try:
            reply = self.handlers[key](session, frame)
        except ProtocolError as e:
            reply = e  # type: ignore[assignment]
        self._answer(session.send, frame, reply)
        timings.settle(timings.local, started, reply)

    def _refuse(self, conn: ClientConnection, frame: Frame, error: UnknownRequest) -> None:
        """Answer a frame outside the allow-list; it goes nowhere else.

        The first refusal on a connection is a warning, later ones debug lines, so
        a client that keeps trying cannot flood the log (the metric counts them all).
        """
        self.counters.inc("refused_requests")
        session = conn.session
        first = conn not in self._refused_on
        self._refused_on.add(conn)
        self.log.emit(
            LogLevel.warn if first else LogLevel.debug,
            "Refused ({object_type},{event_id}) kind {kind} from {remote} ({user})",
            object_type=frame.object_type,
            event_id=frame.event_id,
            kind=frame.kind,
            remote=conn.remote,
            user=session.info.user_id if session is not None else "no session",
            event="router.request_refused",
        )
        self._answer(conn.send, frame, error)

    def _answer(self, send: Callable[[bytes], None], frame: Frame, reply: Any) -> None:
        if reply is None:
            return
        if isinstance(reply, defer.Deferred):
            reply.addCallbacks(
                lambda r: self._answer(send, frame, r), lambda f: self._answer(send, frame, f)
            )
            return
        if isinstance(reply, Failure):
            if not reply.check(ProtocolError):
                self.log.failure(
                    "Request {name} failed",
                    failure=reply,
                    name=frame.object_type,
                    event="router.request.failed",
                )
                reply = ProtocolError("the bridge failed to handle this request")
            else:
                reply = reply.value
        if isinstance(reply, ProtocolError):
            send(
                encode_error(frame.object_type, frame.event_id, frame.request_id, **reply.payload())
            )
        elif isinstance(reply, EncodedReply):
            send(
                encode_raw(
                    Kind.RESPONSE,
                    frame.object_type,
                    frame.event_id,
                    frame.request_id,
                    reply.payload,
                )
            )
            for data in reply.then or ():  # a large snapshot's tail (router/continued.py)
                send(data)
        else:
            send(encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, reply))
