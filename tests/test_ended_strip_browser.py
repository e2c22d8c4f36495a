"""In a real browser: ended operations in a compact strip, live counts, controls that
fail early for a viewer who is not logged in, names (not ids) in toasts and the audit log, and
the page at phone width (first card without scrolling, History as stacked cards).

Real operations are launched through the real API; screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import focus_for_tooltip
from tests.support.dashboard import TEST_TOKEN, Dashboard, wait_until

APPEAR = 60_000  # ms: generous, the machine is shared and slow
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
# A program that holds one child process: its card counts processes in words ("3 processes").
WITH_CHILD = "import subprocess, time; subprocess.Popen(['sleep', '900']); time.sleep(900)"


def launch(dash: Dashboard, name: str, code: str = "import time; time.sleep(900)") -> dict[str, Any]:
    status, body = dash.authed("POST", "/api/dgx/operations", {
        "template": "custom", "name": name, "type": "program", "command": [sys.executable, "-c", code],
    })
    assert status == 201, body
    return body["data"]


def stop(dash: Dashboard, op: dict[str, Any]) -> None:
    dash.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": True})


def overflowing(page: Page, width: int) -> list[str]:
    """The outermost visible elements that reach past the window's right edge (for the failure message)."""
    return page.evaluate(
        """(width) => [...document.querySelectorAll('body *')]
            .filter((e) => (e.getBoundingClientRect().right > width + 1 && e.getClientRects().length)
                           || (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible'))
            .filter((e) => !(e.parentElement && e.parentElement.getBoundingClientRect().right > width + 1))
            .slice(0, 8)
            .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${[...e.classList].join('.')}`
                        + ` right=${Math.round(e.getBoundingClientRect().right)}`)""",
        width,
    )


def log_in(page: Page, dash: Dashboard) -> None:
    page.goto(f"{dash.url}/login?token={TEST_TOKEN}")
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)


def contrast(page: Page, selector: str) -> float:
    """WCAG contrast ratio of an element's text colour on its background colour (both opaque rgb)."""
    return page.evaluate(
        """(sel) => {
            const el = document.querySelector(sel);
            const style = getComputedStyle(el);
            const rgb = (text) => {
                const probe = document.createElement('div');
                probe.style.color = text;
                document.body.appendChild(probe);
                const value = getComputedStyle(probe).color;
                probe.remove();
                const parts = value.match(/[\\d.]+/g).map(Number);
                return parts;
            };
            const lum = ([r, g, b]) => {
                const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
            };
            const fg = rgb(style.color), bg = rgb(style.backgroundColor);
            // A translucent text colour (rgba) is blended over the background first.
            const a = fg.length > 3 ? fg[3] : 1;
            const mixed = [0, 1, 2].map((i) => fg[i] * a + bg[i] * (1 - a));
            const [hi, lo] = [lum(mixed), lum(bg)].sort((x, y) => y - x);
            return (hi + 0.05) / (lo + 0.05);
        }""",
        selector,
    )


@pytest.fixture
def strip_ops(full_dashboard: Dashboard) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    live = launch(full_dashboard, "strip-live", WITH_CHILD)
    ended = launch(full_dashboard, "strip-ended")
    yield live, ended
    for op in (live, ended):
        stop(full_dashboard, op)
        full_dashboard.authed("DELETE", f"/api/dgx/operations/{op['id']}")


def test_ended_operations_move_to_a_strip_and_counts_count_live_ones(
    full_dashboard: Dashboard, page: Page, strip_ops: tuple[dict, dict], artifacts_dir: Path
) -> None:
    live, ended = strip_ops
    page.set_viewport_size(DESKTOP)
    log_in(page, full_dashboard)
    page.goto(f"{full_dashboard.url}/?q=strip-")  # only this test's operations
    card, row = page.locator(f"#op-{live['id']}"), page.locator(f"#op-{ended['id']}")
    expect(card).to_be_visible(timeout=APPEAR)
    expect(row).to_be_visible(timeout=APPEAR)
    expect(page.locator("#section-programs-count")).to_have_text("2", timeout=APPEAR)
    # The page's heading is the tab's; no second visible "Running Operations".
    heading = page.locator("#operations-heading").bounding_box()
    assert heading is not None and heading["height"] <= 1 and heading["width"] <= 1
    # "+1 procs" is gone: the card counts its processes in words.
    # (A launched operation's tree also holds the dashboard's runner: 3 processes here.)
    expect(card.locator("[data-field=process-count]")).to_have_text(re.compile(r"^· [2-9] processes$"),
                                                                     timeout=APPEAR)
    # The "New Operation" button's text reads at WCAG AA contrast (4.5:1).
    assert contrast(page, "#new-operation") >= 4.5

    stop(full_dashboard, ended)
    # Ended (kept only 15 s by the shared dashboard): one line in the strip, not a card in the grid.
    strip = page.locator("#section-programs-ended")
    ended_row = strip.locator(f"#op-{ended['id']}")
    expect(ended_row).to_have_attribute("data-layout", "ended-row", timeout=APPEAR)
    expect(page.locator(f"#section-programs-grid #op-{ended['id']}")).to_have_count(0)
    expect(page.locator(f"#section-programs-grid #op-{live['id']}")).to_be_visible()
    expect(ended_row.locator("[data-field=name]")).to_have_text("strip-ended")
    expect(ended_row.locator("[data-field=outcome]")).not_to_be_empty()
    expect(ended_row.locator("[data-field=ended]")).to_contain_text("ended")
    expect(ended_row.locator("[data-action=logs]")).to_be_visible()
    expect(ended_row.locator("[data-action=remove]")).to_be_visible()
    box = ended_row.bounding_box()
    assert box is not None and box["height"] <= 48, box  # one line
    # Counts: the badge counts the live one; the ended one is counted apart.
    expect(page.locator("#section-programs-count")).to_have_text("1")
    expect(page.locator("#section-programs-ended-count")).to_have_text("running · 1 ended")
    expect(page.locator("#operations-ended-count")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "ended-strip-desktop.png"), full_page=True)

    # Remove from the strip: the toast names the operation, not its id.
    ended_row.locator("[data-action=remove]").click()
    expect(page.get_by_text("Removed: strip-ended")).to_be_visible(timeout=APPEAR)
    expect(page.get_by_text(f"Removed: {ended['id']}")).to_have_count(0)
    expect(ended_row).to_have_count(0, timeout=APPEAR)

    # A type filter hides the other sections instead of leaving empty boxes.
    page.goto(f"{full_dashboard.url}/?q=strip-&type=job")
    expect(page.locator("#section-jobs")).to_be_visible(timeout=APPEAR)
    expect(page.locator("#section-programs")).to_have_count(0)
    expect(page.locator("#section-servers")).to_have_count(0)
    page.goto(f"{full_dashboard.url}/?q=strip-&type=program")
    expect(card).to_be_visible(timeout=APPEAR)
    expect(page.locator("#section-jobs")).to_have_count(0)

    # Stop from the card: the toast names it too.
    card.locator("[data-action=stop]").click()
    page.locator("#stop-confirm").click()
    expect(page.get_by_text("Stopping: strip-live")).to_be_visible(timeout=APPEAR)
    # The audit log names the targets; the id is on hover.
    page.locator("#audit-open").click()
    target = page.locator("#audit-dialog .audit-target", has_text="strip-live").first
    expect(target).to_be_visible(timeout=APPEAR)
    expect(target).to_have_attribute("title", live["id"])
    page.locator("#audit-dialog").screenshot(path=str(artifacts_dir / "audit-names.png"))


