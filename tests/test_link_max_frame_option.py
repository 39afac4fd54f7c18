"""``--link-max-frame``: the Notifier link's own frame limit, apart from the clients' one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from smbridge.admin.reload import differences, option_name
from smbridge.codec.frames import DEFAULT_MAX_FRAME
from smbridge.config import LINK_MAX_FRAME, BridgeConfig
from smbridge.service import BridgeService
from smbridge.tap import Options


def _config(tmp_path: Path, *args: str) -> BridgeConfig:
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path), *args])
    assert options.config is not None
    return options.config


def test_a_small_client_limit_leaves_the_link_limit_at_its_default(tmp_path: Path) -> None:
    """--max-frame 1024 caps clients only: the link keeps 16 MiB, and the link decoder uses it."""
    config = _config(tmp_path, "--max-frame", "1024")
    assert config.max_frame == 1024
    assert config.link_max_frame == LINK_MAX_FRAME == 16 << 20
    assert LINK_MAX_FRAME >= DEFAULT_MAX_FRAME
    bridge = BridgeService(config, Clock())
    link = bridge.upstream.link_factory.buildProtocol(None)
    assert link.decoder.max_frame == LINK_MAX_FRAME
    assert bridge.connections.max_frame == 1024


def test_the_link_limit_is_set_and_checked(tmp_path: Path) -> None:
    """--link-max-frame takes 1 MiB..1 GiB; below the protocol default it is refused by name."""
    config = _config(tmp_path, "--link-max-frame", str(32 << 20))
    assert config.link_max_frame == 32 << 20
    with pytest.raises(usage.UsageError, match="--link-max-frame"):
        _config(tmp_path, "--link-max-frame", "1024")


def test_the_config_file_sets_it_and_a_reload_says_it_needs_a_restart(tmp_path: Path) -> None:
    """``link-max-frame:`` in the YAML file applies at start; a changed value needs a restart."""
    file = tmp_path / "bridge.yaml"
    file.write_text(f"link-max-frame: {8 << 20}\n")
    config = _config(tmp_path, "--config", str(file))
    assert config.link_max_frame == 8 << 20
    changed = dataclasses.replace(config, link_max_frame=4 << 20)
    runtime, restart = differences(config, changed)
    assert (runtime, restart) == ([], ["link_max_frame"])
    assert option_name("link_max_frame") == "link-max-frame"
