"""Driving the admin dashboard in headless Chromium: open it, wait for the page, click.

Shared by the dashboard's browser tests (tests/test_dashboard_actions*.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from smbridge.tunnel.testing import CHROMIUM, need_binary, start_chromium


@defer.inlineCallbacks
def open_page(test: TestCase, url: str, width: int = 1280) -> Any:
    """Headless Chromium on ``url`` at ``width`` x 900 CSS pixels, stopped at cleanup."""
    browser = yield start_chromium(reactor, url, chromium=need_binary(CHROMIUM, "chromium"))
    test.addCleanup(browser.stop)
    yield browser.command(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    return browser


@defer.inlineCallbacks
def wait_dom(browser: Any, expression: str, what: str, deadline: float = 15) -> Any:
    """Poll a page expression until it is truthy; fail with the page's console if not."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = yield browser.evaluate(expression)
        if value:
            return value
        yield deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"no {what} in the page; console: {browser.console}")


@defer.inlineCallbacks
def click(browser: Any, selector: str) -> Any:
    """Click the element ``selector`` names; the count of finished actions before it."""
    done = yield browser.evaluate(
        f"(() => {{ const n = Number(document.body.dataset.actions || 0);"
        f" document.querySelector({json.dumps(selector)}).click(); return n; }})()"
    )
    return done


@defer.inlineCallbacks
def act(browser: Any, selector: str, confirm: bool | None = None) -> Any:
    """Click ``selector`` (answering its confirmation when asked); fires with the outcome
    and the text the page shows for it once the action finished."""
    before = yield click(browser, selector)
    if confirm is not None:
        yield wait_dom(browser, "document.getElementById('confirm-dialog').open", "a dialog")
        yield click(browser, "#confirm-yes" if confirm else "#confirm-no")
    yield wait_dom(
        browser, f"Number(document.body.dataset.actions || 0) > {before}", "the action's end"
    )
    shown = yield browser.evaluate(
        "JSON.stringify({outcome: document.getElementById('action-result').dataset.outcome,"
        " text: document.getElementById('action-result').textContent})"
    )
    return json.loads(shown)
