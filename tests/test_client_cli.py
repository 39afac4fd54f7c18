"""The ``smbridge client`` command and ``connect`` against a tiny fake bridge over real TLS."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from smbridge import cli, pki
from smbridge.client import ClientError, connect
from smbridge.codec import Decoder, Frame, Kind, encode, encode_error
from smbridge.codec.catalog import (
    CREATE_SESSION,
    DESTROY_SESSION,
    GET_DIRECTORY,
    HEARTBEAT,
    WATCH_QUEUE,
)
from smbridge.testing import OutputProcess

PASSWORD = "correct horse"
QUEUE_CHANGE = {
    "queue": "Sales",
    "added": [{"id": "c1", "type": "call"}],
    "changed": [],
    "removed": [],
}


# --- a fake bridge: just enough of docs/protocol.md to drive the client ------------------
class FakeBridge(Protocol):
    def connectionMade(self) -> None:
        self.decoder = Decoder()
        self.factory.connections.append(self)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            assert isinstance(frame, Frame)
            self.factory.received.append(frame)  # type: ignore[attr-defined]
            self.answer(frame)

    def reply(self, frame: Frame, body: dict[str, Any]) -> None:
        self.transport.write(
            encode(Kind.RESPONSE, frame.object_type, frame.event_id, frame.request_id, body)
        )

    def answer(self, frame: Frame) -> None:
        message, body = (frame.object_type, frame.event_id), frame.body or {}
        if message == CREATE_SESSION and body.get("password") != PASSWORD:
            self.transport.write(
                encode_error(
                    168,
                    1,
                    frame.request_id,
                    "logon-failed",
                    "wrong user or password",
                    reason="bad-credentials",
                )
            )
        elif message == CREATE_SESSION:
            self.reply(
                frame,
                {
                    "sessionId": "fake.1",
                    "resumeToken": "tok-secret",
                    "sessionTimeout": 90,
                    "heartbeatInterval": 30,
                    "server": {"name": "fake"},
                },
            )
        elif message == WATCH_QUEUE:
            self.reply(frame, {"queue": body["queue"], "interactions": [{"id": "c0"}]})
            self.transport.write(encode(Kind.NOTIFICATION, 173, 3, 0, QUEUE_CHANGE))
        elif message == GET_DIRECTORY:
            self.reply(frame, {"name": body["name"], "entries": [{"id": "u1"}, {"id": "u2"}]})
        elif message in (DESTROY_SESSION, HEARTBEAT):
            self.reply(frame, {})
        else:
            self.transport.write(
                encode_error(
                    frame.object_type,
                    frame.event_id,
                    frame.request_id,
                    "unknown-request",
                    "not in the fake",
                )
            )


class FakeBridgeFactory(Factory):
    protocol = FakeBridge

    def __init__(self) -> None:
        self.received: list[Frame] = []
        self.connections: list[FakeBridge] = []

    def messages(self) -> list[tuple[int, int]]:
        return [(f.object_type, f.event_id) for f in self.received]


def temp_dir(case: TestCase) -> Path:
    """A fresh directory outside the repository, removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="smbridge-client-test-"))
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


async def wait_for(predicate: Callable[[], bool], what: str, deadline: float = 20.0) -> None:
    """Poll ``predicate`` on the reactor until it holds; fail after ``deadline`` seconds."""
    end = reactor.seconds() + deadline
    while not predicate():
        if reactor.seconds() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)


class RealBridgeTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.pki = pki.ensure_site_pki(temp_dir(self) / "pki")
        self.bridge = FakeBridgeFactory()
        port = reactor.listenSSL(
            0, self.bridge, pki.server_options(self.pki.bridge), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.uri = f"tls://127.0.0.1:{self.port}"

    def args(self, *extra: str) -> argparse.Namespace:
        argv = [
            "client",
            self.uri,
            "--user",
            "alice",
            "--ca",
            str(self.pki.ca),
            "--hostname",
            "localhost",
            *extra,
        ]
        args = cli.build_parser().parse_args(argv)
        args.queues = [cli.queue_name(w) for w in args.watch]
        if args.password is None:
            args.password = PASSWORD
        return args


class ConnectTests(RealBridgeTestCase):
    def test_connect_logon_watch_logoff(self) -> None:
        """connect verifies the certificate; logon, watch_queue and logoff then reach the bridge."""

        async def run() -> None:
            client = await connect(reactor, self.uri, ca=self.pki.ca, hostname="localhost")
            seen: list[tuple[str, Any]] = []
            client.add_listener(lambda name, frame: seen.append((name, frame.body)))
            reply = await client.logon("alice", PASSWORD)
            assert client.session_id == reply["sessionId"] == "fake.1"
            assert await client.watch_queue("Sales") == {
                "queue": "Sales",
                "interactions": [{"id": "c0"}],
            }
            await wait_for(lambda: bool(seen), "QueueChanged")
            assert seen == [("QueueChanged", QUEUE_CHANGE)]
            await client.logoff()
            assert self.bridge.messages() == [CREATE_SESSION, WATCH_QUEUE, DESTROY_SESSION]
            assert client.session_id is None

        return ensureDeferred(run())

    def test_wrong_hostname_fails_connect(self) -> None:
        """A certificate that does not name the host fails connect with connection-lost."""

        async def run() -> None:
            with pytest.raises(ClientError) as info:
                await connect(reactor, self.uri, ca=self.pki.ca, hostname="elsewhere.example")
            assert info.value.code == "connection-lost"
            assert self.bridge.received == []

        return ensureDeferred(run())

    def test_silent_server_times_out(self) -> None:
        """A server that accepts TCP but never completes TLS fails connect with connect-timeout."""
        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)

        async def run() -> None:
            uri = f"tls://127.0.0.1:{silent.getHost().port}"
            with pytest.raises(ClientError) as info:
                await connect(reactor, uri, ca=self.pki.ca, timeout=0.2)
            assert info.value.code == "connect-timeout"

        return ensureDeferred(run())


