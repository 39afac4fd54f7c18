"""Interactions and user statuses on the Notifier's model, with the events they publish.

Every operation here changes topic state through :meth:`Notifier.emit`, so the
change event is applied, stamped with ``at`` and sent in one step. The
forwarded requests (:mod:`smbridge.notifier.actions`) and the traffic generator
(:mod:`smbridge.notifier.traffic`) both drive the model through this class, so a
call an agent picks up by hand and one the generator hands out look the same.

An interaction is an item ``{id, type, state, direction, ...}`` with ``type`` one
of call, chat, email, callback. It is either in one queue (``from``,
``workgroup``, ``arrived``) or in the My Interactions of one or more users
(``remote``, ``user``, ``started``; ``workgroup`` when it came from a queue).

Events: QueueChanged on ``queue:<q>``; MyInteractionsChanged ``{user, added,
changed, removed}`` and InteractionChanged ``{user, interaction}`` on
``user:<id>``; StatusChanged ``{user, status, since}`` on ``status:<id>``.
Statistics follow from :class:`~smbridge.notifier.statistics.Statistics`.

Status follows the calls, as ACD does: a user who is Available goes On Phone when
a call connects; when their last connected call ends they go to Follow Up if it
came from a workgroup queue, else back to Available.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from smbridge.codec.catalog import (
    INTERACTION_CHANGED,
    MY_INTERACTIONS_CHANGED,
    STATUS_CHANGED,
    MessageType,
)
from smbridge.errors import NotFound, ProtocolError
from smbridge.notifier.site import AVAILABLE, FOLLOW_UP, ON_PHONE, Site
from smbridge.notifier.statistics import Statistics
from smbridge.topics import Item, ItemSetState, RecordState, status_topic, user_topic


class InteractionsModel(Protocol):
    """What interactions need of the Notifier's model (the ``Notifier``)."""

    @property
    def site(self) -> Site: ...

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def statistics(self) -> Statistics: ...

    @property
    def queue_workgroups(self) -> Mapping[str, Sequence[str]]: ...

    def queue_state(self, queue: str) -> ItemSetState: ...

    def user_state(self, user: str) -> ItemSetState: ...

    def status_state(self, user: str) -> RecordState: ...

    def status_of(self, user: str) -> str: ...

    def queue_of(self, interaction_id: Any) -> str | None: ...

    def emit(self, topic: str, message: MessageType, payload: dict[str, Any]) -> int: ...

    def change_queue(
        self,
        queue: str,
        added: Sequence[Item] = (),
        changed: Sequence[Item] = (),
        removed: Sequence[Any] = (),
    ) -> int: ...


CONNECTED, ALERTING, OFFERING = "Connected", "Alerting", "Offering"


class Forbidden(ProtocolError):
    code = "forbidden"


