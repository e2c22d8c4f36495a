"""The GPU in a real browser: header tile ("unified memory"), GPU chips and the "idle GPU" badge.

No GPU exists here, so the shared full dashboard runs the fake NVML (the one
allowed double, test hook ``DGX_SPARK_FAKE_NVML``); ``full_dashboard_gpu`` gives
it a DGX Spark-like GB10 for this test only and takes it away afterwards. The
process holding GPU memory is a real HTTP server the test starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until
from tests.support.fake_gpu import GIB, NO_GPU, gb10

APPEAR = 60_000  # ms: generous, the machine is shared and slow


def test_gb10_tile_gpu_chips_and_idle_badge_then_no_gpu_again(
    full_dashboard: Dashboard,
    full_dashboard_gpu: Callable[[dict[str, Any]], None],
    page: Page,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    with workloads.http_server(tmp_path / "srv") as server:
        wait_until(
            lambda: any(op["pid"] == server.pid for op in full_dashboard.operations()),
            timeout=60,
            message="the server never appeared",
        )
        page.goto(full_dashboard.url + "/")
        header = page.locator("#system-header")
        expect(header).to_have_attribute("data-loaded", "true", timeout=APPEAR)
        expect(header.locator("[data-value=gpu-none]")).to_have_text("No NVIDIA GPU detected", timeout=APPEAR)

        # The server holds 3 GiB on a GB10 and has not used the GPU since.
        full_dashboard_gpu(gb10({server.pid: 3 * GIB}))

        tile = header.locator("[data-field=gpu]")
        expect(tile).to_have_count(1, timeout=APPEAR)
        expect(tile).to_have_attribute("data-index", "0")
        expect(tile.locator("[data-value=gpu-name]")).to_have_text("NVIDIA GB10")
        expect(tile.locator("[data-field=unified]")).to_have_text("unified memory")
        # Unified memory: the device's memory is the system pool, labelled as such.
        expect(tile.locator("[data-value=gpu-memory]")).to_have_text(
            re.compile(r"^unified memory \d+(\.\d)? [KMGT]iB / \d+(\.\d)? [KMGT]iB$")
        )
        expect(tile.locator("[data-value=gpu-utilization]")).to_have_text("0 %")
        expect(tile.locator("[data-value=gpu-temperature]")).to_have_text("41 °C")
        expect(header.locator("[data-value=gpu-none]")).to_have_count(0)

        card = page.locator(f'#section-servers [data-testid="operation-card"][data-pid="{server.pid}"]')
        expect(card).to_have_count(1, timeout=APPEAR)
        expect(card.locator("[data-value=gpu-memory]")).to_have_text("3.0 GiB", timeout=APPEAR)
        expect(card.locator("[data-value=gpu-utilization]")).to_have_text("0 %")
        expect(card.locator("[data-field=idle-gpu]")).to_have_text("idle GPU", timeout=APPEAR)
        page.screenshot(path=str(artifacts_dir / "gpu-gb10-idle.png"), full_page=True)

        # The GPU goes away: the header says so again and the card loses its GPU figures.
        full_dashboard_gpu(NO_GPU)
        expect(header.locator("[data-value=gpu-none]")).to_have_text("No NVIDIA GPU detected", timeout=APPEAR)
        expect(tile).to_have_count(0)
        expect(card.locator("[data-field=gpu-memory]")).to_have_count(0, timeout=APPEAR)
        expect(card.locator("[data-field=idle-gpu]")).to_have_count(0, timeout=APPEAR)
