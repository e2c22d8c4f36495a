"""The Running Operations tab in a real browser against the real app.

Real workloads are spawned by the tests; nothing is faked. Every test fails if
the browser logged an error (console error or uncaught exception).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until

APPEAR = 60_000  # ms: generous, the machine is shared and slow
SECTION_OF_TYPE = {"server": "servers", "job": "jobs", "program": "programs"}


@pytest.fixture
def console_errors(page: Page) -> Iterator[list[str]]:
    """Errors the page logs; the test fails if there are any."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} @ {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    yield errors
    assert errors == [], "the browser logged errors:\n" + "\n".join(errors)


def open_dashboard(page: Page, dashboard: Dashboard) -> None:
    """Load the page and wait for the first snapshot to be shown."""
    page.goto(dashboard.url)
    expect(page.locator("#operations-sections")).to_be_visible(timeout=APPEAR)


def api_operation(dashboard: Dashboard, pid: int) -> dict[str, Any] | None:
    """The live operation whose main pid is ``pid``, per the API."""
    for op in dashboard.operations():
        if op["pid"] == pid and op["status"] not in ("stopped", "failed"):
            return op
    return None


def health(dashboard: Dashboard) -> dict[str, Any]:
    """The app's /api/health data."""
    return dashboard.get_json("/api/health")["data"]


def card(page: Page, section: str, **data: object) -> Any:
    """Cards in ``section`` whose data attributes match."""
    attrs = "".join(f'[data-{key}="{value}"]' for key, value in data.items())
    return page.locator(f'#section-{section} [data-testid="operation-card"]{attrs}')


def test_real_workloads_appear_with_port_and_pid_and_a_killed_one_leaves(
    full_dashboard: Dashboard, page: Page, console_errors: list[str], tmp_path: Path
) -> None:
    with (
        workloads.http_server(tmp_path / "srv") as server,
        workloads.bash_loop(tmp_path / "loop", name="ui_loop_script.sh") as loop,
    ):
        open_dashboard(page, full_dashboard)

        server_op = wait_until(lambda: api_operation(full_dashboard, server.pid), 60, 0.5)
        assert server_op["type"] == "server" and server_op["port"] == server.port
        server_card = card(page, "servers", port=server.port)
        expect(server_card).to_have_count(1, timeout=APPEAR)
        expect(server_card).to_have_attribute("data-status", re.compile("running|active"))
        expect(server_card.locator('[data-value="port"]')).to_have_text(str(server.port))
        open_link = server_card.locator('[data-field="open"]')
        expect(open_link).to_have_attribute("href", f"http://127.0.0.1:{server.port}")
        expect(open_link).to_have_attribute("target", "_blank")
        expect(server_card.locator('[data-field="status"]')).to_contain_text(re.compile("Running|Active"))

        loop_op = wait_until(lambda: api_operation(full_dashboard, loop.pid), 60, 0.5)
        loop_card = card(page, SECTION_OF_TYPE[loop_op["type"]], pid=loop.pid)
        expect(loop_card).to_have_count(1, timeout=APPEAR)
        assert loop_op["type"] == "program"
        expect(loop_card.locator('[data-value="pid"]')).to_have_text(str(loop.pid))
        expect(loop_card.locator('[data-field="uptime"]')).to_contain_text(re.compile(r"\d+s"))

        page.locator("#refresh").click()  # a manual refresh changes nothing visible here
        expect(loop_card).to_have_count(1)

        loop.kill()
        # Killed: the card turns stopped/failed, or leaves the page.
        gone_or_ended = card(page, "programs", pid=loop.pid).and_(
            page.locator('[data-status="running"], [data-status="active"]')
        )
        expect(gone_or_ended).to_have_count(0, timeout=APPEAR)
        # The server is untouched and still live.
        expect(server_card).to_have_attribute("data-status", re.compile("running|active"))


