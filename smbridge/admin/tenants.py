"""Tenant gauges and refusals for ``/metrics`` (router/tenancy.py), labelled by tenant."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from smbridge.router.tenancy import BridgeTenancy

PREFIX = "smbridge_tenant_"
_USE = {
    "sessions": "Sessions of the tenant on this bridge.",
    "watches": "Watches (held or in flight) of the tenant's sessions on this bridge.",
    "logons_per_second": "The tenant's new logons per second on this bridge (last 10 s).",
    "sessions_per_user": "The most sessions any one user of the tenant has on this bridge.",
}
_WIRE = {
    "sessions": "sessions",
    "watches": "watches",
    "logons_per_second": "logonsPerSecond",
    "sessions_per_user": "sessionsPerUser",
}


def tenant_metrics(tenancy: BridgeTenancy, now: float) -> Iterator[Metric]:
    """Use per tenant, each limit in force (absent: no limit) and refusals by limit."""
    rows = tenancy.status(now)
    for name, help_text in _USE.items():
        family = GaugeMetricFamily(PREFIX + name, help_text, labels=["tenant"])
        for row in rows:
            family.add_metric([row["tenant"]], row["use"][_WIRE[name]])
        yield family
    limit = GaugeMetricFamily(
        PREFIX + "limit",
        "A tenant's limit (sessions and per user and logon rate site-wide, watches per bridge).",
        labels=["tenant", "limit"],
    )
    for row in rows:
        for key, value in row["limits"].items():
            if value is not None:
                limit.add_metric([row["tenant"], key], value)
    yield limit
    refusals = CounterMetricFamily(
        PREFIX + "refusals",
        "Logons and watches refused tenant-limit, by tenant and limit.",
        labels=["tenant", "limit"],
    )
    for (tenant, which), n in sorted(tenancy.refusals.items()):
        refusals.add_metric([tenant, which], n)
    yield refusals
