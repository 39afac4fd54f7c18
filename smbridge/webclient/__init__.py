"""The browser SDK of the protocol (docs/client.md): static ES modules, no build step.

``ROOT`` is the directory to serve (the nginx site serves it at ``/webclient/``):
the SDK (``smbridge.js`` and the modules it imports, typed by ``smbridge.d.ts``) and
a demo page that uses it (``index.html``, ``app.js``, ``style.css``).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
SDK = (
    "smbridge.js",
    "session_core.js",
    "codec.js",
    "connection.js",
    "core.js",
    "order.js",
    "smbridge.d.ts",
)
FILES = ("index.html", "app.js", "style.css", "package.json", *SDK)
