"""Workgroup and agent statistics, kept current from the Notifier's model.

Each workgroup has a ``statistics:<workgroup>`` topic whose ``stats`` map holds
the workgroup's own statistics (:data:`WORKGROUP_STATS`) and, for every member
whose role is ``agent``, that agent's statistics under ``agent:<id>:<stat>``
(:data:`AGENT_STATS`). An agent in several workgroups shows the same values in
each of them.

Values are kept here incrementally (counters per workgroup, accumulators per
agent), so a status change or a finished call costs O(the agent's workgroups),
never O(members). Changes are coalesced: whatever changed during one reactor turn
goes out as one StatisticsChanged ``{workgroup, stats: {changed names: values}}``
per workgroup from a ``callLater(0)``, and only values that differ from what the
topic already holds are sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from smbridge.codec.catalog import STATISTICS_CHANGED, MessageType
from smbridge.notifier.site import AVAILABLE, FOLLOW_UP, ON_PHONE, Site
from smbridge.topics import ItemSetState, RecordState, TopicState, statistics_topic


class StatisticsModel(Protocol):
    """What the statistics need of the Notifier's model (the ``Notifier``)."""

    @property
    def site(self) -> Site: ...

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def topics(self) -> Mapping[str, TopicState]: ...

    def queue_state(self, queue: str) -> ItemSetState: ...

    def emit(self, topic: str, message: MessageType, payload: dict[str, Any]) -> int: ...


SERVICE_LEVEL_SECONDS = 20.0  # a call answered within this long counts toward serviceLevel

WORKGROUP_STATS = (
    "callsWaiting",  # interactions in the workgroup's queue now
    "longestWaitSeconds",  # age of the oldest of them (whole seconds), 0 when empty
    "averageWaitSeconds",  # mean wait of the calls answered today
    "agentsAvailable",  # agents (members whose role is agent) in status Available
    "agentsOnCall",  # ... On Phone
    "agentsInFollowUp",  # ... Follow Up
    "agentsOther",  # ... any other status
    "callsAnsweredToday",
    "callsAbandonedToday",  # calls that left the queue unanswered (a full queue drops the oldest)
    "serviceLevel",  # percent of answered+abandoned calls answered within 20 s (100 with none)
)
AGENT_STATS = (
    "status",
    "statusSince",
    "callsHandled",  # calls answered from a queue or directly, and ended
    "talkSeconds",  # total talk time of those calls (whole seconds)
    "averageTalkSeconds",
    "longestTalkSeconds",
    "followUpSeconds",  # total time spent in Follow Up (whole seconds)
    "callsMade",  # outbound calls (MakeCall)
    "callsTransferred",
    "interactions",  # interactions in the agent's My Interactions now
)
_CATEGORY = {AVAILABLE: "agentsAvailable", ON_PHONE: "agentsOnCall", FOLLOW_UP: "agentsInFollowUp"}


def agent_stat(user: str, stat: str) -> str:
    """The statistics key of one agent statistic: ``agent:<id>:<stat>``."""
    return f"agent:{user}:{stat}"


def _category(status: str) -> str:
    return _CATEGORY.get(status, "agentsOther")


