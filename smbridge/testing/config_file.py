"""A bridge started from a YAML configuration file, for the reload tests.

:func:`start_file_bridge` starts a site (the reference Notifier), writes the bridge's
settings to ``<work>/bridge.yaml`` and starts a :class:`~smbridge.service.BridgeService`
from that file the way ``twistd smbridge --config`` does; the test changes the file
with :meth:`FileBridge.write` and asks the bridge to re-read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from smbridge.testing.site import RunningSite, start_site


@dataclass
class FileBridge:
    """The site, the configuration file with the settings last written, and the bridge."""

    site: RunningSite
    file: Path
    settings: dict[str, Any]
    bridge: Any  # smbridge.service.BridgeService

    @property
    def base(self) -> str:
        """The bridge's admin API."""
        return f"http://127.0.0.1:{self.bridge.admin_port}"

    def write(self, **changes: Any) -> None:
        """Apply ``changes`` to the settings and write them all to the file."""
        self.settings.update(changes)
        self.file.write_text(yaml.safe_dump(self.settings))


def file_settings(site: RunningSite, work: Path) -> dict[str, Any]:
    """A bridge on 127.0.0.1 (any free port) linked to ``site``'s Notifier."""
    files = site.pki
    return {
        "name": "sm2",
        "fqdn": "localhost",
        "location": "Indianapolis",
        "port": 0,
        "interface": "127.0.0.1",
        "notifier": [f"127.0.0.1:{site.link_port}"],
        "notifier-name": "localhost",
        "cert": str(files.bridge),
        "client-cert": str(files.bridge_client),
        "ca": str(files.ca),
        "work-path": str(work / "bridge"),
        "admin-port": 0,
        "ws-port": "off",
        "wss-port": "off",
        "accept": "default",
        "max-unread-seconds": 60,
    }


@defer.inlineCallbacks
def start_file_bridge(test: TestCase, reactor: Any, work: Path) -> Any:
    """Fires with a ready :class:`FileBridge` under ``work``; both stop at cleanup."""
    from smbridge.service import BridgeService
    from smbridge.tap import Options

    site = yield start_site(reactor, work / "site")
    test.addCleanup(site.stop)
    running = FileBridge(site, work / "bridge.yaml", file_settings(site, work), None)
    running.write()
    options = Options()
    options.parseOptions(["--config", str(running.file)])
    assert options.config is not None
    running.bridge = BridgeService(options.config, reactor)
    running.bridge.startService()
    test.addCleanup(running.bridge.stopService)
    yield running.bridge.when_ready()
    return running
