"""Nodes in a real browser: add a node from the Nodes dialog, switch to All nodes and to one node, see node
chips, stop on the node, its stale banner (its cards only), remove it from the dialog."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.dashboard import TEST_TOKEN, UNTHROTTLED, Dashboard, reap_launched

APPEAR = 60_000  # ms: generous, the machine is shared and slow
B_TOKEN = "browser-node-b-token-0123456789abcdef"
SLEEPER = "import time\nwhile True:\n    time.sleep(0.5)\n"


@pytest.fixture
def node_b(tmp_path: Path) -> Iterator[Dashboard]:
    dashboard = Dashboard(tmp_path / "b-data", env={**UNTHROTTLED, "DGX_SPARK_TOKEN": B_TOKEN})
    try:
        yield dashboard.start()
    finally:
        dashboard.stop()
        reap_launched(dashboard.data_dir)


def test_switch_nodes_and_see_chips(full_dashboard: Dashboard, node_b: Dashboard, page: Page,
                                    artifacts_dir: Path) -> None:
    launch = {"template": "custom", "name": "remote-sleeper", "command": [sys.executable, "-c", SLEEPER]}
    status, answer = node_b.request("POST", "/api/dgx/operations", launch, {"Authorization": f"Bearer {B_TOKEN}"})
    assert status == 201, answer
    op_id = answer["data"]["id"]
    node_id = "browser-b"
    # Everything the page receives over its websocket: B's token must never be in it.
    received: list[str] = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda frame: received.append(frame if isinstance(frame, str) else repr(frame))))
    try:
        page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
        page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
        page.goto(full_dashboard.url)

        # Add B from the Nodes dialog: its first poll's health shows in its row, the form is emptied.
        page.locator("#nodes-button").click()
        page.locator("#node-add-name").fill("Browser B")
        page.locator("#node-add-url").fill(node_b.url)
        page.locator("#node-add-token").fill(B_TOKEN)
        page.locator("#node-add-submit").click()
        expect(page.locator(f"#node-row-{node_id}")).to_have_attribute("data-status", "online", timeout=APPEAR)
        expect(page.locator("#node-add-token")).to_have_value("")
        status, listed = full_dashboard.request("GET", f"/api/dgx/nodes/{node_id}")
        assert status == 200 and listed["data"]["url"] == node_b.url, listed
        page.keyboard.press("Escape")
        switcher = page.locator("#node-switcher")
        expect(switcher).to_be_visible(timeout=APPEAR)
        remote = page.locator(f'[data-testid="operation-card"][data-id="{op_id}"]')
        expect(remote).to_have_count(0)

        # All nodes: B's card with its node chip; this machine's cards carry theirs.
        switcher.click()
        page.locator("#node-option-all").click()
        expect(remote).to_be_visible(timeout=APPEAR)
        expect(remote.locator(f'[data-field="node"][data-node="{node_id}"]')).to_contain_text("Browser B")
        expect(page.locator('[data-field="node"][data-node="local"]').first).to_be_visible(timeout=APPEAR)
        expect(page).to_have_url(re.compile(r"[?&]node=all"))
        page.screenshot(path=str(artifacts_dir / "nodes-all.png"))

        # Kept in the URL: a reload shows All nodes again.
        page.reload()
        expect(remote).to_be_visible(timeout=APPEAR)

        # One node: only its cards.
        page.locator("#node-switcher").click()
        page.locator(f"#node-option-{node_id}").click()
        expect(page).to_have_url(re.compile(rf"[?&]node={node_id}"))
        expect(remote).to_be_visible(timeout=APPEAR)
        expect(page.locator('[data-field="node"][data-node="local"]')).to_have_count(0)

        # The Nodes dialog shows B's health.
        page.locator("#nodes-button").click()
        row = page.locator(f"#node-row-{node_id}")
        expect(row).to_have_attribute("data-status", "online", timeout=APPEAR)
        page.keyboard.press("Escape")

        # Stop on B from the card, confirmed like a local one (the backend sends it on with B's token).
        remote.locator('[data-action="stop"]').click()
        expect(page.locator("#stop-node")).to_contain_text("Browser B")
        page.locator("#stop-confirm").click()
        expect(remote).to_have_attribute("data-status", re.compile("stopped|failed"), timeout=APPEAR)

        # B drops out: a banner for B, its cards marked stale.
        node_b.stop()
        expect(page.locator(f"#banner-node-{node_id}")).to_be_visible(timeout=APPEAR)
        # It says how old the list shown is.
        expect(page.locator(f"#banner-node-{node_id}")).to_contain_text(
            re.compile(r"its last list, from (just now|\d+ s ago|\d+ min ago)"))
        expect(remote.locator('[data-field="node"]')).to_contain_text("stale", timeout=APPEAR)  # ended row too
        page.screenshot(path=str(artifacts_dir / "nodes-stale.png"))

        # In All nodes the banner is B's only: this machine's cards are not stale.
        page.locator("#node-switcher").click()
        page.locator("#node-option-all").click()
        expect(page.locator(f"#banner-node-{node_id}")).to_be_visible(timeout=APPEAR)
        expect(remote.locator('[data-field="node"]')).to_contain_text("stale")
        local_chip = page.locator('[data-field="node"][data-node="local"]').first
        expect(local_chip).to_be_visible(timeout=APPEAR)
        expect(local_chip).not_to_contain_text("stale")

        # Back to this machine: B's card goes.
        page.locator("#node-switcher").click()
        page.locator("#node-option-local").click()
        expect(remote).to_have_count(0, timeout=APPEAR)
        expect(page).not_to_have_url(re.compile(r"[?&]node="))

        # Remove B from the Nodes dialog: its row and the switcher go, and this backend forgets it.
        page.locator("#nodes-button").click()
        page.locator(f'#node-row-{node_id} [data-action="remove-node"]').click()
        expect(page.locator(f"#node-row-{node_id}")).to_have_count(0, timeout=APPEAR)
        expect(page.locator("#node-row-local")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#node-switcher")).to_have_count(0, timeout=APPEAR)
        status, _ = full_dashboard.request("GET", f"/api/dgx/nodes/{node_id}")
        assert status == 404
        assert received and not any(B_TOKEN in frame for frame in received)
    finally:
        full_dashboard.authed("DELETE", f"/api/dgx/nodes/{node_id}")
