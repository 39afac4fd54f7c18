"""The commands the README and docs/client.md show do what the pages say, run as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smbridge import cli, pki
from smbridge.testing import OutputProcess, TwistdProcess, http_json, poll

ROOT = Path(__file__).resolve().parent.parent


def sh_commands(text: str, after: str) -> list[list[str]]:
    """The commands of the first ```sh block after ``after``, continuation lines joined."""
    block = text.split(after, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    lines = [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    return [shlex.split(line) for line in lines]


def test_readme_certs_command_makes_every_file_the_next_commands_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README's `smbridge certs` line writes the PEMs its twistd lines name, the right kinds."""
    certs, notifier, bridge = sh_commands((ROOT / "README.md").read_text(), "## Running for real")
    assert certs[:2] == ["smbridge", "certs"]
    monkeypatch.chdir(tmp_path)
    cli.main(certs[1:])
    named = [arg for cmd in (notifier, bridge) for arg in cmd if arg.endswith(".pem")]
    assert named and all((tmp_path / path).is_file() for path in named), named
    fqdn = bridge[bridge.index("--fqdn") + 1]
    listener = x509.load_pem_x509_certificate((tmp_path / bridge[bridge.index("--cert") + 1])
                                              .read_bytes())  # fmt: skip
    sans = listener.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [fqdn]  # what clients check
    usage = listener.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = x509.load_pem_x509_certificate(
        (tmp_path / bridge[bridge.index("--client-cert") + 1]).read_bytes()
    )
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert bridge[bridge.index("--client-cert") + 1] == notifier[notifier.index("--trust") + 1]
    pki.server_options(tmp_path / bridge[bridge.index("--cert") + 1])  # loads as --cert does


def test_certs_needs_something_to_make(tmp_path: Path) -> None:
    """`smbridge certs` without --server, --bridge or --listener is a usage error."""
    with pytest.raises(SystemExit) as info:
        cli.main(["certs", "--out", str(tmp_path / "x"), "--new-ca"])
    assert info.value.code == 2
    assert not (tmp_path / "x").exists()


def shown_pattern(line: str) -> re.Pattern[str]:
    """A shown output line as a pattern: "…" stands for anything, numbers may differ."""
    parts = [re.sub(r"\\d+|\d+", r"\\d+", re.escape(p)) for p in line.split("…")]
    return re.compile(".*".join(parts) + "$")


@pytest.mark.integration
class ClientDemoExample(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_the_demo_session_in_client_md_runs_as_shown(self) -> Any:
        """docs/client.md's demo command prints the lines shown, then ^C logs off, exit 0."""
        text = (ROOT / "docs" / "client.md").read_text()
        block = text.split("Against the demo", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
        command, *shown = block.splitlines()
        assert shown[-1] == "^C"
        words = shlex.split(command.removeprefix("$ "))
        env = dict(w.split("=", 1) for w in words if re.match(r"[A-Z_]+=", w))
        argv = [w for w in words if not re.match(r"[A-Z_]+=", w)]
        assert argv[:2] == ["smbridge", "client"] and argv[2] == "tls://localhost"
        work = Path(tempfile.mkdtemp(prefix="smbridge-doc-demo-"))
        demo = ["smbridge", "--demo"]  # its work path: ./smbridge-work, as the page says
        for flag in ("port", "notifier-port", "control-port", "admin-port", "ws-port",
                     "wss-port", "notifier-http-port", "notifier-https-port"):  # fmt: skip
            demo += [f"--{flag}", "0"]  # 3952 and the others may be taken here
        twistd = TwistdProcess(work, demo)
        self.addCleanup(twistd.kill)
        ports_file = work / "smbridge-work" / "ports.json"
        yield twistd.wait_for(ports_file.exists, "ports.json")
        ports = json.loads(ports_file.read_text())
        argv[2] = f"tls://localhost:{ports['client']}"
        control = f"http://127.0.0.1:{ports['control']}/api"
        yield http_json(reactor, "POST", f"{control}/traffic", {"callsPerSecond": 0})
        proc = OutputProcess()
        python = [sys.executable, "-m", "smbridge.cli", *argv[1:]]
        transport = reactor.spawnProcess(proc, sys.executable, python,
                                         env={**os.environ, **env}, path=str(work))  # fmt: skip
        self.addCleanup(lambda: proc.ended.called or transport.signalProcess("KILL"))
        yield poll(lambda: b"queue Sales:" in proc.out or proc.ended.called, deadline=20)
        change = {"queue": "Sales", "added": [{"id": "doc-call", "type": "call"}],
                  "changed": [], "removed": []}  # fmt: skip
        yield http_json(reactor, "POST", f"{control}/publish",
                        {"objectType": 173, "eventId": 3, "topic": "queue:Sales",
                         "payload": change})  # fmt: skip
        want = len(shown) - 1
        yield poll(lambda: proc.out.count(b"\n") >= want or proc.ended.called, deadline=20)
        transport.signalProcess("INT")
        code = yield proc.ended
        lines = proc.out.decode().splitlines()
        self.assertEqual(len(lines), len(shown) - 1, proc.out)
        for line, expected in zip(lines, shown[:-1], strict=False):
            self.assertRegex(line, shown_pattern(expected))
        self.assertEqual((code, proc.err), (0, b""))
        status = yield http_json(reactor, "GET", f"http://127.0.0.1:{ports['admin']}/api/status")
        self.assertEqual(status[1]["sessions"]["total"], 0)  # logged off, not lingering
