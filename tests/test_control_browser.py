"""In the browser: launch from the dialog, read the live logs, stop with confirmation."""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support.dashboard import TEST_TOKEN, Dashboard

SCRIPT = """\
import time
print('browser job says hello', flush=True)
i = 0
while True:
    i += 1
    print(f'heartbeat {i}', flush=True)
    time.sleep(0.5)
"""


def test_launch_logs_and_stop_from_the_ui(full_dashboard: Dashboard, page: Page, tmp_path: Path,
                                           artifacts_dir: Path) -> None:
    script = tmp_path / "browser_job.py"
    script.write_text(SCRIPT)
    page.set_default_timeout(60_000)
    page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
    try:
        page.locator("#new-operation").click()
        dialog = page.locator("#launch-dialog")
        expect(dialog).to_be_visible()
        page.locator("#launch-name").fill("browser-job")
        # Inline validation: a script that does not exist is named under its field.
        page.locator("#launch-field-script").fill(str(tmp_path / "missing.py"))
        expect(page.locator("#launch-error-script")).to_contain_text("no such file")
        expect(page.locator("#launch-submit")).to_be_disabled()
        page.locator("#launch-field-script").fill(str(script))
        page.locator("#launch-field-python").fill(sys.executable)
        expect(page.locator("#launch-error-script")).to_have_count(0)
        expect(page.locator("#launch-preview")).to_contain_text(str(script))
        page.locator("#launch-submit").click()
        expect(dialog).to_be_hidden()

        card = page.locator("[data-testid=operation-card]", has_text="browser-job")
        expect(card).to_be_visible()
        expect(card).to_have_attribute("data-status", "active", timeout=60_000)

        card.locator("[data-action=logs]").click()
        logs = page.locator("#logs-dialog")
        expect(logs).to_contain_text("browser job says hello")
        expect(logs).to_contain_text("heartbeat 8", timeout=60_000)  # live: lines keep arriving
        page.locator("#logs-follow").click()
        expect(page.locator("#logs-follow")).to_contain_text("Follow")
        page.keyboard.press("Escape")
        expect(logs).to_be_hidden()

        card.locator("[data-action=stop]").click()
        expect(page.locator("#stop-dialog")).to_be_visible()
        page.locator("#stop-confirm").click()  # the default choice: terminate
        expect(card).to_have_attribute("data-status", "stopped", timeout=60_000)
        expect(card.locator("[data-action=start]")).to_be_visible()
        expect(card.locator("[data-action=remove]")).to_be_visible()
        op_id = next(op["id"] for op in full_dashboard.operations() if op["name"] == "browser-job")
        ended = next(op for op in full_dashboard.operations() if op["id"] == op_id)
        assert (ended["run"], ended["exit_reason"]) == (1, "stopped by the user (SIGTERM)")

        # Start again, then the confirmation's third choice: Kill now (SIGKILL at once).
        card.locator("[data-action=start]").click()
        expect(card.locator("[data-field=runs]")).to_contain_text("run 2", timeout=60_000)
        expect(card).to_have_attribute("data-status", "active", timeout=60_000)
        card.locator("[data-action=stop]").click()
        expect(page.locator("#stop-dialog")).to_be_visible()
        page.locator("#stop-kill").click()
        expect(card).to_have_attribute("data-status", "stopped", timeout=60_000)
        killed = next(op for op in full_dashboard.operations() if op["id"] == op_id)
        assert (killed["run"], killed["outcome"], killed["exit_code"]) == (2, "stopped", -9)
        assert killed["exit_reason"] == "stopped by the user (SIGKILL)"
    finally:
        page.screenshot(path=str(artifacts_dir / "control-browser.png"), full_page=True)


CHECKPOINTER = """\
import sys, time
print('ready', flush=True)
try:
    while True:
        time.sleep(0.2)
except KeyboardInterrupt:
    print('checkpoint saved', flush=True)
    sys.exit(0)
"""


def test_restart_and_interrupt_from_the_ui(full_dashboard: Dashboard, page: Page, tmp_path: Path,
                                           artifacts_dir: Path) -> None:
    script = tmp_path / "checkpointer.py"
    script.write_text(CHECKPOINTER)
    page.set_default_timeout(60_000)
    page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
    try:
        # The launch dialog carries a restart policy; a bad number is named under it.
        page.locator("#new-operation").click()
        expect(page.locator("#launch-dialog")).to_be_visible()
        page.locator("#launch-name").fill("restart-job")
        page.locator("#launch-field-script").fill(str(script))
        page.locator("#launch-field-python").fill(sys.executable)
        page.locator("#launch-restart-policy").click()
        page.get_by_role("option", name="On failure").click()
        page.locator("#launch-restart-max").fill("-1")
        expect(page.locator("#launch-error-restart")).to_contain_text("between 0 and 1000")
        expect(page.locator("#launch-submit")).to_be_disabled()
        page.locator("#launch-restart-max").fill("2")
        expect(page.locator("#launch-error-restart")).to_have_count(0)
        page.locator("#launch-submit").click()
        expect(page.locator("#launch-dialog")).to_be_hidden()
        card = page.locator("[data-testid=operation-card]", has_text="restart-job")
        expect(card).to_have_attribute("data-status", "active", timeout=60_000)
        op_id = next(op["id"] for op in full_dashboard.operations() if op["name"] == "restart-job")

        # Restart: confirmation, then run 2 on the card.
        card.locator("[data-action=restart]").click()
        expect(page.locator("#stop-dialog")).to_contain_text("Restart restart-job?")
        page.locator("#stop-confirm").click()
        expect(card.locator("[data-field=runs]")).to_contain_text("run 2", timeout=60_000)
        expect(card).to_have_attribute("data-status", "active", timeout=60_000)

        # Stop with interrupt: the job saves its checkpoint and ends cleanly.
        card.locator("[data-action=stop]").click()
        expect(page.locator("#stop-dialog")).to_contain_text("Interrupt (SIGINT)")
        page.locator("#stop-signal").get_by_role("radio").nth(1).click()
        page.locator("#stop-confirm").click()
        expect(card).to_have_attribute("data-status", "stopped", timeout=60_000)
        ended = next(op for op in full_dashboard.operations() if op["id"] == op_id)
        assert ended["exit_reason"] == "stopped by the user (SIGINT; exit code 0)" and ended["run"] == 2
        assert ended["restarts"] == 0  # a user's Restart is not the policy's
        _, body = full_dashboard.request("GET", f"/api/dgx/operations/{op_id}/logs?tail=50")
        assert "checkpoint saved" in body["data"]["lines"]
    finally:
        page.screenshot(path=str(artifacts_dir / "control-restart-browser.png"), full_page=True)