class RunClientTests(RealBridgeTestCase):
    """``cli.run_client`` in this process, with signals replaced by a callable."""

    def setUp(self) -> None:
        super().setUp()
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.stop: list[Callable[[str], None]] = []

    def fake_signals(self, _reactor: Any, stop: Callable[[str], None]) -> None:
        self.stop.append(stop)

    def test_json_lines_and_logoff_on_signal(self) -> None:
        """With --json every line is a JSON record without the resumeToken; SIGTERM logs off."""

        async def run() -> None:
            args = self.args("--watch", "queue:Sales", "--directory", "Company", "--json")
            done = ensureDeferred(cli.run_client(reactor, args, self.fake_signals))
            await wait_for(lambda: "QueueChanged" in self.stdout.getvalue(), "QueueChanged")
            self.stop[0]("SIGTERM")
            assert await done is None
            records = [json.loads(line) for line in self.stdout.getvalue().splitlines()]
            # QueueChanged was sent before the GetDirectory request existed, so it comes first.
            assert [r["event"] for r in records] == [
                "CreateSession",
                "WatchQueue",
                "QueueChanged",
                "GetDirectory",
            ]
            change = next(r for r in records if r["event"] == "QueueChanged")
            assert change == {
                "event": "QueueChanged",
                "objectType": 173,
                "eventId": 3,
                "payload": QUEUE_CHANGE,
            }
            assert "tok-secret" not in self.stdout.getvalue()
            assert self.bridge.messages()[-1] == DESTROY_SESSION

        return ensureDeferred(run())

    def test_logon_failed_exits_1(self) -> None:
        """A logon-failed answer exits 1 with one line naming the code and reason."""

        async def run() -> None:
            args = self.args("--password", "wrong")
            with pytest.raises(SystemExit) as info:
                await cli.run_client(reactor, args, self.fake_signals)
            assert info.value.code == 1
            assert self.stderr.getvalue() == (
                "smbridge: logon-failed: wrong user or password (bad-credentials)\n"
            )

        return ensureDeferred(run())

    def test_connection_refused_exits_1(self) -> None:
        """A bridge that is not listening exits 1 with a one-line 'cannot connect' message."""

        async def run() -> None:
            args = self.args()
            args.uri = "tcp://127.0.0.1:1"
            with pytest.raises(SystemExit) as info:
                await cli.run_client(reactor, args, self.fake_signals)
            assert info.value.code == 1
            message = self.stderr.getvalue()
            assert message.startswith("smbridge: cannot connect to tcp://127.0.0.1:1: ")
            assert message.count("\n") == 1

        return ensureDeferred(run())

    def test_session_terminated_exits_1(self) -> None:
        """SessionTerminated from the bridge ends the command with exit 1 and the reason."""

        async def run() -> None:
            done = ensureDeferred(cli.run_client(reactor, self.args(), self.fake_signals))
            await wait_for(lambda: "logged on" in self.stdout.getvalue(), "logon")
            self.bridge.connections[0].transport.write(
                encode(Kind.NOTIFICATION, 168, 11, 0, {"reason": "expired"})
            )
            with pytest.raises(SystemExit) as info:
                await done
            assert info.value.code == 1
            assert self.stderr.getvalue() == "smbridge: session terminated by the bridge: expired\n"
            assert 'SessionTerminated {"reason":"expired"}' in self.stdout.getvalue()

        return ensureDeferred(run())


