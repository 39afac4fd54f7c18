"""``smbridge client`` as a real child process, for the command-line end-to-end tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from smbridge.testing.processes import OutputProcess


class CliClient:
    """A running ``python -m smbridge.cli client ...``: its output and its process."""

    def __init__(self, proc: OutputProcess, transport: Any) -> None:
        self.proc = proc
        self.transport = transport

    def printed(self, text: str) -> bool:
        """Whether the client printed ``text`` yet; fails if it already exited."""
        if self.proc.ended.called:
            raise AssertionError(f"the client exited: {self.proc.out!r} {self.proc.err!r}")
        return text.encode() in self.proc.out


def spawn_client(test: TestCase, reactor: Any, args: list[str], path: Path) -> CliClient:
    """``smbridge client <args>`` run in ``path`` without ``SMBRIDGE_PASSWORD`` in its
    environment; killed at the test's cleanup if it is still running."""
    argv = [sys.executable, "-m", "smbridge.cli", "client", *args]
    env = {k: v for k, v in os.environ.items() if k != "SMBRIDGE_PASSWORD"}
    proc = OutputProcess()
    transport = reactor.spawnProcess(proc, sys.executable, argv, env=env, path=str(path))
    test.addCleanup(lambda: None if proc.ended.called else transport.signalProcess("KILL"))
    return CliClient(proc, transport)
