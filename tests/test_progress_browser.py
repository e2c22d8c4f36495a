"""A training job's progress block in a real browser: the bar moves as the job prints."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.support.dashboard import Dashboard, wait_until

APPEAR = 90_000  # ms: the machine is shared and slow

# Five epochs of a tqdm bar each, after an `Epoch N/5` header, with a falling loss.
EPOCH_JOB = """
import sys, time
for epoch in range(1, 6):
    print(f"Epoch {epoch}/5", flush=True)
    for step in range(1, 21):
        loss = 3.0 / ((epoch - 1) * 20 + step)
        sys.stdout.write(f"\\r{step * 5:3d}%|{'#' * (step // 2):<10}| {step}/20 [00:{step:02d}<00:10, 1.60it/s, loss={loss:.4f}]")
        sys.stdout.flush()
        time.sleep(0.6)
    print(flush=True)
time.sleep(600)
"""


@pytest.fixture
def console_errors(page: Page) -> Iterator[list[str]]:
    """Errors the page logs; the test fails if there are any."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "favicon.ico" not in str(message.location):
            errors.append(f"console: {message.text} @ {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    yield errors
    assert errors == [], "the browser logged errors:\n" + "\n".join(errors)


def test_progress_bar_moves_with_epoch_loss_eta_and_source(
    full_dashboard: Dashboard, page: Page, console_errors: list[str], tmp_path: Path, artifacts_dir: Path
) -> None:
    script = tmp_path / "train_browser.py"
    script.write_text(EPOCH_JOB)
    status, body = full_dashboard.authed(
        "POST",
        "/api/dgx/operations",
        {"template": "custom", "name": "browser training", "type": "job",
         "command": [sys.executable, str(script)], "cwd": str(tmp_path)},
    )
    assert status == 201, body
    op_id = body["data"]["id"]
    try:
        page.goto(full_dashboard.url + "/")
        card = page.locator(f'[data-testid="operation-card"][data-id="{op_id}"]')
        expect(card).to_have_count(1, timeout=APPEAR)
        bar = card.locator('[data-field="progress-bar"]')
        expect(bar).to_have_attribute("data-value", re.compile(r"^\d+$"), timeout=APPEAR)
        first = int(bar.get_attribute("data-value") or "0")
        expect(card.locator('[data-field="progress"]')).to_have_text(re.compile(r"^\d+ %$"))
        # The bar moves while the job prints.
        wait_until(lambda: int(bar.get_attribute("data-value") or "0") > first, 90, 0.5,
                   message=f"the progress bar stayed at {first} %")
        expect(card.locator('[data-field="epoch"]')).to_have_text(re.compile(r"^epoch [1-5]/5$"))
        expect(card.locator('[data-field="train-loss"]')).to_have_text(re.compile(r"^loss \d"))
        expect(card.locator('[data-field="loss-sparkline"] polyline')).to_have_count(1, timeout=APPEAR)
        expect(card.locator('[data-field="progress-source"]')).to_have_text("read from output")
        expect(card.locator('[data-field="throughput"]')).to_have_text("1.6 it/s")
        expect(card.locator('[data-field="eta"]')).to_have_text(re.compile(r"^ETA (\d+[dhms] ?)+$|^ETA done$"),
                                                                timeout=APPEAR)
        expect(card.locator('[data-field="stalled"]')).to_have_count(0)
        page.screenshot(path=str(artifacts_dir / "job-progress.png"), full_page=True)
        # A report through the API takes over: most trusted source.
        status, _ = full_dashboard.authed(
            "POST", f"/api/dgx/operations/{op_id}/progress",
            {"progress": 0.99, "epoch": 5, "total_epochs": 5, "metrics": {"train_loss": 0.01}},
        )
        assert status == 200
        expect(bar).to_have_attribute("data-value", "99", timeout=APPEAR)
        expect(card.locator('[data-field="progress-source"]')).to_have_text("reported via API")
    finally:
        full_dashboard.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})
