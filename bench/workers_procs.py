"""Processes of bench/workers.py: its client processes, the bridge under test, HTTP helpers."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import BIN, Server, bridge_args, free_port, wait_for_port
from bench.tunnel import process_cpu

SCRIPT = Path(__file__).resolve().parent / "workers.py"
BRIDGE_FLAGS = (
    *("--logon-free-failures", "1000", "--logon-address-max-pending", "100000"),
    *("--guard-limit", "0", "--linger", "0", "--allow-cleartext"),
)
US_KEYS = ("bridge", "clients", "notifier")


def spawn_client(mode: str, port: int, ca: Path, count: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "python"), str(SCRIPT), "--client", mode, "--port", str(port),
         "--ca", str(ca), "--count", str(count), *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def ask(proc: subprocess.Popen[str], command: str) -> dict[str, Any]:
    """Send a watch client a command; its JSON answer."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return dict(json.loads(proc.stdout.readline()))


def last_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    return dict(json.loads(out.strip().splitlines()[-1]))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_workers(control: str, name: str, workers: int, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            for b in get_json(f"{control}/api/state")["bridges"]:
                if b["name"] == name and b["connected"] and b.get("workersUp", 1) == workers:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{name}: {workers} worker link(s) not up")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Bridge:
    def __init__(self, work: Path, n_port: int, control: str, workers: int, tag: str) -> None:
        self.port, self.admin = free_port(), free_port()
        flags = (
            *BRIDGE_FLAGS, "--name", f"w{workers}", "--workers", str(workers),
            "--admin-port", str(self.admin), "--run-dir", str(work / f"run-{tag}"),
        )  # fmt: skip
        args = bridge_args(n_port, self.port, work, *flags)  # the later --admin-port wins
        self.server = Server(f"bridge-{tag}", args, work)
        self.workers = workers
        wait_for_port(self.port)
        wait_workers(control, f"w{workers}", workers)

    def sent(self) -> tuple[float, float]:
        """Frames and bytes written to clients so far, every priority (merged /metrics)."""
        frames = sent_bytes = 0.0
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("smbridge_sent_frames_total{"):
                    frames += float(line.rsplit(" ", 1)[1])
                elif line.startswith("smbridge_sent_bytes_total{"):
                    sent_bytes += float(line.rsplit(" ", 1)[1])
        return frames, sent_bytes

    def cpu(self) -> float:
        return process_cpu(self.server.proc.pid)

    def stop(self) -> None:
        self.server.stop()


def per_op_us(ops: float, bridge: float, clients: float, notifier: float) -> dict[str, Any]:
    """CPU per operation (µs) of each party (for the machine's bound on the 2:1 ratio)."""
    if not ops:
        return {}
    return {
        "us_bridge": round(bridge / ops * 1e6, 3),
        "us_clients": round(clients / ops * 1e6, 3),
        "us_notifier": round(notifier / ops * 1e6, 3),
    }
