"""The dashboard shows why the Notifier link is down (lastError): dashboard.js run in Node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ADMIN = Path(__file__).resolve().parent.parent / "smbridge" / "admin"

# dashboard.js in a vm context with just enough of a DOM for renderStatus (node -e: argv[1..]).
RENDER = r"""
const vm = require("vm"), fs = require("fs");
const els = {};
const el = (id) => els[id] || (els[id] = {id, textContent: "", dataset: {}, style: {},
  className: "", hidden: false});
const ctx = {document: {getElementById: el, addEventListener() {},
  querySelectorAll() { return []; }, body: {dataset: {}}},
  sessionStorage: {getItem() { return null; }}, console};
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), ctx);
ctx.renderStatus(JSON.parse(process.argv[2]));
const e = el("notifier-error");
console.log(JSON.stringify({error: e.textContent, color: e.style.color, muted: e.className,
  attempts: el("notifier-attempts").textContent, state: el("notifier-state").textContent}));
"""


def _render(notifier: dict[str, Any]) -> Any:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed")
    status = {"name": "sm1", "accepting": False, "notifier": notifier, "sender": {}}
    out = subprocess.run(
        [node, "-e", RENDER, str(ADMIN / "dashboard.js"), json.dumps(status)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_link_error_is_shown_in_red_with_the_attempts() -> None:
    """A lastError is shown as given, in the 'bad' colour, beside the number of attempts."""
    reason = "TLS: the Notifier's certificate at 127.0.0.1:5597 is not valid for 'wrong.example'"
    shown = _render({"state": "connecting", "lastError": reason, "attempts": 7})
    assert shown == {
        "error": reason,
        "color": "var(--bad)",
        "muted": "",
        "attempts": "7",
        "state": "connecting",
    }


def test_no_error_reads_none_and_the_page_has_the_fields() -> None:
    """With the link up (lastError null) the field reads 'none', muted; the page has both ids."""
    shown = _render({"state": "up", "lastError": None, "attempts": 1})
    assert (shown["error"], shown["color"], shown["muted"]) == ("none", "", "muted")
    page = (ADMIN / "dashboard.html").read_text()
    assert 'id="notifier-error"' in page and 'id="notifier-attempts"' in page
