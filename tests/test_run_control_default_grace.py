"""Stop / Start again / Restart clicked in every order with 11 s between, under the default 10 s grace.

Every gap is just past the grace period, so each click lands when the previous stop's SIGKILL
timer has fired: it must act on its own run only. Each run ends with exactly one terminal event
and the right outcome (the checks are ``_click_through``'s, shared with the 0 / 1 / 3 s cases).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from dgx_spark.settings import load_settings
from tests.support.dashboard import UNTHROTTLED, Dashboard
from tests.test_run_control_api import click_through_all

# The module-scoped `backend` fixture (conftest) runs with these: the default stop grace.
BACKEND_ENV = dict(UNTHROTTLED)
DEFAULT_GRACE = 10.0
GAP = 11
CASES = [(order, GAP, kind) for order in itertools.permutations(("stop", "start", "restart"))
         for kind in ("prompt", "stubborn")]


def test_the_backend_runs_with_the_default_ten_second_grace(
    backend: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "DGX_SPARK_STOP_GRACE_SECONDS" not in backend.environment()
    monkeypatch.delenv("DGX_SPARK_STOP_GRACE_SECONDS", raising=False)
    assert load_settings().supervisor.stop_grace_seconds == DEFAULT_GRACE


def test_stop_start_restart_in_every_order_11_s_apart(backend: Dashboard, tmp_path: Path) -> None:
    failures = click_through_all(backend, tmp_path, CASES, workers=len(CASES), grace=DEFAULT_GRACE)
    assert not failures, "\n\n".join(failures)
