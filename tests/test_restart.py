"""The dashboard killed with SIGKILL and started again on the same data dir: nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tests.conftest import _fail_on_logged_errors
from tests.support.dashboard import Dashboard, reap_launched, wait_until

TICKER = """\
import sys, time
i = 0
while True:
    print(f'tick {i}', flush=True)
    i += 1
    time.sleep(0.3)
"""
WAITER = """\
import os, sys, time
flag = sys.argv[1]
print('waiting for the flag', flush=True)
while not os.path.exists(flag):
    time.sleep(0.1)
print('flag seen, exiting 7', file=sys.stderr, flush=True)
sys.exit(7)
"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _launch(dash: Dashboard, name: str, argv: list[str]) -> str:
    status, body = dash.authed("POST", "/api/dgx/operations",
                               {"template": "custom", "name": name, "type": "job", "command": argv})
    assert status == 201, body
    return body["data"]["id"]


def _op(dash: Dashboard, op_id: str) -> dict[str, Any] | None:
    return next((op for op in dash.operations() if op["id"] == op_id), None)


def _lines(dash: Dashboard, op_id: str) -> list[str]:
    return dash.request("GET", f"/api/dgx/operations/{op_id}/logs?tail=2000")[1]["data"]["lines"]


def test_sigkilled_dashboard_readopts_and_keeps_exit_codes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "ticker.py").write_text(TICKER)
    (tmp_path / "waiter.py").write_text(WAITER)
    flag = tmp_path / "flag"
    first = Dashboard(data, log_path=tmp_path / "first.log")
    first.start()
    group = None
    try:
        ticker = _launch(first, "ticker", [sys.executable, str(tmp_path / "ticker.py")])
        waiter = _launch(first, "waiter", [sys.executable, str(tmp_path / "waiter.py"), str(flag)])
        lost = _launch(first, "lost", [sys.executable, str(tmp_path / "ticker.py")])
        for op_id in (ticker, waiter, lost):
            wait_until(lambda op_id=op_id: (op := _op(first, op_id)) and op["status"] == "active", 60)
        pid = _op(first, ticker)["pid"]
        wait_until(lambda: any(x.startswith("tick 3") for x in _lines(first, ticker)), 60)
    except BaseException:
        first.stop(signal.SIGKILL)
        reap_launched(data)
        raise
    finally:
        group = first.process.pid if first.process else None
        first.stop(signal.SIGKILL)
    _fail_on_logged_errors(first)
    if group is not None:  # every process of the old dashboard is really gone
        wait_until(lambda: not _group_alive(group), 60)

    # While the dashboard is down: the waiter ends with 7 (its runner records it) ...
    flag.write_text("go")
    exit_file = data / "runs" / waiter / "exit.json"
    wait_until(exit_file.exists, 60)
    assert json.loads(exit_file.read_text())["exit_code"] == 7
    # ... and "lost" ran in an earlier boot: kill it and its runner without a trace, fake the boot id.
    runner = json.loads((data / "runs" / lost / "runner.json").read_text())
    os.kill(runner["runner_pid"], signal.SIGKILL)
    os.killpg(runner["pid"], signal.SIGKILL)
    with sqlite3.connect(data / "dgx_spark.db") as db:
        db.execute("UPDATE launched_operation SET boot_id = 'an-earlier-boot' WHERE id = ?", (lost,))
    assert os.kill(pid, 0) is None  # the ticker survived the dashboard's SIGKILL

    second = Dashboard(data, log_path=tmp_path / "second.log")
    second.start()
    try:
        readopted = wait_until(lambda: (op := _op(second, ticker)) and op["status"] == "active" and op, 60)
        assert readopted["pid"] == pid and readopted["source"] == "launched" and readopted["name"] == "ticker"
        seen = len(_lines(second, ticker))
        wait_until(lambda: len(_lines(second, ticker)) > seen + 2, 60)  # the log continues
        ended = wait_until(lambda: (op := _op(second, waiter)) and op["status"] == "failed" and op, 60)
        assert ended["exit_code"] == 7 and ended["ended_at"] is not None
        assert "flag seen, exiting 7" in _lines(second, waiter)
        gone = wait_until(lambda: (op := _op(second, lost)) and op["status"] == "failed" and op, 60)
        assert gone["exit_code"] is None and "restarted" in (gone["description"] or "")
        # The re-adopted operation can still be stopped, with its exit recorded by its runner.
        assert second.authed("POST", f"/api/dgx/operations/{ticker}/stop", {})[0] == 200
        stopped = wait_until(lambda: (op := _op(second, ticker)) and op["pid"] is not None
                             and op["status"] in ("stopped", "failed") and op, 60)
        assert stopped["status"] == "stopped" and stopped["exit_code"] == -signal.SIGTERM
    finally:
        second.stop()
        reap_launched(data)
    _fail_on_logged_errors(second)
    # The events tables, the one transition log: the end seen by the second dashboard, with its code.
    with sqlite3.connect(data / "dgx_spark.db") as db:
        ends = db.execute(
            "SELECT run, kind, exit_code FROM dgx_event WHERE operation_id = ?"
            " AND kind IN ('completed', 'failed', 'stopped') ORDER BY id",
            (waiter,),
        ).fetchall()
        history = db.execute("SELECT run, status, exit_code FROM dgx_history WHERE operation_id = ?",
                             (waiter,)).fetchall()
    assert ends == [(1, "failed", 7)] and history == [(1, "failed", 7)]
