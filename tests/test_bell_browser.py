"""The bell in a real browser: similar entries grouped, Mark all read, Clear, and which kinds notify."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.support.dashboard import TEST_TOKEN, Dashboard, wait_until


def launch(dash: Dashboard, name: str, argv: list[str], op_type: str = "program") -> dict[str, Any]:
    status, body = dash.authed(
        "POST", "/api/dgx/operations", {"template": "custom", "name": name, "type": op_type, "command": argv}
    )
    assert status == 201, body
    return body["data"]


def failed_ids(dash: Dashboard, ids: set[str]) -> set[str]:
    events = dash.get_json("/api/dgx/events?kind=failed&limit=1000")["data"]
    return {e["operation_id"] for e in events} & ids


def test_bell_groups_marks_read_clears_and_chooses_kinds(
    full_dashboard: Dashboard, page: Page, tmp_path: Path, artifacts_dir: Path
) -> None:
    page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
    expect(page.locator("#operations-tab")).to_be_visible(timeout=60_000)
    crash = tmp_path / "bell_crash.py"
    crash.write_text("import sys\nprint('bell: failing on purpose')\nsys.exit(4)\n")
    ids = {launch(full_dashboard, "bell-grouper", [sys.executable, str(crash)], "job")["id"] for _ in range(3)}
    wait_until(lambda: failed_ids(full_dashboard, ids) == ids, 90, message="the three failures were not recorded")

    # Three failures of the same command: one entry, "×3", unread.
    bell = page.locator("#notifications-bell")
    bell.click()
    group = page.locator("#recent-events .dgx-event-row[data-kind='failed']", has_text="bell-grouper")
    expect(group).to_have_count(1, timeout=30_000)
    expect(group).to_have_attribute("data-count", "3", timeout=30_000)
    expect(group.locator(".dgx-event-count")).to_contain_text("3")
    expect(group).to_have_attribute("data-unread", "3")
    expect(page.locator("#unread-count")).to_be_visible()
    # The defaults: failed, completed and stalled notify; starts and stops do not.
    for kind in ("failed", "completed", "stalled"):
        expect(page.locator(f"#notify-kind-{kind}")).to_have_attribute("data-state", "checked")
    for kind in ("started", "stopped"):
        expect(page.locator(f"#notify-kind-{kind}")).to_have_attribute("data-state", "unchecked")
    page.screenshot(path=str(artifacts_dir / "bell-grouped.png"))

    page.locator("#mark-all-read").click()
    expect(page.locator("#unread-count")).to_have_count(0, timeout=30_000)
    expect(group).to_have_attribute("data-unread", "0")
    page.locator("#clear-bell").click()
    expect(group).to_have_count(0, timeout=30_000)
    page.keyboard.press("Escape")
    # Clearing is kept by this browser across reloads; the events stay in the API and History.
    page.reload()
    expect(page.locator("#operations-tab")).to_be_visible(timeout=60_000)
    page.locator("#notifications-bell").click()
    expect(page.locator("#notify-kind-failed")).to_have_attribute("data-state", "checked", timeout=30_000)
    expect(page.locator("#recent-events .dgx-event-row", has_text="bell-grouper")).to_have_count(0)
    assert failed_ids(full_dashboard, ids) == ids

    sleeper = None
    try:
        # Choose to be told about starts too: a new start then appears in the bell.
        page.locator("#notify-kind-started").click()
        expect(page.locator("#notify-kinds-message")).to_contain_text("Saved", timeout=30_000)
        expect(page.locator("#notify-kind-started")).to_have_attribute("data-state", "checked")
        sleeper = launch(full_dashboard, "bell-starter", [sys.executable, "-c", "import time; time.sleep(600)"])
        started = page.locator(f"#recent-events [data-kind='started'][data-operation-id='{sleeper['id']}']")
        expect(started).to_be_visible(timeout=90_000)
        page.screenshot(path=str(artifacts_dir / "bell-kinds.png"))
    finally:
        # Back to the defaults for the other tests sharing this dashboard.
        if page.locator("#notify-kind-started").get_attribute("data-state") == "checked":
            page.locator("#notify-kind-started").click()
        expect(page.locator("#notify-kind-started")).to_have_attribute("data-state", "unchecked", timeout=30_000)
        if sleeper is not None:
            full_dashboard.authed("POST", f"/api/dgx/operations/{sleeper['id']}/stop", {"force": True})
        page.keyboard.press("Escape")


def test_changing_which_kinds_notify_needs_the_login(full_dashboard: Dashboard, page: Page) -> None:
    page.goto(full_dashboard.url)  # a viewer from this machine, not logged in
    expect(page.locator("#operations-tab")).to_be_visible(timeout=60_000)
    page.locator("#notifications-bell").click()
    choice = page.locator("#notify-kind-stopped")
    expect(choice).to_have_attribute("data-state", "unchecked", timeout=30_000)
    # It fails early: the choices are disabled, and a link says what to do (the backend refuses anyway).
    expect(choice).to_be_disabled()
    note = page.locator("[data-login-gate=notify-kinds]")
    expect(note).to_have_text("Log in to choose what notifies")
    expect(note).to_have_attribute("href", "/login")
    expect(page.locator("#webhook-url")).to_be_disabled()
    expect(page.locator("[data-login-gate=webhook-save]")).to_have_attribute("aria-label", "Log in to set the webhook")
    expect(choice).to_have_attribute("data-state", "unchecked")


def bell_deltas(frames: list[str]) -> list[dict[str, Any]]:
    """The bell's state in each websocket delta frame (``42["event",{"delta":{state: {var: value}}}]``)."""
    found = []
    for frame in frames:
        start = frame.find("[")
        if not frame.startswith("42") or start < 0:
            continue
        try:
            delta = json.loads(frame[start:])[1].get("delta") or {}
        except (ValueError, IndexError, AttributeError):
            continue
        found += [fields for state, fields in delta.items() if state.endswith("events_state")]
    return found


