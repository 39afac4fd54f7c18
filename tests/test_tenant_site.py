"""Tenants in the site file and the bridge's watch limit per tenant (router/tenancy.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smbridge.notifier.demo import demo_site_dict
from smbridge.notifier.site import Site, SiteError
from smbridge.router.tenancy import BridgeTenancy, Ticket
from smbridge.session.session import Session
from smbridge.tenancy import DEFAULT_TENANT, TenantLimit, TenantLimits

_DATA = demo_site_dict()


def _with(tenants: Any) -> dict[str, Any]:
    return {**_DATA, "tenants": tenants}


def test_a_site_without_tenants_has_one_default_tenant_without_limits() -> None:
    """No ``tenants``: nothing changes, everyone is in ``default`` with no limit."""
    from twisted.internet.task import Clock

    from smbridge.notifier.tenants import TenantPolicies

    site = Site.from_dict(dict(_DATA))
    assert site.tenants == {}
    p = TenantPolicies(Clock(), site)
    assert p.admit("b", "agent1")["name"] == DEFAULT_TENANT
    assert p.limits == {DEFAULT_TENANT: TenantLimits()}


def test_tenants_parse() -> None:
    """Names, members and limits are read; logonBurst defaults to the rate rounded up."""
    site = Site.from_dict(
        _with(
            [
                {"name": "acme", "users": ["agent1"], "limits": {"sessions": 5, "watches": 10}},
                {"name": "default", "limits": {"logonsPerSecond": 2.5}},
            ]
        )
    )
    assert site.tenants["acme"].users == ("agent1",)
    assert site.tenants["acme"].limits == TenantLimits(sessions=5, watches=10)
    assert site.tenants["default"].limits.burst == 3


@pytest.mark.parametrize(
    ("tenants", "message"),
    [
        ([{"name": "a", "users": ["nobody"]}], "tenants[0].users: unknown user 'nobody'"),
        (
            [{"name": "a", "users": ["agent1"]}, {"name": "b", "users": ["agent1"]}],
            "tenants[1].users: 'agent1' is already in tenant 'a'",
        ),
        ([{"name": "a"}, {"name": "a"}], "tenants: duplicate name 'a'"),
        ([{"name": "a", "limits": {"sessions": -1}}], "tenants[0].limits.sessions: expected"),
        ([{"name": "a", "limits": {"seats": 1}}], "tenants[0].limits: unknown key(s) seats"),
        ([{"name": "a", "limits": {"logonBurst": 2}}], "logonBurst: only with logonsPerSecond"),
        ([{"name": "a", "limits": {"logonsPerSecond": 0}}], "logonsPerSecond: expected a number"),
        ([{"name": "a", "color": "red"}], "tenants[0]: unknown key(s) color"),
        ({"a": 1}, "tenants: expected a list"),
    ],
)
def test_bad_tenants_are_refused_naming_the_field(tenants: Any, message: str) -> None:
    """A wrong tenants section stops the load with a message naming the field."""
    with pytest.raises(SiteError) as e:
        Site.from_dict(_with(tenants))
    assert message in str(e.value)


# --- the bridge's watch limit: a property against a naive model ----------------------


@dataclass(eq=False)
class FakeSession:
    id: str
    user: str
    topics: set[str] = field(default_factory=set)

    @property
    def info(self) -> Any:
        return type("Info", (), {"user_id": self.user})()


SESSIONS = [("s1", "acme"), ("s2", "acme"), ("s3", "globex"), ("s4", "globex")]


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {"acme": st.one_of(st.none(), st.integers(0, 6)), "globex": st.integers(0, 6)}
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["watch", "unwatch", "end"]),
            st.integers(0, 3),
            st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3, unique=True),
        ),
        max_size=50,
    ),
)
def test_watch_limit_matches_a_naive_model(caps: dict[str, int | None], ops: list[Any]) -> None:
    """Random watches, unwatches and session ends across two tenants: a request is refused
    exactly when the tenant's total would pass its cap, and no total ever passes it."""
    sessions = {sid: FakeSession(sid, f"u{sid}") for sid, _ in SESSIONS}
    tenancy = BridgeTenancy(lambda s: cast(FakeSession, s).topics)
    tenancy.set_limits({t: {"watches": cap} for t, cap in caps.items()})
    for sid, tenant in SESSIONS:
        tenancy.opened(cast(Session, sessions[sid]), Ticket(tenant, None))
    live = dict(SESSIONS)
    for op, i, topics in ops:
        sid, tenant = SESSIONS[i]
        if sid not in live:
            continue
        s = sessions[sid]
        if op == "watch":
            new = [t for t in topics if t not in s.topics]
            total = sum(len(sessions[o].topics) for o, t in live.items() if t == tenant)
            expect_refused = caps[tenant] is not None and new and total + len(new) > caps[tenant]
            try:
                tenancy.check_room(cast(Session, s), len(s.topics), len(new))
                refused = False
            except TenantLimit as e:
                refused = True
                assert (e.tenant, e.limit) == (tenant, "watches")
            assert refused == bool(expect_refused)
            if not refused:
                s.topics.update(new)
                tenancy.recount(sid)
        elif op == "unwatch":
            s.topics.difference_update(topics)
            tenancy.recount(sid)
        else:
            tenancy.closed(cast(Session, s))
            del live[sid]
        for t, cap in caps.items():
            total = sum(len(sessions[o].topics) for o, tt in live.items() if tt == t)
            assert tenancy.watches[t] == total
            assert cap is None or total <= cap
