"""The admin layer reads the bridge through ``BridgeView`` and re-parses with an injected parser."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from twisted.internet.task import Clock
from twisted.python import usage

from smbridge.admin.reload import ReloadRefused, read_config, reload
from smbridge.bridge_config import BridgeConfigError
from smbridge.config import BridgeConfig
from smbridge.options import parse
from smbridge.service import BridgeService

ADMIN = Path(__file__).resolve().parent.parent / "smbridge" / "admin"
ABOVE_ADMIN = ("smbridge.service", "smbridge.tap", "smbridge.demo", "smbridge.options")


def _config(tmp_path: Path, **settings: object) -> BridgeConfig:
    file = tmp_path / "bridge.yaml"
    file.write_text(yaml.safe_dump({"demo": True, "work-path": str(tmp_path), **settings}))
    return parse(["--config", str(file)])


def test_no_admin_module_imports_the_layers_above_it() -> None:
    """No module of smbridge/admin imports the service, tap, demo or options, even for typing."""
    for path in sorted(ADMIN.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            assert not [n for n in names if n.startswith(ABOVE_ADMIN)], path.name


def test_reload_runs_the_parser_it_is_given_on_the_argv_and_file(tmp_path: Path) -> None:
    """read_config hands the injected parser the start's argv with --config at the file."""
    config = _config(tmp_path)
    seen: list[list[str]] = []

    def recording(argv: list[str]) -> BridgeConfig:
        seen.append(argv)
        return parse(argv)

    assert read_config(config, recording) == config
    assert config.config_file is not None
    assert seen == [["--config", str(config.config_file)]]


def test_the_parsers_refusals_name_the_key(tmp_path: Path) -> None:
    """A file error (BridgeConfigError) and a refused value (UsageError) both name their key."""
    config = _config(tmp_path)

    def file_error(argv: list[str]) -> BridgeConfig:
        raise BridgeConfigError("max-watches: expected a number", "max-watches")

    def value_error(argv: list[str]) -> BridgeConfig:
        raise usage.UsageError("--max-watches must be at least 1")

    for parser in (file_error, value_error):
        with pytest.raises(ReloadRefused) as refused:
            read_config(config, parser)
        assert refused.value.key == "max-watches"
    with pytest.raises(ReloadRefused, match="without --config"):
        read_config(replace(config, config_file=None), parse)


def test_the_service_injects_its_parser_into_a_reload(tmp_path: Path) -> None:
    """BridgeService passes its own parse to the reload: a changed file applies through it."""
    config = _config(tmp_path)
    used: list[list[str]] = []

    def counting(argv: list[str]) -> BridgeConfig:
        used.append(argv)
        return parse(argv)

    bridge = BridgeService(config, Clock(), parse=counting)
    assert bridge.parse is counting
    _config(tmp_path, **{"max-watches": 7})
    answer = reload(bridge, bridge.parse)
    assert (sorted(answer["applied"]), len(used)) == (["max-watches"], 1)
    assert bridge.router.watches.max_watches == 7
