"""The table view in a real browser: the toggle kept in the URL and localStorage, 30+ rows on a
1440×900 screen with 40 real processes listed, sorting by column headers, keyboard navigation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until

ROWS = 40
PREFIX = "h12-row-"
# Only the test's scripts, in the table view, names ascending.
VIEW = f"/?view=table&q={PREFIX}"


@pytest.fixture(scope="module")
def forty_scripts(full_dashboard: Dashboard, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """40 real processes (``bash h12-row-NN.sh`` waiting on ``sleep``), each its own program."""
    folder: Path = tmp_path_factory.mktemp("table-rows")
    names = [f"{PREFIX}{i:02d}.sh" for i in range(ROWS)]
    with contextlib.ExitStack() as stack:
        for name in names:
            script = workloads.write_script(folder, name, "sleep 900\n")
            stack.enter_context(workloads.spawn(["bash", str(script)], folder, script=script, wait=False))

        def listed() -> bool:
            ops = full_dashboard.get_json(f"/api/dgx/operations?q={PREFIX}")["data"]
            return len({op["name"] for op in ops if op["status"] in ("running", "active")}) >= ROWS

        wait_until(listed, timeout=90, message="the 40 scripts were not all listed")
        yield names


def query_of(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def row_names(page: Page) -> list[str]:
    return page.locator("#table-programs tr[data-op-row] [data-field=name]").all_inner_texts()


def test_toggle_is_kept_in_url_and_local_storage(full_dashboard: Dashboard, page: Page) -> None:
    page.goto(full_dashboard.url + "/")
    toggle = page.locator("#layout-toggle")
    expect(toggle).to_have_attribute("data-layout", "cards", timeout=60_000)
    page.locator("#layout-table").click()
    expect(toggle).to_have_attribute("data-layout", "table", timeout=30_000)
    page.wait_for_function("() => new URL(location.href).searchParams.get('view') === 'table'", timeout=30_000)
    page.wait_for_function("() => localStorage.getItem('dgx_spark_layout') === 'table'", timeout=30_000)

    # A reload, and a plain "/" (the stored choice, written back into the URL).
    page.reload()
    expect(toggle).to_have_attribute("data-layout", "table", timeout=60_000)
    page.goto(full_dashboard.url + "/")
    expect(toggle).to_have_attribute("data-layout", "table", timeout=60_000)
    page.wait_for_function("() => new URL(location.href).searchParams.get('view') === 'table'", timeout=30_000)

    # A bookmark that names the cards wins over the stored table, and is stored.
    page.goto(full_dashboard.url + "/?view=cards&sort=name")
    expect(toggle).to_have_attribute("data-layout", "cards", timeout=60_000)
    page.wait_for_function("() => localStorage.getItem('dgx_spark_layout') === 'cards'", timeout=30_000)
    page.wait_for_function("() => !new URL(location.href).searchParams.has('view')", timeout=30_000)
    assert query_of(page)["sort"] == ["name"]  # the filters' keys are left alone

    # A bad value is ignored (the stored choice stays).
    page.goto(full_dashboard.url + "/?view=bogus")
    expect(toggle).to_have_attribute("data-layout", "cards", timeout=60_000)


def test_thirty_rows_fit_a_1440x900_screen(
    full_dashboard: Dashboard, page: Page, forty_scripts: list[str], artifacts_dir: Path
) -> None:
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(full_dashboard.url + VIEW + "&sort=name&order=asc")
    rows = page.locator("#table-programs tr[data-op-row]")
    expect(rows).to_have_count(ROWS, timeout=60_000)
    # Each row shows the card's fields: type, name, status, PID, figures, uptime, buttons.
    first = rows.first
    expect(first.locator("[data-field=name]")).to_have_text(forty_scripts[0])
    expect(first.locator("[data-field=status]")).to_have_attribute("data-status", "running")
    expect(first.locator("[data-value=pid]")).to_contain_text("PID ")
    expect(first.locator("[data-field=memory]")).to_contain_text("iB", timeout=30_000)
    expect(first.locator("[data-field=uptime]")).to_contain_text("s")
    expect(first.locator("[data-action=logs]")).to_be_visible()
    expect(first.locator("[data-action=stop]")).to_be_visible()

    page.locator("#table-programs").evaluate("t => t.scrollIntoView({block: 'start'})")
    visible = page.evaluate(
        """() => {
            const head = document.querySelector('#table-programs thead').getBoundingClientRect();
            return Array.from(document.querySelectorAll('#table-programs tr[data-op-row]')).filter((r) => {
                const b = r.getBoundingClientRect();
                return b.top >= head.bottom - 1 && b.bottom <= window.innerHeight + 0.5 && b.height > 0;
            }).length;
        }"""
    )
    page.screenshot(path=str(artifacts_dir / "table-1440x900.png"))
    assert visible >= 30, f"only {visible} rows fit on a 1440×900 screen"
    # Rows keep one line each: all the same height.
    heights = set(page.eval_on_selector_all("#table-programs tr[data-op-row]",
                                            "rs => rs.map(r => Math.round(r.getBoundingClientRect().height))"))
    assert len(heights) == 1, heights


def test_headers_sort_and_keep_the_url(full_dashboard: Dashboard, page: Page, forty_scripts: list[str]) -> None:
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(full_dashboard.url + VIEW)
    rows = page.locator("#table-programs tr[data-op-row]")
    expect(rows).to_have_count(ROWS, timeout=60_000)
    name_header = page.locator("#table-programs th:has(button[data-sort=name])")
    sort_by_name = page.locator("#table-programs button[data-sort=name]")

    sort_by_name.click()
    expect(name_header).to_have_attribute("aria-sort", "ascending", timeout=30_000)
    wait_until(lambda: row_names(page) == sorted(forty_scripts), timeout=30, message="not sorted by name")
    page.wait_for_function("() => new URL(location.href).searchParams.get('sort') === 'name'", timeout=30_000)

    sort_by_name.click()  # again: reversed
    expect(name_header).to_have_attribute("aria-sort", "descending", timeout=30_000)
    wait_until(lambda: row_names(page) == sorted(forty_scripts, reverse=True), timeout=30, message="not reversed")
    page.wait_for_function("() => new URL(location.href).searchParams.get('order') === 'desc'", timeout=30_000)
    # The filter bar shows the same sort.
    expect(page.locator("#filter-order")).to_have_attribute("data-order", "desc")

    # A figure column starts biggest first; the name column is no longer the sorted one.
    page.locator("#table-programs button[data-sort=memory]").click()
    memory_header = page.locator("#table-programs th:has(button[data-sort=memory])")
    expect(memory_header).to_have_attribute("aria-sort", "descending", timeout=30_000)
    expect(name_header).to_have_attribute("aria-sort", "none")
    page.wait_for_function("() => new URL(location.href).searchParams.get('sort') === 'memory'", timeout=30_000)

    # The uptime column sorts by start time: oldest start first is the longest uptime first.
    page.locator("#table-programs button[data-sort=started_at]").click()
    uptime_header = page.locator("#table-programs th:has(button[data-sort=started_at])")
    expect(uptime_header).to_have_attribute("aria-sort", "descending", timeout=30_000)
    assert query_of(page)["order"] == ["asc"]


def test_rows_are_keyboard_navigable(
    full_dashboard: Dashboard, page: Page, forty_scripts: list[str], artifacts_dir: Path
) -> None:
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(full_dashboard.url + VIEW + "&sort=name&order=asc")
    rows = page.locator("#table-programs tr[data-op-row]")
    expect(rows).to_have_count(ROWS, timeout=60_000)
    wait_until(lambda: row_names(page) == sorted(forty_scripts), timeout=30, message="not sorted by name")

    def focused_name() -> str:
        return page.evaluate(
            "() => document.activeElement?.closest('tr[data-op-row]')?.querySelector('[data-field=name]')"
            "?.textContent ?? ''"
        )

    # Tab reaches the rows: from the sort header of the last column, Tab lands on the first row.
    page.locator("#table-programs button[data-sort=started_at]").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement?.matches('tr[data-op-row]')")
    assert focused_name() == forty_scripts[0]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert focused_name() == forty_scripts[2]
    page.keyboard.press("ArrowUp")
    assert focused_name() == forty_scripts[1]
    page.keyboard.press("End")
    assert focused_name() == forty_scripts[-1]
    page.keyboard.press("Home")
    assert focused_name() == forty_scripts[0]
    row_id = page.evaluate("() => document.activeElement.id")

    # Enter opens the row's logs; Escape closes them and focus is back on the row.
    page.keyboard.press("Enter")
    dialog = page.locator("#logs-dialog")
    expect(dialog).to_be_visible(timeout=30_000)
    expect(dialog).to_contain_text(forty_scripts[0])
    page.screenshot(path=str(artifacts_dir / "table-logs-from-keyboard.png"))
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0, timeout=30_000)
    page.wait_for_function(f"() => document.activeElement?.id === {row_id!r}", timeout=10_000)

    # Tab from a row goes through its controls: Logs, then Stop (for a viewer not logged in,
    # the "Log in to stop" link in its place).
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement?.dataset.action") == "logs"
    page.keyboard.press("Tab")
    assert page.evaluate(
        "() => document.activeElement?.dataset.action || document.activeElement?.dataset.loginGate"
    ) == "stop"
