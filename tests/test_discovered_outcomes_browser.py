"""The card of a discovered operation that crashed says how it ended, and its toast, in a real browser."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until
from tests.test_bell_browser import bell_deltas
from tests.test_discovered_outcomes import CRASH

APPEAR = 60_000  # ms: generous, the machine is shared and slow


def test_a_crashed_discovered_script_shows_failed_with_its_reason(
    full_dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    script = workloads.write_script(tmp_path, "crash_card.py", CRASH)
    go = tmp_path / "go"
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda data: frames.append(data if isinstance(data, str) else data.decode(errors="replace"))))
    with workloads.spawn([sys.executable, str(script)], tmp_path, script=script, ready=True,
                         env={"GO_FILE": str(go)}) as work:
        page.goto(full_dashboard.url)
        card = page.locator(f'#section-programs [data-testid="operation-card"][data-pid="{work.pid}"]')
        expect(card).to_have_attribute("data-status", re.compile("running|active"), timeout=APPEAR)
        expect(card.locator('[data-field="outcome"]')).to_have_count(0)  # nothing to say while it runs
        # Events from before the bell's loop first lists are listed, not toasted: wait for that listing.
        for _ in range(300):
            if any("unread_count_rx_state_" in f and "webhook_url_rx_state_" not in f for f in bell_deltas(frames)):
                break
            page.wait_for_timeout(200)  # lets playwright deliver the frames
        go.touch()
        work.process.wait(30)
        expect(card).to_have_attribute("data-status", "failed", timeout=APPEAR)
        line = card.locator('[data-field="outcome"]')
        expect(line).to_have_attribute("data-outcome", "failed")
        expect(line).to_contain_text("Traceback: RuntimeError: boom at step 7")
        op = wait_until(lambda: next((o for o in full_dashboard.operations() if o["pid"] == work.pid), None), 10)
        if op["outcome_source"] == "kernel":
            expect(line).to_have_text("Failed: Traceback: RuntimeError: boom at step 7 (exit code 3)")
        else:
            expect(line).to_contain_text("Likely failed")
        # A process the dashboard did not start gets its failure toast like a launched one.
        toast = page.locator(".dgx-event-failed", has_text=f"{op['name']} failed")
        expect(toast).to_be_visible(timeout=APPEAR)
        expect(toast).to_contain_text("Traceback: RuntimeError: boom at step 7")
