"""The top bar in a real browser: audit log and login chip are there, and it fits a desktop and a phone."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import hover_for_tooltip
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
    # "Log in" keeps its label everywhere: it is what turns the disabled controls on.
    expect(page.get_by_role("button", name="Audit log")).to_have_count(1)
    expect(page.get_by_role("button", name="Log in")).to_have_count(1)
    expect(actions.locator("#login-link").get_by_text("Log in", exact=True)).to_be_visible()
    for selector, text in (("#audit-open", "Audit log"), ("#history-link", "History"), ("#nodes-button", "Nodes")):
        shown = actions.locator(selector).get_by_text(text, exact=True)
        if label == "phone":
            expect(shown).to_be_hidden()
        else:
            expect(shown).to_be_visible()
    heights = page.evaluate("[...document.querySelectorAll('#top-bar-actions > *')].map(e => e.offsetHeight)")
    assert max(heights) <= 40, heights  # one line each
    page.locator("#top-bar-actions").screenshot(path=str(artifacts_dir / f"top-bar-{label}.png"))
    page.screenshot(path=str(artifacts_dir / f"top-bar-page-{label}.png"))


# Each control of the top bar: its accessible name (role and name) and the tooltip it shows.
TOP_BAR_CONTROLS = [
    ("#history-link", "link", "History", "History of ended operations"),
    ("#notifications-bell", "button", "Notifications", "Notifications: recent failures"),
    ("#audit-open", "button", "Audit log", "Audit log: every control action"),
    ("#theme-menu", "button", "Theme: system", "Theme: system"),
    ("#login-link", "link", "Log in", "Log in to launch, stop and start operations"),
    ("#nodes-button", "button", "Nodes", "Nodes: other DGX machines"),
    ("#connection-status", None, None, "Connected to this dashboard's machine"),
]


def test_phone_top_bar_controls_are_named_and_show_tooltips(
    full_dashboard: Dashboard, page: Page, artifacts_dir: Path
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(full_dashboard.url)
    actions = page.locator("#top-bar-actions")
    expect(actions.locator("#connection-status")).to_have_attribute("data-connected", "true", timeout=APPEAR)
    for selector, role, name, hint in TOP_BAR_CONTROLS:
        control = actions.locator(selector)
        expect(control).to_be_visible(timeout=APPEAR)
        if role is not None:
            # The accessible name screen readers announce (icon-only controls included).
            expect(actions.get_by_role(role, name=name, exact=True)).to_have_count(1)
        # A visible tooltip on hover...
        hover_for_tooltip(page, control, hint)
        tooltip = page.get_by_role("tooltip")
        box = page.locator("[data-radix-popper-content-wrapper]").last.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
        if selector == "#notifications-bell":
            page.screenshot(path=str(artifacts_dir / "top-bar-phone-tooltip.png"))
        # Away, in steps as a hand moves (the tooltip's grace area listens for the moves after leaving).
        page.mouse.move(5, 800, steps=8)
        expect(tooltip).to_have_count(0, timeout=APPEAR)
    # ...and on keyboard focus.
    page.locator("#audit-open").focus()
    expect(page.get_by_role("tooltip")).to_contain_text("Audit log: every control action", timeout=APPEAR)
    # The connection chip says "connected" to screen readers; on a phone it is not shown (colour, tooltip).
    chip = actions.locator("#connection-status")
    expect(chip).to_contain_text("connected")
    assert chip.evaluate("e => e.getBoundingClientRect().right") <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
