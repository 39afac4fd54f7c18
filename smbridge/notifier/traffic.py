"""A contact centre's call traffic, shaped like the Session Manager sizing scenarios.

**ACD calls** arrive at ``callsPerSecond`` in the queue of a workgroup chosen at
random among those with agents. Each waits about ``handleSeconds`` (uniform in
0.5-1.5 times it), then the longest-idle Available agent of the workgroup picks it
up (status On Phone, the call moves from the queue to the agent's My Interactions,
Connected); when no agent is free it waits on until one is. The agent talks about
``handleSeconds``, hangs up (status Follow Up), and after about
``followUpSeconds`` is Available again and takes the oldest call whose wait is
over. A call waits as long as one is talked, so in steady state there is about one
call in queue per agent on a call (Little's law: both are rate x handleSeconds);
with A agents every one is busy from a rate of A / (handleSeconds +
followUpSeconds). A queue never holds more than ``maxQueueLength`` calls: when
full, the oldest is abandoned in the event that adds the new one.

**Business calls** arrive at ``businessCallsPerSecond`` for a random idle business
user (role ``business``): Alerting, answered 1-4 s later (On Phone), ended after
about ``handleSeconds`` (Available). An arrival that would put 20 % or more of the
business users on a call is skipped, so under 20 % are on a call at any time.

Agents react to status changes from any source (their own SetStatus too): an
agent set Available takes waiting calls, one set to Do Not Disturb gets none.
Everything random comes from ``random.Random(seed)`` and everything timed from
``clock.callLater``, so the same seed and the same clock steps give the same
events. Each arrival, pickup and hang-up costs O(1) (plus the agent's
workgroups), never O(users).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smbridge.errors import ProtocolError
from smbridge.notifier.interactions import ALERTING
from smbridge.notifier.model import Notifier
from smbridge.notifier.site import AVAILABLE, FOLLOW_UP, TrafficConfig

MAX_BURST = 1000  # most arrivals one late tick may catch up
BUSINESS_ON_CALL_SHARE = 0.2  # business calls keep the share of users on a call under this

# POST /api/traffic and the site file's traffic keys -> TrafficConfig fields
SETTINGS = {
    "callsPerSecond": "calls_per_second",
    "businessCallsPerSecond": "business_calls_per_second",
    "handleSeconds": "handle_seconds",
    "followUpSeconds": "follow_up_seconds",
    "maxQueueLength": "max_queue_length",
    "seed": "seed",
}


def checked_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate wire-named settings; return TrafficConfig field changes or raise ValueError."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        field = SETTINGS.get(key)
        if field is None:
            raise ValueError(f"unknown setting {key!r} (known: {', '.join(SETTINGS)})")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key == "seed":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("seed must be an integer")
        elif key == "maxQueueLength":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError("maxQueueLength must be an integer >= 1")
        elif not number or not math.isfinite(value) or value < 0:
            raise ValueError(f"{key} must be a number >= 0")
        out[field] = float(value) if key not in ("seed", "maxQueueLength") else value
    return out


class _Arrivals:
    """Arrivals due at fixed intervals; a late tick catches up (bounded by MAX_BURST)."""

    def __init__(self, clock: IReactorTime, arrive: Callable[[], None]) -> None:
        self.clock = clock
        self.arrive = arrive
        self.rate = 0.0
        self._call: IDelayedCall | None = None
        self._next_at: float | None = None

    def set_rate(self, rate: float, running: bool) -> None:
        if rate != self.rate or not running:
            self.stop()
        self.rate = rate
        if running and rate > 0 and self._call is None:
            if self._next_at is None:
                self._next_at = self.clock.seconds() + 1.0 / rate
            self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._next_at = None

    def _schedule(self) -> None:
        assert self._next_at is not None
        delay = max(0.0, self._next_at - self.clock.seconds())
        self._call = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        now = self.clock.seconds()
        if self._next_at is None or self.rate <= 0:
            return
        interval = 1.0 / self.rate
        burst = 0
        while self._next_at <= now and burst < MAX_BURST:
            self.arrive()
            self._next_at += interval
            burst += 1
        if self._next_at <= now:
            self._next_at = now + interval
        self._schedule()


class Traffic:
    """Timed arrivals and the agents' and business users' calls on a :class:`Notifier`."""

    log = Logger()

    def __init__(
        self, notifier: Notifier, clock: IReactorTime, config: TrafficConfig | None = None
    ) -> None:
        self.notifier = notifier
        self.clock = clock
        self.config = notifier.site.traffic if config is None else config
        self.rng = random.Random(self.config.seed)
        self.running = False
        self.calls_made = 0
        self.business_calls = 0
        self.business_skipped = 0
        site = notifier.site
        self._agents = {uid for uid, u in site.users.items() if u.role == "agent"}
        self.workgroups = [
            wg.name for wg in site.workgroups.values() if self._agents.intersection(wg.members)
        ]
        self.business = [uid for uid, u in site.users.items() if u.role == "business"]
        self._acd = _Arrivals(clock, self._arrive)
        self._direct = _Arrivals(clock, self._business_arrive)
        self._ready: dict[str, deque[str]] = {wg: deque() for wg in self.workgroups}
        self._due: dict[str, deque[str]] = {wg: deque() for wg in self.workgroups}
        self._timers: dict[Any, IDelayedCall] = {}
        self._live: set[str] = set()
        self._idle: list[str] = []
        self._idle_at: dict[str, int] = {}

    # --- settings ---------------------------------------------------------------------
    @property
    def rate(self) -> float:
        return self.config.calls_per_second

    @rate.setter
    def rate(self, value: float) -> None:
        self.configure(calls_per_second=value)

    @property
    def handle_seconds(self) -> float:
        return self.config.handle_seconds

    @property
    def calls_in_progress(self) -> int:
        return len(self._live)

    def settings(self) -> dict[str, Any]:
        """The settings by their wire names (what POST /api/traffic answers)."""
        return {key: getattr(self.config, field) for key, field in SETTINGS.items()}

    def set_rate(self, calls_per_second: float) -> None:
        """Change the ACD arrival rate now; 0 stops arrivals (calls in progress still finish)."""
        if not 0 <= calls_per_second < math.inf:
            raise ValueError("callsPerSecond must be a finite number >= 0")
        self.configure(calls_per_second=float(calls_per_second))

    def configure(self, **changes: Any) -> None:
        """Replace TrafficConfig fields (already validated); a new seed restarts the randomness."""
        self.config = dataclasses.replace(self.config, **changes)
        if "seed" in changes:
            self.rng = random.Random(self.config.seed)
        self.log.info(
            "Traffic: {calls} ACD calls/s, {business} business calls/s, handle {handle} s",
            calls=self.config.calls_per_second,
            business=self.config.business_calls_per_second,
            handle=self.config.handle_seconds,
            event="notifier.traffic.settings",
        )
        self._rates()

    def _rates(self) -> None:
        self._acd.set_rate(self.config.calls_per_second if self.workgroups else 0.0, self.running)
        rate = self.config.business_calls_per_second if self.business else 0.0
        self._direct.set_rate(rate, self.running)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Begin generating (a rate of 0 waits for :meth:`configure`)."""
        if self.running:
            return
        self.running = True
        self.notifier.status_listeners.append(self._status_changed)
        for wg in self.workgroups:
            for uid in self.notifier.site.workgroups[wg].members:
                if uid in self._agents and self.notifier.status_of(uid) == AVAILABLE:
                    self._ready[wg].append(uid)
        self._idle = [uid for uid in self.business if not self._on_a_call(uid)]
        self._idle_at = {uid: i for i, uid in enumerate(self._idle)}
        self._rates()

    def stop(self) -> None:
        """Stop arrivals and every pending step; interactions already placed stay where they are."""
        self.running = False
        if self._status_changed in self.notifier.status_listeners:
            self.notifier.status_listeners.remove(self._status_changed)
        self._acd.stop()
        self._direct.stop()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._live.clear()
        for queue in (*self._ready.values(), *self._due.values()):
            queue.clear()

    # --- ACD calls --------------------------------------------------------------------
    def _spread(self, mean: float) -> float:
        return self.rng.uniform(0.5 * mean, 1.5 * mean)

    def _number(self) -> str:
        return f"+1 317 555 {self.rng.randrange(10000):04d}"

    def _later(self, key: Any, delay: float, f: Callable[..., None], *args: Any) -> None:
        def fire() -> None:
            self._timers.pop(key, None)
            f(*args)

        self._timers[key] = self.clock.callLater(delay, fire)

    def _arrive(self) -> None:
        n = self.notifier
        wg = self.workgroups[self.rng.randrange(len(self.workgroups))]
        queue = n.site.workgroups[wg].queue
        self.calls_made += 1
        call_id = n.interactions.new_id("call")
        items = n.queue_state(queue).items
        excess = len(items) + 1 - self.config.max_queue_length
        drop: list[str] = []
        for old in items:
            if len(drop) >= excess:
                break
            drop.append(old)
        for old in drop:
            self._forget(old)
        call = {
            "id": call_id,
            "type": "call",
            "state": "Offering",
            "direction": "inbound",
            "from": self._number(),
            "workgroup": wg,
            "arrived": self.clock.seconds(),
        }
        n.interactions.enqueue(queue, call, drop)
        self._live.add(call_id)
        self._later(call_id, self._spread(self.config.handle_seconds), self._wait_over, wg, call_id)

    def _waiting(self, wg: str, call_id: str) -> bool:
        return call_id in self.notifier.queue_state(self.notifier.site.workgroups[wg].queue).items

    def _wait_over(self, wg: str, call_id: str) -> None:
        if not self._waiting(wg, call_id):
            self._live.discard(call_id)
            return
        ready = self._ready[wg]
        while ready:
            agent = ready.popleft()
            if self.notifier.status_of(agent) == AVAILABLE:
                self._answer(agent, call_id)
                return
        self._due[wg].append(call_id)

    def _answer(self, agent: str, call_id: str) -> None:
        try:
            self.notifier.interactions.pickup(agent, call_id)
        except ProtocolError:  # pragma: no cover - the call was checked to be waiting
            self._live.discard(call_id)
            return
        talk = self._spread(self.config.handle_seconds)
        self._later(call_id, talk, self._hang_up, agent, call_id)

    def _hang_up(self, agent: str, call_id: str) -> None:
        self._live.discard(call_id)
        if call_id in self.notifier.user_state(agent).items:
            self.notifier.interactions.disconnect(agent, call_id)

    def _status_changed(self, user: str, old: str, new: str) -> None:
        if user not in self._agents:
            return
        follow_up = ("follow-up", user)
        timer = self._timers.pop(follow_up, None)
        if timer is not None and timer.active():
            timer.cancel()
        if new == FOLLOW_UP:
            delay = self._spread(self.config.follow_up_seconds)
            self._later(follow_up, delay, self._follow_up_over, user)
        elif new == AVAILABLE:
            self._agent_ready(user)

    def _follow_up_over(self, agent: str) -> None:
        if self.notifier.status_of(agent) == FOLLOW_UP:
            self.notifier.interactions.set_status(agent, AVAILABLE)

    def _agent_ready(self, agent: str) -> None:
        """An agent became Available: take the oldest due call of their workgroups, or wait."""
        best: tuple[float, str, str] | None = None
        workgroups = [wg for wg in self.notifier.site.users[agent].workgroups if wg in self._due]
        for wg in workgroups:
            due = self._due[wg]
            while due and not self._waiting(wg, due[0]):
                self._live.discard(due.popleft())
            if due:
                queue = self.notifier.queue_state(self.notifier.site.workgroups[wg].queue)
                arrived = queue.items[due[0]].get("arrived", 0.0)
                if best is None or arrived < best[0]:
                    best = (arrived, wg, due[0])
        if best is not None:
            self._due[best[1]].popleft()
            self._answer(agent, best[2])
            return
        for wg in workgroups:
            self._ready[wg].append(agent)

    def _forget(self, call_id: str) -> None:
        self._live.discard(call_id)
        timer = self._timers.pop(call_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    # --- business calls ---------------------------------------------------------------
    def _on_a_call(self, user: str) -> bool:
        return any(i.get("type") == "call" for i in self.notifier.user_state(user).items.values())

    def _business_arrive(self) -> None:
        on_call = len(self.business) - len(self._idle)
        if not self._idle or on_call + 1 >= BUSINESS_ON_CALL_SHARE * len(self.business):
            self.business_skipped += 1
            return
        i = self.rng.randrange(len(self._idle))
        user = self._idle[i]
        last = self._idle.pop()
        if last != user:
            self._idle[i] = last
            self._idle_at[last] = i
        del self._idle_at[user]
        self.business_calls += 1
        call_id = self.notifier.interactions.new_id("call")
        item = {
            "id": call_id,
            "type": "call",
            "state": ALERTING,
            "direction": "inbound",
            "remote": self._number(),
            "user": user,
            "started": self.clock.seconds(),
        }
        self.notifier.interactions.offer(user, item)
        self._live.add(call_id)
        ring = self.rng.uniform(1.0, 4.0)
        self._later(("ring", call_id), ring, self._business_answer, user, call_id)
        end = ring + self._spread(self.config.handle_seconds)
        self._later(call_id, end, self._business_end, user, call_id)

    def _business_answer(self, user: str, call_id: str) -> None:
        item = self.notifier.user_state(user).items.get(call_id)
        if item is not None and item.get("state") == ALERTING:
            self.notifier.interactions.pickup(user, call_id)

    def _business_end(self, user: str, call_id: str) -> None:
        self._live.discard(call_id)
        if call_id in self.notifier.user_state(user).items:
            self.notifier.interactions.disconnect(user, call_id)
        if user not in self._idle_at:
            self._idle_at[user] = len(self._idle)
            self._idle.append(user)
