"""The router: what happens to each client request.

Only the requests of PROTOCOL §3 are taken (the allow-list, ``admission.py``); any
other frame, the bridge↔Notifier link's own messages included, is answered
``unknown-request`` and goes nowhere. GetVersion, CreateSession and ResumeSession
work without a session; everything else needs one. Session and fan-out requests
are handled here; the ones §3 marks "upstream" are forwarded to the Notifier with
the session's identity and their answer relayed back as bytes.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
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
    LINK_AUTHENTICATE,
    LINK_BRIDGE_CHANGED,
    LINK_ROSTER_CHANGED,
    LINK_SESSION_CLOSED,
    LINK_SESSION_OPENED,
    LINK_SET_ACCEPT,
    RESUME_SESSION,
    ROSTER_CHANGED,
    SEARCH_DIRECTORY,
    SWITCHOVER,
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
from smbridge.errors import BadRequest, NoSession, ProtocolError
from smbridge.resources import NoResources, Origin, ResourceProvider
from smbridge.roster.accept import ACCEPT_MODES, Decision, decide
from smbridge.roster.drain import migrate_frame, roster_for
from smbridge.roster.reach import Aliases, with_uris
from smbridge.roster.selection import Resolved, RuleError, order_roster, parse_rules, rule_for_user
from smbridge.router.admission import UnknownRequest, admit, upstream_payload
from smbridge.router.directory import Directories
from smbridge.router.fanout import FanOut
from smbridge.router.fields import optional_text, text
from smbridge.router.reply import EncodedReply, Reply
from smbridge.router.resume import Resumer, check_allowed
from smbridge.router.throttle import Attempt, LogBudget, LogonThrottle, LogonThrottled
from smbridge.router.visibility import Scope, restricted, scope_of
from smbridge.router.watches import Watches
from smbridge.session.control import SessionControl
from smbridge.session.hook import HookRunner
from smbridge.session.levels import policy_for
from smbridge.session.negotiate import heartbeat_interval, negotiate_timeout
from smbridge.session.registry import SessionRegistry
from smbridge.session.session import EndReason, Session, SessionInfo, State
from smbridge.topics import PARAMETERS_TOPIC, RecordState, user_topic

if TYPE_CHECKING:
    from smbridge.transports.connection import ClientConnection
    from smbridge.upstream.connector import UpstreamConnector

Handler = Callable[[Session, Frame], Reply]

VERSION_REPLY = {
    "server": "smbridge",
    "version": smbridge.__version__,
    "protocol": smbridge.PROTOCOL_VERSION,
}


@dataclass(frozen=True)
class BridgeIdentity:
    """How this bridge describes itself to the Notifier and to clients."""

    name: str
    fqdn: str
    kind: str = "off-server"
    location: str = ""
    ports: dict[str, int | None] = field(default_factory=dict)
    accept: str = "default"

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "fqdn": self.fqdn, "kind": self.kind, "location": self.location}

    def registration(self) -> dict[str, Any]:
        return {
            **self.public(),
            "ports": dict(self.ports),
            "accept": self.accept,
            "version": smbridge.__version__,
        }


class Router:
    log = Logger()

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

    def parameters(self) -> dict[str, Any]:
        """The server parameters in force: the Notifier's, kept current by its topic."""
        state = self.fanout.state(PARAMETERS_TOPIC)
        if isinstance(state, RecordState):
            params: dict[str, Any] = state.record.get("parameters", {})
            return params
        registered: dict[str, Any] = self.upstream.registered.get("parameters", {})
        return registered

    def _parameters_changed(self) -> None:
        self._restricted = restricted(self.parameters())
        self.directories.preload()
        for listener in self.parameter_listeners:
            listener(self.parameters())

    def _scope(self, session: Session) -> Scope:
        """The workgroups a session's user may see in directories (None: all)."""
        cached = self._scopes.get(session.id)
        if cached is None or cached[0] is not self._restricted:
            cached = (self._restricted, scope_of(session.info.rights, self._restricted))
            self._scopes[session.id] = cached
        return cached[1]

    def _link_up(self) -> None:
        """The link came (back) up: announce live sessions, follow parameters, warm the cache.

        The Notifier forgets a bridge's sessions with the link that reported them.
        """
        for session in self.registry:
            self._announce(session)
        self._parameters_changed()
        if PARAMETERS_TOPIC not in self.fanout.topics:
            self.fanout.watch(PARAMETERS_TOPIC, None).addCallbacks(
                lambda _: self._parameters_changed(),
                lambda f: self.log.warn(
                    "Not following server parameters: {error}",
                    error=f.getErrorMessage(),
                    event="router.parameters_unavailable",
                ),
            )

    def _switchover(self, phase: str, cic: Any) -> None:
        """Tell every session; once re-subscribed, send each its fresh snapshots (4.6)."""
        if phase == "started":
            notice = encode(Kind.NOTIFICATION, *SWITCHOVER, 0, {"phase": phase, "cic": cic})
            for session in self.registry:
                session.send(notice)
            return
        self.fanout.resubscribed.addCallback(lambda _: self._switched(cic))

    def _switched(self, cic: Any) -> None:
        count = 0
        for session in self.registry:
            names = session.topics | {user_topic(session.info.user_id)}
            body = {
                "phase": "completed",
                "cic": cic,
                "snapshots": self.fanout.snapshots(session, names),
            }
            session.send(encode(Kind.NOTIFICATION, *SWITCHOVER, 0, body))
            self._ha_switched.add(session.id)
            count += 1
        self.log.info(
            "Told {sessions} session(s) about the switchover to {cic}",
            sessions=count,
            cic=cic,
            event="router.switchover",
        )

    def _announce(self, session: Session) -> None:
        self.upstream.notify(
            LINK_SESSION_OPENED,
            {
                "sessionId": session.id,
                "user": session.info.user_id,
                "station": session.info.station,
            },
        )

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
        if key == CREATE_SESSION:
            self._answer(conn.send, frame, self._create(conn, frame))
            return
        if key == RESUME_SESSION:
            try:
                self.resumer.resume(conn, frame)
            except ProtocolError as e:
                self._answer(conn.send, frame, e)
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
            self.upstream.forward(session, frame, payload)
            return
        try:
            reply = self.handlers[key](session, frame)
        except ProtocolError as e:
            reply = e  # type: ignore[assignment]
        self._answer(session.send, frame, reply)

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
        else:
            send(encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, reply))

    # --- sessions -----------------------------------------------------------------
    @defer.inlineCallbacks
    def _create(self, conn: ClientConnection, frame: Frame) -> Any:
        body = frame.body or {}
        user = text(body, "user")
        password = body.get("password")
        if not isinstance(password, str):
            raise BadRequest("password must be a string")
        station = optional_text(body, "station")
        notify = body.get("notifyImminent", True)
        if not isinstance(notify, bool):
            raise BadRequest("notifyImminent must be true or false")
        if conn.session is not None:
            raise ProtocolError("this connection already has a session", code="session-exists")
        attempt = self.admit_logon(conn, "user", user)  # before the Notifier sees it
        try:
            auth = yield self.upstream.request(
                LINK_AUTHENTICATE, {"user": user, "password": password, "station": station}
            )
        except BaseException as e:
            # Settled on every path, so its place in flight is released exactly once.
            if not isinstance(e, ProtocolError) or e.code != "logon-failed":
                attempt.abandoned()  # never judged: the link, a timeout, a cancel
                raise
            attempt.failed()
            self.counters.inc("logon_failures")
            self.log.info(
                "Logon failed for {user} from {remote}: {reason}",
                user=user,
                remote=conn.remote,
                reason=e.extra.get("reason"),
                event="session.logon_failed",
            )
            raise
        attempt.succeeded()
        self._accept_or_redirect(user, conn, auth)
        who = auth.get("user", {})
        info = SessionInfo(
            user_id=who.get("id", user),
            display_name=who.get("displayName", ""),
            extension=who.get("extension", ""),
            station=station,
            location=auth.get("location"),
            client_id=str(body.get("clientId", "")),
            client_app=str(body.get("clientApp", "")),
            client_version=str(body.get("clientVersion", "")),
            workgroups=list(who.get("workgroups", [])),
            rights=list(who.get("rights", [])),
        )
        policy = policy_for(self.registry.policy, self.parameters(), info)
        timeout = negotiate_timeout(
            policy, body.get("sessionTimeout"), body.get("minSessionTimeout")
        )
        control: SessionControl | None = None
        if self.hook is not None and conn.connected:
            control = yield self.hook.create(info)
        if control is None and (not conn.connected or conn.session is not None):
            return None
        for old in self.registry.lingering_for(info.user_id, info.client_id):
            old.end(EndReason.LOGOUT)  # the same client logged on again (PROTOCOL §4.5)
        session = self.registry.create(info, conn, timeout, notify, conn.kind, conn.remote, control)
        if not conn.connected or conn.session is not None:
            # Dropped (or logged on) while the hook decided: the hook still hears destroy.
            session.peer = None
            session.end(EndReason.UNEXPECTED, notify=False)
            return None
        session.origin = conn.origin
        conn.session = session
        self.counters.inc("logons", transport=conn.kind)
        self._announce(session)
        try:
            mine = yield self.fanout.watch(user_topic(info.user_id), session)
        except ProtocolError:
            session.end(EndReason.UNEXPECTED, notify=False)
            raise
        registered = self.upstream.registered
        return {
            "sessionId": session.id,
            "resumeToken": session.resume_token,
            "sessionTimeout": timeout,
            "timeoutSource": policy.source,
            "heartbeatInterval": heartbeat_interval(timeout),
            "server": self.identity.public(),
            "cic": registered.get("cic"),
            "roster": self.client_roster(registered.get("roster", []), session.origin),
            "selectionRule": registered.get("selectionRule"),
            "location": info.location,
            "myInteractions": mine.get("interactions", []),
            "user": {
                "id": info.user_id,
                "displayName": info.display_name,
                "extension": info.extension,
            },
            "resources": self.resources.for_session(session.origin),
        }

    def admit_logon(self, conn: ClientConnection, kind: str, name: str) -> Attempt:
        """Let a logon (``user``) or resume (``resume``) through the throttle, or refuse it.

        A refusal is ``logon-throttled`` with ``retryAfter``, counted by scope and logged
        once per wait, at most 10 lines a minute (user and address, never a secret).
        """
        result = self.throttle.attempt(kind, name, conn.remote)
        if isinstance(result, Attempt):
            return result
        self.counters.inc("logons_throttled", scope=result.scope)
        skipped = self._throttle_log.take() if result.first else None
        if skipped is not None:
            self.log.info(
                "Throttled {kind} of {name} from {address} ({scope}): retry after "
                "{retry_after}s ({skipped} earlier refusal(s) not logged)",
                kind="logon" if kind == "user" else kind,
                name=name[:64],
                address=self.throttle.address_of(conn.remote),
                scope=result.scope,
                retry_after=result.retry_after,
                skipped=skipped,
                event="session.logon_throttled",
            )
        raise LogonThrottled(
            f"too many failed logons: try again in {result.retry_after}s",
            retryAfter=result.retry_after,
            scope=result.scope,
        )

    # --- accept or redirect (PROTOCOL §4.3, docs/roster.md) --------------------------
    def set_accept_mode(self, mode: str) -> None:
        """Switch the accept mode at run time (``default``, ``all`` or ``maintenance``)."""
        if mode not in ACCEPT_MODES:
            raise BadRequest(f"accept must be one of {', '.join(ACCEPT_MODES)}")
        if mode != self.accept_mode:
            self.log.info(
                "Accept mode {old} -> {mode}",
                old=self.accept_mode,
                mode=mode,
                event="roster.accept_mode",
            )
        self.accept_mode = mode
        # A later re-registration (after a link drop or switchover) reports the new mode,
        # and the Notifier hears of it now, so the roster's ``available`` follows.
        self.upstream.registration["accept"] = mode
        self.upstream.notify(LINK_BRIDGE_CHANGED, {"accept": mode})

    def _upstream_notification(self, frame: Frame) -> None:
        key = (frame.object_type, frame.event_id)
        if key == LINK_ROSTER_CHANGED:
            self.roster_changed(frame.parsed())
        elif key == LINK_SET_ACCEPT:
            self.set_accept_mode(str(frame.parsed().get("accept")))
        else:
            self.fanout.event(frame)

    def roster_changed(self, body: dict[str, Any]) -> None:
        """Keep the Notifier's new roster and tell every session (RosterChanged)."""
        roster = body.get("roster")
        if not isinstance(roster, list):
            return
        registered = self.upstream.registered
        registered["roster"] = roster
        if "selectionRule" in body:
            registered["selectionRule"] = body["selectionRule"]
        self.log.info(
            "Roster changed: {available} of {total} bridges available",
            available=sum(1 for e in roster if isinstance(e, dict) and e.get("available")),
            total=len(roster),
            event="roster.changed",
        )
        notices: dict[Origin, bytes] = {}  # one encoding per way in (tunnel URIs differ)
        for session in self.registry:
            notice = notices.get(session.origin)
            if notice is None:
                body = {
                    "roster": self.client_roster(roster, session.origin),
                    "selectionRule": registered.get("selectionRule"),
                }
                notice = notices[session.origin] = encode(
                    Kind.NOTIFICATION, *ROSTER_CHANGED, 0, body
                )
            session.send(notice)

    def accept_state(self) -> tuple[bool, str]:
        """Whether new sessions are taken now, for the status: (accepting, mode or reason).

        The user-dependent check (excluded location) is left out.
        """
        decision = self._decide(Resolved((), frozenset(), True))
        return decision.accept, decision.reason or self.accept_mode

    def user_rule(self, location: str | None) -> Resolved:
        """The resolved selection rule for a user in ``location`` (default rule if unreadable)."""
        try:
            rules = parse_rules(self.upstream.registered.get("selectionRule"))
        except RuleError:
            rules = parse_rules(None)
        return rule_for_user(rules, location)

    def accept_decision(self, location: str | None) -> tuple[Decision, Resolved]:
        """Whether this bridge takes a new session of a user in ``location`` now."""
        rule = self.user_rule(location)
        decision = self._decide(rule)
        return decision, rule

    def _decide(self, rule: Resolved) -> Decision:
        registered = self.upstream.registered
        return decide(
            mode=self.accept_mode,
            kind=self.identity.kind,
            location=self.identity.location,
            own_name=self.identity.name,
            cic_role=str((registered.get("cic") or {}).get("role", "primary")),
            roster=registered.get("roster", []),
            rule=rule,
            loaded=self.loaded(),
        )

    def _accept_or_redirect(self, user: str, conn: ClientConnection, auth: Any) -> None:
        location = auth.get("location") if isinstance(auth, dict) else None
        decision, rule = self.accept_decision(location)
        if decision.accept:
            return
        registered = self.upstream.registered
        others = [e for e in registered.get("roster", []) if e.get("name") != self.identity.name]
        groups = order_roster(others, rule, (), self.rng)
        self.counters.inc("redirects", reason=str(decision.reason))
        self.log.info(
            "Redirecting {user} from {remote}: {reason}",
            user=user,
            remote=conn.remote,
            reason=decision.reason,
            event="session.redirect",
        )
        raise ProtocolError(
            f"this bridge does not take the session ({decision.reason}); try the roster",
            code="redirect",
            reason=decision.reason,
            roster=self.client_roster([e for g in groups for e in g], conn.origin),
            groups=[[e["name"] for e in g] for g in groups],
            selectionRule=registered.get("selectionRule"),
            location=location,
        )

    def client_roster(self, roster: list[Any], origin: Origin) -> Any:
        """``roster`` as a client that came in by ``origin`` gets it (tunnel: with ``uri``)."""
        return with_uris(roster, origin, self.alias_of)

    def _describe(self, origin: Origin) -> dict[str, Any]:
        """The bridge's side of a session reply: this server, the roster, the CIC server."""
        registered = self.upstream.registered
        return {
            "server": self.identity.public(),
            "roster": self.client_roster(registered.get("roster", []), origin),
            "cic": registered.get("cic"),
        }

    def _session_ended(self, session: Session, reason: EndReason) -> None:
        self.counters.inc("sessions_ended", reason=reason.value)
        if self.hook is not None:
            self.hook.destroy(session, reason.value)
        in_flight = self.watches.forget(session)  # watches still waiting for a snapshot
        self.fanout.drop(session, session.topics | in_flight | {user_topic(session.info.user_id)})
        session.topics.clear()
        self._scopes.pop(session.id, None)
        self._ha_switched.discard(session.id)
        peer = session.peer
        if peer is not None and getattr(peer, "session", None) is session:
            peer.session = None  # type: ignore[attr-defined]
        self.upstream.notify(LINK_SESSION_CLOSED, {"sessionId": session.id, "reason": reason.value})

    def connection_lost(self, conn: ClientConnection) -> None:
        """The connection dropped without DestroySession: its session lingers (§4.5)."""
        session = conn.session
        if session is None:
            return
        conn.session = None
        if session.peer is not conn:
            return  # already taken over by a resume on another connection
        session.linger(self.registry.linger)
        if session.state is State.LINGERING:
            self.log.info(
                "Session {session_id} lingers for {linger}s after {remote} dropped",
                session_id=session.id,
                linger=self.registry.linger,
                remote=conn.remote,
                event="session.lingering",
            )

    def shutdown(self) -> tuple[int, int]:
        """End every session for a shutdown; return (migrated, terminated).

        A session whose user has another available bridge in the roster (ordered by
        the user's selection rule, this bridge left out) gets Migrate {roster,
        reason: shutdown} so its client moves without a logon prompt; the others get
        SessionTerminated {shutdown}.
        """
        migrated = terminated = 0
        for session in self.registry:
            targets = roster_for(self, session)
            if targets:
                session.send(migrate_frame(targets, "shutdown"))
                session.end(EndReason.SHUTDOWN, notify=False)
                migrated += 1
            else:
                session.end(EndReason.SHUTDOWN)
                terminated += 1
        return migrated, terminated

    def _heartbeat(self, session: Session, frame: Frame) -> Reply:
        switched = session.id in self._ha_switched
        self._ha_switched.discard(session.id)
        return {"sessionUpdated": True, "haSwitchover": switched}

    def _destroy(self, session: Session, frame: Frame) -> Reply:
        session.send(encode(Kind.RESPONSE, *DESTROY_SESSION, frame.request_id, {}))
        session.end(EndReason.LOGOUT, notify=False)
        return None

    def _servers(self, session: Session, frame: Frame) -> Reply:
        registered = self.upstream.registered
        return {
            "roster": self.client_roster(registered.get("roster", []), session.origin),
            "selectionRule": registered.get("selectionRule"),
        }

    def _resource_uri(self, session: Session, frame: Frame) -> Reply:
        body = frame.body or {}
        kind = text(body, "kind")
        path = body.get("path", "")
        if not isinstance(path, str):
            raise BadRequest("path must be a string")
        return {"kind": kind, "path": path, "uri": self.resources.uri(session.origin, kind, path)}
