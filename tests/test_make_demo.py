"""`make demo` passes its port variables to twistd (issue 17, item 4)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from smbridge.options import Options

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = {
    "PORT": ("--port", "13952"),
    "WS_PORT": ("--ws-port", "18951"),
    "WSS_PORT": ("--wss-port", "18952"),
    "ADMIN_PORT": ("--admin-port", "18080"),
    "NOTIFIER_PORT": ("--notifier-port", "15597"),
    "CONTROL_PORT": ("--control-port", "18090"),
    "NOTIFIER_HTTP_PORT": ("--notifier-http-port", "off"),
    "NOTIFIER_HTTPS_PORT": ("--notifier-https-port", "18019"),
}


def twistd_line(*assignments: str) -> list[str]:
    """The twistd command `make -n demo` would run, split into its arguments."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and k != "WORK_PATH"}
    result = subprocess.run(
        ["make", "-n", "demo", *assignments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if "twistd" in line)
    return shlex.split(line)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_passes_every_port_variable() -> None:
    """Each port variable becomes its twistd flag, and twistd's options accept them."""
    argv = twistd_line(
        *(f"{name}={value}" for name, (_, value) in VARIABLES.items()), "WORK_PATH=/tmp/demo-x"
    )
    assert argv[1:4] == ["-n", "smbridge", "--demo"]
    pairs = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert pairs == {flag: value for flag, value in VARIABLES.values()} | {
        "--work-path": "/tmp/demo-x"
    }
    options = Options()
    options.parseOptions(argv[3:])
    assert options.config is not None
    assert (options.config.port, options.config.ws_port, options.config.wss_port) == (
        13952,
        18951,
        18952,
    )
    assert options.config.admin_port == 18080
    assert (options["notifier-port"], options["control-port"]) == (15597, 18090)
    assert (options["notifier-http-port"], options["notifier-https-port"]) == (None, 18019)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_without_variables_uses_the_defaults() -> None:
    """Without variables `make demo` runs the demo with no port flags (the documented defaults)."""
    assert twistd_line()[1:] == ["-n", "smbridge", "--demo"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_an_exported_port_variable_does_not_move_the_demo() -> None:
    """Only the command line sets the demo's ports: PORT in the environment is ignored."""
    env = dict(os.environ, PORT="5000", WS_PORT="5001", WORK_PATH="/tmp/elsewhere")
    result = subprocess.run(
        ["make", "-n", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    line = next(line for line in result.stdout.splitlines() if "twistd" in line)
    assert shlex.split(line)[1:] == ["-n", "smbridge", "--demo"]
