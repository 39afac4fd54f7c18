"""``GET /metrics``: a Prometheus collector bound to one bridge.

Each bridge gets its own ``CollectorRegistry`` (never the global one), so several
bridges in one process do not clash. The collector reads the bridge's parts at
scrape time: the registry, the sender, the upstream link, the load meter, the
event counts in ``bridge.router.counters`` (smbridge/counters.py) and the timing
histograms in ``bridge.router.timings`` (smbridge/histograms.py). Every count there
is exported, the known ones under the names docs/operations.md lists and any other
as ``smbridge_<name>_total`` with its labels.

The registry also holds prometheus_client's own ``ProcessCollector`` (already a
dependency; it reads ``/proc/self`` at scrape time and exports the standard
``process_*`` names every Prometheus client library uses: resident and virtual
memory, CPU seconds, open and maximum fds, start time). On a system without
``/proc`` it exports nothing.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

import smbridge
from smbridge.admin.tenants import tenant_metrics

if TYPE_CHECKING:
    from smbridge.admin.view import BridgeView
    from smbridge.histograms import Histogram

PREFIX = "smbridge_"
CONTENT_TYPE = CONTENT_TYPE_LATEST
PRIORITIES = ("high", "medium", "low")

# Event counts: help text and labels (any other count is exported with a generic help).
KNOWN_COUNTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "logons": ("Sessions created, by transport.", ("transport",)),
    "logon_failures": ("Logons the Notifier refused (bad user or password).", ()),
    "logons_throttled": (
        "CreateSession/ResumeSession refused logon-throttled before the Notifier was asked, "
        "by the key that was waiting (user: the user or session and address; address).",
        ("scope",),
    ),
    "redirects": ("CreateSession answered with a redirect, by reason.", ("reason",)),
    "resumes": ("ResumeSession attempts, by outcome.", ("outcome",)),
    "relays": (
        "Connections relayed between workers for a ResumeSession (docs/lifecycle.md), by "
        "outcome: relayed, worker-down, no-such-worker (relaying side); accepted, refused "
        "(owner side).",
        ("outcome",),
    ),
    "connections_refused": ("Connections refused by the connection guard.", ("reason",)),
    "migrations": ("Migrate notices sent (drain, shutdown), by reason.", ("reason",)),
    "reloads": ("Configuration reloads (POST /api/reload, SIGHUP), by outcome.", ("outcome",)),
    "refused_requests": ("Frames outside the client allow-list, answered unknown-request.", ()),
}


def _name(count: str) -> str:
    clean = "".join(c if c.isalnum() or c == "_" else "_" for c in count.lower())
    return PREFIX + clean.removesuffix("_total")


class BridgeCollector(Collector):
    """Reads one bridge at every scrape."""

    def __init__(self, bridge: BridgeView) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        yield from self._identity()
        yield from self._sessions()
        yield from self._counts()
        yield from self._sender()
        yield from self._upstream()
        yield from self._timings()
        yield from tenant_metrics(self.bridge.router.watches.tenancy, self.bridge.reactor.seconds())

    def _identity(self) -> Iterator[Metric]:
        bridge = self.bridge
        identity = bridge.config.identity
        info = GaugeMetricFamily(
            PREFIX + "info",
            "The bridge's identity (always 1).",
            labels=["name", "kind", "location", "version"],
        )
        info.add_metric([identity.name, identity.kind, identity.location, smbridge.__version__], 1)
        yield info
        accepting, _ = bridge.router.accept_state()
        yield GaugeMetricFamily(
            PREFIX + "accepting", "1 while the bridge takes new sessions.", value=int(accepting)
        )
        mode = GaugeMetricFamily(
            PREFIX + "accept_mode",
            "The accept mode in force (1 for the current one).",
            labels=["mode"],
        )
        for name in ("default", "all", "maintenance"):
            mode.add_metric([name], int(bridge.router.accept_mode == name))
        yield mode

    def _sessions(self) -> Iterator[Metric]:
        bridge = self.bridge
        by: Counter[tuple[str, str]] = Counter(
            (s.state.value, s.transport) for s in bridge.registry
        )
        sessions = GaugeMetricFamily(
            PREFIX + "sessions", "Sessions, by state and transport.", labels=["state", "transport"]
        )
        for (state, transport), n in sorted(by.items()):
            sessions.add_metric([state, transport], n)
        yield sessions
        yield GaugeMetricFamily(
            PREFIX + "connections",
            "Open client connections (with or without a session).",
            value=len(bridge.connections.connections),
        )
        yield GaugeMetricFamily(
            PREFIX + "topics",
            "Topics the bridge follows at the Notifier.",
            value=len(bridge.router.fanout.topics),
        )

    def _counts(self) -> Iterator[Metric]:
        grouped: dict[str, list[tuple[dict[str, str], int]]] = defaultdict(list)
        for name, labels, count in self.bridge.router.counters:
            grouped[name].append((labels, count))
        for name in KNOWN_COUNTS:
            grouped.setdefault(name, [])
        for name, entries in sorted(grouped.items()):
            help_text, known_labels = KNOWN_COUNTS.get(name, (f"Count of {name} events.", ()))
            keys = sorted({k for labels, _ in entries for k in labels} | set(known_labels))
            family = CounterMetricFamily(_name(name), help_text, labels=keys)
            for labels, count in entries:
                family.add_metric([labels.get(k, "") for k in keys], count)
            if not entries and not keys:
                family.add_metric([], 0)  # a count without labels starts at 0
            yield family

    def _sender(self) -> Iterator[Metric]:
        status: dict[str, Any] = self.bridge.connections.sender.status()
        by = status.get("byPriority", {})
        suppressed = status.get("suppressed", {})
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "sent_frames": CounterMetricFamily(
                PREFIX + "sent_frames",
                "Frames written to clients, by priority.",
                labels=["priority"],
            ),
            "sent_bytes": CounterMetricFamily(
                PREFIX + "sent_bytes",
                "Bytes written to clients, by priority.",
                labels=["priority"],
            ),
            "queued_bytes": GaugeMetricFamily(
                PREFIX + "queued_bytes",
                "Bytes waiting in the limiter's queues, by priority.",
                labels=["priority"],
            ),
            "suppressed_frames": CounterMetricFamily(
                PREFIX + "suppressed_frames",
                "Frames the memory safeguard suppressed, by priority.",
                labels=["priority"],
            ),
            "suppressed_bytes": CounterMetricFamily(
                PREFIX + "suppressed_bytes",
                "Bytes of frames the memory safeguard suppressed, by priority.",
                labels=["priority"],
            ),
        }
        for p in PRIORITIES:
            stats = by.get(p, {})
            families["sent_frames"].add_metric([p], stats.get("sentFrames", 0))
            families["sent_bytes"].add_metric([p], stats.get("sentBytes", 0))
            families["queued_bytes"].add_metric([p], stats.get("queuedBytes", 0))
            counts = suppressed.get(p, {})
            families["suppressed_frames"].add_metric([p], counts.get("frames", 0))
            families["suppressed_bytes"].add_metric([p], counts.get("bytes", 0))
        yield from families.values()
        gauges = (
            ("held_bytes", "heldBytes", "Bytes held for sending: limiter queues and backlogs."),
            ("limiter_enabled", "limiterEnabled", "1 while the bandwidth limiter is enabled."),
            ("limiting", "limiting", "1 while the limiter is holding frames back."),
            ("safeguard_active", "safeguardActive", "1 while the memory safeguard is on."),
            (
                "safeguard_limit_bytes",
                "maxPrivateBytes",
                "Held bytes above which the memory safeguard switches on.",
            ),
            ("suspended_queues", "suspendedQueues", "Queue watches suspended by the safeguard."),
        )
        for name, key, help_text in gauges:
            yield GaugeMetricFamily(PREFIX + name, help_text, value=float(status.get(key) or 0))

    def _upstream(self) -> Iterator[Metric]:
        bridge = self.bridge
        upstream = bridge.upstream
        yield GaugeMetricFamily(
            PREFIX + "upstream_up",
            "1 while the Notifier link is registered.",
            value=int(upstream.up),
        )
        state = GaugeMetricFamily(
            PREFIX + "upstream_state",
            "The Notifier link's state (1 for the current one).",
            labels=["state"],
        )
        state.add_metric([upstream.state.value], 1)
        yield state
        yield CounterMetricFamily(
            PREFIX + "upstream_switchovers",
            "Completed switchovers to another Notifier.",
            value=upstream.switchovers,
        )
        load = bridge.load
        rtt = GaugeMetricFamily(
            PREFIX + "upstream_round_trip_seconds",
            "The last load Ping's round trip to the Notifier.",
        )
        last = getattr(load, "last_ms", None)
        if last is not None:
            rtt.add_metric([], last / 1000.0)
        yield rtt
        yield GaugeMetricFamily(
            PREFIX + "upstream_loaded",
            "1 while the site counts as loaded (round trip over the high watermark).",
            value=int(load.loaded),
        )
        yield CounterMetricFamily(
            PREFIX + "memory_returned_bytes",
            "Memory handed back to the system by the trimmer.",
            value=bridge.trimmer.returned_kb * 1024,
        )

    def _timings(self) -> Iterator[Metric]:
        timings = self.bridge.router.timings
        families = (
            (
                "logon_duration_seconds",
                "CreateSession received to its reply handed to the connection (refusals too).",
                [((), timings.logon)],
            ),
            (
                "request_duration_seconds",
                "A request with a session, received to its answer handed to the connection, "
                "by path (forwarded to the Notifier, or answered locally).",
                [(("forwarded",), timings.forwarded), (("local",), timings.local)],
            ),
            (
                "notification_delay_seconds",
                "A Notifier event's publish stamp (at) to its bytes handed to the watchers' "
                "connections, once per event.",
                [((), timings.publish)],
            ),
            (
                "resume_duration_seconds",
                "ResumeSession received to its answer (and any replay) handed to the connection.",
                [((), timings.resume)],
            ),
        )
        for name, help_text, series in families:
            labels = ["path"] if name == "request_duration_seconds" else None
            family = HistogramMetricFamily(PREFIX + name, help_text, labels=labels)
            for values, histogram in series:
                family.add_metric(list(values), _buckets(histogram), histogram.sum)
            yield family


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """``(le, cumulative count)`` with ``le`` as Prometheus writes it (``0.005``, ``+Inf``)."""
    return [("+Inf" if le == math.inf else repr(le), float(n)) for le, n in histogram.cumulative()]


def bridge_registry(bridge: BridgeView) -> CollectorRegistry:
    """A registry of its own: the bridge's collector and the process collector (no GC one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(bridge))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format for a scrape."""
    return generate_latest(registry)
