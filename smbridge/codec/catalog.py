"""Message catalog (PROTOCOL §3) and the bridge↔Notifier link messages.

Every message is named by its (objectType, eventId) pair. Operators use these
numbers in server parameters, so they are public. The constants below are what
the code uses instead of bare numbers.

:data:`CLIENT_REQUESTS` is the allow-list of what a client may send: the requests
of PROTOCOL §3, nothing else. The router answers any other frame ``unknown-request``
and never forwards it, so a client cannot speak the link's objectType 200.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

MessageType = tuple[int, int]


class Priority(Enum):
    """Default bandwidth-limiter class of a message (PROTOCOL §5)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Entry(NamedTuple):
    name: str
    notification: bool
    priority: Priority


# --- client catalog (objectType, eventId) -------------------------------------
CREATE_SESSION = (168, 1)
DESTROY_SESSION = (168, 2)
HEARTBEAT = (168, 3)
GET_VERSION = (168, 4)
RESUME_SESSION = (168, 5)
TERMINATION_IMMINENT = (168, 10)
SESSION_TERMINATED = (168, 11)
SWITCHOVER = (168, 12)
MIGRATE = (168, 13)
GET_SERVERS = (169, 1)
ROSTER_CHANGED = (169, 2)
CHANGE_STATION = (170, 1)
SET_STATUS = (171, 1)
WATCH_STATUS = (171, 2)
UNWATCH_STATUS = (171, 3)
STATUS_CHANGED = (171, 4)
MAKE_CALL = (172, 1)
PICKUP = (172, 2)
DISCONNECT = (172, 3)
TRANSFER = (172, 4)
INTERACTION_CHANGED = (172, 5)
SEND_CHAT = (172, 6)
SEND_EMAIL = (172, 7)
CALLBACK = (172, 8)
WATCH_QUEUE = (173, 1)
UNWATCH_QUEUE = (173, 2)
QUEUE_CHANGED = (173, 3)
MY_INTERACTIONS_CHANGED = (173, 4)
QUEUE_SUSPENDED = (173, 5)
QUEUE_UNSUSPENDED = (173, 6)
GET_DIRECTORY = (174, 1)
SEARCH_DIRECTORY = (174, 2)
DIRECTORY_CHANGED = (174, 3)
GET_TRANSFER_TARGETS = (174, 4)
WATCH_STATISTICS = (175, 1)
UNWATCH_STATISTICS = (175, 2)
STATISTICS_CHANGED = (175, 3)
ACQUIRE_LICENSE = (176, 1)
RELEASE_LICENSE = (176, 2)
GET_RESOURCE_URI = (177, 1)
NOTIFICATION_SUPPRESSED = (190, 1)

# --- bridge↔Notifier link (objectType 200; docs/protocol.md §Link) ----------------
LINK_REGISTER = (200, 1)
LINK_AUTHENTICATE = (200, 2)
LINK_SUBSCRIBE = (200, 3)
LINK_UNSUBSCRIBE = (200, 4)
LINK_PING = (200, 5)
LINK_SESSION_OPENED = (200, 6)
LINK_SESSION_CLOSED = (200, 7)
LINK_PARAMETERS_CHANGED = (200, 8)
LINK_ROSTER_CHANGED = (200, 9)  # Notifier -> every registered bridge (docs/roster.md)
LINK_BRIDGE_CHANGED = (200, 10)  # bridge -> Notifier: its accept mode changed at run time
LINK_SET_ACCEPT = (200, 11)  # Notifier -> one bridge: switch your accept mode
LINK_TENANTS_CHANGED = (200, 20)  # Notifier -> every bridge: tenants' limits (docs/site-file.md)
LINK_SNAPSHOT_PART = (200, 12)  # Notifier -> bridge: the next piece of a Subscribe answer

H, M, L = Priority.HIGH, Priority.MEDIUM, Priority.LOW

