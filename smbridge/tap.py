"""``twistd smbridge``: the command-line options and the service they describe.

The top of the bridge: it may import the service, the demo and the options; none of
them imports it. ``Options`` lives in :mod:`smbridge.options` (re-exported here for
twistd's ``ServiceMaker`` and for existing imports).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService

if TYPE_CHECKING:
    from smbridge.config import BridgeConfig
    from smbridge.demo import DemoConfig

from smbridge.options import KINDS, Options, demo_tls, parse

__all__ = ["KINDS", "Options", "demo_tls", "makeService", "parse"]


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from smbridge.demo import DemoService
    from smbridge.service import BridgeService

    config = options.config
    assert config is not None
    r: Any = reactor
    service: IService
    if config.workers > 1 and config.worker_count == 1:  # the supervisor (docs/operations.md)
        from smbridge.workers.supervisor import Supervisor

        supervisor = Supervisor(config, options.argv, r, parse)
        if options["demo"]:
            from smbridge.workers.demo import DemoSupervisor

            service = DemoSupervisor(_demo_config(options, config), r, supervisor)
        else:
            service = supervisor
    elif config.worker_count > 1 and options["demo"]:  # a worker of the demo's supervisor
        from smbridge.workers.demo import demo_worker

        service = demo_worker(config, options, r)
    elif options["demo"]:
        service = DemoService(_demo_config(options, config), r)
    else:
        service = BridgeService(config, r, parse=parse)
    from smbridge.listening import ExitOnListenFailure

    service = ExitOnListenFailure(service)  # a port that cannot bind: exit 1, one line
    if options["log-format"] == "json":
        from smbridge.logs import JSONLogging

        return JSONLogging(service, options["log-level"])
    from smbridge.logs import LevelFiltering

    return LevelFiltering(service, options["log-level"])


def _demo_config(options: Options, config: BridgeConfig) -> DemoConfig:
    from smbridge.demo import DemoConfig

    return DemoConfig(
        config,
        Path(options["work-path"]),
        options["notifier-port"],
        options["control-port"],
        options["notifier-http-port"],
        options["notifier-https-port"],
    )
