"""The router: what happens to each client request.

GetVersion and CreateSession work without a session; everything else needs one.
Session and fan-out requests are handled here; anything else is forwarded to the
Notifier with the session's identity and its answer relayed back as bytes.
A handler returns the reply payload, a Deferred of it, or ``None`` when it has
answered by itself; a ProtocolError becomes an ``error`` frame with its code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

import smbridge
from smbridge.codec import Frame, Kind, encode, encode_error
from smbridge.codec.catalog import (
    CREATE_SESSION,
    DESTROY_SESSION,
    GET_DIRECTORY,
    GET_RESOURCE_URI,
    GET_SERVERS,
    GET_VERSION,
    HEARTBEAT,
    LINK_AUTHENTICATE,
    LINK_SESSION_CLOSED,
    LINK_SESSION_OPENED,
    UNWATCH_QUEUE,
    WATCH_QUEUE,
    MessageType,
)
from smbridge.errors import BadRequest, NoSession, ProtocolError
from smbridge.resources import NoResources, ResourceProvider
from smbridge.router.directory import DirectoryCache
from smbridge.router.fanout import FanOut
from smbridge.router.identity import with_identity
from smbridge.session.negotiate import heartbeat_interval, negotiate_timeout
from smbridge.session.registry import SessionRegistry
from smbridge.session.session import EndReason, Session, SessionInfo, State
from smbridge.topics import queue_topic

if TYPE_CHECKING:
    from smbridge.transports.connection import ClientConnection
    from smbridge.upstream.connector import UpstreamConnector

Reply = dict[str, Any] | defer.Deferred[dict[str, Any]] | None
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


def _text(body: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} must be a non-empty string")
    return value


class Router:
    log = Logger()

    def __init__(
        self,
        registry: SessionRegistry,
        upstream: UpstreamConnector,
        identity: BridgeIdentity,
    ) -> None:
        self.registry = registry
        self.upstream = upstream
        self.identity = identity
        self.fanout = FanOut(upstream)
        self.directories = DirectoryCache(self.fanout)
        self.handlers: dict[MessageType, Handler] = {
            HEARTBEAT: self._heartbeat,
            DESTROY_SESSION: self._destroy,
            GET_SERVERS: self._servers,
            WATCH_QUEUE: self._watch_queue,
            UNWATCH_QUEUE: self._unwatch_queue,
            GET_DIRECTORY: self._get_directory,
            GET_RESOURCE_URI: self._resource_uri,
        }
        self.resources: ResourceProvider = NoResources()
        registry.on_end(self._session_ended)
        upstream.notification = self.fanout.event
        upstream.on_up(self._link_up)

    def _link_up(self) -> None:
        """The link came (back) up: announce live sessions again and warm the cache.

        The Notifier forgets a bridge's sessions with the link that reported them.
        """
        for session in self.registry:
            self._announce(session)
        self.directories.preload(self.upstream.registered.get("parameters", {}))

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
        if key == GET_VERSION:
            conn.send(encode(Kind.RESPONSE, *key, frame.request_id, VERSION_REPLY))
            return
        if key == CREATE_SESSION:
            self._answer(conn.send, frame, self._create(conn, frame))
            return
        session = conn.session
        if session is None:
            self._answer(conn.send, frame, NoSession("log on first (CreateSession)"))
            return
        session.touch()
        handler = self.handlers.get(key)
        if handler is None:
            assert frame.body is not None
            self.upstream.forward(
                session, frame, with_identity(frame.payload, frame.body, session.identity)
            )
            return
        try:
            reply = handler(session, frame)
        except ProtocolError as e:
            reply = e  # type: ignore[assignment]
        self._answer(session.send, frame, reply)

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
        else:
            send(encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, reply))

    # --- sessions -----------------------------------------------------------------
    @defer.inlineCallbacks
    def _create(self, conn: ClientConnection, frame: Frame) -> Any:
        body = frame.body or {}
        user = _text(body, "user")
        password = body.get("password")
        if not isinstance(password, str):
            raise BadRequest("password must be a string")
        station = _text(body, "station", required=False)
        notify = body.get("notifyImminent", True)
        if not isinstance(notify, bool):
            raise BadRequest("notifyImminent must be true or false")
        if conn.session is not None:
            raise ProtocolError("this connection already has a session", code="session-exists")
        try:
            auth = yield self.upstream.request(
                LINK_AUTHENTICATE, {"user": user, "password": password, "station": station}
            )
        except ProtocolError as e:
            if e.code == "logon-failed":
                self.log.info(
                    "Logon failed for {user} from {remote}: {reason}",
                    user=user,
                    remote=conn.remote,
                    reason=e.extra.get("reason"),
                    event="session.logon_failed",
                )
            raise
        timeout = negotiate_timeout(
            self.registry.policy, body.get("sessionTimeout"), body.get("minSessionTimeout")
        )
        if not conn.connected or conn.session is not None:
            return None
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
        session = self.registry.create(info, conn, timeout, notify, conn.kind, conn.remote)
        session.origin = conn.origin
        conn.session = session
        self._announce(session)
        registered = self.upstream.registered
        return {
            "sessionId": session.id,
            "resumeToken": session.resume_token,
            "sessionTimeout": timeout,
            "timeoutSource": self.registry.policy.source,
            "heartbeatInterval": heartbeat_interval(timeout),
            "server": self.identity.public(),
            "cic": registered.get("cic"),
            "roster": registered.get("roster", []),
            "selectionRule": registered.get("selectionRule"),
            "location": info.location,
            "user": {
                "id": info.user_id,
                "displayName": info.display_name,
                "extension": info.extension,
            },
            "resources": self.resources.for_session(session.origin),
        }

    def _session_ended(self, session: Session, reason: EndReason) -> None:
        self.fanout.drop(session, session.topics)
        session.topics.clear()
        peer = session.peer
        if peer is not None and getattr(peer, "session", None) is session:
            peer.session = None  # type: ignore[attr-defined]
        self.upstream.notify(LINK_SESSION_CLOSED, {"sessionId": session.id, "reason": reason.value})

    def connection_lost(self, conn: ClientConnection) -> None:
        session = conn.session
        if session is not None:
            session.peer = None
            session.end(EndReason.DISCONNECTED)

    def _heartbeat(self, session: Session, frame: Frame) -> Reply:
        return {"sessionUpdated": True, "haSwitchover": False}

    def _destroy(self, session: Session, frame: Frame) -> Reply:
        session.send(encode(Kind.RESPONSE, *DESTROY_SESSION, frame.request_id, {}))
        session.end(EndReason.LOGOUT, notify=False)
        return None

    def _servers(self, session: Session, frame: Frame) -> Reply:
        registered = self.upstream.registered
        return {
            "roster": registered.get("roster", []),
            "selectionRule": registered.get("selectionRule"),
        }

    # --- fan-out and cache -----------------------------------------------------------
    def _watch_queue(self, session: Session, frame: Frame) -> Reply:
        topic = queue_topic(_text(frame.body or {}, "queue") or "")

        def watching(snapshot: dict[str, Any]) -> dict[str, Any]:
            if session.state is State.CLOSED:
                self.fanout.unwatch(topic, session)
            else:
                session.topics.add(topic)
            return snapshot

        return self.fanout.watch(topic, session).addCallback(watching)

    def _unwatch_queue(self, session: Session, frame: Frame) -> Reply:
        topic = queue_topic(_text(frame.body or {}, "queue") or "")
        session.topics.discard(topic)
        return {"watching": False, "released": self.fanout.unwatch(topic, session)}

    def _resource_uri(self, session: Session, frame: Frame) -> Reply:
        body = frame.body or {}
        kind = _text(body, "kind") or ""
        path = body.get("path", "")
        if not isinstance(path, str):
            raise BadRequest("path must be a string")
        return {"kind": kind, "path": path, "uri": self.resources.uri(session.origin, kind, path)}

    def _get_directory(self, session: Session, frame: Frame) -> Reply:
        return self.directories.get(_text(frame.body or {}, "name") or "")
