"""Accessibility measured with axe-core in a real browser, and the keyboard.

axe-core comes from the ``axe-playwright-python`` package (requirements-dev.txt), which
ships ``axe.min.js``: nothing is downloaded at run time. It runs on ``/`` (cards and the
table view), ``/history``, the launch dialog and the logs view, in the light and the dark
theme, at desktop (1440 px) and phone (390 px) width; any serious or critical violation
fails. Screenshots of each go to ``test-artifacts/a11y-*.png``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import axe_playwright_python
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.support.dashboard import TEST_TOKEN, Dashboard, wait_until

AXE_JS = Path(axe_playwright_python.__file__).parent / "axe.min.js"
BLOCKING = ("serious", "critical")
WIDTHS = {"desktop": (1440, 900), "phone": (390, 844)}
THEMES = ("dark", "light")


def launch(dash: Dashboard, name: str, argv: list[str], op_type: str = "program") -> dict[str, Any]:
    status, body = dash.authed(
        "POST", "/api/dgx/operations", {"template": "custom", "name": name, "type": op_type, "command": argv}
    )
    assert status == 201, body
    return body["data"]


@pytest.fixture(scope="module")
def operations(full_dashboard: Dashboard) -> Iterator[dict[str, dict[str, Any]]]:
    """A running program, a running job, and a run that ended (for History)."""
    sleeper = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(900)"]
    ops = {
        "program": launch(full_dashboard, "a11y-program", sleeper),
        "job": launch(full_dashboard, "a11y-job", sleeper, "job"),
        "ended": launch(full_dashboard, "a11y-ended", [sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"]),
    }

    def ended_in_history() -> bool:
        rows = full_dashboard.get_json("/api/dgx/history?q=a11y-ended")["data"]
        return bool(rows)

    wait_until(ended_in_history, timeout=60, message="the ended run is not in History")
    yield ops
    for key in ("program", "job"):
        full_dashboard.authed("POST", f"/api/dgx/operations/{ops[key]['id']}/stop", {"force": True})


def new_page(browser: Browser, theme: str, width: str) -> tuple[BrowserContext, Page]:
    """A tab that prefers ``theme`` (the app follows prefers-color-scheme), at ``width``, no motion."""
    w, h = WIDTHS[width]
    context = browser.new_context(viewport={"width": w, "height": h}, color_scheme=theme, reduced_motion="reduce")
    return context, context.new_page()


def violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate("async () => await window.axe.run(document, {resultTypes: ['violations']})")
    return [v for v in result["violations"] if v.get("impact") in BLOCKING]


def describe(found: list[dict[str, Any]]) -> str:
    lines = []
    for v in found:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"][:5]:
            lines.append(f"    {node['target']}: {node.get('failureSummary', '').splitlines()[-1:]}")
    return "\n".join(lines)


def check(page: Page, artifacts: Path, name: str, theme: str, width: str) -> list[str]:
    """Screenshot the page and return axe's blocking findings, one paragraph per view."""
    page.screenshot(path=str(artifacts / f"a11y-{name}-{theme}-{width}.png"))
    found = violations(page)
    return [f"[{name}, {theme}, {width}]\n{describe(found)}"] if found else []


def wait_theme(page: Page, theme: str) -> None:
    page.wait_for_function(f"() => document.documentElement.classList.contains({theme!r})", timeout=30_000)


def wait_dialog_settled(page: Page, selector: str) -> None:
    """The dialog is visible and fully opaque (axe reads colours as drawn)."""
    expect(page.locator(selector)).to_be_visible(timeout=30_000)
    page.wait_for_function(
        f"() => {{ const d = document.querySelector({selector!r});"
        " return d && getComputedStyle(d).opacity === '1' && d.getAnimations().length === 0; }",
        timeout=30_000,
    )


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("theme", THEMES)
def test_axe_finds_no_serious_violations(
    full_dashboard: Dashboard,
    browser: Browser,
    operations: dict[str, dict[str, Any]],
    artifacts_dir: Path,
    theme: str,
    width: str,
) -> None:
    context, page = new_page(browser, theme, width)
    problems: list[str] = []
    try:
        program = page.locator(f"#op-{operations['program']['id']}")
        page.goto(full_dashboard.url + "/?q=a11y")
        expect(program).to_be_visible(timeout=60_000)
        expect(page.locator(f"#op-{operations['job']['id']}")).to_be_visible(timeout=30_000)
        wait_theme(page, theme)
        problems += check(page, artifacts_dir, "cards", theme, width)

        # The launch dialog (logged in: a viewer gets a disabled "Log in to launch" link instead).
        page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
        # The login page sends the browser on with a meta refresh: wait until it has left.
        page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
        page.goto(full_dashboard.url + "/?q=a11y")
        expect(program.locator("button[data-action=stop]")).to_be_enabled(timeout=60_000)
        wait_theme(page, theme)
        page.locator("#new-operation").click()
        wait_dialog_settled(page, "[role=dialog]")
        problems += check(page, artifacts_dir, "launch-dialog", theme, width)
        page.keyboard.press("Escape")
        expect(page.locator("[role=dialog]")).to_have_count(0, timeout=30_000)

        # The logs view of the running program.
        program.locator("[data-action=logs]").click()
        wait_dialog_settled(page, "#logs-dialog")
        expect(page.locator("#logs-dialog")).to_contain_text("ready", timeout=30_000)
        problems += check(page, artifacts_dir, "logs", theme, width)
        page.keyboard.press("Escape")
        expect(page.locator("#logs-dialog")).to_have_count(0, timeout=30_000)

        # The table view.
        page.goto(full_dashboard.url + "/?q=a11y&view=table")
        expect(page.locator(f"#row-{operations['program']['id']}")).to_be_visible(timeout=60_000)
        wait_theme(page, theme)
        problems += check(page, artifacts_dir, "table", theme, width)

        # History, with the run that ended.
        page.goto(full_dashboard.url + "/history?q=a11y")
        ended_row = page.locator(f"#history-table [data-operation-id=\"{operations['ended']['id']}\"]")
        expect(ended_row.first).to_be_visible(timeout=60_000)
        wait_theme(page, theme)
        problems += check(page, artifacts_dir, "history", theme, width)
    finally:
        context.close()
    assert not problems, "axe-core found serious or critical violations:\n" + "\n".join(problems)


