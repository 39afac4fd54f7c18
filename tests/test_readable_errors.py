"""Errors a person reads: one line first, no usage dump, no traceback (issue 17, item 5)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TWISTD = str(Path(sys.executable).parent / "twistd")


def run_twistd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_port_prints_the_reason_first_and_exits_2(tmp_path: Path) -> None:
    """`twistd smbridge --port abc` says which option, which value and why, then a --help hint."""
    result = run_twistd(tmp_path, "smbridge", "--port", "abc")
    lines = result.stderr.splitlines()
    assert lines[0] == "twistd smbridge: --port: 'abc' is not a port number (0..65535)"
    assert lines[1] == "Run 'twistd smbridge --help' for all options."
    assert len(lines) == 2, result.stderr
    assert "Usage:" not in result.stdout + result.stderr
    assert result.returncode == 2


def test_bad_value_checked_after_parsing_is_one_line(tmp_path: Path) -> None:
    """A value refused by the option checks (not the type) reads the same way."""
    result = run_twistd(tmp_path, "smbridge", "--ws-port", "abc")
    assert result.stderr.splitlines()[0] == (
        "twistd smbridge: --ws-port: expected a port 0..65535 or 'off', not 'abc'"
    )
    assert "Usage:" not in result.stdout + result.stderr
    assert result.returncode == 2


def test_help_still_prints_the_usage(tmp_path: Path) -> None:
    """--help prints every option and exits 0."""
    result = run_twistd(tmp_path, "smbridge", "--help")
    assert "--port" in result.stdout and "--ws-port" in result.stdout
    assert result.returncode == 0


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    """A YAML file that does not parse is reported with its path and the line at fault."""
    config = tmp_path / "bridge.yaml"
    config.write_text("port: 8951\nname: bridge1\nws-port: [8951\nlocation: x\n")
    result = run_twistd(tmp_path, "smbridge", "--config", str(config))
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"twistd smbridge: --config: {config}:4: not valid YAML: "), first
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 2


def test_notifier_bad_port_is_one_line(tmp_path: Path) -> None:
    """`twistd notifier --port abc` reads like the bridge's errors."""
    result = run_twistd(tmp_path, "notifier", "--port", "abc")
    assert result.stderr.splitlines()[0] == ("twistd notifier: --port: 'abc' is not a whole number")
    assert result.returncode == 2


def test_notifier_port_in_use_says_which_port_without_a_traceback(tmp_path: Path) -> None:
    """A Notifier whose link port is taken exits 1 with one line naming the port and option."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = run_twistd(
            tmp_path,
            "notifier",
            "--demo",
            "--port",
            str(port),
            "--interface",
            "127.0.0.1",
            "--control",
            "none",
            "--http-port",
            "off",
            "--https-port",
            "off",
            "--work-path",
            str(tmp_path),
        )
    finally:
        taken.close()
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "listen" in line]
    assert len(lines) == 1, output
    assert lines[0].endswith(
        f"Stopping: link cannot listen on 127.0.0.1:{port} (--port): Address already in use "
        f"(stop what holds 127.0.0.1:{port}, or choose another with --port)"
    ), output
    assert result.returncode == 1, output


def test_start_failure_in_json_mode_is_one_event(tmp_path: Path) -> None:
    """A start-up that raises, logged as JSON, is one event holding the traceback, then exit 1."""
    (tmp_path / "a-file").write_text("")
    args = ["smbridge", "--demo", "--log-format", "json", "--work-path", "a-file/work"]
    for flag in ("port", "ws-port", "wss-port", "admin-port", "notifier-port", "control-port"):
        args += [f"--{flag}", "0"]
    result = run_twistd(
        tmp_path, *args, "--notifier-http-port", "off", "--notifier-https-port", "off"
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    failures = [e for e in events if "Traceback" in json.dumps(e)]
    assert [e["event"] for e in failures] == ["service.start_failed"], result.stdout
    assert failures[0]["errorType"] == "NotADirectoryError"
    assert failures[0]["traceback"].startswith("Traceback (most recent call last):")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