CATALOG: dict[MessageType, Entry] = {
    CREATE_SESSION: Entry("CreateSession", False, H),
    DESTROY_SESSION: Entry("DestroySession", False, H),
    HEARTBEAT: Entry("Heartbeat", False, H),
    GET_VERSION: Entry("GetVersion", False, M),
    RESUME_SESSION: Entry("ResumeSession", False, H),
    TERMINATION_IMMINENT: Entry("TerminationImminent", True, H),
    SESSION_TERMINATED: Entry("SessionTerminated", True, H),
    SWITCHOVER: Entry("Switchover", True, H),
    MIGRATE: Entry("Migrate", True, H),
    GET_SERVERS: Entry("GetServers", False, M),
    ROSTER_CHANGED: Entry("RosterChanged", True, L),
    CHANGE_STATION: Entry("ChangeStation", False, H),
    SET_STATUS: Entry("SetStatus", False, H),
    WATCH_STATUS: Entry("WatchStatus", False, M),
    UNWATCH_STATUS: Entry("UnwatchStatus", False, M),
    STATUS_CHANGED: Entry("StatusChanged", True, H),
    MAKE_CALL: Entry("MakeCall", False, H),
    PICKUP: Entry("Pickup", False, H),
    DISCONNECT: Entry("Disconnect", False, H),
    TRANSFER: Entry("Transfer", False, H),
    INTERACTION_CHANGED: Entry("InteractionChanged", True, H),
    SEND_CHAT: Entry("SendChat", False, H),
    SEND_EMAIL: Entry("SendEmail", False, H),
    CALLBACK: Entry("Callback", False, H),
    WATCH_QUEUE: Entry("WatchQueue", False, M),
    UNWATCH_QUEUE: Entry("UnwatchQueue", False, M),
    QUEUE_CHANGED: Entry("QueueChanged", True, L),
    MY_INTERACTIONS_CHANGED: Entry("MyInteractionsChanged", True, H),
    QUEUE_SUSPENDED: Entry("QueueSuspended", True, H),
    QUEUE_UNSUSPENDED: Entry("QueueUnsuspended", True, H),
    GET_DIRECTORY: Entry("GetDirectory", False, M),
    SEARCH_DIRECTORY: Entry("SearchDirectory", False, M),
    DIRECTORY_CHANGED: Entry("DirectoryChanged", True, L),
    GET_TRANSFER_TARGETS: Entry("GetTransferTargets", False, M),
    WATCH_STATISTICS: Entry("WatchStatistics", False, M),
    UNWATCH_STATISTICS: Entry("UnwatchStatistics", False, M),
    STATISTICS_CHANGED: Entry("StatisticsChanged", True, L),
    ACQUIRE_LICENSE: Entry("AcquireLicense", False, H),
    RELEASE_LICENSE: Entry("ReleaseLicense", False, H),
    GET_RESOURCE_URI: Entry("GetResourceUri", False, M),
    NOTIFICATION_SUPPRESSED: Entry("NotificationSuppressed", True, H),
}

# --- what a client may send (PROTOCOL §3): an allow-list, not a deny-list ----------
# Requests the bridge answers itself (session, roster, fan-out, cache, resources).
BRIDGE_REQUESTS: frozenset[MessageType] = frozenset(
    {
        CREATE_SESSION,
        DESTROY_SESSION,
        HEARTBEAT,
        GET_VERSION,
        RESUME_SESSION,
        GET_SERVERS,
        WATCH_STATUS,
        UNWATCH_STATUS,
        WATCH_QUEUE,
        UNWATCH_QUEUE,
        GET_DIRECTORY,
        SEARCH_DIRECTORY,
        GET_TRANSFER_TARGETS,
        WATCH_STATISTICS,
        UNWATCH_STATISTICS,
        GET_RESOURCE_URI,
    }
)
# Requests forwarded to the Notifier with the session's identity ("upstream" in §3).
UPSTREAM_REQUESTS: frozenset[MessageType] = frozenset(
    {
        CHANGE_STATION,
        SET_STATUS,
        MAKE_CALL,
        PICKUP,
        DISCONNECT,
        TRANSFER,
        SEND_CHAT,
        SEND_EMAIL,
        CALLBACK,
        ACQUIRE_LICENSE,
        RELEASE_LICENSE,
    }
)
CLIENT_REQUESTS: frozenset[MessageType] = BRIDGE_REQUESTS | UPSTREAM_REQUESTS

LINK_NAMES: dict[MessageType, str] = {
    LINK_REGISTER: "Register",
    LINK_AUTHENTICATE: "Authenticate",
    LINK_SUBSCRIBE: "Subscribe",
    LINK_UNSUBSCRIBE: "Unsubscribe",
    LINK_PING: "Ping",
    LINK_SESSION_OPENED: "SessionOpened",
    LINK_SESSION_CLOSED: "SessionClosed",
    LINK_PARAMETERS_CHANGED: "ParametersChanged",
    LINK_ROSTER_CHANGED: "RosterChanged",
    LINK_BRIDGE_CHANGED: "BridgeChanged",
    LINK_SET_ACCEPT: "SetAccept",
    LINK_TENANTS_CHANGED: "TenantsChanged",
    LINK_SNAPSHOT_PART: "SnapshotPart",
}


def name_of(object_type: int, event_id: int) -> str:
    """Human name of a message, or ``(objectType,eventId)`` when unknown."""
    key = (object_type, event_id)
    entry = CATALOG.get(key)
    if entry is not None:
        return entry.name
    return LINK_NAMES.get(key, f"({object_type},{event_id})")


def priority_of(object_type: int, event_id: int) -> Priority:
    """Default priority of a message; unknown types are low (PROTOCOL §3)."""
    entry = CATALOG.get((object_type, event_id))
    return entry.priority if entry is not None else Priority.LOW