def test_theme_follows_the_system_and_the_menu_overrides_it(
    full_dashboard: Dashboard, browser: Browser, artifacts_dir: Path
) -> None:
    context, page = new_page(browser, "dark", "desktop")
    try:
        page.goto(full_dashboard.url + "/")
        menu = page.locator("#theme-menu")
        expect(menu).to_have_attribute("data-mode", "system", timeout=60_000)
        wait_theme(page, "dark")
        expect(menu).to_have_attribute("data-resolved", "dark")

        menu.click()
        page.locator("#theme-light").click()
        wait_theme(page, "light")
        expect(menu).to_have_attribute("data-mode", "light")
        page.screenshot(path=str(artifacts_dir / "theme-light-chosen.png"))
        # Kept by the browser across a reload, on every page.
        page.reload()
        wait_theme(page, "light")
        expect(page.locator("#theme-menu")).to_have_attribute("data-mode", "light", timeout=60_000)
        page.goto(full_dashboard.url + "/history")
        wait_theme(page, "light")
        expect(page.locator("#theme-menu")).to_have_attribute("data-mode", "light", timeout=60_000)

        # Back to following the system (which prefers dark here).
        page.goto(full_dashboard.url + "/")
        page.locator("#theme-menu").click()
        expect(page.locator("#theme-light")).to_have_attribute("aria-checked", "true", timeout=30_000)
        page.locator("#theme-system").click()
        wait_theme(page, "dark")
        expect(page.locator("#theme-menu")).to_have_attribute("data-mode", "system")
    finally:
        context.close()


def focus_inside(page: Page, selector: str) -> bool:
    return page.evaluate(f"() => !!document.activeElement?.closest({selector!r})")


def test_keyboard_reaches_every_action_and_dialogs_trap_and_return_focus(
    full_dashboard: Dashboard, browser: Browser, operations: dict[str, dict[str, Any]]
) -> None:
    context, page = new_page(browser, "dark", "desktop")
    try:
        program = page.locator(f"#op-{operations['program']['id']}")
        # Logged in, so every control is live (a viewer gets "Log in to stop" links instead).
        page.goto(f"{full_dashboard.url}/login?token={TEST_TOKEN}")
        page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
        page.goto(full_dashboard.url + "/?q=a11y-program")
        expect(program).to_be_visible(timeout=60_000)
        expect(program.locator("button[data-action=stop]")).to_be_enabled(timeout=30_000)

        # Tab from the top of the page, once round, reaches every control of the page and of the card.
        page.evaluate("() => document.activeElement?.blur()")
        order: list[str] = []
        for _ in range(200):
            page.keyboard.press("Tab")
            name = page.evaluate(
                "() => { const e = document.activeElement; if (!e || e === document.body) return '';"
                " return e.id || (e.dataset.action ? 'action:' + e.dataset.action : e.getAttribute('aria-label')"
                " || e.textContent.trim().slice(0, 30) || e.tagName); }"
            )
            if order and name == order[0]:
                break
            order.append(name)
        seen = set(order)
        wanted = {"history-link", "notifications-bell", "theme-menu", "new-operation", "refresh", "filter-search",
                  "filter-sort", "filter-order", "action:logs", "action:stop", "action:restart"}
        assert wanted <= seen, f"not reachable by Tab: {sorted(wanted - seen)}; Tab order: {order}"
        assert {"layout-cards", "layout-table"} & seen, f"the layout toggle is not reachable by Tab: {order}"

        # The launch dialog from the keyboard: focus stays inside while tabbing, and comes back.
        page.locator("#new-operation").focus()
        page.keyboard.press("Enter")
        expect(page.locator("[role=dialog]")).to_be_visible(timeout=30_000)
        page.wait_for_function("() => !!document.activeElement?.closest('[role=dialog]')", timeout=30_000)
        for _ in range(25):
            page.keyboard.press("Tab")
            assert focus_inside(page, "[role=dialog]"), "focus left the launch dialog"
        for _ in range(5):
            page.keyboard.press("Shift+Tab")
            assert focus_inside(page, "[role=dialog]"), "focus left the launch dialog"
        page.keyboard.press("Escape")
        expect(page.locator("[role=dialog]")).to_have_count(0, timeout=30_000)
        page.wait_for_function("() => document.activeElement?.id === 'new-operation'", timeout=10_000)

        # The logs view the same way, opened with the card's Logs button.
        logs_button = program.locator("[data-action=logs]")
        logs_button.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#logs-dialog")).to_be_visible(timeout=30_000)
        page.wait_for_function("() => !!document.activeElement?.closest('#logs-dialog')", timeout=30_000)
        for _ in range(15):
            page.keyboard.press("Tab")
            assert focus_inside(page, "#logs-dialog"), "focus left the logs view"
        page.keyboard.press("Escape")
        expect(page.locator("#logs-dialog")).to_have_count(0, timeout=30_000)
        page.wait_for_function(
            "() => document.activeElement?.dataset.action === 'logs'"
            f" && !!document.activeElement.closest('#op-{operations['program']['id']}')",
            timeout=10_000,
        )
    finally:
        context.close()
