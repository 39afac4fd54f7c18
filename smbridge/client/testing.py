"""In-memory fake bridges for testing applications built on the client library.

In the spirit of ``treq.testing``: a :class:`FakeSite` holds a few
:class:`FakeBridge` objects that speak the real wire format to real
:class:`~smbridge.client.BridgeClient` objects over in-memory transports driven by a
``Clock``. The bridges keep the resume contract of PROTOCOL §4.5: every
notification written for a session is numbered, a dropped connection leaves the
session lingering, and ResumeSession replays what the client did not get (or says
``gap`` and sends fresh snapshots when its buffer no longer holds it).

``site.dial`` is the ``dial`` of :class:`~smbridge.client.keeper.SessionKeeper`;
``clock.advance(0)`` delivers everything in flight.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from smbridge.client.protocol import BridgeProtocol
from smbridge.client.session import BridgeClient
from smbridge.client.uri import BridgeAddress
from smbridge.codec import Decoder, Frame, Kind, encode, encode_error, name_of
from smbridge.codec import catalog as c


class FakeSession:
    """A session on a fake bridge: its watches and every notification written for it."""

    def __init__(self, session_id: str, token: str, user: str) -> None:
        self.id = session_id
        self.token = token
        self.user = user
        self.queues: set[str] = set()
        self.written = 0  # notifications numbered so far
        self.buffer: list[tuple[int, bytes]] = []  # (number, frame), newest last
        self.connection: FakeConnection | None = None
        self.expiry: IDelayedCall | None = None


class FakeConnection:
    """One connection: the client's transport writes here; answers come back on the clock."""

    def __init__(self, bridge: FakeBridge, protocol: BridgeProtocol) -> None:
        self.bridge = bridge
        self.protocol = protocol
        self.open = True
        self.silent = False  # True: bytes vanish both ways (a network that died silently)
        self.session: FakeSession | None = None
        self._decoder = Decoder()
        self.transport = _Wire(self)

    def from_client(self, data: bytes) -> None:
        if self.silent:
            return
        for frame in self._decoder.feed(data):
            assert isinstance(frame, Frame), frame
            self.bridge.handle(self, frame)

    def send(self, data: bytes) -> None:
        self.bridge.clock.callLater(0, self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if self.open and not self.silent:  # bytes in flight when cut (or silent) are lost
            self.protocol.dataReceived(data)

    def drop(self, clean: bool = False) -> None:
        """The connection ends (abruptly unless ``clean``); the session lingers."""
        if not self.open:
            return
        self.open = False
        self.bridge.detach(self)
        error = ConnectionDone() if clean else ConnectionLost("cut by the test")
        self.bridge.clock.callLater(0, self.protocol.connectionLost, Failure(error))


class _Wire(StringTransport):
    def __init__(self, connection: FakeConnection) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._connection = connection

    def write(self, data: bytes) -> None:
        if self._connection.open:
            self._connection.from_client(data)

    def loseConnection(self) -> None:
        self._connection.drop(clean=True)

    def abortConnection(self) -> None:
        self._connection.drop()


class FakeBridge:
    """One bridge of a :class:`FakeSite`; its attributes script how it behaves."""

    def __init__(
        self, site: FakeSite, name: str, host: str, port: int, location: str, kind: str
    ) -> None:
        self.site = site
        self.clock = site.clock
        self.name = name
        self.host = host
        self.port = port
        self.location = location
        self.kind = kind
        self.up = True
        self.accept = True  # False: CreateSession answers redirect with the site roster
        self.resume_answer: str | None = None  # force "unknown-session" or "bad-resume-token"
        self.uri: str | None = None  # set: roster entries carry it (a bridge behind a proxy)
        self.throttle: list[float] = []  # Create/ResumeSession: logon-throttled {retryAfter} each
        self.buffer_frames = 1000
        self.linger = 120.0
        self.sessions: dict[str, FakeSession] = {}
        self.connections: list[FakeConnection] = []
        self.requests: list[str] = []  # names of the requests received, in order
        self._ids = itertools.count(1)

    def entry(self) -> dict[str, Any]:
        entry = {
            "name": self.name,
            "fqdn": self.host,
            "kind": self.kind,
            "location": self.location,
            "available": self.up,
            "ports": {"tls": self.port},
        }
        return entry if self.uri is None else {**entry, "uri": self.uri}

    def connect(self) -> BridgeClient:
        protocol = BridgeProtocol()
        connection = FakeConnection(self, protocol)
        self.connections.append(connection)
        protocol.makeConnection(connection.transport)  # type: ignore[no-untyped-call]
        return BridgeClient(protocol, self.clock, BridgeAddress("tls", self.host, self.port))

    # --- scripting -------------------------------------------------------------------
    def session_of(self, user: str) -> FakeSession:
        """The newest session of ``user`` on this bridge."""
        return [s for s in self.sessions.values() if s.user == user][-1]

    def notify(self, session: FakeSession, message: c.MessageType, body: dict[str, Any]) -> None:
        """Number a notification for the session, buffer it, write it if connected."""
        session.written += 1
        frame = encode(Kind.NOTIFICATION, *message, 0, body)
        session.buffer.append((session.written, frame))
        del session.buffer[: -self.buffer_frames or len(session.buffer)]
        if session.connection is not None:
            session.connection.send(frame)

    def migrate(self, session: FakeSession, reason: str = "drain") -> None:
        """Send Migrate with the site's roster minus this bridge."""
        roster = [b.entry() for b in self.site.bridges if b is not self]
        self.notify(session, c.MIGRATE, {"roster": roster, "reason": reason})

    def cut(self, session: FakeSession | None = None) -> None:
        """Cut the session's connection (every connection when None), bytes in flight lost."""
        for connection in list(self.connections):
            if session is None or connection.session is session:
                connection.drop()

    def stop(self) -> None:
        """The bridge goes down: connections cut, sessions lost, dialing refused."""
        self.cut()
        self.up = False
        for session in self.sessions.values():
            if session.expiry is not None and session.expiry.active():
                session.expiry.cancel()
        self.sessions.clear()

    def detach(self, connection: FakeConnection) -> None:
        session, connection.session = connection.session, None
        if session is not None and session.connection is connection:
            session.connection = None
            session.expiry = self.clock.callLater(self.linger, self._expire, session)

    def _expire(self, session: FakeSession) -> None:
        self.sessions.pop(session.id, None)

    # --- the protocol ----------------------------------------------------------------
    def handle(self, connection: FakeConnection, frame: Frame) -> None:
        key = (frame.object_type, frame.event_id)
        self.requests.append(name_of(*key))
        body = frame.parsed()

        def reply(payload: dict[str, Any]) -> None:
            connection.send(encode(Kind.RESPONSE, *key, frame.request_id, payload))

        def error(code: str, message: str, **extra: Any) -> None:
            connection.send(encode_error(*key, frame.request_id, code, message, **extra))

        if key == c.CREATE_SESSION:
            self._create(connection, body, reply, error)
        elif key == c.RESUME_SESSION:
            self._resume(connection, body, reply, error)
        elif connection.session is None:
            error("no-session", "log on first (CreateSession)")
        elif key == c.WATCH_QUEUE:
            queue = str(body["queue"])
            connection.session.queues.add(queue)
            reply({"queue": queue, "interactions": list(self.site.queues.get(queue, []))})
        elif key == c.UNWATCH_QUEUE:
            connection.session.queues.discard(str(body["queue"]))
            reply({})
        elif key == c.HEARTBEAT:
            reply({"sessionUpdated": True, "haSwitchover": False})
        elif key == c.DESTROY_SESSION:
            self.sessions.pop(connection.session.id, None)
            connection.session = None
            reply({})
        else:
            reply({})

    def _create(
        self, connection: FakeConnection, body: dict[str, Any], reply: Any, error: Any
    ) -> None:
        if self.throttle:
            error("logon-throttled", "too many failed logons", retryAfter=self.throttle.pop(0))
            return
        self.site.logons.append({k: v for k, v in body.items() if k != "password"})
        if self.site.refusal is not None:  # a site-wide answer (tenant-limit, ...)
            code, extra = self.site.refusal
            error(code, f"refused: {code}", **extra)
            return
        if body.get("auth") == "certificate":
            if self.site.certificate_user is None:
                error("logon-failed", "no certificate", reason="no-certificate")
                return
            body = {**body, "user": body.get("user") or self.site.certificate_user}
        elif body.get("password") != self.site.password:
            error("logon-failed", "wrong user or password", reason="bad-credentials")
            return
        if not self.accept:
            roster = [b.entry() for b in self.site.bridges if b is not self]
            error("redirect", "try the roster", reason="maintenance", roster=roster)
            return
        n = next(self._ids)
        session = FakeSession(f"{self.name}.{n}", f"token-{self.name}-{n}", str(body["user"]))
        self.sessions[session.id] = session
        self._attach(connection, session)
        reply(
            {
                "sessionId": session.id,
                "resumeToken": session.token,
                "sessionTimeout": 90,
                "heartbeatInterval": 30,
                "server": self.entry(),
                "roster": [b.entry() for b in self.site.bridges],
                "selectionRule": None,
                "location": self.location,
            }
        )

    def _resume(
        self, connection: FakeConnection, body: dict[str, Any], reply: Any, error: Any
    ) -> None:
        if self.throttle:
            error("logon-throttled", "too many failed resumes", retryAfter=self.throttle.pop(0))
            return
        session = self.sessions.get(str(body.get("sessionId")))
        if session is None or self.resume_answer == "unknown-session":
            error("unknown-session", "no such session")
            return
        if body.get("resumeToken") != session.token or self.resume_answer == "bad-resume-token":
            error("logon-failed", "resume refused", reason="bad-resume-token")
            return
        received = int(body["received"])
        if session.connection is not None:
            session.connection.drop()
        if session.expiry is not None and session.expiry.active():
            session.expiry.cancel()
        self._attach(connection, session)
        first = session.buffer[0][0] if session.buffer else session.written + 1
        gap = received + 1 < first
        position = session.written if gap else received
        reply(
            {
                "sessionId": session.id,
                "resumed": True,
                "gap": gap,
                "position": position,
                "sessionTimeout": 90,
                "heartbeatInterval": 30,
                "server": self.entry(),
                "roster": [b.entry() for b in self.site.bridges],
            }
        )
        if gap:
            for queue in sorted(session.queues):
                snapshot = {
                    "queue": queue,
                    "reset": True,
                    "interactions": list(self.site.queues.get(queue, [])),
                }
                self.notify(session, c.QUEUE_CHANGED, snapshot)
        else:
            for number, frame in session.buffer:
                if number > received:
                    connection.send(frame)

    def _attach(self, connection: FakeConnection, session: FakeSession) -> None:
        connection.session = session
        session.connection = connection


class FakeSite:
    """A few fake bridges sharing one password and one set of queues."""

    def __init__(self, clock: Clock | None = None, password: str = "demo") -> None:
        self.clock = clock if clock is not None else Clock()
        self.password = password
        self.bridges: list[FakeBridge] = []
        self.queues: dict[str, list[dict[str, Any]]] = {}
        self.dialed: list[str] = []  # "host:port" (or the uri) of every dial, in order
        self.logons: list[dict[str, Any]] = []  # every CreateSession body, password left out
        # Set: every CreateSession of every bridge answers this error (code, extra fields).
        self.refusal: tuple[str, dict[str, Any]] | None = None
        # The user a certificate logon ("auth": "certificate") maps to; None: refused.
        self.certificate_user: str | None = None

    def add(
        self,
        name: str,
        port: int = 3952,
        location: str = "Indy",
        kind: str = "off-server",
        host: str | None = None,
    ) -> FakeBridge:
        bridge = FakeBridge(self, name, host or f"{name}.example", port, location, kind)
        self.bridges.append(bridge)
        return bridge

    def bridge(self, name: str) -> FakeBridge:
        return next(b for b in self.bridges if b.name == name)

    def dial(self, target: dict[str, Any]) -> defer.Deferred[Any]:
        """Connect to the bridge at the target's ``uri``, else its host and port (or refuse)."""
        uri = target.get("uri")
        if isinstance(uri, str):
            self.dialed.append(uri)
            for bridge in self.bridges:
                if bridge.uri == uri and bridge.up:
                    return defer.succeed(bridge.connect())
            return defer.fail(ConnectionRefusedError(uri))
        where = f"{target['host']}:{target['port']}"
        self.dialed.append(where)
        for bridge in self.bridges:
            if (bridge.host, bridge.port) == (target["host"], target["port"]) and bridge.up:
                return defer.succeed(bridge.connect())
        return defer.fail(ConnectionRefusedError(where))

    def publish(self, queue: str, item: dict[str, Any]) -> None:
        """Add an interaction to a queue: QueueChanged to every session watching it."""
        self.queues.setdefault(queue, []).append(item)
        for bridge in self.bridges:
            for session in list(bridge.sessions.values()):
                if queue in session.queues:
                    change = {"queue": queue, "added": [item], "changed": [], "removed": []}
                    bridge.notify(session, c.QUEUE_CHANGED, change)
