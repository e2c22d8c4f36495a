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
    page.wait_for_url(f"{full_dashboard.url}/**")
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
        page.locator("#stop-confirm").click()
        expect(card).to_have_attribute("data-status", "stopped", timeout=60_000)
        expect(card.locator("[data-action=start]")).to_be_visible()
        expect(card.locator("[data-action=remove]")).to_be_visible()
    finally:
        page.screenshot(path=str(artifacts_dir / "control-browser.png"), full_page=True)
