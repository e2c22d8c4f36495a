"""The Chromium the browser tests and the benchmark drive, and the flags this machine needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str | None:
    """Debian's Chromium, or one named by DGX_SPARK_CHROMIUM; None: Playwright's own."""
    for candidate in (os.environ.get("DGX_SPARK_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _until_tooltip(page: Page, text: str, reach: Callable[[], None]) -> None:
    """Call ``reach`` (a fresh way onto a trigger) until the tooltip says ``text``, 10 tries of 5 s."""
    for _ in range(10):
        reach()
        try:
            expect(page.get_by_role("tooltip")).to_contain_text(text, timeout=5_000)
            return
        except AssertionError:
            continue
    expect(page.get_by_role("tooltip")).to_contain_text(text)


def hover_for_tooltip(page: Page, target: Locator, text: str) -> None:
    """Hover ``target`` until its tooltip says ``text``.

    Playwright's hover is one pointer move. Radix ignores a move onto a trigger while another tooltip's
    pointer is "in transit" (its grace area, shared by all tooltips): moving away fast can open a tooltip
    on the way (instantly, just after one closed) and leave it in transit, so the one move onto ``target``
    is lost (measured: the trigger node stays the same, no remount). A hand makes more moves; here: retry.
    """

    def reach() -> None:
        page.mouse.move(5, 890, steps=4)
        target.hover()

    _until_tooltip(page, text, reach)


def focus_for_tooltip(page: Page, target: Locator, text: str) -> None:
    """Focus ``target`` (the keyboard's way to a tooltip) until its tooltip says ``text``.

    The pointer is first moved off every trigger: a tooltip it left open or "in transit" holds the
    shared provider (see ``hover_for_tooltip``), and then one focus can be lost the same way.
    """

    def reach() -> None:
        page.mouse.move(5, 890)
        target.evaluate("(element) => element.blur()")
        target.focus()

    _until_tooltip(page, text, reach)
