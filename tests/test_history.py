"""The History page in a real browser: ended operations, same search/filters, URL round trip."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support.dashboard import Dashboard, wait_until


def test_history_page_lists_ended_operations_with_filters(
    full_dashboard: Dashboard, page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    ids = {}
    for name, code in (("hist-bad", 3), ("hist-good", 0)):
        path = tmp_path / f"{name}.py"
        path.write_text(f"import sys\nprint('{name} says bye')\nsys.exit({code})\n")
        status, body = full_dashboard.authed(
            "POST", "/api/dgx/operations",
            {"template": "custom", "name": name, "type": "job", "command": [sys.executable, str(path)]},
        )
        assert status == 201, body
        ids[name] = body["data"]["id"]

    def in_history() -> bool:
        rows = full_dashboard.get_json("/api/dgx/history?q=hist-")["data"]
        return {r["id"] for r in rows} >= set(ids.values())

    wait_until(in_history, 90, message="ended operations never reached the history")
    page.goto(full_dashboard.url + "/history?q=hist-&status=failed")
    bad = page.locator(f"[data-operation-id='{ids['hist-bad']}']")
    good = page.locator(f"[data-operation-id='{ids['hist-good']}']")
    expect(bad).to_be_visible(timeout=60_000)
    expect(bad).to_have_attribute("data-outcome", "failed")
    expect(good).to_have_count(0)
    expect(page.locator("#filter-statuses-failed")).to_have_attribute("aria-pressed", "true")
    page.screenshot(path=str(artifacts_dir / "history.png"), full_page=True)

    page.locator("#filter-statuses-failed").click()  # off: both show
    expect(good).to_be_visible(timeout=30_000)
    expect(good).to_have_attribute("data-outcome", "completed")
    page.wait_for_function("() => !new URL(location.href).searchParams.has('status')", timeout=30_000)
    page.reload()
    expect(page.locator("#filter-search")).to_have_value("hist-", timeout=60_000)
    expect(good).to_be_visible(timeout=30_000)

    page.locator("#filter-search").fill("nothing-ever-matches-this")
    expect(page.locator("#no-matches")).to_be_visible(timeout=30_000)
    page.locator("#clear-filters").click()
    expect(bad).to_be_visible(timeout=30_000)


def test_history_lists_each_run_of_an_operation(
    full_dashboard: Dashboard, page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    path = tmp_path / "rerun.py"
    path.write_text("import sys\nprint('run ends with 5')\nsys.exit(5)\n")
    status, body = full_dashboard.authed(
        "POST", "/api/dgx/operations",
        {"template": "custom", "name": "hist-rerun", "type": "job", "command": [sys.executable, str(path)]},
    )
    assert status == 201, body
    op_id = body["data"]["id"]

    def runs() -> list[int]:
        rows = full_dashboard.get_json("/api/dgx/history?q=hist-rerun")["data"]
        return sorted(r["run"] for r in rows if r["id"] == op_id)

    wait_until(lambda: runs() == [1], 90, message="run 1 never reached the history")
    status, body = full_dashboard.authed("POST", f"/api/dgx/operations/{op_id}/start", {})
    assert status == 200, body
    wait_until(lambda: runs() == [1, 2], 90, message="run 2 never reached the history")
    page.goto(full_dashboard.url + "/history?q=hist-rerun")
    rows = page.locator(f"[data-operation-id='{op_id}']")
    expect(rows).to_have_count(2, timeout=60_000)
    expect(rows.nth(0)).to_have_attribute("data-run", "2")  # newest first
    expect(rows.nth(0).locator(".dgx-history-run")).to_have_text("run 2")
    expect(rows.nth(1)).to_have_attribute("data-run", "1")
    expect(rows.nth(1).locator(".dgx-history-run")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / "history-runs.png"), full_page=True)


def test_history_says_why_a_run_ended_and_the_tab_counts_short_lived_commands(
    full_dashboard: Dashboard, page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    path = tmp_path / "why.py"
    path.write_text("import sys\nprint('ends with 4')\nsys.exit(4)\n")
    status, body = full_dashboard.authed(
        "POST", "/api/dgx/operations",
        {"template": "custom", "name": "hist-why", "type": "job", "command": [sys.executable, str(path)]},
    )
    assert status == 201, body
    op_id = body["data"]["id"]
    # Quiet short-lived commands (exit 0 within seconds): counted, not listed.
    script = tmp_path / "quick_h9.sh"
    script.write_text("sleep 2.5\n")
    quick = [subprocess.Popen(["sh", str(script)], start_new_session=True) for _ in range(3)]
    try:
        for proc in quick:
            proc.wait(timeout=60)
    finally:
        for proc in quick:
            if proc.poll() is None:
                proc.kill()

    def ended() -> bool:
        rows = full_dashboard.get_json("/api/dgx/history?q=hist-why")["data"]
        return any(r["id"] == op_id for r in rows)

    wait_until(ended, 90, message="the run never reached the history")
    page.goto(full_dashboard.url + "/history?q=hist-why")
    row = page.locator(f"[data-operation-id='{op_id}']")
    expect(row).to_have_attribute("data-outcome", "failed", timeout=60_000)
    expect(row).to_have_attribute("data-outcome-source", "runner")
    expect(row.locator(".dgx-history-outcome")).to_have_text("failed")
    expect(row.locator(".dgx-history-reason")).to_have_text("Failed: exit code 4")
    page.screenshot(path=str(artifacts_dir / "history-reason.png"), full_page=True)

    wait_until(lambda: full_dashboard.get_json("/api/health")["data"]["short_lived_ended"] > 0, 60,
               message="no short-lived command was counted")
    page.goto(full_dashboard.url + "/")
    expect(page.locator("#operations-short-lived")).to_have_text(
        re.compile(r"^\d+ short-lived commands? ended in the last \d+ min \(not listed\)$"), timeout=60_000
    )
