"""``twistd smbridge`` options for the WebSocket tunnel and resource URIs (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from smbridge.config import TunnelSettings
from smbridge.tap import Options


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(["--demo", *argv])
    return options


def test_tunnel_defaults(tmp_path: Path) -> None:
    """ws on 8951 and wss on 8952 by default, client type required, pings every 20 s."""
    config = parse("--work-path", str(tmp_path)).config
    assert config is not None
    assert (config.ws_port, config.wss_port) == (8951, 8952)
    assert config.tunnel == TunnelSettings()
    assert config.tunnel.require_client_type is True
    assert config.identity.ports == {"tls": 3952, "ws": 8951, "wss": 8952}
    assert config.resource_ports == {}


def test_tunnel_options(tmp_path: Path) -> None:
    """Either port can be off or any free port; the header check and pings can be changed."""
    config = parse(
        "--work-path",
        str(tmp_path),
        "--ws-port",
        "off",
        "--wss-port",
        "0",
        "--require-client-type",
        "no",
        "--ws-ping-interval",
        "5",
        "--resource-port",
        "httpsecure=18019",
        "--resource-port",
        "dialer=9121",
    ).config
    assert config is not None
    assert (config.ws_port, config.wss_port) == (None, 0)
    assert config.tunnel.require_client_type is False
    assert config.tunnel.ping_interval == 5
    assert config.identity.ports["ws"] is None
    assert config.resource_ports == {"httpsecure": 18019, "dialer": 9121}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ws-port", "70000"], "--ws-port: expected a port 0..65535 or .off., not .70000."),
        (["--require-client-type", "maybe"], "--require-client-type: expected yes or no"),
        (["--ws-ping-interval", "-1"], "--ws-ping-interval must be 0..3600"),
        (["--resource-port", "gopher=70"], "KIND one of http, httpsecure"),
        (["--resource-port", "http"], "expected KIND=PORT"),
        (["--resource-port", "http=x"], "bad port 'x'"),
        (["--resource-port", "http=0"], "cannot be 0"),
    ],
)
def test_tunnel_usage_errors(argv: list[str], message: str) -> None:
    """Bad tunnel options stop start-up with a message naming the option."""
    with pytest.raises(usage.UsageError, match=message):
        parse(*argv)
