"""The tab's shared loop in a real browser: the system header recovers after a
dropped connection, and a filtered-out section says so in its empty state."""

from __future__ import annotations

import sys
from typing import Any

from playwright.sync_api import Page, expect

from tests.support.dashboard import Dashboard, wait_until

APPEAR = 60_000


def cpu_points(page: Page) -> str:
    """The CPU sparkline's points now ("" before it exists)."""
    line = page.locator("#system-header [data-field=cpu] [data-field=sparkline] polyline")
    return line.get_attribute("points") or "" if line.count() else ""


def test_system_header_keeps_updating_after_a_reconnect(full_dashboard: Dashboard, page: Page) -> None:
    page.goto(full_dashboard.url + "/")
    header = page.locator("#system-header")
    expect(header).to_have_attribute("data-loaded", "true", timeout=APPEAR)
    wait_until(lambda: cpu_points(page), 60, 0.5, "no CPU sparkline")

    page.context.set_offline(True)
    expect(page.locator("#banner-disconnected")).to_be_visible(timeout=APPEAR)
    # Long enough for the backend to see the tab gone and end its loop.
    wait_until(
        lambda: full_dashboard.get_json("/api/health")["data"]["ui_loops"] == 0, 60, 0.5, "loop outlived the tab"
    )
    page.context.set_offline(False)
    expect(page.locator("#banner-disconnected")).to_have_count(0, timeout=APPEAR)

    # Every new snapshot shifts the sparkline: the header is live again.
    after_reconnect = cpu_points(page)
    wait_until(lambda: cpu_points(page) != after_reconnect, 60, 0.5, "the header froze after the reconnect")


def test_a_filtered_out_section_says_nothing_matches(full_dashboard: Dashboard, page: Page) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(900)"]
    status, body = full_dashboard.authed(
        "POST", "/api/dgx/operations", {"template": "custom", "name": "tabloop-job", "type": "job", "command": argv}
    )
    assert status == 201, body
    job: dict[str, Any] = body["data"]
    try:
        # A search that matches only the job: the other sections say so (a type filter hides them instead).
        page.goto(full_dashboard.url + "/?q=tabloop-job")
        expect(page.locator(f"#op-{job['id']}")).to_be_visible(timeout=APPEAR)
        servers_empty = page.locator("#section-servers-empty")
        expect(servers_empty).to_contain_text("No servers match the filters", timeout=APPEAR)
        expect(servers_empty).not_to_contain_text("No servers running")
        expect(page.locator("#section-programs-empty")).to_contain_text("No programs or scripts match the filters")
        page.goto(full_dashboard.url + "/?type=job")
        expect(page.locator(f"#op-{job['id']}")).to_be_visible(timeout=APPEAR)
        expect(page.locator("#section-servers-empty")).to_have_count(0)
        # Clearing the filters brings the plain empty state back (if the section is empty at all).
        page.goto(full_dashboard.url + "/")
        expect(page.locator(f"#op-{job['id']}")).to_be_visible(timeout=APPEAR)
        expect(page.locator("[data-filtered=true]")).to_have_count(0, timeout=APPEAR)
    finally:
        full_dashboard.authed("POST", f"/api/dgx/operations/{job['id']}/stop", {"force": True})
