"""The bandwidth limiter's server parameters: names, ranges, defaults, list syntax."""

from __future__ import annotations

import pytest

from smbridge.codec.catalog import CREATE_SESSION, QUEUE_CHANGED, STATUS_CHANGED
from smbridge.sender import parameters as p
from smbridge.sender.parameters import DEFAULT_HIGH, DEFAULT_MEDIUM, LimiterSettings, apply


def test_defaults_are_the_notes():
    """Without parameters the limiter is off, 500000 bytes per 1000 ms, 50 %, 37 MB, 2000."""
    settings, errors = apply(LimiterSettings(), {})
    assert errors == []
    assert settings == LimiterSettings()
    assert (settings.enabled, settings.total_bytes, settings.interval_ms) == (False, 500_000, 1000)
    assert (settings.medium_percent, settings.max_private_bytes) == (50, 37_000_000)
    assert settings.small_message_bytes == 2000
    assert CREATE_SESSION in settings.high and STATUS_CHANGED in settings.high
    assert QUEUE_CHANGED not in settings.high | settings.medium


def test_the_parameter_names_are_the_notes():
    """The eight names are spelled as in the Session Manager note."""
    assert p.NAMES == (
        "Bridge Message Bandwidth Limiter Enabled",
        "Bridge Message Bandwidth Limiter Total Outgoing Bytes Per Interval",
        "Bridge Message Bandwidth Limiter Interval Milliseconds",
        "Bridge Message Bandwidth Limiter Medium Priority Outgoing Bytes Per Interval Percentage",
        "Bridge Message Bandwidth Limiter High Priority Messages",
        "Bridge Message Bandwidth Limiter Medium Priority Messages",
        "Bridge Message Bandwidth Limiter Maximum Process Private Bytes",
        "Bridge Message Bandwidth Limiter Small Message Limit Bytes",
    )


def test_valid_values_as_strings_and_numbers_are_taken():
    """Yes/No and decimal strings or numbers set every field, bounds included."""
    settings, errors = apply(
        LimiterSettings(),
        {
            p.ENABLED: "Yes",
            p.TOTAL: "50001",
            p.INTERVAL: 100,
            p.MEDIUM_PERCENT: "80",
            p.MAX_PRIVATE_BYTES: str(2**63 - 1),
            p.SMALL_MESSAGE: 1,
        },
    )
    assert errors == []
    assert settings.enabled is True
    assert (settings.total_bytes, settings.interval_ms, settings.medium_percent) == (50001, 100, 80)
    assert settings.max_private_bytes == 2**63 - 1
    assert settings.small_message_bytes == 1
    assert apply(settings, {p.INTERVAL: "5000", p.MEDIUM_PERCENT: 20})[0].interval_ms == 5000


@pytest.mark.parametrize(
    ("name", "value", "range_text"),
    [
        (p.TOTAL, "50000", "greater than 50000"),
        (p.TOTAL, "lots", "greater than 50000"),
        (p.INTERVAL, 99, "between 100 and 5000"),
        (p.INTERVAL, "5001", "between 100 and 5000"),
        (p.MEDIUM_PERCENT, 19, "between 20 and 80"),
        (p.MEDIUM_PERCENT, "81", "between 20 and 80"),
        (p.MAX_PRIVATE_BYTES, 0, "positive 64-bit integer"),
        (p.MAX_PRIVATE_BYTES, str(2**63), "positive 64-bit integer"),
        (p.SMALL_MESSAGE, "-1", "positive 64-bit integer"),
        (p.ENABLED, "maybe", "Yes or No"),
        (p.HIGH_MESSAGES, "(168,1", "(168,1), (171,-4)"),
        (p.MEDIUM_MESSAGES, "(168,0)", "eventId ±1..32767"),
        (p.HIGH_MESSAGES, "(70000,1)", "objectType 0..65535"),
    ],
)
def test_invalid_values_are_refused_naming_parameter_and_range(name, value, range_text):
    """A value out of range is refused with its name and range; the old value stays."""
    old, _ = apply(
        LimiterSettings(),
        {p.ENABLED: "yes", p.TOTAL: 60000, p.INTERVAL: 200, p.MEDIUM_PERCENT: 30,
         p.HIGH_MESSAGES: "(999,1)", p.MEDIUM_MESSAGES: "(999,2)",
         p.MAX_PRIVATE_BYTES: 1000, p.SMALL_MESSAGE: 10},
    )  # fmt: skip
    raw = {
        p.ENABLED: "yes",
        p.TOTAL: 60000,
        p.INTERVAL: 200,
        p.MEDIUM_PERCENT: 30,
        p.HIGH_MESSAGES: "(999,1)",
        p.MEDIUM_MESSAGES: "(999,2)",
        p.MAX_PRIVATE_BYTES: 1000,
        p.SMALL_MESSAGE: 10,
        name: value,
    }
    new, errors = apply(old, raw)
    assert len(errors) == 1
    assert name in errors[0] and range_text in errors[0]
    assert new == old


def test_one_invalid_value_does_not_stop_the_others():
    """A refused interval leaves the interval as it was and still applies a new total."""
    new, errors = apply(LimiterSettings(), {p.INTERVAL: 50, p.TOTAL: 80000})
    assert errors == [f"{p.INTERVAL} must be an integer between 100 and 5000, not 50"]
    _, errors = apply(LimiterSettings(), {p.INTERVAL: "50"})
    assert errors == [f"{p.INTERVAL} must be an integer between 100 and 5000, not '50'"]
    assert (new.interval_ms, new.total_bytes) == (1000, 80000)


def test_message_lists_add_and_negative_event_ids_remove():
    """(173,3) adds QueueChanged to the medium list; (168,-1) removes CreateSession from high."""
    settings, errors = apply(
        LimiterSettings(),
        {p.HIGH_MESSAGES: "(168,-1), (999, 7)", p.MEDIUM_MESSAGES: " (173,3),(171,-2) "},
    )
    assert errors == []
    assert settings.high == (DEFAULT_HIGH - {CREATE_SESSION}) | {(999, 7)}
    assert settings.medium == (DEFAULT_MEDIUM - {(171, 2)}) | {QUEUE_CHANGED}


def test_an_empty_list_means_the_defaults():
    """An empty list parameter keeps the catalog's default list."""
    settings, errors = apply(LimiterSettings(), {p.HIGH_MESSAGES: "", p.MEDIUM_MESSAGES: None})
    assert errors == []
    assert (settings.high, settings.medium) == (DEFAULT_HIGH, DEFAULT_MEDIUM)


def test_a_removed_parameter_returns_to_its_default():
    """A parameter the site no longer sets takes its default again."""
    on, _ = apply(LimiterSettings(), {p.ENABLED: "Yes", p.TOTAL: 90000})
    off, errors = apply(on, {})
    assert errors == []
    assert (off.enabled, off.total_bytes) == (False, 500_000)
