"""Moving clients to other bridges: the Migrate notice (PROTOCOL §4.6).

Drain (the admin's ``POST /api/mode {"drain": true}``) and graceful shutdown both
ask clients to log on elsewhere now with ``Migrate {roster, reason}``; the client
library then logs on to the first bridge of that roster that takes it and
restores its watches without asking the user.
"""

from __future__ import annotations

from typing import Any

from smbridge.codec import Kind, encode
from smbridge.codec.catalog import MIGRATE


def migrate_frame(roster: list[dict[str, Any]], reason: str) -> bytes:
    """The encoded Migrate notification: where to go, best first, and why."""
    return encode(Kind.NOTIFICATION, *MIGRATE, 0, {"roster": roster, "reason": reason})
