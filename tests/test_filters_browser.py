"""Search, filter chips and sort of the live view in a real browser, kept in the URL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.support.dashboard import Dashboard


def launch(dash: Dashboard, name: str, op_type: str) -> dict[str, Any]:
    argv = [sys.executable, "-c", "import time; time.sleep(900)"]
    status, body = dash.authed(
        "POST", "/api/dgx/operations", {"template": "custom", "name": name, "type": op_type, "command": argv}
    )
    assert status == 201, body
    return body["data"]


@pytest.fixture
def two_ops(full_dashboard: Dashboard) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    alpha = launch(full_dashboard, "fltr-alpha", "program")
    beta = launch(full_dashboard, "fltr-beta", "job")
    yield alpha, beta
    for op in (alpha, beta):
        full_dashboard.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": True})


def query_of(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_filters_live_in_the_url(full_dashboard: Dashboard, page: Page, two_ops: tuple[dict, dict]) -> None:
    alpha, beta = two_ops
    card_a, card_b = page.locator(f"#op-{alpha['id']}"), page.locator(f"#op-{beta['id']}")
    page.goto(full_dashboard.url + "/")
    expect(card_a).to_be_visible(timeout=60_000)
    expect(card_b).to_be_visible(timeout=30_000)

    # Search narrows the cards and lands in the URL.
    page.locator("#filter-search").fill("fltr-alpha")
    expect(card_b).to_have_count(0, timeout=30_000)
    expect(card_a).to_be_visible()
    page.wait_for_function("() => new URL(location.href).searchParams.get('q') === 'fltr-alpha'", timeout=30_000)

    # Chips: type=job hides alpha (a program); nothing matches -> the empty state offers to clear.
    page.locator("#filter-types-job").click()
    expect(page.locator("#no-matches")).to_be_visible(timeout=30_000)
    page.wait_for_function("() => new URL(location.href).searchParams.get('type') === 'job'", timeout=30_000)

    # It survives the refresh loop and a reload.
    full_dashboard.wait_for_refreshes(2)
    expect(page.locator("#no-matches")).to_be_visible()
    page.reload()
    expect(page.locator("#filter-search")).to_have_value("fltr-alpha", timeout=60_000)
    expect(page.locator("#filter-types-job")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#no-matches")).to_be_visible(timeout=30_000)

    page.locator("#clear-filters").click()
    expect(card_a).to_be_visible(timeout=30_000)
    expect(card_b).to_be_visible(timeout=30_000)
    page.wait_for_function("() => !new URL(location.href).searchParams.has('q')", timeout=30_000)
    assert "type" not in query_of(page)


def test_bookmarked_url_with_sort_opens_filtered(
    full_dashboard: Dashboard, page: Page, two_ops: tuple[dict, dict]
) -> None:
    alpha, beta = two_ops
    page.goto(full_dashboard.url + "/?q=fltr&status=running,active&sort=name&order=desc&type=bogus")
    card_a, card_b = page.locator(f"#op-{alpha['id']}"), page.locator(f"#op-{beta['id']}")
    expect(card_a).to_be_visible(timeout=60_000)
    expect(card_b).to_be_visible(timeout=30_000)
    expect(page.locator("#filter-search")).to_have_value("fltr")
    expect(page.locator("#filter-statuses-running")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#filter-order")).to_have_attribute("data-order", "desc")
    # The bad value was dropped from the URL once a filter changed.
    page.locator("#filter-order").click()
    expect(page.locator("#filter-order")).to_have_attribute("data-order", "asc", timeout=30_000)
    page.wait_for_function("() => new URL(location.href).searchParams.get('order') === 'asc'", timeout=30_000)
    params = query_of(page)
    assert params["sort"] == ["name"] and "type" not in params and params["q"] == ["fltr"]
