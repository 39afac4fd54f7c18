"""The minimal browser client of the protocol: static files, no build step.

``ROOT`` is the directory to serve (the nginx site serves it at ``/webclient/``).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
FILES = ("index.html", "smbridge.js", "app.js", "style.css")
