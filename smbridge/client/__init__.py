"""smbridge client library: an IceLib-style Python client for a bridge, on Twisted.

Typical use (see docs/client.md for a runnable example)::

    client = await connect(reactor, "tls://bridge.example.com", ca=Path("ca.pem"))
    reply = await client.logon("alice", password, station="7001")
    snapshot = await client.watch_queue("Sales")    # {queue, interactions}
    client.add_listener(lambda name, frame: print(name, frame.body))
    ...
    await client.logoff()                            # DestroySession, then close

Public names:

- :func:`connect` ``(reactor, uri, *, ca=None, hostname=None, timeout=10,
  client_type="smbridge-client")`` dials ``tls://HOST[:3952]``, ``tcp://HOST[:3952]``,
  ``ws://`` or ``wss://PROXY/[extra/]SERVER/session`` and fires with a :class:`BridgeClient`.
- :class:`BridgeClient`: ``logon``, ``heartbeat``, ``get_version``, ``watch_queue``,
  ``unwatch_queue``, ``get_directory`` (every page), ``get_directory_page``,
  ``get_resource_uri``, ``download``,
  ``request((objectType, eventId), body)``,
  ``add_listener`` / ``remove_listener`` (``listener(name, frame)``), ``logoff``,
  ``close``, ``closed``, ``session_id``. After logon it heartbeats on its own.
- :class:`ClientError` ``(code, message, body)``: an ``error`` frame, or the local
  codes ``connection-lost``, ``not-connected``, ``connect-timeout``,
  ``handshake-refused``, ``download-failed``.
- :class:`BridgeProtocol`: the Twisted protocol underneath, for custom transports.
- :func:`parse_bridge_uri` and :class:`BridgeAddress`: URI parsing.
- :func:`logon_anywhere` ``(reactor, "tls://HOST", user, password, *, cache=None,
  ca=None, **logon)`` logs on at the typed host or wherever the roster leads, and
  :class:`RosterCache` ``(directory)`` keeps each site's roster (docs/roster.md).
  ``logon-failed`` and ``tenant-limit`` stop it at once (no other bridge is tried).
- :class:`SessionKeeper` ``(reactor, "tls://HOST", user, password="", *, ca=None,
  cert=None, key=None, cache=None, ...)`` (``cert``: every logon by that client
  certificate): one logical session across dropped connections (ResumeSession,
  then a fresh logon by the reconnect order, watches restored) and Migrate; listeners
  get every notification exactly once, in order (docs/client.md).
  :class:`KeeperEvent` is what its event listeners receive.
"""

from smbridge.client.discovery import logon_anywhere
from smbridge.client.keeper import KeeperEvent, SessionKeeper
from smbridge.client.protocol import BridgeProtocol, ClientError
from smbridge.client.roster_cache import RosterCache
from smbridge.client.session import BridgeClient, connect
from smbridge.client.uri import DEFAULT_PORTS, BridgeAddress, parse_bridge_uri

__all__ = [
    "DEFAULT_PORTS",
    "BridgeAddress",
    "BridgeClient",
    "BridgeProtocol",
    "ClientError",
    "KeeperEvent",
    "RosterCache",
    "SessionKeeper",
    "connect",
    "logon_anywhere",
    "parse_bridge_uri",
]
