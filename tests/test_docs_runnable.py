"""Every shell block the README and docs/ mark runnable runs as written against the demo.

A page marks a block with ``<!-- runnable -->`` on the line before its ```` ```sh ````
fence (invisible once rendered), or ``<!-- runnable until Ctrl-C -->`` for commands
that run until interrupted: those must print a line, then exit 0 on SIGINT. The test
starts one demo (``twistd -n smbridge --demo``, every port free-chosen and read from
``smbridge-work/ports.json``), runs each command of each marked block with bash from
the demo's directory, the demo's default ports in the text replaced by the ports it
got, and requires:

- exit status 0 (a pipeline's last command; ``curl -s`` commands are run with ``-f``
  unless their shown answer is an HTTP error, so a 4xx/5xx fails them);
- where the page shows the answer as ``# {...}`` lines right under the command, an answer
  that is JSON with the same top-level members (values may differ: times, ids).

Blocks that start servers, change the demo for the others (switchover, a new site) or
need files a reader makes first are not marked; tests/test_docs.py keeps the others'
references honest.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"<!-- runnable( until Ctrl-C)? -->\n```(?:sh|bash)\n(.*?)```", re.S)
# The demo's default ports, by the name ports.json gives each (README's table).
DEFAULT_PORTS = {
    3952: "client",
    8951: "ws",
    8952: "wss",
    8080: "admin",
    8090: "control",
    5597: "notifier",
    8018: "notifier_http",
    8019: "notifier_https",
}


@dataclass
class Command:
    page: str
    line: int
    text: str
    shown: str  # the answer the page shows under it ("" when none)
    interactive: bool = False  # runs until Ctrl-C: interrupted once it has printed a line

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def _complete(text: str) -> bool:
    """Whether ``text`` is a whole command (its quotes closed)."""
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def commands(page: Path) -> list[Command]:
    """The commands of ``page``'s runnable blocks, each with the answer shown under it."""
    text = page.read_text()
    name = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name
    found: list[Command] = []
    for match in BLOCK.finditer(text):
        first = text[: match.start(2)].count("\n") + 1
        interactive = match.group(1) is not None
        current: Command | None = None  # the command "# " lines right under it answer
        pending, start, joiner = "", first, "\n"
        for offset, raw in enumerate(match.group(2).splitlines()):
            if pending:
                pending += joiner + raw  # after a backslash: bash drops it and the newline
            elif raw.startswith("#"):
                if current is not None and raw.startswith("# "):
                    current.shown += raw[2:] + "\n"
                continue
            elif not raw.strip():
                current = None
                continue
            else:
                pending, start = raw, first + offset
            joiner = "\n"  # inside quotes, a newline is part of the word
            if pending.endswith("\\"):
                pending, joiner = pending[:-1], ""
                continue
            if _complete(pending):
                current = Command(name, start, pending.strip(), "", interactive)
                found.append(current)
                pending = ""
        assert not pending, f"{name}:{first}: a runnable block ends inside a command"
    return found


ALL = [c for page in PAGES for c in commands(page)]


def test_pages_mark_blocks_runnable() -> None:
    """The pages a newcomer runs first mark their blocks (the test below is not empty)."""
    marked = {c.page for c in ALL}
    assert {"README.md", "docs/demo.md", "docs/operations.md", "docs/site-file.md"} <= marked
    assert len(ALL) >= 10, [str(c) for c in ALL]


def test_block_parsing_joins_continuations_and_keeps_shown_answers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "x\n<!-- runnable -->\n```sh\n# a comment\ncurl -s a \\\n    -d '{\"b\":\n 1}'\n"
        '# {"c": 1,\n#  "d": 2}\n\nls\n```\n```sh\nnot marked\n```\n'
    )
    found = list(commands(page))
    assert [(c.text, c.shown, c.line) for c in found] == [
        ("curl -s a     -d '{\"b\":\n 1}'", '{"c": 1,\n "d": 2}\n', 5),
        ("ls", "", 11),
    ]


