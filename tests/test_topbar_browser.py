"""The top bar in a real browser: audit log and login chip are there, and it fits a desktop and a phone."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.dashboard import Dashboard

APPEAR = 60_000  # ms: generous, the machine is shared and slow


@pytest.mark.parametrize(("label", "width", "height"), [("desktop", 1440, 900), ("phone", 390, 844)])
def test_top_bar_has_audit_and_login_and_fits(
    full_dashboard: Dashboard, page: Page, artifacts_dir: Path, label: str, width: int, height: int
) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.goto(full_dashboard.url)
    actions = page.locator("#top-bar-actions")
    expect(actions).to_be_visible(timeout=APPEAR)
    # Not logged in (no cookie): the "Log in" link, and the audit log button.
    for selector in ("#audit-open", "#login-link", "#history-link"):
        expect(actions.locator(selector)).to_be_visible(timeout=APPEAR)
        box = actions.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)
    # Everything in the bar stays inside the window: no horizontal scrolling, no clipped chips.
    right = page.evaluate(
        "Math.max(...[...document.querySelectorAll('#top-bar-actions > *')]"
        ".map(e => e.getBoundingClientRect().right))"
    )
    assert right <= width, right
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # Icon-only on a phone (no squeezed, wrapped labels), labelled on a desktop; named for screen readers.
    expect(page.get_by_role("button", name="Audit log")).to_have_count(1)
    expect(page.get_by_role("button", name="Log in")).to_have_count(1)
    for selector, text in (("#audit-open", "Audit log"), ("#login-link", "Log in")):
        shown = actions.locator(selector).get_by_text(text, exact=True)
        if label == "phone":
            expect(shown).to_be_hidden()
        else:
            expect(shown).to_be_visible()
    heights = page.evaluate("[...document.querySelectorAll('#top-bar-actions > *')].map(e => e.offsetHeight)")
    assert max(heights) <= 40, heights  # one line each
    page.locator("#top-bar-actions").screenshot(path=str(artifacts_dir / f"top-bar-{label}.png"))
    page.screenshot(path=str(artifacts_dir / f"top-bar-page-{label}.png"))
