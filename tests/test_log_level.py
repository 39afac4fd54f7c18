"""--log-level: events below the level are not written, in text and JSON format alike.

Before it, twistd wrote every debug event: the "first refusal a warning, later ones
debug" rules that keep a flooding client from flooding the log did not hold.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import MultiService
from twisted.logger import ILogObserver, Logger, LogPublisher

from smbridge.logs import JSONLinesObserver, JSONLogging, LevelFiltering, level_filter
from smbridge.options import Options


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event["log_format"])


def test_level_filtering_wraps_the_running_observers_and_restores_them() -> None:
    publisher, seen = LogPublisher(), Recorder()
    publisher.addObserver(seen)
    log = Logger(observer=publisher)
    wrapper = LevelFiltering(MultiService(), "warn", publisher=publisher)
    log.debug("before")
    wrapper.startService()
    for level in ("debug", "info", "warn", "error"):
        getattr(log, level)(level)
    wrapper.stopService()
    log.debug("after")
    assert seen.events == ["before", "warn", "error", "after"]


def test_json_logging_filters_its_own_observer(capsys: pytest.CaptureFixture[str]) -> None:
    """--log-format json: the observer it gives twistd writes only events at the level."""
    out = io.StringIO()
    log = Logger(observer=level_filter(JSONLinesObserver(out), "info"))
    log.debug("hidden", event="x.debug")
    log.info("shown", event="x.info")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["x.info"]
    components: dict[Any, Any] = {}
    application = MultiService()
    application.setComponent = components.__setitem__  # type: ignore[attr-defined]
    JSONLogging(MultiService(), "error").setServiceParent(application)
    log = Logger(observer=components[ILogObserver])
    log.warn("below the level", event="x.warn")
    log.error("at the level", event="x.error")
    written = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["event"] for line in written] == ["x.error"]


@pytest.mark.parametrize("value", ["loud", "INFOX", ""])
def test_a_bad_level_is_a_one_line_usage_error(value: str) -> None:
    from twisted.python import usage

    with pytest.raises(usage.UsageError, match="--log-level"):
        Options().parseOptions(["--log-level", value])


def demo_log(tmp_path: Path, *extra: str) -> str:
    """The output of a demo that started and then stopped, run with ``extra`` options."""
    argv = [str(Path(sys.executable).parent / "twistd"), "-n", "smbridge", "--demo", *extra]
    for name in ("port", "ws-port", "wss-port", "admin-port", "notifier-port", "control-port",
                 "notifier-http-port", "notifier-https-port"):  # fmt: skip
        argv += [f"--{name}", "0"]
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "Demo ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # polling a file another process writes, with a deadline
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return log.read_text()


@pytest.mark.integration
def test_twistd_writes_no_debug_line_by_default_and_all_with_debug(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    default = demo_log(tmp_path / "a")
    assert "#debug]" not in default and "#info]" in default
    debug = demo_log(tmp_path / "b", "--log-level", "debug")
    assert "#debug]" in debug
    records = [json.loads(line) for line in demo_log(tmp_path / "c", "--log-format", "json")
               .splitlines() if line.startswith("{")]  # fmt: skip
    levels = {r["level"] for r in records}
    assert "info" in levels and "debug" not in levels, levels
