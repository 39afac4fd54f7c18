"""``GET /api/sessions`` rows and ``DELETE /api/sessions/{id}``, pure over the bridge.

A row holds the Session Managers view's columns (session id, user id, user name,
client version, extension, logon time, client id, station) plus how the client is
connected (transport, remote address), the session's state, and what the sender
holds for it. Never a resume token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from smbridge.session.session import EndReason, Session

if TYPE_CHECKING:
    from smbridge.admin.view import BridgeView


def iso_utc(seconds: float) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second (``2026-11-21T14:06:57Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_row(bridge: BridgeView, session: Session) -> dict[str, Any]:
    info = session.info
    peer = session.peer
    sender = bridge.connections.sender
    sent: dict[str, Any] = {"sentBytes": 0, "queuedBytes": 0, "byPriority": {}}
    held = 0
    if peer is not None:
        sent = sender.session_status(peer)  # type: ignore[arg-type]
        held_bytes = getattr(peer, "held_bytes", None)
        if callable(held_bytes):
            held = int(held_bytes())
    return {
        "sessionId": session.id,
        "userId": info.user_id,
        "userName": info.display_name,
        "clientVersion": info.client_version,
        "clientApp": info.client_app,
        "extension": info.extension,
        "logonTime": iso_utc(session.logon_time),
        "clientId": info.client_id,
        "station": info.station,
        "transport": session.transport,
        "remote": session.remote,
        "state": session.state.value,
        "connected": peer is not None,
        # What waits for this client: the limiter's queue plus the connection's backlog.
        "queuedBytes": int(sent["queuedBytes"]) + held,
        "sentBytes": int(sent["sentBytes"]),
        "sentByPriority": dict(sent["byPriority"]),
        "suppressedFrames": int(sent.get("suppressedFrames", 0)),
        "suppressedBytes": int(sent.get("suppressedBytes", 0)),
        "watches": len(session.topics),
    }


def session_rows(bridge: BridgeView) -> list[dict[str, Any]]:
    """Every session of the bridge, oldest logon first."""
    sessions = sorted(bridge.registry, key=lambda s: (s.logon_time, s.id))
    return [session_row(bridge, s) for s in sessions]


def terminate(bridge: BridgeView, session_id: str) -> dict[str, Any] | None:
    """End one session (SessionTerminated ``logout``) and close its connection.

    ``None`` when no session has that id.
    """
    session = bridge.registry.get(session_id)
    if session is None:
        return None
    row = session_row(bridge, session)
    peer = session.peer
    session.end(EndReason.LOGOUT)
    if peer is not None:
        peer.close()
    row["state"] = session.state.value
    return row
