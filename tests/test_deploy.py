"""deploy/: the systemd unit and the example bridge configuration are valid and safe."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smbridge.bridge_config import OptionNames, load
from smbridge.tap import Options

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "smbridge.service"
TWISTD = str(Path(sys.executable).parent / "twistd")


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_restarts_runs_unprivileged_and_reloads_with_sighup():
    """Restart on failure, a dedicated user, no capabilities, SIGHUP reload, hardening."""
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "smbridge" and service["Group"] == "smbridge"
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    assert service["NoNewPrivileges"] == "yes"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ProtectSystem"] == "strict" and service["ProtectHome"] == "yes"
    start = service["ExecStart"].split()
    assert start[0].endswith("/twistd") and "--nodaemon" in start and "smbridge" in start
    assert start[start.index("--config") + 1] == "/etc/smbridge/bridge.yaml"
    assert "--admin-token" not in service["ExecStart"]  # secrets never on the command line


def test_unit_passes_systemd_analyze_verify(tmp_path):
    """systemd-analyze verify finds nothing wrong (the venv's twistd stands in for /opt)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the settings test above still runs")
    copy = tmp_path / "smbridge.service"
    copy.write_text(UNIT.read_text().replace("/opt/smbridge/bin/twistd", TWISTD))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "smbridge.service" not in result.stderr, result.stderr


def test_example_bridge_config_parses_into_the_options(tmp_path):
    """deploy/bridge.example.yaml holds only known keys and builds a valid configuration."""
    args = load(DEPLOY / "bridge.example.yaml", OptionNames.of(Options()))
    assert args[args.index("--name") + 1] == "sm-ind-1"
    for pem in ("bridge.pem", "bridge-client.pem", "ca.pem"):
        (tmp_path / pem).write_text("placeholder")
    options = Options()
    options.parseOptions(
        [
            "--config",
            str(DEPLOY / "bridge.example.yaml"),
            "--cert",
            str(tmp_path / "bridge.pem"),
            "--client-cert",
            str(tmp_path / "bridge-client.pem"),
            "--ca",
            str(tmp_path / "ca.pem"),
            "--port",
            "4000",
        ]
    )
    config = options.config
    assert config is not None
    assert (config.identity.name, config.identity.kind) == ("sm-ind-1", "off-server")
    assert [str(a) for a in config.notifiers] == [
        "notifier-a.example.com:5597",
        "notifier-b.example.com:5597",
    ]
    assert config.port == 4000  # the command line wins over the file
    assert (config.admin_port, config.admin_interface) == (8080, "127.0.0.1")
    assert config.config_file == (DEPLOY / "bridge.example.yaml").resolve()


def test_config_file_errors_name_the_key(tmp_path):
    """Unknown keys (with a suggestion), wrong types and non-mappings are refused by name."""
    from twisted.python import usage

    names = OptionNames.of(Options())
    cases = {
        "prot: 1\n": "prot: no such option (did you mean 'port'?)",
        "port: abc\n": "port: 'abc' is not valid",
        "allow-cleartext: maybe\n": "allow-cleartext: expected true or false",
        "notifier: {a: 1}\n": "notifier: expected a string or a number, not dict",
        "- port\n": "the file must hold a mapping",
    }
    for text, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            load(path, names)
        with pytest.raises(usage.UsageError, match="--config: "):
            Options().parseOptions(["--demo", "--config", str(path)])
    path = tmp_path / "c.yaml"
    path.write_text("allow-cleartext: true\nws-port: off\nresource-port: [http=81]\n")
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path), "--config", str(path)])
    assert options["allow-cleartext"] and options["ws-port"] is None
    assert options.resource_ports == {"http": 81}
