"""Fixtures shared by every test module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dashboard import Dashboard

# How long the shared full dashboard lists ended operations (seconds).
FULL_ENDED_TTL_SECONDS = 15

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
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


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots and logs from tests go (ignored by git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, object]:
    """pytest-playwright: launch Debian's Chromium with the flags this machine needs."""
    args: dict[str, object] = {"args": CHROMIUM_FLAGS, "headless": True}
    path = chromium_path()
    if path:
        args["executable_path"] = path
    return args


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The dashboard's backend alone (API, sampler, supervisor), once per module."""
    dashboard = Dashboard(tmp_path_factory.mktemp("backend"))
    dashboard.start()
    yield dashboard
    dashboard.stop()
    _fail_on_logged_errors(dashboard)


@pytest.fixture(scope="session")
def full_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The whole app (UI built, one port), once per test session.

    Ended operations stay listed ``FULL_ENDED_TTL_SECONDS`` only, so operations
    other tests ended leave soon and a section can be seen empty.
    """
    dashboard = Dashboard(
        tmp_path_factory.mktemp("full"),
        full=True,
        env={"DGX_SPARK_ENDED_TTL_SECONDS": str(FULL_ENDED_TTL_SECONDS)},
    )
    dashboard.start()
    yield dashboard
    dashboard.stop()
    shutil.copy(dashboard.log_path, ARTIFACTS / "dashboard-full.log") if ARTIFACTS.exists() else None
    _fail_on_logged_errors(dashboard)


def _fail_on_logged_errors(dashboard: Dashboard) -> None:
    """A dashboard that logged a traceback fails the module that ran it."""
    text = dashboard.log_tail(200_000)
    if "Traceback (most recent call last)" in text:
        pytest.fail(f"the dashboard logged an error:\n{text[-6000:]}")