class Statistics:
    """Counters behind every ``statistics:<workgroup>`` topic of one Notifier."""

    def __init__(self, notifier: StatisticsModel) -> None:
        self.notifier = notifier
        site = notifier.site
        self.agents: dict[str, dict[str, Any]] = {}
        self.agent_workgroups: dict[str, tuple[str, ...]] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self._answered_wait: dict[str, float] = {}
        self._within_level: dict[str, int] = {}
        self._dirty: dict[str, set[str]] = {}
        self._queue_dirty: set[str] = set()
        self._flush_call: IDelayedCall | None = None
        now = notifier.clock.seconds()
        for wg in site.workgroups.values():
            values = dict.fromkeys(WORKGROUP_STATS, 0)
            values["serviceLevel"] = 100
            self.values[wg.name] = values
            self._answered_wait[wg.name] = 0.0
            self._within_level[wg.name] = 0
            for uid in wg.members:
                user = site.users[uid]
                if user.role != "agent":
                    continue
                if uid not in self.agents:
                    self.agents[uid] = {
                        **dict.fromkeys(AGENT_STATS, 0),
                        "status": user.status,
                        "statusSince": now,
                    }
                    self.agent_workgroups[uid] = user.workgroups
                values[_category(user.status)] += 1
                for stat, value in self.agents[uid].items():
                    values[agent_stat(uid, stat)] = value
        for wg_name, values in self.values.items():
            self._record(wg_name).apply({"stats": dict(values)})

    def _record(self, workgroup: str) -> RecordState:
        state = self.notifier.topics[statistics_topic(workgroup)]
        assert isinstance(state, RecordState)
        return state

    # --- inputs from the model --------------------------------------------------------
    def status_changed(self, user: str, old: str, new: str, since: float) -> None:
        """An agent's status changed (any source: a request, the traffic, the control API)."""
        stats = self.agents.get(user)
        if stats is None:
            return
        if old == FOLLOW_UP:
            self._add_agent(user, "followUpSeconds", round(since - stats["statusSince"]))
        for wg in self.agent_workgroups[user]:
            self._add(wg, _category(old), -1)
            self._add(wg, _category(new), 1)
        self._set_agent(user, status=new, statusSince=since)

    def queue_changed(self, workgroups: tuple[str, ...]) -> None:
        """A queue's items changed: its callsWaiting and longestWaitSeconds are recomputed."""
        for wg in workgroups:
            if wg in self.values:
                self._queue_dirty.add(wg)
                self._schedule()

    def call_answered(self, workgroup: str, waited: float) -> None:
        if workgroup not in self.values:
            return
        self._add(workgroup, "callsAnsweredToday", 1)
        self._answered_wait[workgroup] += waited
        if waited <= SERVICE_LEVEL_SECONDS:
            self._within_level[workgroup] += 1
        answered = self.values[workgroup]["callsAnsweredToday"]
        self._set(workgroup, "averageWaitSeconds", round(self._answered_wait[workgroup] / answered))
        self._service_level(workgroup)

    def call_abandoned(self, workgroup: str) -> None:
        if workgroup in self.values:
            self._add(workgroup, "callsAbandonedToday", 1)
            self._service_level(workgroup)

    def call_ended(self, user: str, talk_seconds: float) -> None:
        """An agent's connected call ended after ``talk_seconds``."""
        stats = self.agents.get(user)
        if stats is None:
            return
        talk = round(talk_seconds)
        handled = stats["callsHandled"] + 1
        total = stats["talkSeconds"] + talk
        self._set_agent(
            user,
            callsHandled=handled,
            talkSeconds=total,
            averageTalkSeconds=round(total / handled),
            longestTalkSeconds=max(stats["longestTalkSeconds"], talk),
        )

    def call_made(self, user: str) -> None:
        if user in self.agents:
            self._add_agent(user, "callsMade", 1)

    def call_transferred(self, user: str) -> None:
        if user in self.agents:
            self._add_agent(user, "callsTransferred", 1)

    def interactions_count(self, user: str, count: int) -> None:
        if user in self.agents:
            self._set_agent(user, interactions=count)

    # --- bookkeeping ------------------------------------------------------------------
    def _service_level(self, wg: str) -> None:
        values = self.values[wg]
        total = values["callsAnsweredToday"] + values["callsAbandonedToday"]
        level = round(100 * self._within_level[wg] / total) if total else 100
        self._set(wg, "serviceLevel", level)

    def _add_agent(self, user: str, stat: str, delta: int) -> None:
        self._set_agent(user, **{stat: self.agents[user][stat] + delta})

    def _set_agent(self, user: str, **changes: Any) -> None:
        stats = self.agents[user]
        stats.update(changes)
        for wg in self.agent_workgroups[user]:
            for stat, value in changes.items():
                self._set(wg, agent_stat(user, stat), value)

    def _add(self, wg: str, name: str, delta: int) -> None:
        self._set(wg, name, self.values[wg][name] + delta)

    def _set(self, wg: str, name: str, value: Any) -> None:
        self.values[wg][name] = value
        self._dirty.setdefault(wg, set()).add(name)
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_call is None:
            self._flush_call = self.notifier.clock.callLater(0, self.flush)

    def cancel(self) -> None:
        """Drop a pending flush (the service is stopping)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    def flush(self) -> int:
        """Publish what changed since the last flush; return how many events were published."""
        self._flush_call = None
        now = self.notifier.clock.seconds()
        for wg in self._queue_dirty:
            items = self.notifier.queue_state(self.notifier.site.workgroups[wg].queue).items
            oldest = next(iter(items.values()), None)
            arrived = oldest.get("arrived") if oldest is not None else None
            values = self.values[wg]
            values["callsWaiting"] = len(items)
            values["longestWaitSeconds"] = (
                max(0, round(now - arrived)) if isinstance(arrived, int | float) else 0
            )
            self._dirty.setdefault(wg, set()).update(("callsWaiting", "longestWaitSeconds"))
        self._queue_dirty.clear()
        dirty, self._dirty = self._dirty, {}
        published = 0
        for wg, names in dirty.items():
            current = self._record(wg).record["stats"]
            values = self.values[wg]
            changed = {n: values[n] for n in sorted(names) if current.get(n) != values[n]}
            if changed:
                self.notifier.emit(
                    statistics_topic(wg), STATISTICS_CHANGED, {"workgroup": wg, "stats": changed}
                )
                published += 1
        return published