def test_a_card_leaving_leaves_the_other_cards_elements_alone(
    full_dashboard: Dashboard, page: Page, console_errors: list[str], tmp_path: Path
) -> None:
    """Cards are keyed by operation: when one leaves, the cards after it keep their own DOM elements.

    Keyed by position, the element of the card that left would be refilled with
    its neighbour's data, and so on down the list (slow with hundreds of cards).
    """
    with (
        workloads.bash_loop(tmp_path / "a", name="keyed_a.sh") as first,
        workloads.bash_loop(tmp_path / "b", name="keyed_b.sh") as second,
        workloads.bash_loop(tmp_path / "c", name="keyed_c.sh") as third,
    ):
        open_dashboard(page, full_dashboard)
        loops = {first.pid: first, second.pid: second, third.pid: third}
        ops = {pid: wait_until(lambda pid=pid: api_operation(full_dashboard, pid), 60, 0.5) for pid in loops}
        for pid in loops:
            expect(card(page, "programs", pid=pid)).to_have_count(1, timeout=APPEAR)
        ids = [op["id"] for op in ops.values()]
        # Each card's element gets a mark of its own id; the first of the three in the page is killed.
        in_order = page.evaluate(
            """(ids) => {
                const cards = ids.map((id) => document.getElementById('op-' + id));
                cards.forEach((el, i) => { el.__dgxMark = ids[i]; });
                return ids.slice().sort((a, b) => {
                    const x = document.getElementById('op-' + a), y = document.getElementById('op-' + b);
                    return x.compareDocumentPosition(y) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1;
                });
            }""",
            ids,
        )
        leaving = next(pid for pid, op in ops.items() if op["id"] == in_order[0])
        loops[leaving].kill()
        expect(card(page, "programs", pid=leaving).and_(page.locator('[data-status="running"]'))).to_have_count(
            0, timeout=APPEAR
        )
        marks = page.evaluate(
            "(ids) => ids.map((id) => document.getElementById('op-' + id)?.__dgxMark ?? null)", in_order[1:]
        )
        assert marks == in_order[1:], "a card that stayed was drawn into another card's element"


def test_sections_collapse_and_expand_and_survive_a_reload(
    full_dashboard: Dashboard, page: Page, console_errors: list[str]
) -> None:
    open_dashboard(page, full_dashboard)
    toggle = page.locator("#section-programs-toggle")
    body = page.locator("#section-programs-body")
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(body).to_be_visible()

    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(body).to_have_count(0)
    # The other sections stay open.
    expect(page.locator("#section-servers-toggle")).to_have_attribute("aria-expanded", "true")

    full_dashboard.wait_for_refreshes(2)  # a couple of live refreshes: still collapsed
    expect(toggle).to_have_attribute("aria-expanded", "false")
    page.reload()
    expect(page.locator("#operations-sections")).to_be_visible(timeout=APPEAR)
    expect(toggle).to_have_attribute("aria-expanded", "false", timeout=APPEAR)
    expect(body).to_have_count(0)

    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(body).to_be_visible()
    page.reload()
    expect(page.locator("#operations-sections")).to_be_visible(timeout=APPEAR)
    expect(page.locator("#section-programs-body")).to_be_visible(timeout=APPEAR)


def test_an_empty_section_shows_its_empty_state(
    full_dashboard: Dashboard, page: Page, console_errors: list[str]
) -> None:
    open_dashboard(page, full_dashboard)
    # Earlier tests share this dashboard: what they launched and left listed goes first.
    for op in full_dashboard.operations():
        if op.get("source") == "launched":
            full_dashboard.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"signal": "kill"})
    for op in full_dashboard.operations():
        if op.get("source") == "launched":
            wait_until(lambda op=op: full_dashboard.authed("DELETE", f"/api/dgx/operations/{op['id']}")[0]
                       in (200, 204, 404), 60, 1)

    def empty_sections() -> list[str]:
        counts = dict.fromkeys(SECTION_OF_TYPE.values(), 0)
        for op in full_dashboard.operations():
            counts[SECTION_OF_TYPE[op["type"]]] += 1
        return [key for key, count in counts.items() if count == 0]

    # Ended operations leave after the full dashboard's short TTL (conftest); a
    # section with nothing running then empties. A shared machine may hold every
    # kind of operation for a while: give it time.
    empty = wait_until(empty_sections, 180, 1, "no section emptied: every kind of operation keeps running here")
    for key in empty:
        expect(page.locator(f"#section-{key}-count")).to_have_text("0", timeout=APPEAR)
        hint = page.locator(f"#section-{key}-empty")
        expect(hint).to_be_visible()
        expect(hint).to_contain_text(re.compile(r"No (servers|training jobs|programs)"))
        expect(hint).not_to_contain_text("match the filters")
        expect(hint.locator("code")).to_be_visible()


