"""Notifications in a real browser: toasts with "View logs", the bell, the webhook setting."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.support.dashboard import TEST_TOKEN, Dashboard, wait_until
from tests.support.webhook_receiver import WebhookReceiver


def launch(dash: Dashboard, name: str, argv: list[str], op_type: str = "program") -> dict[str, Any]:
    status, body = dash.authed(
        "POST", "/api/dgx/operations", {"template": "custom", "name": name, "type": op_type, "command": argv}
    )
    assert status == 201, body
    return body["data"]


def test_toasts_bell_and_webhook_set_in_the_ui(
    full_dashboard: Dashboard, page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    # Changing the webhook is a control action: log in first (the login link sets the cookie).
    page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
    expect(page.locator("#operations-tab")).to_be_visible(timeout=60_000)
    with WebhookReceiver() as receiver:
        # Set the webhook URL in the bell's settings; a bad URL is refused with a message.
        page.locator("#notifications-bell").click()
        url_field = page.locator("#webhook-url")
        url_field.fill("file:///etc/passwd")
        page.locator("#webhook-save").click()
        expect(page.locator("#webhook-error")).to_contain_text("http", timeout=30_000)
        url_field.fill(receiver.url)
        page.locator("#webhook-save").click()
        expect(page.locator("#webhook-message")).to_contain_text("Saved", timeout=30_000)
        page.keyboard.press("Escape")

        crash = tmp_path / "crash.py"
        crash.write_text("import sys\nprint('boom: the toast test')\nsys.exit(3)\n")
        failed = launch(full_dashboard, "toast-crasher", [sys.executable, str(crash)], "job")
        toast = page.locator(".dgx-event-failed", has_text="toast-crasher failed")
        expect(toast).to_be_visible(timeout=90_000)
        expect(toast).to_contain_text("exit code 3")
        page.screenshot(path=str(artifacts_dir / "event-toast-failed.png"))
        toast.get_by_role("button", name="View logs").click()
        expect(page.locator("#event-logs")).to_contain_text("boom: the toast test", timeout=30_000)
        # Focus is in the dialog (sonner once put it back on the bell, whose tooltip then took Escape)...
        wait_until(lambda: page.get_by_role("dialog").filter(has=page.locator("#event-logs")).evaluate(
            "d => d.contains(document.activeElement)"), 30, message="focus did not move into the log dialog")
        page.keyboard.press("Escape")
        expect(page.locator("#event-logs")).to_have_count(0, timeout=30_000)
        # ...and goes back where it was before the toast was clicked (the bell, closed with Escape above).
        expect(page.locator("#notifications-bell")).to_be_focused(timeout=30_000)
        wait_until(lambda: [e for e in receiver.events("failed") if e["operation_id"] == failed["id"]], 60)

        ok = tmp_path / "ok.py"
        ok.write_text("print('fine')\n")
        done = launch(full_dashboard, "toast-finisher", [sys.executable, str(ok)])
        expect(page.locator(".dgx-event-completed", has_text="toast-finisher completed")).to_be_visible(
            timeout=90_000
        )
        wait_until(lambda: [e for e in receiver.events("completed") if e["operation_id"] == done["id"]], 60)

        # The bell counts unread events and lists them; "Mark all read" reads them.
        expect(page.locator("#unread-count")).to_have_text(re.compile(r"^([1-9]|9\+)$"), timeout=30_000)
        page.locator("#notifications-bell").click()
        page.locator("#mark-all-read").click()
        expect(page.locator("#unread-count")).to_have_count(0, timeout=30_000)
        rows = page.locator("#recent-events .dgx-event-row")
        expect(rows.filter(has_text="toast-crasher")).not_to_have_count(0)
        expect(page.locator(f"#recent-events [data-operation-id='{done['id']}'][data-kind='completed']")).to_be_visible()
        page.screenshot(path=str(artifacts_dir / "event-bell.png"))
        # Turn the webhook off again for the other tests sharing this dashboard.
        page.locator("#webhook-url").fill("")
        page.locator("#webhook-save").click()
        expect(page.locator("#webhook-message")).to_contain_text("off", timeout=30_000)
        page.keyboard.press("Escape")


def test_webhook_url_is_masked_until_logged_in(full_dashboard: Dashboard, page: Page) -> None:
    secret_url = "https://hooks.example.com/services/T0001/B0002/secretpart123"
    browser = page.context.browser
    assert browser is not None
    # Logged in: set it, and see it whole.
    page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
    expect(page.locator("#operations-tab")).to_be_visible(timeout=60_000)
    page.locator("#notifications-bell").click()
    page.locator("#webhook-url").fill(secret_url)
    page.locator("#webhook-save").click()
    expect(page.locator("#webhook-message")).to_contain_text("Saved", timeout=30_000)
    try:
        # Another browser, not logged in: only the scheme and host.
        stranger = browser.new_context()
        try:
            other = stranger.new_page()
            other.goto(full_dashboard.url)
            expect(other.locator("#operations-tab")).to_be_visible(timeout=60_000)
            other.locator("#notifications-bell").click()
            field = other.locator("#webhook-url")
            expect(field).to_have_value("https://hooks.example.com/…/***", timeout=30_000)
            assert "secretpart123" not in other.content()
        finally:
            stranger.close()
        page.reload()
        expect(page.locator("#operations-tab")).to_be_visible(timeout=60_000)
        page.locator("#notifications-bell").click()
        expect(page.locator("#webhook-url")).to_have_value(secret_url, timeout=30_000)
    finally:
        # Turn the webhook off again for the other tests sharing this dashboard.
        page.locator("#webhook-url").fill("")
        page.locator("#webhook-save").click()
        expect(page.locator("#webhook-message")).to_contain_text("off", timeout=30_000)
