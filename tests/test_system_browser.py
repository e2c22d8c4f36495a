"""The system header in a real browser, against the real app (no GPU on this machine)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.dashboard import Dashboard


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="a real NVIDIA driver is present")
def test_header_shows_cpu_ram_and_no_gpu(full_dashboard: Dashboard, page: Page, artifacts_dir: Path) -> None:
    page.goto(full_dashboard.url + "/")
    header = page.locator("#system-header")
    expect(header).to_have_attribute("data-loaded", "true", timeout=60_000)
    # CPU: a percentage once the second sample exists; RAM: used / total in binary units.
    expect(header.locator("[data-value=cpu]")).to_have_text(re.compile(r"^\d+ %$"), timeout=60_000)
    expect(header.locator("[data-value=ram]")).to_have_text(
        re.compile(r"^\d+(\.\d)? [KMGT]iB / \d+(\.\d)? [KMGT]iB$"), timeout=30_000
    )
    expect(header.locator("[data-value=gpu-none]")).to_have_text("No NVIDIA GPU detected")
    expect(header.locator("[data-field=gpu]")).to_have_count(0)
    # Sparklines appear once there is a little history.
    expect(header.locator("[data-field=cpu] [data-field=sparkline] polyline")).to_have_count(1, timeout=60_000)
    # No container engine here (the full dashboard's DGX_SPARK_DOCKER_HOST names no socket): it says so.
    sock = full_dashboard.data_dir.parent / "docker.sock"
    expect(header.locator("[data-value=containers]")).to_have_text(
        f"containers: not visible (no engine socket at {sock})", timeout=30_000)
    # The header sits above the tab.
    header_box = header.bounding_box()
    tab_box = page.locator("#operations-tab").bounding_box()
    assert header_box is not None and tab_box is not None
    assert header_box["y"] + header_box["height"] <= tab_box["y"] + 1
    page.screenshot(path=str(artifacts_dir / "system-header.png"), full_page=True)
