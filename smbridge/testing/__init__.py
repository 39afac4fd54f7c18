"""Test fakes that several test modules share (house style: kept in one place).

One module per part; every public name is re-exported here, so
``from smbridge.testing import X`` works for all of them:

- :mod:`~smbridge.testing.frames`: ``decode_all``, ``FramePeer``, ``SAMPLE_REGISTRATION``
  (codec only: light to import on its own);
- :mod:`~smbridge.testing.processes`: ``TwistdProcess``, ``OutputProcess``, ``free_port``,
  ``stop_process``, ``poll``;
- :mod:`~smbridge.testing.site`: ``RunningSite``, ``start_site``, ``start_quiet_site``,
  ``http_json`` (the Notifier and the bridge are imported when a site starts, not here);
- :mod:`~smbridge.testing.router`: ``RouterHarness``, ``ScriptedNotifier``,
  ``FakeNotifierEndpoint`` (imports the router, the connector and the link);
- :mod:`~smbridge.testing.pair`: ``RunningPair``, ``start_pair``, ``SwitchoverWatcher``;
- :mod:`~smbridge.testing.recorder`: ``Recorder``.

Narrower helpers are not re-exported; import them from their module: ``dashboard``,
``client_certs``, ``config_file``, ``cli``, ``keeper``, ``tls_visit``.
"""

from smbridge.testing.frames import SAMPLE_REGISTRATION, FramePeer, decode_all
from smbridge.testing.pair import RunningPair, SwitchoverWatcher, start_pair
from smbridge.testing.processes import (
    OutputProcess,
    TwistdProcess,
    free_port,
    poll,
    stop_process,
)
from smbridge.testing.recorder import Recorder
from smbridge.testing.router import FakeNotifierEndpoint, RouterHarness, ScriptedNotifier
from smbridge.testing.site import RunningSite, http_json, start_quiet_site, start_site

__all__ = [
    "SAMPLE_REGISTRATION",
    "FakeNotifierEndpoint",
    "FramePeer",
    "OutputProcess",
    "Recorder",
    "RouterHarness",
    "RunningPair",
    "RunningSite",
    "ScriptedNotifier",
    "SwitchoverWatcher",
    "TwistdProcess",
    "decode_all",
    "free_port",
    "http_json",
    "poll",
    "start_pair",
    "start_quiet_site",
    "start_site",
    "stop_process",
]
