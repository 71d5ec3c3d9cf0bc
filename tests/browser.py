"""Headless Chromium for page tests: Debian's chromium package, driven by Playwright's sync API.

Playwright's own browser builds are never downloaded; the browser is the system one at
ETLB_CHROMIUM (default /usr/bin/chromium), which `scripts/ensure-chromium.sh` installs for
`make test`. Without it a browser test is skipped with the reason, or fails in CI, where the
browser must exist.

Usage: take the `browser_page` fixture, a fresh page (1280x800 CSS pixels, device scale 1) in its own
browser context, closed after the test:

    def test_page(browser_page: Page) -> None:
        browser_page.goto(path.as_uri())
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM_VARIABLE = "ETLB_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
VIEWPORT_WIDTH = 1280
VIEWPORT_HEIGHT = 800

# No sandbox because tests run as root in CI; the rest keeps the browser from reaching any network
# service of its own (updates, sync, field trials) while a test runs.
CHROMIUM_ARGUMENTS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Return the browser's path; skip the test without one, or fail it in CI, where one must exist."""
    path = os.environ.get(CHROMIUM_VARIABLE, DEFAULT_CHROMIUM)
    if Path(path).is_file() and os.access(path, os.X_OK):
        return path
    reason = (
        f"Chromium is not installed at {path}, so there is no browser to test pages in;"
        " run make test or scripts/ensure-chromium.sh to install Debian's chromium package,"
        f" or set {CHROMIUM_VARIABLE} to the browser's path"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium process per test module.

    Module scope rather than session scope, because Playwright's sync API runs an event loop of its
    own in the main thread while it is started, and other modules run asyncio and anyio tests there.
    """
    path = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGUMENTS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser_page(browser: Browser) -> Iterator[Page]:
    """A new page in a new browser context of the module's Chromium, closed after the test."""
    context = browser.new_context(viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT}, device_scale_factor=1)
    try:
        yield context.new_page()
    finally:
        context.close()
