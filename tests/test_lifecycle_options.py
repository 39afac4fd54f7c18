"""The lifecycle options of ``twistd smbridge`` reach the registry, router and shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from smbridge.service import BridgeService
from smbridge.tap import Options

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_lifecycle_options_build_the_service(tmp_path, monkeypatch):
    """--linger, --replay-bytes, --session-hook, --hook-timeout, --shutdown-grace are used."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    options = Options()
    options.parseOptions(
        ["--demo", "--work-path", str(tmp_path), "--linger", "30", "--replay-bytes", "4096"]
        + ["--session-hook", "hooks.WorkgroupQueues", "--hook-timeout", "2"]
        + ["--shutdown-grace", "1.5"]
    )
    config = options.config
    assert config is not None
    assert (config.linger, config.replay_bytes, config.shutdown_grace) == (30.0, 4096, 1.5)
    bridge = BridgeService(config, Clock())
    assert (bridge.registry.linger, bridge.registry.replay_bytes) == (30.0, 4096)
    assert bridge.router.hook is not None and bridge.router.hook.timeout == 2.0
    assert type(bridge.router.hook.hook).__name__ == "WorkgroupQueues"


def test_defaults_and_no_hook(tmp_path):
    """Without options: linger 120 s, 256 KiB replay, no hook, 5 s hook timeout and grace."""
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path)])
    config = options.config
    assert config is not None
    assert (config.linger, config.replay_bytes, config.session_hook) == (120.0, 262144, None)
    assert (config.hook_timeout, config.shutdown_grace) == (5.0, 5.0)
    assert BridgeService(config, Clock()).router.hook is None


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--linger", "-1", "--linger must be"),
        ("--replay-bytes", "-5", "--replay-bytes must be"),
        ("--hook-timeout", "0", "--hook-timeout must be"),
        ("--shutdown-grace", "1000", "--shutdown-grace must be"),
        ("--session-hook", "no_such_module_xyz.Hook", "--session-hook: cannot import"),
        ("--session-hook", "nodots", "--session-hook: 'nodots' is not a dotted name"),
    ],
)
def test_bad_lifecycle_options_are_usage_errors(tmp_path, flag, value, message):
    """Out-of-range values and unloadable hooks are refused with a clear message."""
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--demo", "--work-path", str(tmp_path), flag, value])
