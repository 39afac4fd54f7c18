"""``twistd notifier`` options and service construction (no real sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from smbridge.notifier.demo import demo_site_dict
from smbridge.notifier.service import NotifierService
from smbridge.notifier.tap import Options, make_notifier_service


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_demo_defaults() -> None:
    """--demo gives the demo site, port 5597 on all interfaces and the control API on localhost."""
    config = parse("--demo").config
    assert (config.site.name, config.port, config.interface) == ("demo", 5597, "")
    assert config.control == "tcp:8090:interface=127.0.0.1"
    assert (config.cert, config.ca, config.work_path) == (None, None, Path("smbridge-work"))


def test_site_file_and_control_none(tmp_path: Path) -> None:
    """--site loads the file; --control none disables the control API."""
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(demo_site_dict(cic_name="cicZ")), encoding="utf-8")
    config = parse("--site", str(path), "--control", "none", "--port", "6000").config
    assert (config.site.cic.name, config.control, config.port) == ("cicZ", None, 6000)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--site FILE is required"),
        (["--demo", "--site", "x.yaml"], "either --site or --demo"),
        (["--demo", "--port", "70000"], "is not a TCP port"),
        (["--demo", "--cert", "a.pem"], "--cert and --ca go together"),
        (["--demo", "--cert", "nope.pem", "--ca", "nope.pem"], "--cert nope.pem: no such file"),
        (["--site", "/nonexistent/site.yaml"], "cannot read the site file"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    """Bad option combinations are UsageErrors with a clear message."""
    with pytest.raises(usage.UsageError, match=message):
        parse(*argv)


def test_make_service_does_no_io_until_listening(tmp_path: Path) -> None:
    """makeService touches no disk; starting the service creates the PKI and listens."""
    work = tmp_path / "work"
    config = parse(
        "--demo",
        "--work-path",
        str(work),
        "--port",
        "0",
        "--control",
        "tcp:0:interface=127.0.0.1",
        "--http-port",
        "off",
        "--https-port",
        "off",
    ).config
    reactor = MemoryReactorClock()
    service = make_notifier_service(config, reactor)
    assert isinstance(service, NotifierService)
    assert not work.exists()
    assert reactor.sslServers == [] and reactor.tcpServers == []
    service.startService()
    assert (work / "pki" / "notifier.pem").exists()
    assert [s[0] for s in reactor.sslServers] == [0]
    assert [(s[0], s[3]) for s in reactor.tcpServers] == [(0, "127.0.0.1")]
    assert service.traffic.running is True
    service.stopService()
    assert service.traffic.running is False
    assert reactor.getDelayedCalls() == []


def test_resource_host_ports(tmp_path: Path) -> None:
    """The resource host listens on 8018 and 8019 by default; either port can be off."""
    config = parse("--demo", "--work-path", str(tmp_path)).config
    assert (config.http_port, config.https_port, config.resources) == (8018, 8019, None)
    reactor = MemoryReactorClock()
    service = make_notifier_service(config, reactor)
    service.startService()
    assert [s[0] for s in reactor.sslServers] == [5597, 8019]
    assert [s[0] for s in reactor.tcpServers] == [8090, 8018]
    service.stopService()
    config = parse(
        "--demo", "--https-port", "off", "--resources", str(tmp_path), "--http-port", "0"
    ).config
    assert (config.http_port, config.https_port, config.resources) == (0, None, tmp_path)
    with pytest.raises(usage.UsageError, match="--resources /nonexistent: no such directory"):
        parse("--demo", "--resources", "/nonexistent")


def test_bad_control_endpoint_is_a_usage_error() -> None:
    """An unparsable --control endpoint string is reported as a UsageError."""
    config = parse("--demo", "--control", "bogus:1").config
    with pytest.raises(usage.UsageError, match="--control bogus:1"):
        make_notifier_service(config, MemoryReactorClock())
