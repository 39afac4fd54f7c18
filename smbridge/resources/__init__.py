"""Resource URIs a session is given (the note's Table 8), behind one seam.

The router asks a :class:`ResourceProvider` for a new session's ``resources`` and
for GetResourceUri answers. The connection's :class:`Origin` says how the client
reached the bridge (for the WebSocket tunnel: the client-facing base URI and the
server alias it dialed). The default provider knows no base URI and gives none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from smbridge.errors import NotFound


@dataclass(frozen=True, slots=True)
class Origin:
    """How a client reached this bridge, as its transport decoded it."""

    transport: str  # "tls", "clear", "ws", "wss"
    base_uri: str | None = None  # client-facing scheme://host[/extra/path], no trailing slash
    server: str | None = None  # the server segment the client dialed (possibly an alias)
    alias: str | None = None  # the public alias of that server, when one is mapped
    proxied: bool = False  # the handshake carried X-Forwarded-Host/-Proto (a reverse proxy)


class ResourceProvider(Protocol):
    def for_session(self, origin: Origin) -> dict[str, Any]:
        """The ``resources`` of a CreateSession reply."""
        ...

    def uri(self, origin: Origin, kind: str, path: str) -> str:
        """The URI of one resource (GetResourceUri); NotFound or BadRequest when none."""
        ...


class NoResources:
    """The default: no base URI is known, so no resource URIs are given."""

    def for_session(self, origin: Origin) -> dict[str, Any]:
        return {}

    def uri(self, origin: Origin, kind: str, path: str) -> str:
        raise NotFound(f"no resource URIs are known for {origin.transport} sessions")