def test_a_closed_bell_gets_its_count_and_an_opened_one_its_list(
    full_dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda data: frames.append(data if isinstance(data, str) else data.decode(errors="replace"))))
    page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
    expect(page.locator("#operations-tab")).to_be_visible(timeout=60_000)
    # Events from before the bell's loop first lists are listed, not toasted: wait for that first listing
    # (a delta with the unread count that is not the page's whole state, which also holds the webhook).
    for _ in range(300):
        if any("unread_count_rx_state_" in f and "webhook_url_rx_state_" not in f for f in bell_deltas(frames)):
            break
        page.wait_for_timeout(200)  # lets playwright deliver the frames
    crash = tmp_path / "closed_bell_crash.py"
    crash.write_text("import sys\nsys.exit(5)\n")
    op_id = launch(full_dashboard, "closed-bell-crasher", [sys.executable, str(crash)], "job")["id"]

    # The failure's toast says what happened; the closed bell is told how many are unread; no list is sent.
    expect(page.locator(".dgx-event-failed", has_text="closed-bell-crasher failed")).to_be_visible(timeout=90_000)
    expect(page.locator("#unread-count")).to_be_visible(timeout=30_000)
    closed = bell_deltas(frames)
    assert any("unread_count_rx_state_" in fields for fields in closed)
    assert all(not fields.get("groups_rx_state_") for fields in closed)
    assert op_id not in json.dumps(closed)

    # Opening it sends the list, with the new failure in it.
    sent = len(frames)
    page.locator("#notifications-bell").click()
    row = page.locator(f"#recent-events .dgx-event-row[data-operation-id='{op_id}']")
    expect(row).to_be_visible(timeout=30_000)
    opened = bell_deltas(frames[sent:])
    assert any(op_id in json.dumps(fields.get("groups_rx_state_") or []) for fields in opened)
    page.keyboard.press("Escape")
