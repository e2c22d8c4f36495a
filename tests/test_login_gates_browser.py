"""Controls that need a login fail early: a viewer who is not logged in sees them disabled,
with "Log in to ..." on hover and a link to /login; logged in, the same controls work.

Real browser, the real app (shared full dashboard); screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support.browser import hover_for_tooltip
from tests.support.dashboard import TEST_TOKEN, Dashboard

APPEAR = 60_000  # ms: generous, the machine is shared and slow
DESKTOP = {"width": 1440, "height": 900}


def test_new_operation_is_disabled_with_a_login_link_for_a_viewer(
    full_dashboard: Dashboard, page: Page, artifacts_dir: Path
) -> None:
    page.set_viewport_size(DESKTOP)
    page.goto(full_dashboard.url)  # from this machine: viewing needs no login, launching does
    expect(page.locator("#login-link")).to_be_visible(timeout=APPEAR)
    button = page.locator("#new-operation")
    expect(button).to_be_visible(timeout=APPEAR)
    expect(button).to_be_disabled()
    expect(button).to_have_text("New Operation")
    gate = page.locator("[data-login-gate=launch]")
    expect(gate).to_have_attribute("href", "/login")
    expect(gate).to_have_attribute("aria-label", "Log in to launch")
    # Keyboard users reach the link (not the disabled button) and hear what to do.
    expect(page.get_by_role("link", name="Log in to launch")).to_have_count(1)
    hover_for_tooltip(page, gate, "Log in to launch")
    # The button and its tooltip (the tooltip is portalled: a clip of the page, not of the tab).
    page.screenshot(path=str(artifacts_dir / "login-gated-new-operation.png"),
                    clip={"x": 640, "y": 0, "width": 800, "height": 320})
    # A click goes to the login page; no launch dialog opens first.
    gate.click()
    page.wait_for_url(re.compile(r"/login"), timeout=APPEAR)
    expect(page.locator("#launch-dialog")).to_have_count(0)


def test_nodes_dialog_add_and_remove_need_a_login(full_dashboard: Dashboard, page: Page, artifacts_dir: Path) -> None:
    page.set_viewport_size(DESKTOP)
    page.goto(full_dashboard.url)
    page.locator("#nodes-button").click()
    dialog = page.locator("#nodes-dialog")
    expect(dialog).to_be_visible(timeout=APPEAR)
    expect(dialog.locator("#node-add-submit")).to_be_disabled()
    for field in ("#node-add-name", "#node-add-url", "#node-add-token"):
        expect(dialog.locator(field)).to_be_disabled()
    gate = dialog.locator("[data-login-gate=add-node]")
    expect(gate).to_have_attribute("href", "/login")
    expect(gate).to_have_attribute("aria-label", "Log in to add a node")
    hover_for_tooltip(page, gate, "Log in to add a node")
    dialog.screenshot(path=str(artifacts_dir / "login-gated-nodes.png"))
    page.keyboard.press("Escape")


def test_logged_in_the_same_controls_are_live(full_dashboard: Dashboard, page: Page) -> None:
    page.set_viewport_size(DESKTOP)
    page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
    page.wait_for_url(lambda url: "/login" not in url, timeout=APPEAR)  # sent on by a meta refresh
    page.goto(full_dashboard.url)
    expect(page.locator("#login-status")).to_be_visible(timeout=APPEAR)
    expect(page.locator("#new-operation")).to_be_enabled(timeout=APPEAR)
    expect(page.locator("[data-login-gate]")).to_have_count(0)
    page.locator("#new-operation").click()
    expect(page.locator("#launch-dialog")).to_be_visible(timeout=APPEAR)
    expect(page.locator("#launch-dialog [data-login-gate]")).to_have_count(0)
    page.keyboard.press("Escape")
    page.locator("#notifications-bell").click()
    expect(page.locator("#notify-kind-failed")).to_be_enabled(timeout=APPEAR)
    expect(page.locator("#webhook-url")).to_be_enabled()
    expect(page.locator("#webhook-save")).to_be_enabled()
    page.keyboard.press("Escape")
    page.locator("#nodes-button").click()
    expect(page.locator("#node-add-submit")).to_be_enabled(timeout=APPEAR)
    expect(page.locator("#node-add-name")).to_be_enabled()
