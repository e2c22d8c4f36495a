"""In the browser: the printed one-time login link logs in with an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.dashboard import Dashboard, wait_until


def test_one_time_login_link_in_the_browser(full_dashboard: Dashboard, page: Page) -> None:
    page.set_default_timeout(60_000)
    url = wait_until(
        lambda: re.findall(rf"http://127\.0\.0\.1:{full_dashboard.port}/login\?token=\S+",
                           full_dashboard.log_tail(500_000)),
        timeout=30,
        message="the dashboard printed no login link",
    )[0]
    page.goto(url)
    page.wait_for_url(f"{full_dashboard.url}/")
    expect(page.locator("#title")).to_be_visible()
    cookies = [c for c in page.context.cookies() if c["name"] == "dgx_spark_session"]
    assert len(cookies) == 1
    assert cookies[0]["httpOnly"] is True
    assert cookies[0]["sameSite"] == "Strict"
    # Scripts in the page cannot read it.
    assert "dgx_spark_session" not in page.evaluate("document.cookie")

    # The link works once: a second visit shows the login page with an error.
    page.context.clear_cookies()
    page.goto(url)
    expect(page.locator("#login-error")).to_contain_text("already used")
    expect(page.locator("#login-form")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "dgx_spark_session"]
