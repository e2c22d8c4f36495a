"""In the browser: after logging in, the session value is nowhere on disk, and Log out ends it."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support.dashboard import ROOT, TEST_TOKEN, Dashboard


def files_holding(needle: bytes, root: Path, since: float | None = None, skip: tuple[str, ...] = ()) -> list[Path]:
    """Files under ``root`` (changed since ``since``, if given) whose bytes contain ``needle``."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            path = Path(folder) / name
            try:
                if since is not None and path.stat().st_mtime < since:
                    continue
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def not_private(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) that is not a 0700 folder or a 0600 file; links aside."""
    wrong: list[str] = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        want = 0o700 if path.is_dir() else 0o600
        if stat.S_IMODE(path.stat().st_mode) != want:
            wrong.append(f"{path} {oct(stat.S_IMODE(path.stat().st_mode))}")
    return wrong


def files_changed_since(root: Path, since: float) -> list[Path]:
    """Files under ``root`` (JavaScript packages aside) changed since ``since``."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "node_modules"]
        for name in files:
            path = Path(folder) / name
            try:
                if not path.is_symlink() and path.stat().st_mtime >= since:
                    found.append(path)
            except OSError:
                continue
    return found


def test_session_value_never_reaches_disk(full_dashboard: Dashboard, page: Page) -> None:
    page.set_default_timeout(60_000)
    started = time.time() - 1
    page.goto(f"{full_dashboard.url}/")
    # The top bar's "Log in" leaves the app for the backend's login page (no client-side 404).
    page.click("#login-link")
    expect(page.locator("#login-form")).to_be_visible()
    page.fill("#token", TEST_TOKEN)
    with page.expect_response(lambda r: r.request.method == "POST" and "/login" in r.url) as answer:
        page.click("#login-submit")
    assert answer.value.status == 303, answer.value.text()
    page.wait_for_url(f"{full_dashboard.url}/")
    # The page's websocket knows this browser logged in (its state got the session's id, not the cookie).
    expect(page.locator("#login-status")).to_be_visible()
    cookies = [c for c in page.context.cookies() if c["name"] == "dgx_spark_session"]
    assert len(cookies) == 1
    value = cookies[0]["value"].encode()
    assert len(value) >= 43

    # Nothing the app or Reflex wrote holds the value: the data folder (database, sessions,
    # the dashboard's own log), Reflex's state folder, files the backend wrote under .web.
    assert not files_holding(value, full_dashboard.data_dir)
    assert value not in full_dashboard.log_path.read_bytes()
    states = ROOT / ".states"
    if states.exists():
        assert not files_holding(value, states)
    assert not files_holding(value, ROOT / ".web", since=started, skip=("node_modules",))

    # What is kept is private: 0600 files in 0700 folders (every file the app keeps, the database's
    # -wal/-shm and the sessions included), and what Reflex wrote under .web meanwhile has no
    # group/other bits (the app's umask).
    assert (full_dashboard.data_dir / "sessions.json").exists()
    assert not_private(full_dashboard.data_dir) == []
    assert [p for p in files_changed_since(ROOT / ".web", started) if stat.S_IMODE(p.stat().st_mode) & 0o077] == []
    if states.exists():
        assert stat.S_IMODE(states.stat().st_mode) == 0o700
        for path in states.rglob("*"):
            assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    # Log out ends the session on the server: the same value, replayed, opens nothing.
    page.click("#logout-link")
    expect(page.locator("#login-form")).to_be_visible()
    status, _ = full_dashboard.request("GET", "/api/dgx/audit", headers={"Cookie": f"dgx_spark_session={value.decode()}"})
    assert status == 401
    page.goto(f"{full_dashboard.url}/")
    expect(page.locator("#login-link")).to_be_visible()
