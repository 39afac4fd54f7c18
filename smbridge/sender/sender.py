"""The adapter that drives the scheduler from the reactor: one per bridge.

Client connections hand it frames only while the limiter is enabled; with the
limiter off (the default) they keep their direct, one-write-per-turn path and
the sender costs nothing. It follows the server parameters (``configure``),
releases what the scheduler says is due, and wakes itself at the scheduler's
``wake_at``. Backpressure stays with each connection (it is the producer its
transport pauses); the sender only reads how much each one holds.

It also runs the memory safeguard: it recounts the bytes held for sending while
any are held, switches the safeguard on above ``Maximum Process Private Bytes``
and off under it, and while it is on every connection passes its frames through
``guard`` (large non-high frames suppressed; see docs/sender.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.codec import Kind, encode, encode_error
from smbridge.codec.catalog import (
    NOTIFICATION_SUPPRESSED,
    QUEUE_CHANGED,
    QUEUE_SUSPENDED,
    QUEUE_UNSUSPENDED,
    Priority,
)
from smbridge.sender.parameters import LimiterSettings, apply
from smbridge.sender.scheduler import PRIORITIES, Scheduler, _class_of
from smbridge.transports.batch import WriteBatcher

MEMORY_CHECK_SECONDS = 0.25  # how often held bytes are recounted while anything is held
SUPPRESSED_NOTICE_SECONDS = 1.0  # at most one NotificationSuppressed per session, type and second
QUEUE_CHANGED_KEY = QUEUE_CHANGED[0].to_bytes(2, "big") + QUEUE_CHANGED[1].to_bytes(2, "big")


class Receiver(Protocol):
    """A connection the sender writes to."""

    def __hash__(self) -> int: ...

    def deliver(self, data: bytes) -> None: ...

    def limiting_changed(self, limited: bool) -> None: ...

    def held_bytes(self) -> int: ...

    def guard_changed(self, active: bool) -> None: ...

    def send(self, data: bytes) -> None: ...


class Sender:
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        settings: LimiterSettings | None = None,
        batcher: WriteBatcher | None = None,
    ) -> None:
        self.clock = clock
        # The turn's end: the write batcher's flush (first, so what it releases is
        # written in the same turn), or a call of its own without one.
        self._batcher = batcher
        self.settings = settings or LimiterSettings()
        self.scheduler = Scheduler(self.settings, clock.seconds())
        self.limited = self.settings.enabled
        self.errors: list[str] = []
        self.receivers: set[Receiver] = set()
        self._soon = False  # the turn-end call (flush) is scheduled
        # What receivers sent this turn while limiting, for the turn's end (``collect``).
        self.inbox: list[tuple[Hashable, bytes]] = []
        self._wake: IDelayedCall | None = None
        self._stopped = False
        # The memory safeguard (docs/sender.md).
        self.safeguard_active = False
        self.queue_snapshot: Callable[[str], dict[str, Any] | None] = lambda name: None
        self.suppressed = {p.value: {"frames": 0, "bytes": 0} for p in Priority}
        self._suppressed_by: dict[Receiver, list[int]] = {}  # [frames, bytes] per receiver
        self._suppressing: set[Receiver] = set()  # receivers logged this safeguard episode
        # What connections wrote, limiter on or off: [frames, bytes] by frame header
        # (kind, objectType, eventId); classified only when read (``written_by_priority``).
        self.written: dict[bytes, list[int]] = {}
        self._unreported: dict[tuple[Receiver, int, int], list[float]] = {}  # [count, last notice]
        self._suspended: dict[Receiver, set[str]] = {}
        self._monitor: IDelayedCall | None = None

    # --- receivers ----------------------------------------------------------
    def attach(self, receiver: Receiver) -> None:
        self.receivers.add(receiver)
        if self.limited:
            receiver.limiting_changed(True)
        if self.safeguard_active:
            receiver.guard_changed(True)

    def detach(self, receiver: Receiver) -> None:
        self.receivers.discard(receiver)
        if self.inbox:
            self.inbox[:] = [item for item in self.inbox if item[0] is not receiver]
        self.scheduler.forget(receiver)
        self._suspended.pop(receiver, None)
        self._suppressed_by.pop(receiver, None)
        self._suppressing.discard(receiver)
        for key in [k for k in self._unreported if k[0] is receiver]:
            del self._unreported[key]
        if not self.receivers and not self.safeguard_active:
            self._rest()  # nothing left to hold

    def _rest(self) -> None:
        """The last receiver left: cancel the wake-up and the memory check, stay usable.

        Nothing waits (each receiver's frames left with it), so nothing is due; the next
        frame or paused connection arms them again. Unlike ``stop``, this is not final.
        """
        for name in ("_monitor", "_wake"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()

    def take_waiting(self, receiver: Receiver) -> list[bytes]:
        """Remove and return what waits in the limiter for ``receiver``, oldest first.

        Its session is leaving that connection (dropped, or resumed elsewhere): these
        frames were never written, so the session keeps them for its replay.
        """
        frames = self.scheduler.waiting(receiver)
        self.scheduler.forget(receiver)
        if self.inbox:
            frames += [item[1] for item in self.inbox if item[0] is receiver]
            self.inbox[:] = [item for item in self.inbox if item[0] is not receiver]
        return frames

    # --- parameters ---------------------------------------------------------
    def configure(self, parameters: Mapping[str, Any]) -> list[str]:
        """Follow the server parameters; refused values are logged and kept as they were."""
        settings, errors = apply(self.settings, parameters)
        for error in errors:
            self.log.warn("Server parameter refused: {error}", error=error, event="sender.refused")
        self.errors = errors
        if settings != self.settings:
            self._ingest()
            self.settings = settings
            self.scheduler.configure(settings, self.clock.seconds())
            self.log.info(
                "Bandwidth limiter {state}: {total} bytes per {interval} ms, medium {medium} %",
                state="enabled" if settings.enabled else "disabled",
                total=settings.total_bytes,
                interval=settings.interval_ms,
                medium=settings.medium_percent,
                event="sender.configured",
            )
            if settings.enabled is not self.limited:
                self.limited = settings.enabled
                for receiver in list(self.receivers):
                    receiver.limiting_changed(self.limited)
            self.release()
        return errors

    # --- frames -------------------------------------------------------------
    def enqueue(self, receiver: Receiver, data: bytes) -> None:
        """Take one frame for ``receiver`` (only called while the limiter is enabled)."""
        scheduler = self.scheduler
        if self.inbox:
            self._ingest()  # frames collected earlier in this turn go first
        scheduler.enqueue(receiver, data, self.clock.seconds())
        if not scheduler.limiting:
            for released, frame in scheduler.take_released():  # under the limit: no delay
                released.deliver(frame)  # type: ignore[attr-defined]
        elif not self._soon:
            self._at_turn_end()

    def _at_turn_end(self) -> None:
        self._soon = True
        if self._batcher is not None:
            self._batcher.mark(self)
        else:
            self.clock.callLater(0, self.flush)

    def collect(self) -> None:
        """Frames wait in ``inbox`` (limiting is on): take them at the turn's end.

        While limiting, a connection appends ``(itself, frame)`` to the shared inbox
        and calls this when the inbox was empty; at the turn's end the sender hands
        the whole inbox to the scheduler in one call.
        """
        if not self._soon:
            self._at_turn_end()

    def _ingest(self) -> None:
        inbox = self.inbox
        items = inbox[:]
        inbox.clear()  # cleared in place: connections hold a reference to it
        self.scheduler.enqueue_batch(items, self.clock.seconds())

    def flush(self) -> None:
        """End of a turn in which frames were queued: release them if the budget has room.

        One release per turn for everything queued in it; when the paced budget is
        spent, the wake-up at the next step releases it instead.
        """
        self._soon = False
        self._ingest()
        scheduler = self.scheduler
        wake = self._wake
        awake = wake is not None and wake.active()
        if not scheduler.pending and (awake or not scheduler.limiting):
            # Everything went out at once and the wake-up (if limiting) stands.
            for receiver, data in scheduler.take_released():
                receiver.deliver(data)  # type: ignore[attr-defined]
            return
        if (
            not scheduler.limiting
            or wake is None
            or not wake.active()
            or scheduler.has_room(self.clock.seconds())
        ):
            self.release()

    def release(self) -> None:
        """Deliver what is due and set the wake-up for the rest."""
        if self.inbox:
            self._ingest()
        out, wake = self.scheduler.due(self.clock.seconds())
        for receiver, data in out:
            receiver.deliver(data)  # type: ignore[attr-defined]
        if self.scheduler.limiting and self._monitor is None:
            self.watch_memory()
        call = self._wake
        if call is not None and call.active():
            if wake is not None and call.getTime() == wake:
                return
            call.cancel()
        self._wake = None
        if wake is not None and not self._stopped:
            self._wake = self.clock.callLater(max(0.0, wake - self.clock.seconds()), self.release)

    # --- accounting ---------------------------------------------------------
    def held_bytes(self, receivers: Iterable[Receiver] | None = None) -> int:
        """Bytes held for sending: the limiter's queues plus every connection's backlog."""
        held = self.scheduler.queued_bytes + sum(len(item[1]) for item in self.inbox)
        for receiver in self.receivers if receivers is None else receivers:
            held += receiver.held_bytes()
        return held

    # --- the memory safeguard -------------------------------------------------
    def watch_memory(self) -> None:
        """Recount held bytes in MEMORY_CHECK_SECONDS, and every as long as anything is held."""
        if self._monitor is None and not self._stopped:
            self._monitor = self.clock.callLater(MEMORY_CHECK_SECONDS, self._tick)

    def _tick(self) -> None:
        self._monitor = None
        self.check_memory()

    def check_memory(self) -> int:
        """Count held bytes exactly; switch the safeguard on above the limit, off under it."""
        held = self.held_bytes()
        over = held > self.settings.max_private_bytes
        if over and not self.safeguard_active:
            self.safeguard_active = True
            self.log.warn(
                "Memory safeguard on: {held} bytes held for sending, limit {limit}",
                held=held,
                limit=self.settings.max_private_bytes,
                event="sender.safeguard_on",
            )
            for receiver in list(self.receivers):
                receiver.guard_changed(True)
        elif not over and self.safeguard_active:
            self._recover(held)
        busy = held or self.scheduler.limiting or self.safeguard_active
        if self._monitor is None and busy and not self._stopped:
            self._monitor = self.clock.callLater(MEMORY_CHECK_SECONDS, self._tick)
        return held

    def stop(self) -> None:
        """Cancel the memory check and any pending release; schedule nothing after this.

        Connections still closing after the bridge stops may ask for a check; a
        stopped sender ignores them, so nothing is left on the reactor.
        """
        self._stopped = True
        self._rest()

    def _recover(self, held: int) -> None:
        self.safeguard_active = False
        self._suppressing.clear()
        self.log.info(
            "Memory safeguard off: {held} bytes held for sending, limit {limit}",
            held=held,
            limit=self.settings.max_private_bytes,
            event="sender.safeguard_off",
        )
        for receiver in list(self.receivers):
            receiver.guard_changed(False)
        unreported, self._unreported = self._unreported, {}
        for (receiver, object_type, event_id), (count, _) in unreported.items():
            if count and receiver in self.receivers:
                receiver.send(self._suppressed_notice(object_type, event_id, int(count)))
        suspended, self._suspended = self._suspended, {}
        for receiver, queues in suspended.items():
            if receiver not in self.receivers:
                continue
            for queue in sorted(queues):
                receiver.send(encode(Kind.NOTIFICATION, *QUEUE_UNSUSPENDED, 0, {"queue": queue}))
                snapshot = self.queue_snapshot(queue)
                if snapshot is not None:
                    items = snapshot.get("interactions", [])
                    body = {"queue": queue, "reset": True, "interactions": items}
                    receiver.send(encode(Kind.NOTIFICATION, *QUEUE_CHANGED, 0, body))

    @staticmethod
    def _suppressed_notice(object_type: int, event_id: int, count: int) -> bytes:
        body = {"objectType": object_type, "eventId": event_id, "count": count}
        return encode(Kind.NOTIFICATION, *NOTIFICATION_SUPPRESSED, 0, body)

    def guard(self, receiver: Receiver, data: bytes) -> bytes | None:
        """While the safeguard is on: the frame to send instead of ``data`` (``None``: drop).

        Small frames and high-priority frames pass unchanged.
        """
        if len(data) <= self.settings.small_message_bytes:
            return data
        c = _class_of(data, self.settings)
        if c == 0:
            return data
        counts = self.suppressed[PRIORITIES[c].value]
        counts["frames"] += 1
        counts["bytes"] += len(data)
        mine = self._suppressed_by.get(receiver)
        if mine is None:
            mine = self._suppressed_by[receiver] = [0, 0]
        if receiver not in self._suppressing:
            self._suppressing.add(receiver)  # logged once per session and safeguard episode
            session = getattr(receiver, "session", None)
            self.log.warn(
                "Suppressing large frames for session {session_id} ({remote}) for now",
                session_id=getattr(session, "id", None),
                remote=getattr(receiver, "remote", ""),
                event="sender.suppressing",
            )
        mine[0] += 1
        mine[1] += len(data)
        kind = data[5]
        object_type = (data[6] << 8) | data[7]
        event_id = (data[8] << 8) | data[9]
        if kind != Kind.NOTIFICATION:
            request_id = int.from_bytes(data[10:14], "big")
            return encode_error(
                object_type,
                event_id,
                request_id,
                "server-overloaded",
                "the bridge is short of memory: large replies are refused for now",
            )
        if data[6:10] == QUEUE_CHANGED_KEY:
            try:
                queue = str(json.loads(data[14:]).get("queue", ""))
            except Exception:
                queue = ""
            suspended = self._suspended.setdefault(receiver, set())
            if queue in suspended:
                return None
            suspended.add(queue)
            return encode(Kind.NOTIFICATION, *QUEUE_SUSPENDED, 0, {"queue": queue})
        now = self.clock.seconds()
        key = (receiver, object_type, event_id)
        entry = self._unreported.get(key)
        if entry is None:
            entry = self._unreported[key] = [0, float("-inf")]
        entry[0] += 1
        if now - entry[1] < SUPPRESSED_NOTICE_SECONDS:
            return None
        count = int(entry[0])
        entry[0], entry[1] = 0, now
        return self._suppressed_notice(object_type, event_id, count)

    def status(self) -> dict[str, Any]:
        scheduler = self.scheduler
        settings = self.settings

        written = self.written_by_priority()

        def per_class(p: Priority) -> dict[str, int]:
            return {
                "sentBytes": written[p.value][1],
                "sentFrames": written[p.value][0],
                "queuedBytes": scheduler.stats[p].queued_bytes,
            }

        return {
            "limiterEnabled": settings.enabled,
            "limiting": scheduler.limiting,
            "totalBytesPerInterval": settings.total_bytes,
            "intervalMs": settings.interval_ms,
            "mediumPercent": settings.medium_percent,
            "maxPrivateBytes": settings.max_private_bytes,
            "smallMessageBytes": settings.small_message_bytes,
            "safeguardActive": self.safeguard_active,
            "suppressed": {p: dict(counts) for p, counts in self.suppressed.items()},
            "suspendedQueues": sum(len(q) for q in self._suspended.values()),
            "lastIntervals": list(scheduler.history)[-10:],
            "byPriority": {p.value: per_class(p) for p in Priority},
            "heldBytes": self.held_bytes(),
            "refusedParameters": list(self.errors),
        }

    def written_by_priority(self) -> dict[str, list[int]]:
        """[frames, bytes] written to clients so far, by priority (limiter on or off)."""
        out = {p.value: [0, 0] for p in Priority}
        for head, (frames, size) in list(self.written.items()):
            tally = out[PRIORITIES[_class_of(b"\0" * 5 + head, self.settings)].value]
            tally[0] += frames
            tally[1] += size
        return out

    def session_status(self, receiver: Hashable) -> dict[str, Any]:
        """One connection's figures: bytes sent (by priority), queued, and suppressed.

        ``sentBytes`` is what its connection wrote; ``byPriority`` what the limiter
        released for it while it was enabled.
        """
        by_class, queued = self.scheduler.session_stats(receiver)
        frames, size = self._suppressed_by.get(receiver) or [0, 0]  # type: ignore[call-overload]
        return {
            "sentBytes": int(getattr(receiver, "sent_bytes", sum(by_class.values()))),
            "queuedBytes": queued,
            "byPriority": by_class,
            "suppressedFrames": frames,
            "suppressedBytes": size,
        }
