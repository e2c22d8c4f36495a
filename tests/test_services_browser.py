"""A server's card says what it serves, in a real browser (a fake ComfyUI as a real discovered process)."""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until
from tests.support.fake_servers import launcher_script

APPEAR = 90_000  # ms: the machine is shared and slow


def test_the_card_shows_the_service_line(
    full_dashboard: Dashboard, page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    script = launcher_script(tmp_path / "ComfyUI", "main.py")
    port = workloads.free_port()
    env = {"FAKE_KIND": "comfyui", "FAKE_PORT": str(port)}
    argv = [sys.executable, str(script), "--listen", "127.0.0.1", "--port", str(port)]
    with workloads.spawn(argv, tmp_path, port=port, script=script, env=env) as server:
        op = wait_until(
            lambda: next((o for o in full_dashboard.operations() if o["pid"] == server.pid and o["service"]), None),
            90, 0.5, message="the fake ComfyUI's queue was never read",
        )
        assert op["name"] == "ComfyUI"
        page.goto(full_dashboard.url + "/")
        card = page.locator(f'[data-testid="operation-card"][data-id="{op["id"]}"]')
        expect(card).to_have_count(1, timeout=APPEAR)
        line = card.locator('[data-field="service"]')
        expect(line).to_have_text("queue 2 running · 5 pending", timeout=APPEAR)
        title = line.get_attribute("title") or ""
        assert title.startswith(f"Read from http://127.0.0.1:{port}/queue at ")
        card.screenshot(path=str(artifacts_dir / "service-line.png"))
    # Gone with the server: the ended card has no service line.
    expect(page.locator(f'[data-id="{op["id"]}"] [data-field="service"]')).to_have_count(0, timeout=APPEAR)
