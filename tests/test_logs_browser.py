"""The logs view in a real browser: follows the end, stops when scrolled up, jumps back, searches, says why it is empty."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.support.dashboard import TEST_TOKEN, Dashboard

APPEAR = 60_000  # ms: generous, the machine is shared and slow
FOLLOWER = """\
import time
for i in range(1, 151):
    print(f'warmup line {i}', flush=True)
i = 0
while True:
    i += 1
    print(f'tick {i}' + (' needle' if i % 4 == 0 else ''), flush=True)
    time.sleep(0.3)
"""
AT_BOTTOM = "el => el.scrollHeight - el.scrollTop - el.clientHeight <= 24"


def launch(dash: Dashboard, name: str, argv: list[str]) -> dict[str, Any]:
    status, body = dash.authed(
        "POST", "/api/dgx/operations", {"template": "custom", "name": name, "type": "program", "command": argv}
    )
    assert status == 201, body
    return body["data"]


def grows(page: Page, box: Any) -> None:
    """Wait until more lines made the log box taller than it is now."""
    height = box.evaluate("el => el.scrollHeight")
    page.wait_for_function(
        "([h]) => document.getElementById('logs-lines').scrollHeight > h", arg=[height], timeout=APPEAR
    )


def test_logs_follow_jump_search_and_empty(
    full_dashboard: Dashboard, page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
    script = tmp_path / "log_follower.py"
    script.write_text(FOLLOWER)
    follower = launch(full_dashboard, "log-follower", [sys.executable, str(script)])
    silent = launch(full_dashboard, "log-silent", [sys.executable, "-c", "import time; time.sleep(600)"])
    # A discovered program whose output goes to a pipe: nothing the dashboard may read.
    piped_script = tmp_path / "piped_writer.py"
    piped_script.write_text("import time\nwhile True:\n    time.sleep(1)\n")
    piped = subprocess.Popen([sys.executable, str(piped_script)], stdout=subprocess.PIPE, start_new_session=True)
    try:
        card = page.locator(f"[data-testid=operation-card][data-id='{follower['id']}']")
        expect(card).to_have_attribute("data-status", re.compile("running|active"), timeout=APPEAR)
        card.locator("[data-action=logs]").click()
        dialog = page.locator("#logs-dialog")
        box = page.locator("#logs-lines")
        expect(dialog).to_contain_text("tick 3", timeout=APPEAR)

        # At the bottom: the view follows new lines.
        assert box.evaluate("el => el.scrollHeight > el.clientHeight"), "the log should overflow its box"
        expect(box).to_have_attribute("data-follow", "true")
        grows(page, box)
        page.wait_for_function(f"() => ({AT_BOTTOM})(document.getElementById('logs-lines'))", timeout=APPEAR)
        expect(page.locator("#logs-jump")).to_be_hidden()
        page.screenshot(path=str(artifacts_dir / "logs-following.png"))

        # Scrolled up: it stays where it is while lines keep arriving, and offers the jump.
        box.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
        expect(box).to_have_attribute("data-follow", "false")
        expect(page.locator("#logs-jump")).to_be_visible()
        grows(page, box)
        grows(page, box)
        assert box.evaluate("el => el.scrollTop") == 0
        page.screenshot(path=str(artifacts_dir / "logs-scrolled-up.png"))

        # Jump to latest: at the bottom again and following.
        page.locator("#logs-jump").click()
        expect(box).to_have_attribute("data-follow", "true")
        expect(page.locator("#logs-jump")).to_be_hidden()
        grows(page, box)
        page.wait_for_function(f"() => ({AT_BOTTOM})(document.getElementById('logs-lines'))", timeout=APPEAR)

        # Search: only matching lines, the match marked, and how many.
        page.locator("#logs-search").fill("needle")
        count = page.locator("#logs-count")
        expect(count).to_contain_text(" lines match", timeout=APPEAR)
        shown = box.locator("pre > div")
        matches = int(count.inner_text().split(" of ")[0])
        assert matches >= 1
        expect(shown).to_have_count(matches)
        assert all("needle" in text for text in shown.all_inner_texts())
        expect(box.locator("mark").first).to_have_text("needle")
        page.screenshot(path=str(artifacts_dir / "logs-search.png"))
        page.locator("#logs-search").fill("")
        expect(count).to_have_count(0)
        expect(box).to_contain_text("warmup line 1")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        # A launched operation that has written nothing yet says so.
        page.locator(f"[data-testid=operation-card][data-id='{silent['id']}'] [data-action=logs]").click()
        expect(page.locator("#logs-empty")).to_contain_text("Nothing written yet.", timeout=APPEAR)
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        # A discovered process writing to a pipe: where its output goes instead.
        piped_card = page.locator(f"[data-testid=operation-card][data-pid='{piped.pid}']")
        piped_card.locator("[data-action=logs]").click()
        expect(page.locator("#logs-unavailable")).to_have_text(
            "Output not captured: it goes to a pipe (another program reads it).", timeout=APPEAR
        )
        page.screenshot(path=str(artifacts_dir / "logs-not-captured.png"))
        page.keyboard.press("Escape")
    finally:
        piped.kill()
        piped.wait()
        for op in (follower, silent):
            full_dashboard.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": True})
