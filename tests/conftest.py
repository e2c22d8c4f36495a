"""Fixtures shared by every test module."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import CHROMIUM_FLAGS, chromium_path

# A run that starts from a clean checkout fails if it leaves `git status` changed.
from tests.support.clean_tree import pytest_sessionfinish as pytest_sessionfinish
from tests.support.clean_tree import pytest_sessionstart as pytest_sessionstart
from tests.support.dashboard import Dashboard, reap_launched, wait_until
from tests.support.fake_gpu import NO_GPU, write_scenario

# How long the shared full dashboard lists ended operations (seconds).
FULL_ENDED_TTL_SECONDS = 15
# The shared full dashboard runs the fake NVML (test hook) from this file in its folder:
# "no GPU" (like this machine) unless a test sets another scenario via ``full_dashboard_gpu``.
FULL_GPU_SCENARIO = "fake-nvml.json"
# Seconds at ~0 % GPU before an operation gets the "idle GPU" badge (only matters with a GPU).
FULL_IDLE_GPU_SECONDS = 2

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots and logs from tests go (ignored by git; private: logs hold login links)."""
    ARTIFACTS.mkdir(mode=0o700, exist_ok=True)
    ARTIFACTS.chmod(0o700)
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
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The dashboard's backend alone (API, sampler, supervisor), once per module.

    A module's ``BACKEND_ENV`` dict, if it has one, adds environment settings.
    Whatever the backend launched and left running is killed afterwards. Its data
    folder does not exist before: the app must create it.
    """
    data_dir = tmp_path_factory.mktemp("backend") / "data"
    dashboard = Dashboard(data_dir, env=getattr(request.module, "BACKEND_ENV", None))
    dashboard.start()
    yield dashboard
    dashboard.stop()
    reap_launched(dashboard.data_dir)
    _fail_on_logged_errors(dashboard)


@pytest.fixture(scope="session")
def full_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The whole app (UI built, one port), once per test session.

    Ended operations stay listed ``FULL_ENDED_TTL_SECONDS`` only, so operations
    other tests ended leave soon and a section can be seen empty. NVML is the
    fake with "no GPU" (on any machine); ``full_dashboard_gpu`` changes that for one test.
    """
    folder = tmp_path_factory.mktemp("full")
    scenario = folder / FULL_GPU_SCENARIO
    write_scenario(scenario, NO_GPU)
    dashboard = Dashboard(
        folder / "data",  # created by the app
        full=True,
        env={
            "DGX_SPARK_ENDED_TTL_SECONDS": str(FULL_ENDED_TTL_SECONDS),
            "DGX_SPARK_FAKE_NVML": str(scenario),
            "DGX_SPARK_IDLE_GPU_SECONDS": str(FULL_IDLE_GPU_SECONDS),
            # No container engine, on any machine: the header says so (tests/test_system_browser.py).
            "DGX_SPARK_DOCKER_HOST": str(folder / "docker.sock"),
        },
    )
    dashboard.start()
    yield dashboard
    dashboard.stop()
    shutil.copy(dashboard.log_path, ARTIFACTS / "dashboard-full.log") if ARTIFACTS.exists() else None
    _fail_on_logged_errors(dashboard)


@pytest.fixture
def full_dashboard_gpu(full_dashboard: Dashboard) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Set the fake GPU scenario of the shared full dashboard; back to "no GPU" afterwards."""
    scenario = full_dashboard.data_dir.parent / FULL_GPU_SCENARIO
    yield lambda value: write_scenario(scenario, value)
    write_scenario(scenario, NO_GPU)
    # The next test starts only once the app has let the GPU go again.
    wait_until(
        lambda: full_dashboard.get_json("/api/dgx/system")["data"]["gpu"]["available"] is False,
        timeout=60,
        message="the full dashboard did not go back to no GPU",
    )


def _fail_on_logged_errors(dashboard: Dashboard) -> None:
    """A dashboard that logged a traceback fails the module that ran it."""
    text = dashboard.log_tail(200_000)
    if "Traceback (most recent call last)" in text:
        pytest.fail(f"the dashboard logged an error:\n{text[-6000:]}")