def grid_columns(page: Page, section: str) -> int:
    """How many columns the section's card grid lays out."""
    return int(
        page.evaluate(
            """(id) => getComputedStyle(document.getElementById(id)).gridTemplateColumns
                 .split(' ').filter(Boolean).length""",
            f"section-{section}-grid",
        )
    )


def card_lefts(page: Page, section: str) -> set[int]:
    """The distinct left edges of the section's cards (one per column in use)."""
    lefts = page.evaluate(
        """(id) => [...document.querySelectorAll(`#${id} [data-testid="operation-card"]`)]
                 .map((el) => Math.round(el.getBoundingClientRect().left))""",
        f"section-{section}-grid",
    )
    return set(lefts)


def test_phone_shows_one_column_desktop_more_and_screenshots(
    full_dashboard: Dashboard, page: Page, console_errors: list[str], tmp_path: Path, artifacts_dir: Path
) -> None:
    with (
        workloads.http_server(tmp_path / "a") as first,
        workloads.http_server(tmp_path / "b") as second,
        workloads.bash_loop(tmp_path / "c", name="ui_screenshot_loop.sh"),
    ):
        page.set_viewport_size({"width": 1440, "height": 900})
        open_dashboard(page, full_dashboard)
        for server in (first, second):
            expect(card(page, "servers", port=server.port)).to_have_count(1, timeout=APPEAR)
        assert grid_columns(page, "servers") >= 3
        assert len(card_lefts(page, "servers")) >= 2  # cards side by side
        page.screenshot(path=str(artifacts_dir / "operations-desktop.png"), full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        expect(page.locator("#section-servers-grid")).to_be_visible()
        wait_until(lambda: grid_columns(page, "servers") == 1, 10)
        assert len(card_lefts(page, "servers")) == 1  # stacked
        box = card(page, "servers", port=first.port).bounding_box()
        assert box is not None and box["width"] <= 390
        # Nothing wider than the phone: no horizontal scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(artifacts_dir / "operations-phone.png"), full_page=True)


def test_a_dropped_connection_shows_a_banner_keeps_stale_data_and_recovers(
    full_dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    # No console_errors fixture: a dropped websocket logs errors by design.
    with workloads.http_server(tmp_path / "srv") as server:
        open_dashboard(page, full_dashboard)
        server_card = card(page, "servers", port=server.port)
        expect(server_card).to_have_count(1, timeout=APPEAR)
        expect(page.locator("#operations-sections")).to_have_attribute("data-stale", "false")

        page.context.set_offline(True)
        expect(page.locator("#banner-disconnected")).to_be_visible(timeout=APPEAR)
        # The last data stays, marked stale.
        expect(page.locator("#operations-sections")).to_have_attribute("data-stale", "true")
        expect(page.locator("#live-indicator")).to_have_attribute("data-stale", "true")
        expect(server_card).to_have_count(1)
        # The backend saw the tab go: its loops end (no other tab is open in this test).
        wait_until(lambda: health(full_dashboard)["ui_loops"] == 0, 60, 0.5, "loops outlived the connection")

        page.context.set_offline(False)
        expect(page.locator("#banner-disconnected")).to_have_count(0, timeout=APPEAR)
        expect(page.locator("#operations-sections")).to_have_attribute("data-stale", "false")
        # The reconnect restarted the tab's loop.
        wait_until(lambda: health(full_dashboard)["ui_loops"] > 0, 60, 0.5, "no loop after the reconnect")
    # Live again: the killed server changes status or leaves without a reload.
    gone_or_live = server_card.and_(page.locator('[data-status="running"], [data-status="active"]'))
    expect(gone_or_live).to_have_count(0, timeout=APPEAR)