def test_a_viewer_not_logged_in_sees_stop_disabled_with_a_login_link(
    full_dashboard: Dashboard, page: Page, artifacts_dir: Path
) -> None:
    op = launch(full_dashboard, "gate-live")
    try:
        page.set_viewport_size(DESKTOP)
        page.goto(f"{full_dashboard.url}/?q=gate-live")  # from this machine, no login
        card = page.locator(f"#op-{op['id']}")
        expect(card).to_be_visible(timeout=APPEAR)
        expect(card.locator("[data-action=stop]")).to_be_disabled()
        expect(card.locator("[data-action=restart]")).to_be_disabled()
        gate = card.locator("[data-login-gate=stop]")
        expect(gate).to_have_attribute("href", "/login")
        expect(gate).to_have_attribute("aria-label", "Log in to stop")
        # The hint: the link's title on hover (asserted above), and the tooltip on keyboard focus.
        focus_for_tooltip(page, gate, "Log in to stop")
        card.screenshot(path=str(artifacts_dir / "login-gated-card.png"))
        # Nothing to walk through: the click goes to the login page, no confirmation opens.
        gate.click()
        page.wait_for_url(re.compile(r"/login"), timeout=APPEAR)
        expect(page.locator("#stop-dialog")).to_have_count(0)
    finally:
        stop(full_dashboard, op)
        full_dashboard.authed("DELETE", f"/api/dgx/operations/{op['id']}")


def test_phone_first_card_visible_and_history_stacked(
    full_dashboard: Dashboard, page: Page, artifacts_dir: Path
) -> None:
    live = launch(full_dashboard, "phone-live")
    # A command longer than the row is wide (it once made the page 399 px wide at 390).
    done = launch(full_dashboard, "phone-done", "print('bye')  # " + "long-command-" * 12)
    try:
        wait_until(lambda: any(r["id"] == done["id"] for r in
                               full_dashboard.get_json("/api/dgx/history")["data"]), 60,
                   message="the finished operation did not reach the history")
        page.set_viewport_size(PHONE)
        page.goto(full_dashboard.url)
        first = page.locator("#operations-sections [data-testid=operation-card]").first
        expect(first).to_be_visible(timeout=APPEAR)
        expect(page.locator(f"#op-{live['id']}")).to_be_visible(timeout=APPEAR)
        page.screenshot(path=str(artifacts_dir / "phone-first-screen.png"))
        # The first card starts on the first screen, with room for its name and status.
        box = first.bounding_box()
        assert box is not None and box["y"] + 64 <= PHONE["height"], box
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], overflowing(page, 390)

        page.goto(f"{full_dashboard.url}/history")
        row = page.locator(f".dgx-history-row[data-operation-id='{done['id']}']").first
        expect(row).to_be_visible(timeout=APPEAR)
        row.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "history-phone.png"), full_page=False)
        # Stacked: every value of the row is on screen, under its column's name.
        row.scroll_into_view_if_needed()
        for label in ("Type", "Outcome", "Started", "Ended", "Duration", "Exit", "Peak memory"):
            cell = row.locator(f"td[data-label='{label}']")
            cell_box = cell.bounding_box()
            assert cell_box is not None and cell_box["x"] >= 0, (label, cell_box)
            assert cell_box["x"] + cell_box["width"] <= PHONE["width"], (label, cell_box)
            # Really on screen, not clipped away by a scroll box: the point hits the cell.
            hit = cell.evaluate(
                "(td) => { const b = td.getBoundingClientRect();"
                " return td.contains(document.elementFromPoint(b.x + b.width - 4, b.y + b.height / 2)); }"
            )
            assert hit, label
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], overflowing(page, 390)
    finally:
        for op in (live, done):
            stop(full_dashboard, op)
            full_dashboard.authed("DELETE", f"/api/dgx/operations/{op['id']}")
