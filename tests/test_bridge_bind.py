"""A listener that cannot bind stops ``twistd -n smbridge`` at once, before the Notifier link."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smbridge import pki

pytestmark = pytest.mark.integration

DEADLINE = 30.0  # seconds: start-up of a Python process under load, well short of a hang
FLAGS = ("port", "ws-port", "wss-port", "admin-port")


def _listening_socket(port: int = 0) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def _free_ports(count: int) -> list[int]:
    held = [_listening_socket() for _ in range(count)]
    ports = [int(s.getsockname()[1]) for s in held]
    for s in held:
        s.close()
    return ports


@pytest.fixture
def notifier() -> Iterator[socket.socket]:
    """A stand-in Notifier: a socket that listens and never accepts, so every dial is kept."""
    s = _listening_socket()
    yield s
    s.close()


def _dialled(notifier: socket.socket) -> bool:
    """Whether anything connected to the stand-in Notifier (a Register needs a connection)."""
    notifier.setblocking(False)
    try:
        conn, _ = notifier.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _run(work: Path, args: list[str]) -> tuple[int, str]:
    twistd = str(Path(sys.executable).parent / "twistd")
    with (work / "twistd.log").open("wb") as log:
        proc = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "smbridge", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            code = proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    output = (work / "twistd.log").read_text(errors="replace")
    assert code is not None, f"the bridge still ran after {DEADLINE}s:\n{output}"
    return code, output


def _check_message(output: str, port: int, flag: str) -> None:
    """One line names the option and the address; no traceback is dumped."""
    lines = [line for line in output.splitlines() if f"cannot listen on 127.0.0.1:{port}" in line]
    assert lines, output
    assert any(f"--{flag}" in line for line in lines), output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("taken", FLAGS)
def test_a_port_taken_stops_the_bridge_before_it_dials_the_notifier(
    tmp_path: Path, notifier: socket.socket, taken: str
) -> None:
    """With one of its ports taken, the bridge exits non-zero, names it, and never dials."""
    files = pki.ensure_site_pki(tmp_path / "pki")
    ports = dict(zip(FLAGS, _free_ports(len(FLAGS)), strict=True))
    holder = _listening_socket(ports[taken])
    try:
        code, output = _run(
            tmp_path,
            [
                "--interface=127.0.0.1",
                f"--cert={files.bridge}",
                f"--client-cert={files.bridge_client}",
                f"--ca={files.ca}",
                f"--notifier=127.0.0.1:{notifier.getsockname()[1]}",
                "--notifier-name=localhost",
                f"--work-path={tmp_path}",
                *(f"--{flag}={port}" for flag, port in ports.items()),
            ],
        )
    finally:
        holder.close()
    assert code != 0, output
    _check_message(output, ports[taken], taken)
    assert not _dialled(notifier), output


def test_demo_with_the_client_port_taken_exits_instead_of_running_deaf(tmp_path: Path) -> None:
    """--demo with the client port taken exits non-zero; its link never even starts."""
    port, admin = _free_ports(2)
    holder = _listening_socket(port)
    try:
        code, output = _run(
            tmp_path,
            [
                "--demo",
                f"--port={port}",
                f"--admin-port={admin}",
                "--ws-port=off",
                "--wss-port=off",
                "--notifier-port=0",
                "--control-port=0",
                "--notifier-http-port=off",
                "--notifier-https-port=off",
                f"--work-path={tmp_path}",
                "--log-format=json",
            ],
        )
    finally:
        holder.close()
    assert code != 0, output
    _check_message(output, port, "port")
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert not [e for e in events if e.get("event") == "upstream.state"], output


def test_in_process_the_failure_names_the_option_and_stops_the_started_listeners(
    tmp_path: Path, notifier: socket.socket
) -> None:
    """BridgeService raises ListenFailed for --admin-port and stops the ws listener it started."""
    from twisted.internet import reactor

    from smbridge.config import BridgeConfig, NotifierAddress, TLSFiles
    from smbridge.listening import ListenFailed
    from smbridge.router.router import BridgeIdentity
    from smbridge.service import BridgeService

    files = pki.ensure_site_pki(tmp_path / "pki")
    ws, admin = _free_ports(2)
    holder = _listening_socket(admin)
    bridge = BridgeService(
        BridgeConfig(
            identity=BridgeIdentity("sm1", "localhost"),
            tls=TLSFiles(files.bridge, files.bridge_client, files.ca),
            notifiers=(NotifierAddress("127.0.0.1", notifier.getsockname()[1]),),
            port=0,
            interface="127.0.0.1",
            ws_port=ws,
            admin_port=admin,
        ),
        reactor,
    )
    try:
        with pytest.raises(ListenFailed) as caught:
            bridge.startService()
    finally:
        holder.close()
    assert str(caught.value).startswith(
        f"admin-api cannot listen on 127.0.0.1:{admin} (--admin-port)"
    )
    assert bridge.upstream.attempts == 0 and not bridge.upstream.running
    assert not bridge.running
    assert bridge.tunnel is not None and bridge.tunnel.ws is not None
    assert not bridge.tunnel.ws.running and bridge.tunnel.ws.port is None  # its port is let go
    bridge.stopService()  # a later stop (a test's cleanup) is harmless
