"""The live loop does not multiply: one per open tab, none once tabs close.

Counts come from ``/api/health`` (``ui_loops``), which reads the loop registry
of the real running app.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, Page

from tests.support.dashboard import Dashboard, wait_until

LOOP_TIMEOUT = 45.0


def ui_loops(dashboard: Dashboard) -> int:
    """How many live loops the app runs now."""
    return int(dashboard.get_json("/api/health")["data"]["ui_loops"])


def open_tab(browser: Browser, url: str) -> tuple[Any, Page]:
    """A fresh browser context (its own client token) with the dashboard open."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#operations-sections", timeout=60_000)
    return context, page


def test_reloads_do_not_multiply_loops_and_closing_ends_them(
    full_dashboard: Dashboard, browser: Browser
) -> None:
    wait_until(lambda: ui_loops(full_dashboard) == 0, LOOP_TIMEOUT, message="loops left by earlier tests")

    context, page = open_tab(browser, full_dashboard.url)
    # The tab's live loops (the operations loop; other views may add their own).
    per_tab = wait_until(lambda: ui_loops(full_dashboard), LOOP_TIMEOUT, message="no loop after opening the tab")

    for _ in range(6):
        page.reload()
        page.wait_for_selector("#operations-sections", timeout=60_000)
    # Each reload superseded the loops before it: still the same number for this tab.
    wait_until(lambda: ui_loops(full_dashboard) == per_tab, LOOP_TIMEOUT, message="reloads multiplied the loops")

    # A second tab (another client token) has its own.
    other_context, _ = open_tab(browser, full_dashboard.url)
    wait_until(lambda: ui_loops(full_dashboard) == 2 * per_tab, LOOP_TIMEOUT, message="second tab has no loop")

    context.close()
    other_context.close()
    wait_until(lambda: ui_loops(full_dashboard) == 0, LOOP_TIMEOUT, message="loops outlived their tabs")
