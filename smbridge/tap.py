"""``twistd smbridge``: the command-line options and the service they describe.

The top of the bridge: it may import the service, the demo and the options; none of
them imports it. ``Options`` lives in :mod:`smbridge.options` (re-exported here for
twistd's ``ServiceMaker`` and for existing imports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import IService

from smbridge.options import KINDS, Options, demo_tls, parse

__all__ = ["KINDS", "Options", "demo_tls", "makeService", "parse"]


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from smbridge.demo import DemoConfig, DemoService
    from smbridge.service import BridgeService

    config = options.config
    assert config is not None
    r: Any = reactor
    service: IService
    if options["demo"]:
        service = DemoService(
            DemoConfig(
                config,
                Path(options["work-path"]),
                options["notifier-port"],
                options["control-port"],
                options["notifier-http-port"],
                options["notifier-https-port"],
            ),
            r,
        )
    else:
        service = BridgeService(config, r, parse=parse)
    from smbridge.listening import ExitOnListenFailure

    service = ExitOnListenFailure(service)  # a port that cannot bind: exit 1, one line
    if options["log-format"] == "json":
        from smbridge.logs import JSONLogging

        return JSONLogging(service)
    return service
