"""twistd plugins: ``twistd smbridge`` (the bridge) and ``twistd notifier``.

Only ServiceMaker lines live here, so that ``twistd --help`` stays cheap: the
makers import their tap modules lazily.
"""

from twisted.application.service import ServiceMaker

smbridge = ServiceMaker(
    "smbridge",
    "smbridge.tap",
    "smbridge Session Manager bridge (client listener, upstream connector)",
    "smbridge",
)
notifier = ServiceMaker(
    "smbridge reference Notifier",
    "smbridge.notifier.tap",
    "smbridge reference Notifier (message bus for development, demos and tests)",
    "notifier",
)
