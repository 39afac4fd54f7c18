"""The note's N+1 sizing formula and the ``smbridge sizing`` command."""

from __future__ import annotations

import argparse

import pytest

from smbridge.cli import main
from smbridge.roster.sizing import off_server_bridges, parse_location, plan


@pytest.mark.parametrize(
    ("business", "agents", "expected"),
    [(0, 0, 1), (5000, 0, 2), (5001, 0, 3), (0, 2500, 2), (2500, 1250, 2), (2500, 1251, 3)],
)
def test_formula(business: int, agents: int, expected: int) -> None:
    """Ceiling(B/5000 + A/2500) + 1, exact at the boundaries."""
    assert off_server_bridges(business, agents) == expected


def test_the_notes_worked_example() -> None:
    """Primary 2000+1000 and satellite 500+100: two each, only two for the total."""
    result = plan({"Primary": (2000, 1000), "Satellite": (500, 100)})
    assert {n: p["offServer"] for n, p in result["locations"].items()} == {
        "Primary": 2,
        "Satellite": 2,
    }
    assert result["sumOfLocations"] == 4
    assert result["total"] == {"business": 2500, "agents": 1100, "offServer": 2}


def test_command_prints_each_location_and_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    """``smbridge sizing`` prints a line per location, their sum and the all-in-one figure."""
    main(["sizing", "--location", "Primary=2000,1000", "--location", "Satellite=500,100"])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[1] == ["Primary", "2000", "1000", "2"]
    assert lines[2] == ["Satellite", "500", "100", "2"]
    assert lines[3][-1] == "4" and lines[4][-3:] == ["2500", "1100", "2"]


def test_bad_location_is_refused_with_the_expected_form() -> None:
    """A malformed --location names the expected NAME=BUSINESS,AGENTS form."""
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=BUSINESS,AGENTS"):
        parse_location("Primary=2000")
    with pytest.raises(SystemExit) as e:
        main(["sizing", "--location", "x=1,-2"])
    assert e.value.code == 2
    with pytest.raises(ValueError):
        off_server_bridges(-1, 0)