class Interactions:
    """The registry of live interactions and the operations that move them."""

    def __init__(self, notifier: InteractionsModel) -> None:
        self.notifier = notifier
        self.created = 0
        self.owners: dict[str, list[str]] = {}  # interaction id -> users holding it
        self._chats: dict[tuple[str, str], str] = {}

    def new_id(self, kind: str) -> str:
        self.created += 1
        return f"{kind}-{self.created}"

    # --- low-level steps: one event each ----------------------------------------------
    def enqueue(self, queue: str, item: Item, drop: list[str] | None = None) -> Item:
        """Add ``item`` to ``queue``; ids in ``drop`` leave it, abandoned, in the same event."""
        self.notifier.change_queue(queue, added=[item], removed=drop or ())
        workgroups = self.notifier.queue_workgroups.get(queue, ())
        if drop and workgroups:
            for _ in drop:
                self.notifier.statistics.call_abandoned(workgroups[0])
        return item

    def leave_queue(self, queue: str, interaction_id: str) -> Item:
        item = self.notifier.queue_state(queue).items[interaction_id]
        self.notifier.change_queue(queue, removed=[interaction_id])
        return item

    def offer(self, user: str, item: Item) -> None:
        """Put ``item`` (whose ``user`` is ``user``) into the user's My Interactions."""
        self.owners.setdefault(item["id"], []).append(user)
        self._my_interactions(user, added=[item])

    def update(self, user: str, item: Item) -> None:
        self.notifier.emit(
            user_topic(user), INTERACTION_CHANGED, {"user": user, "interaction": item}
        )

    def drop(self, user: str, interaction_id: str) -> None:
        owners = self.owners.get(interaction_id, [])
        if user in owners:
            owners.remove(user)
        if not owners:
            self.owners.pop(interaction_id, None)
        self._my_interactions(user, removed=[interaction_id])

    def _my_interactions(self, user: str, **change: list[Any]) -> None:
        topic = user_topic(user)
        payload = {"user": user, "added": [], "changed": [], "removed": [], **change}
        self.notifier.emit(topic, MY_INTERACTIONS_CHANGED, payload)
        self.notifier.statistics.interactions_count(user, len(self.items_of(user)))

    def set_status(self, user: str, status: str) -> dict[str, Any]:
        """Set a user's status (no event when it is already that); answer the status record."""
        state = self.notifier.status_state(user)
        if state.record.get("status") != status:
            self.notifier.emit(
                status_topic(user),
                STATUS_CHANGED,
                {"user": user, "status": status, "since": self.notifier.clock.seconds()},
            )
        return {"user": user, "status": state.record["status"], "since": state.record["since"]}

    # --- lookups ----------------------------------------------------------------------
    def items_of(self, user: str) -> dict[Any, Item]:
        return self.notifier.user_state(user).items

    def held(self, user: str, interaction_id: Any) -> Item:
        item = self.items_of(user).get(interaction_id)
        if item is None:
            raise NotFound(f"interaction {interaction_id!r} is not in {user}'s My Interactions")
        return item

    # --- operations -------------------------------------------------------------------
    def pickup(self, user: str, interaction_id: Any) -> Item:
        """Take a waiting interaction from a queue of one of the user's workgroups, or answer one.

        An interaction already in the user's My Interactions must be Alerting; it connects.
        """
        n = self.notifier
        mine = self.items_of(user).get(interaction_id)
        if mine is not None:
            if mine.get("state") != ALERTING:
                raise ProtocolError(
                    f"interaction {interaction_id!r} is {mine.get('state')}, not Alerting",
                    code="bad-request",
                )
            item = dict(mine, state=CONNECTED, started=n.clock.seconds())
            self.update(user, item)
            self._call_started(user, item)
            return item
        queue = n.queue_of(interaction_id)
        if queue is None:
            raise NotFound(f"no interaction {interaction_id!r} waits in a queue")
        workgroups = n.queue_workgroups.get(queue, ())
        if not set(workgroups) & set(n.site.users[user].workgroups):
            raise Forbidden(
                f"{user} is not a member of a workgroup of queue {queue!r} "
                f"({', '.join(workgroups)})"
            )
        waiting = self.leave_queue(queue, interaction_id)
        now = n.clock.seconds()
        arrived = waiting.get("arrived")
        if workgroups and isinstance(arrived, int | float):
            n.statistics.call_answered(workgroups[0], now - arrived)
        item = {
            "id": waiting["id"],
            "type": waiting.get("type", "call"),
            "state": CONNECTED,
            "direction": waiting.get("direction", "inbound"),
            "remote": waiting.get("from"),
            "workgroup": waiting.get("workgroup", workgroups[0] if workgroups else None),
            "user": user,
            "started": now,
        }
        for extra in ("subject", "arrived"):
            if extra in waiting:
                item[extra] = waiting[extra]
        self.offer(user, item)
        self._call_started(user, item)
        return item

    def disconnect(self, user: str, interaction_id: Any) -> Item:
        """End an interaction: it leaves the My Interactions of everyone holding it."""
        item = self.held(user, interaction_id)
        for owner in list(self.owners.get(interaction_id, [user])):
            self._end(owner, interaction_id)
        return dict(item, state="Disconnected")

    def transfer(self, user: str, interaction_id: Any, target: str) -> Item:
        """Move a held interaction to another user (Alerting) or a workgroup's queue."""
        n = self.notifier
        item = self.held(user, interaction_id)
        wg = n.site.workgroups.get(target)
        if wg is None and (target not in n.site.users or target == user):
            raise NotFound(f"no user or workgroup {target!r} to transfer to")
        self._end(user, interaction_id)
        n.statistics.call_transferred(user)
        now = n.clock.seconds()
        if wg is not None:
            moved = {
                "id": item["id"],
                "type": item.get("type", "call"),
                "state": OFFERING,
                "direction": item.get("direction", "inbound"),
                "from": item.get("remote"),
                "workgroup": wg.name,
                "arrived": now,
            }
            return self.enqueue(wg.queue, moved)
        moved = dict(item, state=ALERTING, user=target, started=now, transferredBy=user)
        self.offer(target, moved)
        return moved

    def make_call(self, user: str, target: str) -> Item:
        item = {
            "id": self.new_id("call"),
            "type": "call",
            "state": CONNECTED,
            "direction": "outbound",
            "remote": target,
            "user": user,
            "started": self.notifier.clock.seconds(),
        }
        self.offer(user, item)
        self.notifier.statistics.call_made(user)
        self._call_started(user, item)
        return item

    def chat(self, user: str, to: str, text: str) -> Item:
        """A chat between two users, shared by both; a later message updates the same chat."""
        key = (min(user, to), max(user, to))
        now = self.notifier.clock.seconds()
        existing = self._chats.get(key)
        if existing is not None and user in self.owners.get(existing, ()):
            mine: Item = {}
            for owner in self.owners[existing]:
                item = dict(self.items_of(owner)[existing], lastMessage=text, lastFrom=user)
                self.update(owner, item)
                if owner == user:
                    mine = item
            return mine
        chat_id = self.new_id("chat")
        self._chats[key] = chat_id
        mine = {}
        for owner, remote, direction in ((user, to, "outbound"), (to, user, "inbound")):
            item = {
                "id": chat_id,
                "type": "chat",
                "state": CONNECTED,
                "direction": direction,
                "remote": remote,
                "user": owner,
                "started": now,
                "lastMessage": text,
                "lastFrom": user,
            }
            self.offer(owner, item)
            if owner == user:
                mine = item
        return mine

    def email(self, user: str, to: str, subject: str) -> Item:
        n = self.notifier
        now = n.clock.seconds()
        wg = n.site.workgroups.get(to)
        if wg is not None:
            item = {
                "id": self.new_id("email"),
                "type": "email",
                "state": OFFERING,
                "direction": "inbound",
                "from": user,
                "subject": subject,
                "workgroup": wg.name,
                "arrived": now,
            }
            return self.enqueue(wg.queue, item)
        if to not in n.site.users:
            raise NotFound(f"no user or workgroup {to!r} to send an email to")
        item = {
            "id": self.new_id("email"),
            "type": "email",
            "state": ALERTING,
            "direction": "inbound",
            "remote": user,
            "subject": subject,
            "user": to,
            "started": now,
        }
        self.offer(to, item)
        return item

    def callback(self, user: str, number: str, workgroup: str) -> Item:
        wg = self.notifier.site.workgroups[workgroup]
        item = {
            "id": self.new_id("callback"),
            "type": "callback",
            "state": OFFERING,
            "direction": "outbound",
            "from": number,
            "workgroup": wg.name,
            "arrived": self.notifier.clock.seconds(),
            "requestedBy": user,
        }
        return self.enqueue(wg.queue, item)

    # --- status follows the calls -----------------------------------------------------
    def _call_started(self, user: str, item: Item) -> None:
        if item.get("type") == "call" and self.notifier.status_of(user) == AVAILABLE:
            self.set_status(user, ON_PHONE)

    def _end(self, user: str, interaction_id: Any) -> None:
        item = self.items_of(user).get(interaction_id)
        if item is None:
            return
        self.drop(user, interaction_id)
        if item.get("type") != "call" or item.get("state") != CONNECTED:
            return
        started = item.get("started")
        if isinstance(started, int | float):
            self.notifier.statistics.call_ended(user, self.notifier.clock.seconds() - started)
        still_talking = any(
            i.get("type") == "call" and i.get("state") == CONNECTED
            for i in self.items_of(user).values()
        )
        if not still_talking and self.notifier.status_of(user) == ON_PHONE:
            self.set_status(user, FOLLOW_UP if item.get("workgroup") else AVAILABLE)
