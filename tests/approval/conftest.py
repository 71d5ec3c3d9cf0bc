"""The browser fixtures of `tests.browser`, for the approval page tests."""

from tests.browser import browser, browser_page

__all__ = ["browser", "browser_page"]