class DocsExampleTests(RealBridgeTestCase):
    def test_docs_example_runs(self) -> None:
        """The example in docs/client.md logs on, watches Sales and logs off against a bridge."""
        text = (Path(__file__).parent.parent / "docs" / "client.md").read_text()
        source = text.split("```python\n", 1)[1].split("```", 1)[0]
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(source, "docs/client.md", "exec"), namespace)
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)

        async def run() -> None:
            main = namespace["main"]
            await main(reactor, self.uri, "alice", PASSWORD, ca=self.pki.ca, seconds=0)
            assert "session fake.1 heartbeat every 30 s" in stdout.getvalue()
            assert "Sales holds 1 interactions" in stdout.getvalue()
            assert self.bridge.messages() == [CREATE_SESSION, WATCH_QUEUE, DESTROY_SESSION]

        return ensureDeferred(run())


class SubprocessTests(RealBridgeTestCase):
    def test_sigint_logs_off_and_exits_0(self) -> None:
        """The real ``smbridge client`` prints QueueChanged; SIGINT sends DestroySession, exit 0."""

        async def run() -> None:
            work = temp_dir(self)
            password_file = work / "password"
            password_file.write_text(PASSWORD + "\n")
            argv = [
                sys.executable,
                "-m",
                "smbridge.cli",
                "client",
                self.uri,
                "--user",
                "alice",
                "--password-file",
                str(password_file),
                "--watch",
                "queue:Sales",
                "--ca",
                str(self.pki.ca),
                "--hostname",
                "localhost",
            ]
            env = {k: v for k, v in os.environ.items() if k != cli.PASSWORD_ENV}
            proc = OutputProcess()
            transport = reactor.spawnProcess(proc, sys.executable, argv, env=env, path=str(work))
            try:
                await wait_for(
                    lambda: b"QueueChanged" in proc.out or proc.ended.called, "QueueChanged"
                )
            finally:
                if not proc.ended.called and b"QueueChanged" not in proc.out:
                    transport.signalProcess("KILL")
            assert b"QueueChanged" in proc.out, f"stdout={proc.out!r} stderr={proc.err!r}"
            lines = proc.out.decode().splitlines()
            assert lines[0] == "logged on: session fake.1 on fake (timeout 90s, heartbeat 30s)"
            assert lines[1] == "queue Sales: 1 interactions"
            assert json.loads(lines[2].removeprefix("QueueChanged ")) == QUEUE_CHANGE
            transport.signalProcess("INT")
            code = await proc.ended
            assert code == 0, proc.err
            assert self.bridge.messages() == [CREATE_SESSION, WATCH_QUEUE, DESTROY_SESSION]
            assert self.bridge.received[0].body["password"] == PASSWORD

        return ensureDeferred(run())


class ArgumentTests(TestCase):
    def test_queue_name(self) -> None:
        """--watch takes queue:NAME and refuses anything else with a usage message."""
        assert cli.queue_name("queue:Sales Team") == "Sales Team"
        for bad in ("Sales", "queue:", "directory:Company"):
            with pytest.raises(argparse.ArgumentTypeError, match="expected queue:NAME"):
                cli.queue_name(bad)

    def test_password_sources(self) -> None:
        """The password is --password, else the file's first line, else $SMBRIDGE_PASSWORD."""
        path = temp_dir(self) / "password"
        path.write_text("from-file\nignored\n")
        env = {cli.PASSWORD_ENV: "from-env"}
        assert cli.resolve_password("given", path, env) == "given"
        assert cli.resolve_password(None, path, env) == "from-file"
        assert cli.resolve_password(None, None, env) == "from-env"

    def test_missing_password_file(self) -> None:
        """An unreadable --password-file is a usage error naming the file."""
        with pytest.raises(argparse.ArgumentTypeError, match="nope"):
            cli.resolve_password(None, Path("nope"), {})

    def test_password_and_file_exclusive(self) -> None:
        """--password and --password-file together are refused by the parser."""
        self.patch(sys, "stderr", io.StringIO())
        with pytest.raises(SystemExit) as info:
            cli.build_parser().parse_args(
                ["client", "tls://h", "--user", "u", "--password", "p", "--password-file", "f"]
            )
        assert info.value.code == 2

    def test_bad_uri_is_usage_error(self) -> None:
        """A malformed URI exits 2 with the parser's message before anything connects."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with pytest.raises(SystemExit) as info:
            cli.main(["client", "bridge:3952", "--user", "u", "--password", "p"])
        assert info.value.code == 2
        assert "has no scheme" in stderr.getvalue()

    def test_subcommand_required(self) -> None:
        """Running ``smbridge`` without a subcommand is a usage error."""
        self.patch(sys, "stderr", io.StringIO())
        with pytest.raises(SystemExit) as info:
            cli.main([])
        assert info.value.code == 2
