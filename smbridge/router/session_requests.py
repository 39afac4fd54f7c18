"""The Router's session requests: CreateSession, Heartbeat, DestroySession (PROTOCOL §4).

CreateSession passes the logon throttle (``throttle.py``) before the Notifier
authenticates it, then the accept-or-redirect decision (``roster_requests.py``) and
the session hook; the session's end releases its watches and tells the Notifier. A
lost connection leaves its session lingering (§4.5); a shutdown sends each session
Migrate or SessionTerminated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from smbridge.codec import Frame, Kind, encode
from smbridge.codec.catalog import DESTROY_SESSION, LINK_AUTHENTICATE, LINK_SESSION_CLOSED
from smbridge.errors import BadRequest, ProtocolError
from smbridge.logs import written
from smbridge.roster.drain import migrate_frame, roster_for
from smbridge.router.cert_logon import auth_kind, certificate_request
from smbridge.router.fields import optional_text, text
from smbridge.router.reply import Reply
from smbridge.router.roster_requests import RosterRequests
from smbridge.router.tenancy import Ticket
from smbridge.router.throttle import Attempt, LogonThrottled
from smbridge.session.control import SessionControl
from smbridge.session.levels import policy_for
from smbridge.session.negotiate import heartbeat_interval, negotiate_timeout
from smbridge.session.session import EndReason, Session, SessionInfo, State
from smbridge.topics import user_topic

if TYPE_CHECKING:
    from smbridge.transports.client_certs import ClientCertificates
    from smbridge.transports.connection import ClientConnection


class SessionRequests(RosterRequests):
    """CreateSession, Heartbeat, DestroySession, a lost connection, the end of sessions."""

    # Certificate logon (cert_logon.py): the client CA and CRL; None: no client CA set.
    client_certs: ClientCertificates | None = None

    def _create(self, conn: ClientConnection, frame: Frame) -> defer.Deferred[Any]:
        """CreateSession; gives back the tenant reservation of a logon that made no session."""
        tickets: list[Ticket] = []
        return self._create_session(conn, frame, tickets).addBoth(self._settle_tenant, tickets)

    def _settle_tenant(self, result: Any, tickets: list[Ticket]) -> Any:
        tenancy = self.watches.tenancy  # router/tenancy.py
        for ticket in tickets:
            body = tenancy.abandoned(ticket)
            if body is not None:
                self.upstream.notify(LINK_SESSION_CLOSED, body)
        if isinstance(result, Failure) and isinstance(result.value, ProtocolError):
            tenancy.refused(result.value)
        return result

    @defer.inlineCallbacks
    def _create_session(self, conn: ClientConnection, frame: Frame, tickets: list[Ticket]) -> Any:
        body = frame.body or {}
        by_certificate = auth_kind(body) == "certificate"  # cert_logon.py
        user = (optional_text(body, "user") or "") if by_certificate else text(body, "user")
        password = body.get("password")
        if not by_certificate and not isinstance(password, str):
            raise BadRequest("password must be a string")
        station = optional_text(body, "station")
        notify = body.get("notifyImminent", True)
        if not isinstance(notify, bool):
            raise BadRequest("notifyImminent must be true or false")
        if conn.session is not None:
            raise ProtocolError("this connection already has a session", code="session-exists")
        attempt = self.admit_logon(conn, "user", user or "(certificate)")  # before the Notifier
        certificate = None
        try:
            if by_certificate:
                request, certificate = certificate_request(
                    conn, self.client_certs, self.registry.clock, user, station
                )
            else:
                request = {"user": user, "password": password, "station": station}
            auth = yield self.upstream.request(LINK_AUTHENTICATE, request)
        except BaseException as e:
            # Settled on every path, so its place in flight is released exactly once.
            if not isinstance(e, ProtocolError) or e.code != "logon-failed":
                attempt.abandoned()  # never judged: the link, a timeout, a cancel
                raise
            attempt.failed()
            self.counters.inc("logon_failures")
            self.log.info(
                "Logon failed for {user} from {remote}: {reason}",
                user=user or "(certificate)",
                remote=conn.remote,
                reason=e.extra.get("reason"),
                event="session.logon_failed",
            )
            raise
        attempt.succeeded()
        tickets.append(self.watches.tenancy.ticket(auth, self.registry.clock.seconds()))
        who = auth.get("user", {})
        user = str(who.get("id", user))
        self._accept_or_redirect(user, conn, auth)
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
            certificate=certificate,
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
        self.watches.tenancy.opened(session, tickets[-1])
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
            "auth": "certificate" if certificate is not None else "password",
            **({"certificate": certificate.to_wire()} if certificate is not None else {}),
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

    def _session_ended(self, session: Session, reason: EndReason) -> None:
        self.counters.inc("sessions_ended", reason=reason.value)
        if self.hook is not None:
            self.hook.destroy(session, reason.value)
        self.watches.tenancy.closed(session)
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
        # Debug (its created and ended lines are info), and only built when written.
        if session.state is State.LINGERING and written(LogLevel.debug):
            self.log.debug(
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
