"""Keyboard: every dialog and popover on / and /history takes focus, closes with Escape, and gives
focus back to the control that opened it.

Real browser, the real app (shared full dashboard); screenshots go to test-artifacts/.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.support.dashboard import TEST_TOKEN, Dashboard, wait_until

APPEAR = 60_000  # ms: generous, the machine is shared and slow
DESKTOP = {"width": 1440, "height": 900}


def escape_closes(page: Page, opener: Locator, dialog: Locator, focus_back: Locator | None = None) -> None:
    """Open ``dialog`` with ``opener``; focus is inside it; Escape closes it; focus is back on ``focus_back``."""
    opener.click()
    expect(dialog).to_be_visible(timeout=APPEAR)
    wait_until(lambda: dialog.evaluate("d => d.contains(document.activeElement)"), 30,
               message="focus did not move into the dialog")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden(timeout=APPEAR)
    expect(focus_back or opener).to_be_focused(timeout=APPEAR)


def test_escape_closes_every_dialog_and_focus_returns(
    full_dashboard: Dashboard, page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    page.set_viewport_size(DESKTOP)
    sleeper = tmp_path / "escape_sleeper.py"
    sleeper.write_text("import time\nprint('escape sleeper up', flush=True)\ntime.sleep(600)\n")
    ended = tmp_path / "escape_ended.py"
    ended.write_text("import sys\nprint('escape: the last line', flush=True)\nsys.exit(4)\n")

    def launch(name: str, script: Path, op_type: str) -> str:
        status, body = full_dashboard.authed("POST", "/api/dgx/operations", {
            "template": "custom", "name": name, "type": op_type, "command": [sys.executable, str(script)]})
        assert status == 201, body
        return str(body["data"]["id"])

    running = launch("escape-sleeper", sleeper, "program")
    done = launch("escape-ended", ended, "job")
    try:
        page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
        page.wait_for_url(lambda url: "/login" not in url, timeout=APPEAR)
        expect(page.locator("#login-status")).to_be_visible(timeout=APPEAR)
        card = page.locator(f"#op-{running}")
        expect(card).to_have_attribute("data-status", "running", timeout=APPEAR)

        steps: list[tuple[str, Callable[[], None]]] = [
            ("launch", lambda: escape_closes(page, page.locator("#new-operation"), page.locator("#launch-dialog"))),
            ("logs", lambda: escape_closes(page, card.locator("[data-action=logs]"), page.locator("#logs-dialog"))),
            ("stop", lambda: escape_closes(page, card.locator("[data-action=stop]"), page.locator("#stop-dialog"))),
            ("audit", lambda: escape_closes(page, page.locator("#audit-open"), page.locator("#audit-dialog"))),
            ("nodes", lambda: escape_closes(page, page.locator("#nodes-button"), page.locator("#nodes-dialog"))),
            ("bell", lambda: escape_closes(page, page.locator("#notifications-bell"),
                                           page.get_by_role("dialog").filter(has_text="Recent events"))),
        ]
        for name, step in steps:
            try:
                step()
            except AssertionError as error:
                page.screenshot(path=str(artifacts_dir / f"escape-{name}-failed.png"))
                raise AssertionError(f"{name}: {error}") from error
        # The stop dialog's Escape stopped nothing.
        expect(card).to_have_attribute("data-status", "running")

        # The bell's "View logs" opens the event's log dialog over the list; Escape closes it, and focus
        # goes back to the bell (the list closed when the dialog took focus).
        page.locator("#notifications-bell").click()
        row = page.locator(f"#recent-events [data-operation-id='{done}'][data-kind='failed']")
        expect(row).to_be_visible(timeout=APPEAR)
        row.get_by_role("button", name="View logs").click()
        logs = page.locator("#event-logs")
        expect(logs).to_contain_text("escape: the last line", timeout=APPEAR)
        wait_until(lambda: page.get_by_role("dialog").filter(has=logs).evaluate(
            "d => d.contains(document.activeElement)"), 30, message="focus did not move into the log dialog")
        page.screenshot(path=str(artifacts_dir / "escape-event-logs-open.png"))
        page.keyboard.press("Escape")
        expect(logs).to_have_count(0, timeout=APPEAR)
        expect(page.locator("#notifications-bell")).to_be_focused(timeout=APPEAR)

        # History: the row's "Last lines" popover.
        wait_until(lambda: any(r["id"] == done for r in full_dashboard.get_json("/api/dgx/history")["data"]), 60,
                   message="the ended operation did not reach the history")
        page.goto(f"{full_dashboard.url}/history")
        history_row = page.locator(f".dgx-history-row[data-operation-id='{done}']").first
        expect(history_row).to_be_visible(timeout=APPEAR)
        popover = page.get_by_role("dialog").filter(has_text="escape: the last line")
        escape_closes(page, history_row.get_by_role("button", name="Last lines"), popover)
        page.screenshot(path=str(artifacts_dir / "escape-history-closed.png"))
    finally:
        full_dashboard.authed("POST", f"/api/dgx/operations/{running}/stop", {"force": True})
