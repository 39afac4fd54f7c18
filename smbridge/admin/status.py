"""What ``GET /api/status`` says about a running bridge, built from its parts.

Pure over the objects it reads, so it is tested without HTTP. It never includes
a secret (no resume tokens, no passwords, no admin token).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import smbridge

if TYPE_CHECKING:
    from smbridge.admin.view import BridgeView


def status(bridge: BridgeView) -> dict[str, Any]:
    identity = bridge.config.identity
    upstream = bridge.upstream
    registered = upstream.registered
    transports = Counter(s.transport for s in bridge.registry)
    tunnel = bridge.tunnel
    accepting, accept_reason = bridge.router.accept_state()
    return {
        "name": identity.name,
        "fqdn": identity.fqdn,
        "kind": identity.kind,
        "location": identity.location,
        "version": smbridge.__version__,
        "accepting": accepting,
        "acceptReason": accept_reason,
        "acceptMode": bridge.router.accept_mode,
        "notifier": {
            "server": upstream.server,
            "state": upstream.state.value,
            "cic": registered.get("cic") if upstream.up else None,
            # Why the link is down (name mismatch, untrusted certificate, refused...);
            # null once it is up. Logged once per change as upstream.link.failed.
            "lastError": upstream.last_error,
            "attempts": upstream.attempts,
            "mode": bridge.config.switchover_mode,
            "addresses": [str(a) for a in bridge.config.notifiers],
            "switchovers": upstream.switchovers,
            "upstreamTimeout": upstream.request_timeout,
            "linkDeadAfter": upstream.dead_after,
            "load": bridge.load.state(),
        },
        "sessions": {"total": len(bridge.registry), "byTransport": dict(transports)},
        "topics": len(bridge.router.fanout.topics),
        "tunnel": None
        if tunnel is None
        else {"usesNvx": tunnel.uses_nvx, "hasNvx": tunnel.has_nvx},
        "memory": {"returnedKb": bridge.trimmer.returned_kb},
        "sender": bridge.connections.sender.status(),
        # Limits from the Notifier; use on this bridge (router/tenancy.py, docs/site-file.md).
        "tenants": bridge.router.watches.tenancy.status(bridge.reactor.seconds()),
    }


def healthy(bridge: BridgeView) -> tuple[bool, str]:
    """Healthy while the Notifier link is up: a bridge without it can serve no logon.

    A link whose Notifier stopped answering (``--link-dead-after``) is dropped, so it
    is not up: the reason says why (``lastError``).
    """
    upstream = bridge.upstream
    if upstream.up:
        return True, "ok"
    why = f": {upstream.last_error}" if upstream.last_error else ""
    return False, f"the Notifier link is {upstream.state.value}{why}"
