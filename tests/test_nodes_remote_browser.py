"""A remote node from A's page in a real browser: launch on B from the dialog, follow B's log, restart,
stop (from the table too), start again and remove B's operation; A's backend does every request to B.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.dashboard import TEST_TOKEN, UNTHROTTLED, Dashboard, reap_launched, wait_until

APPEAR = 60_000  # ms: generous, the machine is shared and slow
B_TOKEN = "browser-remote-b-token-0123456789abcdef"
TICKER = "import time\ni = 0\nwhile True:\n    print(f'tick {i}', flush=True)\n    i += 1\n    time.sleep(0.4)\n"


@pytest.fixture
def node_b(tmp_path: Path) -> Iterator[Dashboard]:
    dashboard = Dashboard(tmp_path / "b-data", env={**UNTHROTTLED, "DGX_SPARK_TOKEN": B_TOKEN})
    try:
        yield dashboard.start()
    finally:
        dashboard.stop()
        reap_launched(dashboard.data_dir)


def b_op(node_b: Dashboard, name: str) -> dict[str, Any] | None:
    status, body = node_b.request("GET", "/api/dgx/operations", headers={"Authorization": f"Bearer {B_TOKEN}"})
    assert status == 200, body
    return next((op for op in body["data"] if op["name"] == name), None)


def last_tick(text: str) -> int:
    ticks = [int(n) for n in re.findall(r"tick (\d+)", text)]
    return max(ticks) if ticks else -1


def test_control_b_from_a(full_dashboard: Dashboard, node_b: Dashboard, page: Page, tmp_path: Path,
                          artifacts_dir: Path) -> None:
    script = tmp_path / "ticker.py"
    script.write_text(TICKER)
    status, added = full_dashboard.authed("POST", "/api/dgx/nodes",
                                          {"name": "Remote B", "url": node_b.url, "token": B_TOKEN})
    assert status == 201 and added["data"]["status"] == "online", added
    node_id = added["data"]["id"]
    page.set_default_timeout(APPEAR)
    try:
        page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
        page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)

        # Launch on B from A's dialog: the tab then shows B, with the new card.
        page.locator("#new-operation").click()
        dialog = page.locator("#launch-dialog")
        expect(dialog).to_be_visible()
        page.locator("#launch-node").click()
        page.locator(f"#launch-node-{node_id}").click()
        page.locator("#launch-name").fill("ticker-on-b")
        page.locator("#launch-field-script").fill(str(script))
        page.locator("#launch-field-python").fill(sys.executable)
        page.locator("#launch-submit").click()
        expect(dialog).to_be_hidden()
        launched = wait_until(lambda: b_op(node_b, "ticker-on-b"), timeout=30, message="nothing launched on B")
        op_id = launched["id"]
        expect(page).to_have_url(re.compile(rf"[?&]node={node_id}"))
        card = page.locator(f'[data-testid="operation-card"][data-id="{op_id}"]')
        expect(card.locator('[data-field="node"]')).to_contain_text("Remote B")

        # Its log: read by A's backend from B, and followed as B's process writes.
        card.locator("[data-action=logs]").click()
        logs = page.locator("#logs-dialog")
        expect(page.locator("#logs-node")).to_contain_text("Remote B")
        expect(page.locator("#logs-lines")).to_contain_text("tick", timeout=APPEAR)
        first = last_tick(page.locator("#logs-lines").inner_text())
        page.wait_for_function(
            "([n]) => Math.max(-1, ...[...document.getElementById('logs-lines').innerText.matchAll(/tick (\\d+)/g)]"
            ".map(m => +m[1])) >= n", arg=[first + 3], timeout=APPEAR)
        expect(page.locator("#logs-download")).to_have_attribute(
            "href", f"/api/dgx/nodes/{node_id}/operations/{op_id}/logs/download")
        page.screenshot(path=str(artifacts_dir / "nodes-remote-logs.png"))
        page.keyboard.press("Escape")
        expect(logs).to_be_hidden()

        # Restart, with the confirmation naming the node.
        card.locator("[data-action=restart]").click()
        expect(page.locator("#stop-node")).to_contain_text("Remote B")
        page.locator("#stop-confirm").click()
        wait_until(lambda: (b_op(node_b, "ticker-on-b") or {}).get("runs", 1) >= 2, timeout=60,
                   message="the restart never reached B")

        # The table treats B's row like B's card: Stop and, once ended, Start again from the row.
        page.locator("#layout-table").click()
        row = page.locator(f"#row-{op_id}")
        expect(row).to_be_visible()
        row.locator("[data-action=stop]").click()
        page.locator("#stop-confirm").click()
        expect(row).to_have_attribute("data-status", re.compile("stopped|failed"), timeout=APPEAR)
        row.locator("[data-action=start]").click()
        expect(row).to_have_attribute("data-status", re.compile("active|running|starting"), timeout=APPEAR)

        # Back to cards: stop, then Remove from the ended row; B forgets it.
        page.locator("#layout-cards").click()
        card.locator("[data-action=stop]").click()
        page.locator("#stop-confirm").click()
        expect(card).to_have_attribute("data-status", re.compile("stopped|failed"), timeout=APPEAR)
        card.locator("[data-action=remove]").click()
        expect(card).to_have_count(0, timeout=APPEAR)
        assert b_op(node_b, "ticker-on-b") is None
        page.screenshot(path=str(artifacts_dir / "nodes-remote-done.png"))
    finally:
        full_dashboard.authed("DELETE", f"/api/dgx/nodes/{node_id}")
