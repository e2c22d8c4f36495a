"""Runs through the REST API of the real backend: Restart, the stop signal, restart policies, and
Stop / Start again / Restart clicked in every order and at every speed.

The stop grace is 2 s here, so gaps of 0, 1 and 3 s fall inside and outside it; the same
clicks with 11 s gaps under the default 10 s grace are in tests/test_run_control_default_grace.py.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.dashboard import UNTHROTTLED, Dashboard, wait_until

GRACE = 2
# The module-scoped `backend` fixture (conftest) runs with these.
BACKEND_ENV = {**UNTHROTTLED, "DGX_SPARK_STOP_GRACE_SECONDS": str(GRACE)}

SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM', flush=True))\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.1)\n"
)
CHECKPOINTER = (
    "import sys, time\n"
    "print('ready', flush=True)\n"
    "try:\n"
    "    while True: time.sleep(0.1)\n"
    "except KeyboardInterrupt:\n"
    "    print('checkpoint saved', flush=True)\n"
    "    sys.exit(0)\n"
)
TERMINAL = ("stopped", "failed", "completed")
# Poll every 0.2 s: up to 30 cases poll the one backend at once.
POLL = 0.2


def find(backend: Dashboard, op_id: str) -> dict[str, Any] | None:
    return next((op for op in backend.operations() if op["id"] == op_id), None)


def wait_op(backend: Dashboard, op_id: str, check: Any, timeout: float = 90.0) -> dict[str, Any]:
    try:
        return wait_until(lambda: (op := find(backend, op_id)) is not None and check(op) and op, timeout, POLL)
    except AssertionError:
        raise AssertionError(f"{op_id}: {find(backend, op_id)}\n{backend.log_tail(3000)}") from None


def log_lines(backend: Dashboard, op_id: str) -> list[str]:
    status, body = backend.request("GET", f"/api/dgx/operations/{op_id}/logs?tail=2000")
    assert status == 200, body
    return body["data"]["lines"]


def launch(backend: Dashboard, folder: Path, code: str, **extra: Any) -> str:
    path = folder / f"job{time.monotonic_ns()}.py"
    path.write_text(code)
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "name": path.stem, "type": "job", "command": [sys.executable, str(path)], **extra})
    assert status == 201, body
    return body["data"]["id"]


def terminal_events(backend: Dashboard, op_id: str) -> list[tuple[int, str]]:
    status, body = backend.request("GET", f"/api/dgx/events?operation_id={op_id}&limit=1000")
    assert status == 200, body
    return sorted((e["run"], e["kind"]) for e in body["data"] if e["kind"] in TERMINAL)


def test_restart_route_starts_a_new_run(backend: Dashboard, tmp_path: Path) -> None:
    op_id = launch(backend, tmp_path, SLEEPER)
    first = wait_op(backend, op_id, lambda op: op["status"] == "active" and op["pid"])
    assert (first["run"], first["runs"], first["restarts"]) == (1, 1, 0)
    status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/restart", {"signal": "hup"})
    assert status == 422 and body["success"] is False and body["error"]["field"] == "signal"
    status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/restart", {"force": True})
    assert status == 422 and body["success"] is False
    status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/restart")
    assert status == 200 and body["data"]["id"] == op_id, body
    second = wait_op(backend, op_id, lambda op: op["run"] == 2 and op["status"] == "active" and op["pid"])
    assert second["pid"] != first["pid"] and second["runs"] == 2 and second["restarts"] == 0
    assert wait_until(lambda: terminal_events(backend, op_id) == [(1, "stopped")], 30)
    assert sum(line.startswith("ready") for line in log_lines(backend, op_id)) == 2
    # Only running launched operations restart.
    assert backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"signal": "kill"})[0] == 200
    wait_op(backend, op_id, lambda op: op["status"] == "stopped")
    status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/restart", {})
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = backend.authed("POST", "/api/dgx/operations/launch-000000000000/restart", {})
    assert status == 404 and body["success"] is False


def test_stop_with_interrupt_lets_the_job_checkpoint(backend: Dashboard, tmp_path: Path) -> None:
    op_id = launch(backend, tmp_path, CHECKPOINTER)
    wait_until(lambda: "ready" in log_lines(backend, op_id), 60)
    status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"signal": "usr1"})
    assert status == 422 and body["error"]["field"] == "signal"
    status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"signal": "int"})
    assert status == 200, body
    ended = wait_op(backend, op_id, lambda op: op["status"] in ("stopped", "failed"))
    assert "checkpoint saved" in log_lines(backend, op_id)
    assert ended["status"] == "stopped" and ended["exit_code"] == 0 and ended["outcome"] == "stopped"
    assert ended["exit_reason"] == "stopped by the user (SIGINT; exit code 0)"
    assert ended["outcome_source"] == "runner"


def test_restart_policy_restarts_three_times_then_gives_up(backend: Dashboard, tmp_path: Path) -> None:
    op_id = launch(backend, tmp_path, "import sys\nprint('crashing', flush=True)\nsys.exit(3)\n",
                   restart={"policy": "on-failure", "max_restarts": 3, "backoff_seconds": 0.5})
    final = wait_op(backend, op_id, lambda op: op["run"] == 4 and op["status"] == "failed", timeout=120)
    assert (final["runs"], final["restarts"], final["exit_code"], final["outcome"]) == (4, 3, 3, "failed")
    assert final["exit_reason"] == "exit code 3; gave up after 3 restarts"
    assert final["outcome_source"] == "runner"
    # One failed event per run; the last one names the count.
    assert wait_until(lambda: terminal_events(backend, op_id) == [(r, "failed") for r in (1, 2, 3, 4)], 30)
    assert sum(line == "crashing" for line in log_lines(backend, op_id)) == 4


@pytest.mark.parametrize(
    ("restart", "field"),
    [
        ({"policy": "sometimes"}, "restart.policy"),
        ({"policy": "always", "max_restarts": -1}, "restart.max_restarts"),
        ({"policy": "always", "max_restarts": "3"}, "restart.max_restarts"),
        ({"policy": "on-failure", "backoff_seconds": 1e12}, "restart.backoff_seconds"),
        ({"policy": "always", "retries": 2}, "restart.retries"),
        (["always"], "restart"),
    ],
)
def test_bad_restart_policy_is_422(backend: Dashboard, restart: Any, field: str) -> None:
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "command": [sys.executable, "-c", "pass"], "restart": restart})
    assert status == 422 and body["success"] is False and body["error"]["field"] == field, body


def test_multi_line_python_c_and_env_value(backend: Dashboard) -> None:
    code = "import os\nfor i in range(2):\n    print(f'line {i}')\nprint(os.environ['DGX_SPARK_USER_MOTD'])\n"
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "name": "multi-line", "type": "program", "command": [sys.executable, "-c", code],
        "env": {"DGX_SPARK_USER_MOTD": "hello\nworld"}})
    assert status == 201, body
    op_id = body["data"]["id"]
    ended = wait_op(backend, op_id, lambda op: op["status"] in ("stopped", "failed"))
    assert ended["status"] == "stopped" and ended["exit_code"] == 0 and ended["outcome"] == "completed"
    lines = log_lines(backend, op_id)
    assert lines[lines.index("line 0"):lines.index("line 0") + 4] == ["line 0", "line 1", "hello", "world"]
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "name": "two\nlines", "command": [sys.executable, "-c", "pass"]})
    assert status == 422 and body["error"]["field"] == "name"
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "command": [sys.executable, "-c", "print(1)\x00"]})
    assert status == 422 and body["error"]["field"] == "command[2]"


ORDERS = list(itertools.permutations(("stop", "start", "restart")))
GAPS = (0, 1, 3)
CASES = [(order, gap, "prompt") for order in ORDERS for gap in GAPS] + [
    (order, gap, "stubborn") for order in ORDERS for gap in (0, 3)
]


def _click_through(backend: Dashboard, folder: Path, order: tuple[str, ...], gap: int, kind: str,
                   grace: float = GRACE) -> str:
    """Launch, then click ``order`` with ``gap`` seconds between; check every run's one terminal outcome.

    ``grace`` is the backend's stop grace period (its SIGKILL timers have fired ``grace + 1`` s after the last click).
    """
    op_id = launch(backend, folder, SLEEPER if kind == "prompt" else STUBBORN)
    wait_until(lambda: "ready" in log_lines(backend, op_id), 90, POLL)
    answers: list[tuple[str, int]] = []
    for index, action in enumerate(order):
        if index:
            time.sleep(gap)
        status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/{action}", {})
        assert status in (200, 409), (action, status, body)
        answers.append((action, status))
    # What the last accepted action asked for: stop -> ended; start / restart -> a live run.
    accepted = [action for action, status in answers if status == 200]
    assert accepted, answers  # the first click is on a live operation: stop or restart is accepted
    want_live = accepted[-1] != "stop"
    time.sleep(grace + 1)  # every grace timer of the sequence has fired by now
    if want_live:
        final = wait_op(backend, op_id, lambda op: op["status"] == "active" and op["pid"] and not op["stop_requested"])
    else:
        final = wait_op(backend, op_id, lambda op: op["status"] in ("stopped", "failed"))
    ended_runs = final["runs"] - (1 if want_live else 0)
    expected = [(run, "stopped") for run in range(1, ended_runs + 1)]
    try:
        wait_until(lambda: terminal_events(backend, op_id) == expected, 30, POLL)
    except AssertionError:
        raise AssertionError(f"{order} gap {gap} {kind}: answers {answers}, final {final}, "
                             f"events {terminal_events(backend, op_id)}") from None
    if want_live:  # the surviving run is alive and stops on its own Stop
        status, body = backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"signal": "kill"})
        assert status == 200, body
        wait_op(backend, op_id, lambda op: op["status"] in ("stopped", "failed"))
    else:
        assert final["outcome"] == "stopped" and final["exit_reason"].startswith("stopped by the user"), final
    return op_id


def click_through_all(backend: Dashboard, folder: Path, cases: list[tuple[Any, ...]], workers: int,
                      grace: float = GRACE) -> list[str]:
    """``_click_through`` every case at once; the failures, each named by its case."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_click_through, backend, folder, *case, grace=grace): case for case in cases}
        failures = []
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - collect every failing case
                failures.append(f"{futures[future]}: {exc}")
    return failures


def test_stop_start_restart_in_every_order_and_speed(backend: Dashboard, tmp_path: Path) -> None:
    failures = click_through_all(backend, tmp_path, CASES, workers=len(CASES))
    assert not failures, "\n\n".join(failures)
