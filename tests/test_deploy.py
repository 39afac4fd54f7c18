"""deploy/: the systemd unit and the example bridge configuration are valid and safe."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from smbridge import pki
from smbridge.bridge_config import OptionNames, load
from smbridge.client import connect
from smbridge.tap import Options
from smbridge.testing import stop_process

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "smbridge.service"
TWISTD = str(Path(sys.executable).parent / "twistd")


def unit(text: str | None = None) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text() if text is None else text)
    return parser


def test_unit_restarts_runs_unprivileged_and_reloads_with_sighup():
    """Restart on failure, a dedicated user, no capabilities, SIGHUP reload, hardening."""
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "smbridge" and service["Group"] == "smbridge"
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    assert service["NoNewPrivileges"] == "yes"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ProtectSystem"] == "strict" and service["ProtectHome"] == "yes"
    start = service["ExecStart"].split()
    assert start[0].endswith("/twistd") and "--nodaemon" in start and "smbridge" in start
    assert start[start.index("--config") + 1] == "/etc/smbridge/bridge.yaml"
    assert "--admin-token" not in service["ExecStart"]  # secrets never on the command line


def test_unit_passes_systemd_analyze_verify(tmp_path):
    """systemd-analyze verify finds nothing wrong (the venv's twistd stands in for /opt)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the settings test above still runs")
    copy = tmp_path / "smbridge.service"
    copy.write_text(UNIT.read_text().replace("/opt/smbridge/bin/twistd", TWISTD))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "smbridge.service" not in result.stderr, result.stderr


def test_example_bridge_config_parses_into_the_options(tmp_path):
    """deploy/bridge.example.yaml holds only known keys and builds a valid configuration."""
    args = load(DEPLOY / "bridge.example.yaml", OptionNames.of(Options()))
    assert args[args.index("--name") + 1] == "sm-ind-1"
    for pem in ("bridge.pem", "bridge-client.pem", "ca.pem"):
        (tmp_path / pem).write_text("placeholder")
    options = Options()
    options.parseOptions(
        [
            "--config",
            str(DEPLOY / "bridge.example.yaml"),
            "--cert",
            str(tmp_path / "bridge.pem"),
            "--client-cert",
            str(tmp_path / "bridge-client.pem"),
            "--ca",
            str(tmp_path / "ca.pem"),
            "--port",
            "4000",
        ]
    )
    config = options.config
    assert config is not None
    assert (config.identity.name, config.identity.kind) == ("sm-ind-1", "off-server")
    assert [str(a) for a in config.notifiers] == [
        "notifier-a.example.com:5597",
        "notifier-b.example.com:5597",
    ]
    assert config.port == 4000  # the command line wins over the file
    assert (config.admin_port, config.admin_interface) == (8080, "127.0.0.1")
    assert config.config_file == (DEPLOY / "bridge.example.yaml").resolve()


def test_config_file_errors_name_the_key(tmp_path):
    """Unknown keys (with a suggestion), wrong types and non-mappings are refused by name."""
    from twisted.python import usage

    names = OptionNames.of(Options())
    cases = {
        "prot: 1\n": "prot: no such option (did you mean 'port'?)",
        "port: abc\n": "port: 'abc' is not valid",
        "allow-cleartext: maybe\n": "allow-cleartext: expected true or false",
        "notifier: {a: 1}\n": "notifier: expected a string or a number, not dict",
        "- port\n": "the file must hold a mapping",
    }
    for text, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            load(path, names)
        with pytest.raises(usage.UsageError, match="--config: "):
            Options().parseOptions(["--demo", "--config", str(path)])
    path = tmp_path / "c.yaml"
    path.write_text("allow-cleartext: true\nws-port: off\nresource-port: [http=81]\n")
    options = Options()
    options.parseOptions(["--demo", "--work-path", str(tmp_path), "--config", str(path)])
    assert options["allow-cleartext"] and options["ws-port"] is None
    assert options.resource_ports == {"http": 81}


# --- the unit, started: ExecStart under the unit's restrictions (no systemd needed) -----
# What the start test does about each [Service] directive: "applied" ones are applied by
# tests/unit_sandbox.py; the rest say why not. A directive missing here fails the test
# below, so a new one is considered before it ships.
SANDBOX = Path(__file__).resolve().parent / "unit_sandbox.py"
DIRECTIVES = {
    "Type": "simple: the test waits for the listener itself",
    "User": "applied: a throwaway uid (no passwd entry needed)",
    "Group": "applied: its gid, supplementary groups cleared",
    "EnvironmentFile": "applied: the file is optional (leading '-'); the test has none",
    "WorkingDirectory": "applied: relocated under a temporary root",
    "ExecStart": "applied: the same arguments, paths relocated",
    "ExecReload": "tests/test_reload.py covers SIGHUP",
    "KillSignal": "applied: the test stops the bridge with SIGTERM",
    "TimeoutStopSec": "systemd only",
    "Restart": "systemd only (a failed start is what the test catches)",
    "RestartSec": "systemd only",
    "LimitNOFILE": "raises a limit: cannot make a start fail",
    "CapabilityBoundingSet": "applied: the bounding set emptied",
    "AmbientCapabilities": "applied: none (a non-root uid keeps no capability)",
    "NoNewPrivileges": "applied: prctl(PR_SET_NO_NEW_PRIVS)",
    "StateDirectory": "applied: the only writable path (owned by the uid)",
    "ConfigurationDirectory": "applied: root-owned, group-readable, read-only",
    "ProtectSystem": "applied: every other mount read-only (a mount namespace)",
    "ProtectHome": "applied: /root, /home, /run/user emptied (this Python bound back in)",
    "PrivateTmp": "the test leaves /tmp read-only, stricter than a private /tmp",
    "PrivateDevices": "the bridge opens no device (urandom comes from getrandom)",
    "ProtectKernelTunables": "applied: /sys read-only with the rest",
    "ProtectKernelModules": "systemd only: nothing loads modules",
    "ProtectKernelLogs": "systemd only: nothing reads the kernel log",
    "ProtectControlGroups": "applied: /sys/fs/cgroup read-only with the rest",
    "ProtectClock": "systemd only: nothing sets the clock",
    "ProtectHostname": "systemd only: nothing sets the host name",
    "RestrictAddressFamilies": "checked: AF_INET, AF_INET6 listeners and link; AF_UNIX, AF_NETLINK"
    " for glibc's resolver and getaddrinfo(AI_ADDRCONFIG)",
    "RestrictNamespaces": "systemd only: the bridge creates none",
    "RestrictRealtime": "systemd only: no realtime scheduling",
    "RestrictSUIDSGID": "systemd only: UMask 0077 and no chmod +s",
    "LockPersonality": "systemd only",
    "MemoryDenyWriteExecute": "applied: prctl(PR_SET_MDWE); must stay off (cffi callbacks)",
    "SystemCallArchitectures": "systemd only",
    "SystemCallFilter": "systemd only (systemd-analyze verify checks the syntax)",
    "UMask": "applied",
}
SANDBOX_UID = 61952  # no passwd entry: stands in for User=smbridge
HOMES = ["/root", "/home", "/run/user"]  # what ProtectHome=yes empties


def exposed() -> list[str]:
    """What stands in for /opt/smbridge: the interpreter, the venv, this checkout."""
    paths = {sys.base_prefix, sys.prefix, str(DEPLOY.parent)}
    return sorted(os.path.realpath(p) for p in paths)


def test_every_unit_directive_is_considered_by_the_start_test():
    """Each [Service] directive is either applied by the start test or has a stated reason."""
    assert set(unit()["Service"]) <= set(DIRECTIVES)


def test_unit_leaves_memory_deny_write_execute_off_and_says_why():
    """MemoryDenyWriteExecute stays off (pyOpenSSL's cffi callbacks) and the unit says so."""
    assert unit()["Service"].get("MemoryDenyWriteExecute", "no") == "no"
    assert "ffi.callback" in UNIT.read_text()


def test_unit_documentation_is_installed_by_the_documented_steps():
    """Documentation= names a file of docs/ that docs/operations.md's install steps put there."""
    url = unit()["Unit"]["Documentation"]
    assert url.startswith("file:///usr/share/doc/smbridge/")
    page = url.rsplit("/", 1)[1]
    docs = DEPLOY.parent / "docs"
    assert (docs / page).is_file()
    install = (docs / "operations.md").read_text().split("## Installing", 1)[1]
    install = install.split("```sh\n", 1)[1].split("```", 1)[0]
    assert f"docs/{page} {url.removeprefix('file://')}" in install, install


def _mdwe_supported() -> bool:
    """Whether this kernel has prctl(PR_SET_MDWE) (Linux 6.3+), asked in a child process."""
    probe = "import ctypes; raise SystemExit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0


def _cannot_sandbox() -> str | None:
    """Why the start test cannot run here, or None."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs Linux and root (a mount namespace, then a switch to a throwaway uid)"
    probe = "import ctypes; raise SystemExit(ctypes.CDLL(None).unshare(0x20000) != 0)"
    if subprocess.run([sys.executable, "-c", probe], timeout=30).returncode != 0:
        return "cannot create a mount namespace here"
    return None


def bridge_config(link_port: int) -> dict[str, Any]:
    """deploy/bridge.example.yaml, aimed at a local Notifier, on loopback and free ports."""
    config = yaml.safe_load((DEPLOY / "bridge.example.yaml").read_text())
    config.update(
        {
            "fqdn": "localhost",
            "notifier": [f"127.0.0.1:{link_port}"],
            "notifier-name": "localhost",
            "interface": "127.0.0.1",
            "port": 0,
            "ws-port": 0,
            "wss-port": 0,
            "admin-port": 0,
        }  # fmt: skip
    )
    return dict(config)


class UnitUnderTest:
    """The unit's ExecStart relocated under ``root``, run through tests/unit_sandbox.py."""

    def __init__(self, root: Path, text: str) -> None:
        self.root = root
        self.service = unit(text)["Service"]
        self.state = Path(self.relocate("/var/lib/smbridge"))
        self.etc = Path(self.relocate("/etc/smbridge"))
        for path, owner, mode in ((self.etc, 0, 0o750), (self.etc / "pki", 0, 0o750),
                                  (self.state, SANDBOX_UID, 0o755)):  # fmt: skip
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, owner, SANDBOX_UID)  # ConfigurationDirectory, StateDirectory
            path.chmod(mode)
        self.log_path = root / "bridge.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def relocate(self, value: str) -> str:
        for real, here in (("/opt/smbridge/bin/twistd", TWISTD),
                           ("/etc/smbridge", str(self.root / "etc/smbridge")),
                           ("/var/lib/smbridge", str(self.root / "var/lib/smbridge"))):  # fmt: skip
            value = value.replace(real, here)
        return value

    def install(self, pki_files: list[Path], config: dict[str, Any]) -> None:
        """The bridge's certificates (keys 0600, its user's) and bridge.yaml, relocated."""
        for source in pki_files:
            target = self.etc / "pki" / source.name
            shutil.copyfile(source, target)
            os.chown(target, SANDBOX_UID, SANDBOX_UID)
            target.chmod(0o644 if source.name == "ca.pem" else 0o600)
        relocated = {k: self.relocate(v) if isinstance(v, str) else v for k, v in config.items()}
        (self.etc / "bridge.yaml").write_text(yaml.safe_dump(relocated))

    def start(self) -> None:
        argv = [self.relocate(a) for a in shlex.split(self.service["ExecStart"])]
        assert argv[0] == TWISTD, argv
        env = {  # what systemd gives a service with User=, StateDirectory= and so on
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
            "HOME": str(self.state),
            "USER": "smbridge",
            "LOGNAME": "smbridge",
            "SHELL": "/usr/sbin/nologin",
            "STATE_DIRECTORY": str(self.state),
            "CONFIGURATION_DIRECTORY": str(self.etc),
        }
        flag = self.service.get
        spec = {
            "argv": argv,
            "env": env,
            "cwd": self.relocate(self.service["WorkingDirectory"]),
            "read_only": flag("ProtectSystem") == "strict",
            "writable": [str(self.state)],
            "hide": HOMES if flag("ProtectHome") == "yes" else [],
            "expose": [p for p in exposed() if any(p.startswith(h + "/") for h in HOMES)],
            "drop_bounding_set": flag("CapabilityBoundingSet") == "",
            "uid": SANDBOX_UID if flag("User") else None,
            "gid": SANDBOX_UID if flag("Group") else None,
            "umask": int(flag("UMask", "0022"), 8),
            "no_new_privs": flag("NoNewPrivileges") == "yes",
            "mdwe": flag("MemoryDenyWriteExecute") == "yes",
        }
        (self.root / "spec.json").write_text(json.dumps(spec))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SANDBOX), str(self.root / "spec.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines (--log-format json) whose ``event`` is ``name``."""
        found = []
        for line in self.output().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    @defer.inlineCallbacks
    def wait_for(self, predicate: Callable[[], Any], what: str, deadline: float = 30.0) -> Any:
        """Poll ``predicate``; fail at once if the bridge exits, or at the deadline."""
        end = time.monotonic() + deadline
        while not predicate():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the bridge exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > end:
                raise AssertionError(f"no {what} within {deadline}s:\n{self.output()}")
            yield task.deferLater(reactor, 0.05, lambda: None)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


@pytest.mark.integration
class UnitStartTests(TestCase):
    """The shipped unit's ExecStart, under its restrictions, starts a bridge that serves TLS."""

    timeout = 90

    def setUp(self) -> None:
        reason = _cannot_sandbox()
        if reason is not None:
            raise SkipTest(reason)
        self.root = Path(tempfile.mkdtemp(prefix="smbridge-unit-"))
        self.root.chmod(0o755)  # the throwaway uid walks through it
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)

    @defer.inlineCallbacks
    def start(self, text: str) -> Any:
        """A Notifier in this process, then the bridge under the unit ``text``."""
        from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

        from smbridge.notifier.demo import demo_site
        from smbridge.notifier.service import NotifierService
        from smbridge.notifier.trust import CertificateTrust

        site = pki.ensure_site_pki(self.root / "site")
        link = SSL4ServerEndpoint(
            reactor, 0, pki.server_options(site.notifier, site.ca), interface="127.0.0.1"
        )
        notifier = NotifierService(
            demo_site(),
            reactor=reactor,
            trust=CertificateTrust(trusted_files=[site.bridge_client]),
            link_endpoint=link,
            control_endpoint=TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
        )
        notifier.startService()
        self.addCleanup(notifier.stopService)
        yield notifier.when_listening()
        bridge = UnitUnderTest(self.root, text)
        self.addCleanup(bridge.stop)
        bridge.install(
            [site.bridge, site.bridge_client, site.ca],
            bridge_config(notifier.link_port.getHost().port),
        )
        bridge.start()
        return site, bridge

    @defer.inlineCallbacks
    def check_unit_serves_a_client(self, text: str) -> Any:
        site, bridge = yield self.start(text)
        yield bridge.wait_for(
            lambda: any(e.get("new") == "up" for e in bridge.events("upstream.state")),
            "registration at the Notifier",
        )
        (listening,) = [e for e in bridge.events("listener.listening")
                        if e.get("name") == "client-listener"]  # fmt: skip
        client = yield connect(reactor, f"tls://localhost:{listening['port']}", ca=site.ca)
        reply = yield client.logon("agent1", "demo")
        self.assertEqual(reply["server"]["name"], "sm-ind-1")
        snapshot = yield client.watch_queue("Sales")
        self.assertEqual(snapshot["queue"], "Sales")
        yield client.logoff()
        assert bridge.proc is not None
        bridge.proc.send_signal(signal.SIGTERM)  # the unit's KillSignal
        yield bridge.wait_for(lambda: bridge.proc.poll() is not None, "exit")
        # twistd re-raises SIGTERM after a clean shutdown.
        self.assertIn(bridge.proc.returncode, (0, -signal.SIGTERM), bridge.output())
        self.assertNotIn("Traceback", bridge.output())
        self.assertEqual(os.stat(bridge.state).st_uid, SANDBOX_UID)

    def test_the_shipped_unit_starts_the_bridge_and_it_serves_a_tls_client(self) -> Any:
        """ExecStart as the unit's user, read-only system, no privileges: logon over TLS works."""
        return self.check_unit_serves_a_client(UNIT.read_text())

    @defer.inlineCallbacks
    def test_memory_deny_write_execute_would_stop_the_bridge(self) -> Any:
        """With MemoryDenyWriteExecute=yes the same start fails: why the unit leaves it off."""
        if not _mdwe_supported():
            raise SkipTest("this kernel has no prctl(PR_SET_MDWE) (Linux 6.3+)")
        text = UNIT.read_text().replace("[Service]\n", "[Service]\nMemoryDenyWriteExecute=yes\n")
        failure = yield self.assertFailure(self.check_unit_serves_a_client(text), AssertionError)
        self.assertIn("the bridge exited 1", str(failure))
        self.assertIn("Cannot allocate write+execute memory for ffi.callback()", str(failure))
