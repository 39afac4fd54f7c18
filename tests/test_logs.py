"""Structured logs: the JSON observer's records, and ``twistd smbridge --log-format json``."""

from __future__ import annotations

import io
import json
import re
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from twisted.internet import defer, reactor
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import TestCase

from smbridge.client import connect
from smbridge.logs import JSONLinesObserver, event_record, json_observer
from smbridge.testing import TwistdProcess, http_json


def records(**fields):
    out = io.StringIO()
    log = Logger(namespace="smbridge.test", observer=JSONLinesObserver(out))
    log.info("Session {session_id} of {user} resumed with {resume_token}", **fields)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_has_time_level_event_message_and_fields():
    """One line per event: ISO time, level, stable event key, message and JSON-safe fields."""
    (record,) = records(
        session_id="sm1-ab",
        user="agent1",
        resume_token="SECRET",
        event="session.resumed",
        count=3,
        ratio=0.5,
        tags=["a", "b"],
        obj=object(),
    )
    assert record["event"] == "session.resumed"
    assert record["level"] == "info"
    assert record["namespace"] == "smbridge.test"
    assert record["time"].endswith("Z") and "T" in record["time"]
    assert (record["session_id"], record["user"], record["count"]) == ("sm1-ab", "agent1", 3)
    assert (record["ratio"], record["tags"]) == (0.5, ["a", "b"])
    assert "obj" not in record  # not JSON: left out
    assert record["message"] == "Session sm1-ab of agent1 resumed with [redacted]"


def test_secret_fields_are_never_written():
    """Fields named like secrets are dropped, in nested dicts too, and masked in messages."""
    (record,) = records(
        session_id="s",
        user="u",
        resume_token="tok-1",
        password="pw-1",
        body={"resumeToken": "tok-2", "ok": 1, "Authorization": "Bearer x"},
        event="x",
    )
    line = json.dumps(record)
    for secret in ("tok-1", "pw-1", "tok-2", "Bearer x"):
        assert secret not in line
    assert record["body"] == {"ok": 1}


def test_failures_and_missing_event_keys():
    """A failure carries its error and traceback; without an event key the namespace is used."""
    out = io.StringIO()
    log = Logger(namespace="smbridge.demo", observer=JSONLinesObserver(out))
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("It broke")
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (record["event"], record["level"]) == ("smbridge.demo", "critical")
    assert record["errorType"] == "ZeroDivisionError"
    assert "Traceback" in record["traceback"]
    assert json_observer().out is sys.stdout
    assert ILogObserver.providedBy(json_observer())  # twistd --logger takes it
    assert event_record({"log_time": 0.0, "log_format": "hi"})["time"] == "1970-01-01T00:00:00.000Z"


@pytest.mark.integration
class TwistdJSONLogs(TestCase):
    timeout = 90

    def setUp(self):
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-jsonlog-"))
        self.config = self.work / "bridge.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "demo": True,
                    "port": 0,
                    "notifier-port": 0,
                    "control-port": 0,
                    "admin-port": 0,
                    "ws-port": "off",
                    "wss-port": "off",
                    "notifier-http-port": "off",
                    "notifier-https-port": "off",
                    "work-path": str(self.work),
                    "accept": "default",
                }
            )
        )
        self.twistd = TwistdProcess(
            self.work,
            ["smbridge", "--config", str(self.config), "--log-format", "json"],
            log_name="out.log",
        )
        self.proc = self.twistd.proc
        self.addCleanup(self.twistd.kill)
        self._wait_for = self.twistd.wait_for

    def lines(self):
        return self.twistd.output().splitlines()

    def events(self):
        return [json.loads(line) for line in self.lines() if line.strip()]

    @defer.inlineCallbacks
    def test_twistd_logs_json_lines_with_session_ids_and_reloads_on_sighup(self):
        """Every line is JSON; logon and logoff carry the session id; SIGHUP reloads the file."""
        ports_file = self.work / "ports.json"
        yield self._wait_for(ports_file.exists, "ports.json")
        ports = json.loads(ports_file.read_text())
        client = yield connect(
            reactor, f"tls://localhost:{ports['client']}", ca=self.work / "pki" / "ca.pem"
        )
        reply = yield client.logon("agent1", "demo")
        yield client.logoff()
        self.config.write_text(self.config.read_text().replace("accept: default", "accept: all"))
        self.proc.send_signal(signal.SIGHUP)
        yield self._wait_for(
            lambda: any(e["event"] == "reload.applied" for e in self.events()), "reload"
        )
        code, status = yield http_json(
            reactor, "GET", f"http://127.0.0.1:{ports['admin']}/api/status"
        )
        self.assertEqual((code, status["acceptMode"]), (200, "all"))
        self.proc.send_signal(signal.SIGTERM)
        yield self._wait_for(lambda: self.proc.poll() is not None, "exit")
        events = self.events()  # every line parses (json.loads raises otherwise)
        by_key = {}
        for e in events:
            by_key.setdefault(e["event"], []).append(e)
            self.assertTrue({"time", "level", "event", "message"} <= set(e), e)
        sid = reply["sessionId"]
        self.assertEqual([e["session_id"] for e in by_key["session.created"]], [sid])
        self.assertEqual([e["session_id"] for e in by_key["session.ended"]], [sid])
        (reloaded,) = by_key["reload.applied"]
        self.assertEqual((reloaded["how"], reloaded["changed"]), ("SIGHUP", ["accept"]))
        text = "\n".join(self.lines())
        self.assertNotIn(reply["resumeToken"], text)
        self.assertNotIn('"password"', text)


def test_every_event_key_in_the_docs_is_logged_somewhere():
    """The Logs section of docs/operations.md names only event keys the code logs."""
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "operations.md").read_text()
    section = doc.split("## Logs", 1)[1].split("\n## ", 1)[0]
    keys = set(re.findall(r"`([a-z_]+\.[a-z_.]+)`", section)) - {"smbridge.logs.json_observer"}
    source = "".join(p.read_text() for p in (root / "smbridge").rglob("*.py"))
    assert len(keys) > 20
    assert sorted(k for k in keys if f'"{k}"' not in source) == []
