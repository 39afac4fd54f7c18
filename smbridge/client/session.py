"""The high-level, IceLib-style client: connect, log on, keep the session alive, watch.

``BridgeClient`` wraps one :class:`BridgeProtocol`. After a successful logon it sends
``Heartbeat`` every ``heartbeatInterval`` seconds (the bridge's answer to
CreateSession) from a ``LoopingCall`` on the injected clock, because a session that
hears nothing for its timeout is destroyed by the bridge. Heartbeats stop at logoff,
at close and when the bridge says ``SessionTerminated``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from smbridge import __version__, pki
from smbridge.client.calls import ClientCalls
from smbridge.client.protocol import BridgeProtocol, ClientError
from smbridge.client.uri import BridgeAddress, parse_bridge_uri
from smbridge.client.ws import DEFAULT_CLIENT_TYPE, dial
from smbridge.codec import Frame, name_of
from smbridge.codec.catalog import (
    CREATE_SESSION,
    DESTROY_SESSION,
    HEARTBEAT,
    RESUME_SESSION,
    SESSION_TERMINATED,
    MessageType,
)

NotificationListener = Callable[[str, Frame], object]


@dataclass(frozen=True)
class ResumeState:
    """What ResumeSession needs; the token stays out of ``repr`` (and so out of logs)."""

    session_id: str
    resume_token: str = field(repr=False)
    received: int


class BridgeClient(ClientCalls):
    """A connection to one bridge and, after :meth:`logon`, one session on it.

    The catalog's calls (``watch_queue``, ``get_directory``, ``download``...) are
    :class:`~smbridge.client.calls.ClientCalls`'; the session's life is here.
    """

    log = Logger()

    def __init__(
        self,
        protocol: BridgeProtocol,
        clock: IReactorTime,
        address: BridgeAddress | None = None,
        *,
        ca: Path | None = None,
        client_type: str = DEFAULT_CLIENT_TYPE,
        retry_delay: float = 1.0,
        heartbeat_timeout: float | None = None,
    ) -> None:
        self.protocol = protocol
        # A heartbeat unanswered this long means a dead connection: it is aborted.
        self.heartbeat_timeout = heartbeat_timeout
        self.retry_delay = retry_delay  # before the one retry of a retryable failure
        self.address = address
        self.ca = ca  # trusted for resource downloads too
        self.client_type = client_type
        self._clock = clock
        self._session_id: str | None = None
        self._resume_token: str | None = None  # kept for ResumeSession; never logged
        self.heartbeat_interval: float | None = None
        self.session_timeout: float | None = None
        self.terminated_reason: str | None = None
        # Notification frames received on this session, as the bridge numbers them (§4.5).
        self.received = 0
        self._heartbeats: LoopingCall | None = None
        self._listeners: dict[NotificationListener, Callable[[Frame], None]] = {}
        protocol.add_listener(self._on_notification)
        protocol.when_closed().addCallback(lambda _: self._stop_heartbeats())

    # --- session -------------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        """The current session's id; None before logon, after logoff or termination."""
        return self._session_id

    @property
    def closed(self) -> Deferred[Exception]:
        """A new Deferred that fires with the close reason when the connection ends."""
        return self.protocol.when_closed()

    def logon(
        self,
        user: str,
        password: str,
        *,
        station: str | None = None,
        session_timeout: float | None = None,
        min_session_timeout: float | None = None,
        notify_imminent: bool = True,
        client_id: str | None = None,
        client_app: str = "smbridge-client",
        client_version: str = __version__,
        host: str | None = None,
        _auth: str = "password",
    ) -> Deferred[dict[str, Any]]:
        """Send CreateSession; fires with the bridge's reply (which holds the resumeToken).

        Fails with ClientError: ``logon-failed`` (do not try other bridges),
        ``redirect``, ``session-timeout-too-small``… as the bridge answers.
        """
        if self._session_id is not None:
            return fail(RuntimeError(f"already logged on as session {self._session_id}"))
        body: dict[str, Any] = {
            "user": user,
            "password": password,
            "clientId": client_id if client_id is not None else socket.gethostname(),
            "clientApp": client_app,
            "clientVersion": client_version,
            "notifyImminent": notify_imminent,
        }
        if _auth == "certificate":  # logon_certificate: no password, the user optional
            body["auth"] = "certificate"
            del body["password"]
            if not user:
                del body["user"]
        if host is None and self.address is not None:
            host = self.address.host
        optional = {
            "station": station,
            "host": host,
            "sessionTimeout": session_timeout,
            "minSessionTimeout": min_session_timeout,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        self.log.info("Logging on as {user}", user=user, event="client.logon")
        return self.request(CREATE_SESSION, body).addCallback(self._logged_on)

    def logon_certificate(
        self,
        user: str | None = None,
        *,
        station: str | None = None,
        **options: Any,
    ) -> Deferred[dict[str, Any]]:
        """CreateSession by this connection's client certificate, without a password
        (docs/client.md, "Certificate logon"); ``options`` are :meth:`logon`'s."""
        return self.logon(user or "", "", station=station, _auth="certificate", **options)

    @property
    def resume_state(self) -> ResumeState | None:
        """Session id, resume token and ``received``, while a session is open."""
        if self._session_id is None or self._resume_token is None:
            return None
        return ResumeState(self._session_id, self._resume_token, self.received)

    def resume(self, state: ResumeState) -> Deferred[dict[str, Any]]:
        """Send ResumeSession on this (new) connection to reattach a lingering session.

        Fires with the bridge's reply ``{sessionId, resumed, gap, position, ...}``; from
        then on ``received`` counts on from ``position``, and heartbeats run. Fails
        with ClientError ``unknown-session`` (gone) or ``logon-failed`` with reason
        ``bad-resume-token``: log on afresh, do not resume again.
        """
        if self._session_id is not None:
            return fail(RuntimeError(f"already logged on as session {self._session_id}"))
        body = {
            "sessionId": state.session_id,
            "resumeToken": state.resume_token,
            "received": state.received,
        }
        self.log.info(
            "Resuming session {session} after {received} notification(s)",
            session=state.session_id,
            received=state.received,
            event="client.resume",
        )

        def resumed(reply: dict[str, Any]) -> dict[str, Any]:
            reply = {"resumeToken": state.resume_token, **reply}
            self._logged_on(reply)
            position = reply.get("position")
            self.received = position if isinstance(position, int) else state.received
            return reply

        return self.request(RESUME_SESSION, body).addCallback(resumed)

    def _logged_on(self, reply: dict[str, Any]) -> dict[str, Any]:
        self._session_id = str(reply["sessionId"])
        self._resume_token = reply.get("resumeToken")
        self.terminated_reason = None
        self.received = 0
        timeout = reply.get("sessionTimeout")
        self.session_timeout = float(timeout) if timeout is not None else None
        interval = reply.get("heartbeatInterval")
        if interval is None:  # not sent by this bridge: the documented rule
            interval = min((self.session_timeout or 1800) / 3, 300)
        self.heartbeat_interval = max(float(interval), 1.0)
        self._start_heartbeats(self.heartbeat_interval)
        self.log.info(
            "Session {session} open, heartbeat every {interval}s",
            session=self._session_id,
            interval=self.heartbeat_interval,
            event="client.session_open",
        )
        return reply

    def heartbeat(self) -> Deferred[dict[str, Any]]:
        """Send Heartbeat; fires with ``{sessionUpdated, haSwitchover}``."""
        return self.request(HEARTBEAT, {})

    def logoff(self) -> Deferred[None]:
        """Send DestroySession (if a session is open), then close the connection.

        Fires once the connection has ended. A failed DestroySession is logged, not
        raised: the goal is to be gone, and a bridge that cannot answer has already
        lost the session or will expire it.
        """
        self._stop_heartbeats()
        session, self._session_id = self._session_id, None
        if session is None or not self.protocol.connected:
            return self.close()
        d = self.request(DESTROY_SESSION, {})

        def failed(failure: Any) -> None:
            failure.trap(ClientError)
            self.log.warn(
                "DestroySession failed: {error}",
                error=str(failure.value),
                event="client.logoff_failed",
            )

        d.addCallbacks(lambda _: None, failed)
        return d.addCallback(lambda _: self.close())

    def close(self) -> Deferred[None]:
        """Close the connection without logging off (the session lingers on the bridge)."""
        self._stop_heartbeats()
        return self.protocol.close().addCallback(lambda _: None)

    # --- requests ------------------------------------------------------------------
    def request(
        self, message: MessageType, body: dict[str, Any] | None = None
    ) -> Deferred[dict[str, Any]]:
        """Send any request ``(objectType, eventId)``; fires with the response payload.

        A failure the bridge marks ``retryable`` (``upstream-unavailable`` while it
        switches to another Notifier) is retried once, ``retry_delay`` seconds later;
        a second failure is the caller's.
        """
        object_type, event_id = message
        d = self.protocol.request(object_type, event_id, body)

        def retry(failure: Failure) -> Deferred[dict[str, Any]]:
            error = failure.value
            if not isinstance(error, ClientError) or not error.retryable:
                failure.raiseException()
            self.log.info(
                "Retrying {name} once after {code}",
                name=name_of(object_type, event_id),
                code=error.code,
                event="client.retry",
            )
            wait: Deferred[None] = deferLater(self._clock, self.retry_delay, lambda: None)
            return wait.addCallback(lambda _: self.protocol.request(object_type, event_id, body))

        return d.addErrback(retry)

    # --- notifications -------------------------------------------------------------
    def add_listener(self, listener: NotificationListener) -> None:
        """Call ``listener(name, frame)`` for every notification (``frame.body`` is the payload)."""

        def adapter(frame: Frame) -> None:
            listener(name_of(frame.object_type, frame.event_id), frame)

        self._listeners[listener] = adapter
        self.protocol.add_listener(adapter)

    def remove_listener(self, listener: NotificationListener) -> None:
        self.protocol.remove_listener(self._listeners.pop(listener))

    def _on_notification(self, frame: Frame) -> None:
        if self._session_id is not None:
            self.received += 1
        if (frame.object_type, frame.event_id) == SESSION_TERMINATED:
            self.terminated_reason = str(frame.parsed().get("reason", "unknown"))
            self.log.info(
                "Session {session} terminated: {reason}",
                session=self._session_id,
                reason=self.terminated_reason,
                event="client.session_terminated",
            )
            self._session_id = None
            self._stop_heartbeats()

    # --- heartbeats ----------------------------------------------------------------
    def _start_heartbeats(self, interval: float) -> None:
        self._stop_heartbeats()
        loop = LoopingCall(self._beat)
        loop.clock = self._clock
        loop.start(interval, now=False)
        self._heartbeats = loop

    def _stop_heartbeats(self) -> None:
        loop, self._heartbeats = self._heartbeats, None
        if loop is not None and loop.running:
            loop.stop()

    def _beat(self) -> None:
        # Not returned to the LoopingCall: a slow answer must not delay the next beat.
        def failed(failure: Any) -> None:
            failure.trap(ClientError)
            self.log.warn(
                "Heartbeat failed: {error}",
                error=str(failure.value),
                event="client.heartbeat_failed",
            )
            if failure.value.code in ("no-session", "connection-lost", "not-connected"):
                self._stop_heartbeats()

        d = self.heartbeat()
        if self.heartbeat_timeout is not None:
            silent = self._clock.callLater(self.heartbeat_timeout, self._silent)

            def answered(result: object) -> object:
                if silent.active():
                    silent.cancel()
                return result

            d.addBoth(answered)
        d.addErrback(failed)

    def _silent(self) -> None:
        """No answer to a heartbeat: the connection is dead even if TCP has not noticed."""
        self.log.warn(
            "No heartbeat answer within {timeout}s; dropping the connection",
            timeout=self.heartbeat_timeout,
            event="client.heartbeat_timeout",
        )
        transport: Any = self.protocol.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            (abort or transport.loseConnection)()


def connect(
    reactor: Any,
    uri: str | BridgeAddress,
    *,
    ca: Path | None = None,
    hostname: str | None = None,
    timeout: float = 10,
    client_type: str = DEFAULT_CLIENT_TYPE,
    cert: Path | None = None,
    key: Path | None = None,
) -> Deferred[BridgeClient]:
    """Dial a bridge URI; fires with a :class:`BridgeClient` once the stream is ready.

    ``tls://`` and ``tcp://`` reach the bridge's listener; ``ws://`` and ``wss://``
    its WebSocket tunnel, usually through a reverse proxy, sending ``ININ-Client-Type:
    client_type``. For ``tls://`` and ``wss://`` the server's certificate and name are
    verified: against ``ca`` (a PEM file) when given, else the platform's trust store.
    ``hostname`` overrides the name checked (by default the URI's host). The Deferred
    fails with ``ConnectError`` subclasses, ClientError ``connection-lost`` when TLS
    fails, or ClientError ``handshake-refused`` (with ``status``) when the WebSocket
    handshake is refused. ``cert`` (with ``key``, or a PEM holding both) is a client
    certificate presented in the TLS handshake, for :meth:`BridgeClient.logon_certificate`.
    """
    try:
        address = uri if isinstance(uri, BridgeAddress) else parse_bridge_uri(uri)
    except ValueError as e:
        return fail(e)
    if address.websocket:
        protocol, connecting = dial(
            reactor, address, ca=ca, hostname=hostname, timeout=timeout, client_type=client_type,
            cert=cert, key=key,
        )  # fmt: skip
    else:
        endpoint: Any = HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
        if address.tls:
            options = pki.client_options(hostname or address.host, ca, cert, key)
            endpoint = wrapClientTLS(options, endpoint)
        protocol = BridgeProtocol(tls=address.tls)
        connecting = connectProtocol(endpoint, protocol)
    d = connecting.addCallback(lambda _: protocol.ready)
    d.addTimeout(
        timeout, reactor, onTimeoutCancel=lambda *_: _timed_out(protocol, address, timeout)
    )
    return d.addCallback(
        lambda p: BridgeClient(p, reactor, address, ca=ca, client_type=client_type)
    )


def _timed_out(protocol: BridgeProtocol, address: BridgeAddress, timeout: float) -> None:
    protocol.close()
    raise ClientError("connect-timeout", f"no connection to {address} within {timeout}s")
