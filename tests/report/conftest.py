"""The browser fixtures of `tests.browser`, for the HTML report tests."""

from tests.browser import browser, browser_page

__all__ = ["browser", "browser_page"]
