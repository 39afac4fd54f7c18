"""The Notifier pair: backup refusal naming the primary, switchover, crash detection."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from smbridge.notifier.demo import demo_site
from smbridge.notifier.model import Notifier
from smbridge.notifier.pair import BACKUP, PRIMARY, NotPrimary, Pair
from smbridge.notifier.tap import Options


class FakeSubscriber:
    def send_event(self, sub_id: int, frame: bytes) -> None:
        pass


def test_backup_refuses_registration_naming_the_primary() -> None:
    """Register on the backup fails not-primary with the primary's address in the answer."""
    n = Notifier(demo_site(), Clock())
    n.pair = Pair(Clock(), BACKUP, "10.0.0.1:5597")
    with pytest.raises(NotPrimary) as raised:
        n.register({"name": "sm1"}, FakeSubscriber())
    assert raised.value.payload()["code"] == "not-primary"
    assert raised.value.payload()["primary"] == "10.0.0.1:5597"
    assert n.bridges == {}


def test_backup_takes_a_bridge_pinned_to_it_and_tells_it_the_role() -> None:
    """A pinned bridge registers on the backup; the answer says backup (it will redirect)."""
    n = Notifier(demo_site(), Clock())
    n.pair = Pair(Clock(), BACKUP, "10.0.0.1:5597")
    answer = n.register({"name": "sm2", "pinned": True}, FakeSubscriber())
    assert answer["cic"]["role"] == BACKUP
    assert "sm2" in n.bridges
    with pytest.raises(NotPrimary):
        n.register({"name": "sm3", "pinned": "yes"}, FakeSubscriber())  # only true pins


def test_primary_answers_its_current_role_in_register_and_state() -> None:
    """Register and the state report the role in force, which follows role changes."""
    n = Notifier(demo_site(), Clock())
    answer = n.register({"name": "sm1"}, FakeSubscriber())
    assert answer["cic"]["role"] == PRIMARY
    n.pair.set_role(BACKUP, "test")
    assert n.state()["role"] == BACKUP
    assert n.state()["pair"]["changes"] == 1


def test_switchover_swaps_roles_and_tells_the_peer() -> None:
    """Switchover on the primary makes it the backup and asks the peer to be primary."""
    told: list[str] = []

    def tell(role: str) -> defer.Deferred[Any]:
        told.append(role)
        return defer.succeed({})

    roles: list[str] = []
    pair = Pair(Clock(), PRIMARY, "b:5597", tell_peer=tell)
    pair.on_change(roles.append)
    answer: dict[str, Any] = {}
    pair.switchover().addCallback(answer.update)
    assert pair.role == BACKUP
    assert told == [PRIMARY]
    assert roles == [BACKUP]
    assert answer == {"role": BACKUP, "peer": "b:5597", "peerTold": True}


def test_switchover_with_an_unreachable_peer_still_changes_our_role() -> None:
    """When the peer cannot be told, this side still swaps and says the peer was not told."""
    pair = Pair(Clock(), BACKUP, "a:5597", tell_peer=lambda role: defer.fail(OSError("down")))
    answer: dict[str, Any] = {}
    pair.switchover().addCallback(answer.update)
    assert pair.role == PRIMARY
    assert answer["peerTold"] is False


def test_backup_takes_over_after_the_detection_time_of_silence() -> None:
    """Probes failing for the detection time promote the backup; not a moment before."""
    clock = Clock()
    alive = [True]

    def probe() -> defer.Deferred[Any]:
        return defer.succeed(None) if alive[0] else defer.fail(OSError("refused"))

    pair = Pair(clock, BACKUP, "a:5597", probe=probe, detection=3.0, interval=0.5)
    pair.start()
    clock.advance(10)  # the primary answers: nothing happens
    assert pair.role == BACKUP
    alive[0] = False
    for _ in range(5):  # 2.5 s of silence
        clock.advance(0.5)
    assert pair.role == BACKUP
    clock.advance(0.5)
    assert pair.role == PRIMARY
    assert pair.changes == 1
    pair.stop()
    assert clock.getDelayedCalls() == []


def test_primary_ignores_a_silent_peer() -> None:
    """A silent backup does not change the primary's role."""
    clock = Clock()
    pair = Pair(clock, PRIMARY, "b:5597", probe=lambda: defer.fail(OSError()), detection=1.0)
    pair.start()
    clock.advance(30)
    assert pair.role == PRIMARY
    pair.stop()


def test_tap_options_for_a_pair() -> None:
    """--role, --peer, --peer-control and --detection land in the frozen config."""
    o = Options()
    o.parseOptions(
        [
            "--demo",
            "--role",
            "backup",
            "--peer",
            "127.0.0.1:5598",
            "--peer-control",
            "http://127.0.0.1:8091",
            "--detection",
            "2.5",
        ]
    )
    assert (o.config.role, o.config.peer) == ("backup", "127.0.0.1:5598")
    assert (o.config.peer_control, o.config.detection) == ("http://127.0.0.1:8091", 2.5)


@pytest.mark.parametrize(
    "args",
    [["--role", "leader"], ["--peer", "nohost"], ["--peer-control", "http://x"]],
)
def test_tap_rejects_bad_pair_options(args: list[str]) -> None:
    """A bad role, a peer without a port, or --peer-control alone stop twistd with a message."""
    from twisted.python import usage

    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--demo", *args])