def with_ports(text: str, ports: dict[str, int]) -> str:
    """``text`` with the demo's default ports replaced by the ones this demo has."""

    def swap(match: re.Match[str]) -> str:
        name = DEFAULT_PORTS.get(int(match.group(2)))
        if name is None or ports.get(name) is None:
            return match.group(0)
        return f"{match.group(1)}:{ports[name]}"

    return re.sub(r"(localhost|127\.0\.0\.1):(\d+)", swap, text)


def shown_json(shown: str) -> tuple[int | None, object] | None:
    """The answer a page shows, as (HTTP status or None, JSON value), or None if not JSON."""
    text = shown.strip()
    status = None
    if re.match(r"\d{3} ", text):
        status, text = int(text[:3]), text[4:]
    try:
        return status, json.loads(text)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, int]]]:
    work = tmp_path_factory.mktemp("docs-demo")
    (work / ".venv").symlink_to(ROOT / ".venv")  # the pages say .venv/bin/...
    argv = [str(Path(sys.executable).parent / "twistd"), "-n", "smbridge", "--demo"]
    for name in ("port", "ws-port", "wss-port", "admin-port", "notifier-port", "control-port",
                 "notifier-http-port", "notifier-https-port"):  # fmt: skip
        argv += [f"--{name}", "0"]
    log = (work / "demo.log").open("wb")
    proc = subprocess.Popen(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    ports_file = work / "smbridge-work" / "ports.json"
    deadline = time.monotonic() + 60
    while not ports_file.exists():
        assert proc.poll() is None, (work / "demo.log").read_text()
        assert time.monotonic() < deadline, "the demo did not write ports.json in 60 s"
        time.sleep(0.05)  # polling a file another process writes, with a deadline
    ports = json.loads(ports_file.read_text())
    # No generated calls: the pages' answers assume a quiet demo.
    subprocess.run(["curl", "-sf", "-X", "POST", "-d", '{"callsPerSecond": 0}',
                    f"http://127.0.0.1:{ports['control']}/api/traffic"],
                   check=True, capture_output=True, timeout=20)  # fmt: skip
    yield work, ports
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def run_until_interrupted(command: Command, text: str, work: Path, env: dict[str, str]) -> None:
    """Run ``text`` until it prints a line, then Ctrl-C it: it must exit 0."""
    proc = subprocess.Popen(["bash", "-c", f"exec {text}"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, f"{command}: printed nothing in 30 s"
        line = proc.stdout.readline()  # the first line is on its way (or EOF)
        assert line, f"{command}: exited {proc.wait(timeout=10)} before printing a line"
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        assert code == 0, f"{command}: exit {code} after Ctrl-C\n{err}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.integration
@pytest.mark.parametrize("command", ALL, ids=str)
def test_runnable_command_runs_as_written(
    command: Command, demo: tuple[Path, dict[str, int]]
) -> None:
    work, ports = demo
    text = with_ports(command.text, ports)
    expected = shown_json(command.shown)
    if text.startswith("curl ") and (expected is None or expected[0] is None):
        text = "curl -f" + text[len("curl") :]  # an HTTP error answer fails the command
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    env.pop("SMBRIDGE_ADMIN_TOKEN", None)
    if command.interactive:
        run_until_interrupted(command, text, work, env)
        return
    done = subprocess.run(["bash", "-o", "pipefail", "-c", text], cwd=work, env=env,
                          capture_output=True, timeout=60)  # fmt: skip
    out = done.stdout.decode(errors="replace")
    # `| head` closes the pipe on purpose: a writer killed by SIGPIPE (141) is fine.
    assert done.returncode in (0, 141) if "| head" in text else done.returncode == 0, (
        f"{command}\nexit {done.returncode}\n{out}\n{done.stderr.decode(errors='replace')}"
    )
    if expected is not None:
        answer = json.loads(out)
        if isinstance(expected[1], dict):
            assert isinstance(answer, dict), (command, out)
            assert set(answer) == set(expected[1]), (str(command), out)
