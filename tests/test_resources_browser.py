"""The resources strip in a real browser: cores, network, disks, model caches; desktop and phone."""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Page, expect

from tests.support.dashboard import Dashboard

APPEAR = 60_000  # ms: generous, the machine is shared and slow


@pytest.mark.parametrize(("label", "width", "height"), [("desktop", 1440, 900), ("phone", 390, 844)])
def test_resources_strip_shows(
    full_dashboard: Dashboard, page: Page, artifacts_dir: Path, label: str, width: int, height: int
) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.goto(full_dashboard.url + "/")
    if label == "phone":  # a phone folds the system header behind its "System" button
        page.locator("#system-toggle").click()
    strip = page.locator("#resources-strip")
    expect(strip).to_be_visible(timeout=APPEAR)
    # One bar per logical CPU, each with its percentage.
    bars = strip.locator("[data-field=cores] [data-field=core]")
    expect(bars).to_have_count(psutil.cpu_count(), timeout=APPEAR)
    expect(strip.locator("[data-value=core-count]")).to_have_text(str(psutil.cpu_count()))
    assert all(0 <= int(p) <= 100 for p in bars.evaluate_all("els => els.map(e => e.dataset.percent)"))
    # Network throughput in binary units per second, once two readings exist.
    rate = re.compile(r"^[↓↑] \d+(\.\d)? (B|KiB|MiB|GiB)/s$")
    expect(strip.locator("[data-value=net-rx]")).to_have_text(rate, timeout=APPEAR)
    expect(strip.locator("[data-value=net-tx]")).to_have_text(rate)
    # The data folder's filesystem (and home's, and the HF cache's), with its free space.
    disks = strip.locator("[data-field=disk]")
    expect(disks.first).to_be_visible(timeout=APPEAR)
    expect(strip.locator("[data-value=disk-labels]", has_text="data")).to_have_count(1)
    expect(disks.first.locator("[data-value=disk-free]")).to_have_text(
        re.compile(r"^\d+(\.\d)? [KMGT]iB free of \d+(\.\d)? [KMGT]iB$")
    )
    # Model caches, sized in the background: a size, "not present" where the folder is missing.
    caches = strip.locator("[data-field=caches]")
    expect(caches.locator("[data-key=huggingface] [data-value=cache-size]")).to_have_text(
        re.compile(r"^(not present|\d+(\.\d)? ([KMGT]i)?B( or more)?|unreadable)$"), timeout=APPEAR
    )
    expect(caches.locator("[data-key=ollama]")).to_have_count(1)
    # The page never scrolls sideways (on a phone the strip scrolls inside itself).
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    if label == "phone":
        strip_box = strip.bounding_box()
        assert strip_box is not None and strip_box["height"] < 200, strip_box  # one row of tiles
    page.screenshot(path=str(artifacts_dir / f"resources-strip-{label}.png"))
