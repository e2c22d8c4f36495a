"""Runs of launched operations, on the supervisor itself (real processes, real SQLite, no web server).

Run identity (a stop's timer acts on its own run only), restart policies, the Restart
action, the stop signal choice, multi-line argv and the exit code recovered from the logs.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import SampleContext, Sampler
from dgx_spark.database import make_engine, migrate
from dgx_spark.events.detector import EventDetector, Transition
from dgx_spark.supervisor import supervisor as supervisor_module
from dgx_spark.supervisor.models import LaunchedOperation
from dgx_spark.supervisor.restart import MAX_BACKOFF_SECONDS, PolicyError, RestartPolicy, parse_policy
from dgx_spark.supervisor.runner import EXIT_FILE, recover_exit
from dgx_spark.supervisor.supervisor import ControlError, Supervisor, SupervisorConfig
from tests.support.dashboard import reap_launched, wait_until

GRACE = 2.0
# Ignores SIGTERM (so only the grace period's SIGKILL ends it); says when it is ready.
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM', flush=True))\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.1)\n"
)
# Checkpoints on SIGINT and exits 0.
CHECKPOINTER = (
    "import sys, time\n"
    "print('ready', flush=True)\n"
    "try:\n"
    "    while True: time.sleep(0.1)\n"
    "except KeyboardInterrupt:\n"
    "    print('checkpoint saved', flush=True)\n"
    "    sys.exit(0)\n"
)


def config_for(tmp_path: Path) -> tuple[Any, SupervisorConfig]:
    """A fresh, migrated SQLite database and the supervisor settings of these tests."""
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'dgx.db'}")
    migrate(engine)
    return engine, SupervisorConfig(data_dir=tmp_path / "data", base_url="http://127.0.0.1:1", stop_grace=GRACE)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    """A supervisor on a fresh, migrated SQLite database (no sampler: tests call ``sample``)."""
    engine, config = config_for(tmp_path)
    sup = Supervisor(config, engine)
    sup.load()
    yield sup
    sup.close()
    reap_launched(tmp_path / "data")


@dataclasses.dataclass
class Watched:
    """A supervisor inside a running sampler whose last probe is the events detector, as in the app."""

    supervisor: Supervisor
    sampler: Sampler
    events: list[Transition]

    def current(self, op_id: str) -> Operation:
        """The operation in a snapshot taken after this call."""
        seen = self.sampler.latest.sequence
        self.sampler.request_sample()
        snapshot = self.sampler.wait_for(seen, 30)
        found = snapshot.find(op_id)
        assert found is not None, f"{op_id} is not in snapshot {snapshot.sequence}"
        return found

    def ends(self, op_id: str) -> list[tuple[int, str]]:
        """(run, kind) of every end event of the operation, in order: what history and webhooks get."""
        return [(t.operation.run, t.kind) for t in self.events
                if t.operation.id == op_id and t.kind in ("completed", "failed", "stopped")]


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    """A supervisor sampled by a real sampler (every 0.2 s) with the events detector after it."""
    engine, config = config_for(tmp_path)
    samplers: list[Sampler] = []  # the supervisor asks the sampler made just below
    sup = Supervisor(config, engine, snapshot=lambda: samplers[0].latest,
                     on_change=lambda: samplers[0].request_sample() if samplers else None)
    events: list[Transition] = []
    samplers.append(Sampler(lambda _now: [], probes=[sup, EventDetector(events.append)], interval=0.2))
    sup.load()
    samplers[0].start()
    yield Watched(sup, samplers[0], events)
    samplers[0].stop()
    sup.close()
    reap_launched(tmp_path / "data")


def current(sup: Supervisor | Watched, op_id: str) -> Operation:
    """The operation as a snapshot shows it."""
    if isinstance(sup, Watched):
        return sup.current(op_id)
    ctx = SampleContext(now=time.time(), operations=[])
    sup.sample(ctx)
    return next(op for op in ctx.operations if op.id == op_id)


def wait_op(sup: Supervisor | Watched, op_id: str, check: Any, timeout: float = 60.0) -> Operation:
    """Sample until ``check(op)`` holds."""
    try:
        return wait_until(lambda: (op := current(sup, op_id)) and check(op) and op, timeout)
    except AssertionError:
        raise AssertionError(f"{op_id}: {current(sup, op_id)}") from None


def log_text(sup: Supervisor | Watched, op_id: str) -> str:
    sup = sup.supervisor if isinstance(sup, Watched) else sup
    path = sup.log_path(op_id)
    return path.read_text(errors="replace") if path.exists() else ""


def launch_script(sup: Supervisor | Watched, folder: Path, code: str, **extra: Any) -> str:
    sup = sup.supervisor if isinstance(sup, Watched) else sup
    path = folder / f"script{time.monotonic_ns()}.py"
    path.write_text(code)
    op = sup.launch({"template": "custom", "name": "t", "type": "job", "command": [sys.executable, str(path)],
                     **extra})
    return op.id


def test_old_stop_timer_never_touches_the_new_run(watched: Watched, tmp_path: Path) -> None:
    """Launch, Stop, Start again within the grace: the first stop's SIGKILL is not for run 2."""
    supervisor = watched.supervisor
    op_id = launch_script(supervisor, tmp_path, "import time\nprint('ready', flush=True)\ntime.sleep(300)\n")
    wait_op(watched, op_id, lambda op: op.status == "active")
    supervisor.stop(op_id)  # SIGTERM ends it at once; its timer fires GRACE seconds later
    first = wait_op(watched, op_id, lambda op: not op.is_live)
    assert first.run == 1 and first.outcome == "stopped" and first.exit_reason == "stopped by the user (SIGTERM)"
    again = supervisor.start_again(op_id)
    assert again.run == 2 and again.runs == 2
    second = wait_op(watched, op_id, lambda op: op.status == "active" and op.pid is not None)
    pid = second.pid
    time.sleep(GRACE + 1)  # run 1's timer has fired by now: run 2 must still be alive
    assert current(watched, op_id).status == "active" and current(watched, op_id).pid == pid
    supervisor.stop(op_id, signal_name="term")
    ended = wait_op(watched, op_id, lambda op: not op.is_live)
    assert ended.run == 2 and ended.exit_code == -signal.SIGTERM and ended.outcome == "stopped"
    ends = watched.ends(op_id)
    assert ends == [(1, "stopped"), (2, "stopped")]


def test_stop_in_the_old_grace_window_stops_the_new_run(supervisor: Supervisor, tmp_path: Path) -> None:
    """The stubborn run 1 gets SIGKILL (grace), run 2 is stopped by its own Stop, each once."""
    op_id = launch_script(supervisor, tmp_path, STUBBORN)
    wait_until(lambda: "ready" in log_text(supervisor, op_id), 60)
    supervisor.stop(op_id)
    with pytest.raises(ControlError) as refused:
        supervisor.stop(op_id)  # the same run, already being stopped
    assert refused.value.kind == "conflict"
    first = wait_op(supervisor, op_id, lambda op: not op.is_live, timeout=GRACE + 60)
    assert first.exit_code == -signal.SIGKILL
    assert first.exit_reason == "stopped by the user (SIGTERM, then SIGKILL)"
    supervisor.start_again(op_id)
    wait_until(lambda: log_text(supervisor, op_id).count("ready") == 2, 60)
    supervisor.stop(op_id)  # accepted: a new run, a new stop
    second = wait_op(supervisor, op_id, lambda op: not op.is_live, timeout=GRACE + 60)
    assert second.run == 2 and second.exit_code == -signal.SIGKILL and second.outcome == "stopped"


def test_interrupt_lets_the_script_checkpoint(supervisor: Supervisor, tmp_path: Path) -> None:
    op_id = launch_script(supervisor, tmp_path, CHECKPOINTER)
    wait_until(lambda: "ready" in log_text(supervisor, op_id), 60)
    with pytest.raises(ControlError) as bad:
        supervisor.stop(op_id, signal_name="hup")
    assert bad.value.kind == "invalid" and bad.value.field == "signal"
    supervisor.stop(op_id, signal_name="int")
    ended = wait_op(supervisor, op_id, lambda op: not op.is_live)
    assert "checkpoint saved" in log_text(supervisor, op_id)
    assert ended.status == "stopped" and ended.exit_code == 0 and ended.outcome == "stopped"
    assert ended.exit_reason == "stopped by the user (SIGINT; exit code 0)" and ended.outcome_source == "runner"


def test_restart_policy_restarts_three_times_then_gives_up(watched: Watched, tmp_path: Path) -> None:
    supervisor = watched.supervisor
    op_id = launch_script(
        supervisor, tmp_path, "import sys\nprint('crashing', flush=True)\nsys.exit(3)\n",
        restart={"policy": "on-failure", "max_restarts": 3, "backoff_seconds": 0.2},
    )
    final = wait_op(watched, op_id, lambda op: op.run == 4 and not op.is_live, timeout=120)
    time.sleep(1.0)  # no fifth run comes
    final = current(watched, op_id)
    assert final.run == 4 and final.runs == 4 and final.restarts == 3
    assert final.status == "failed" and final.outcome == "failed" and final.exit_code == 3
    assert final.exit_reason == "exit code 3; gave up after 3 restarts"
    assert log_text(supervisor, op_id).count("crashing") == 4
    ends = watched.ends(op_id)
    assert ends == [(1, "failed"), (2, "failed"), (3, "failed"), (4, "failed")]
    # The wait doubles with each restart of the streak (S x 2^k); the last failed event names the count.
    failed = [t for t in watched.events if t.operation.id == op_id and t.kind == "failed"]
    assert [t.operation.description for t in failed] == [
        "exit code 3; restarting in 0.2 s (restart 1 of 3)",
        "exit code 3; restarting in 0.4 s (restart 2 of 3)",
        "exit code 3; restarting in 0.8 s (restart 3 of 3)",
        "exit code 3; gave up after 3 restarts",
    ]
    assert failed[-1].detail == "failed with exit code 3; gave up after 3 restarts"
    supervisor.flush()
    with Session(supervisor.engine) as session:
        row = session.get(LaunchedOperation, op_id)
        assert row.run == 4 and row.restarts == 3 and row.outcome == "failed" and row.restart_due_at is None
        assert json.loads(row.restart_json)["policy"] == "on-failure"


def test_a_healthy_run_resets_the_backoff_and_the_restart_count(
    watched: Watched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs that stayed up the healthy period start the streak again; a quick failure then gives up."""
    monkeypatch.setattr(supervisor_module, "HEALTHY_SECONDS", 3.0)
    counter = tmp_path / "runs.txt"
    # Runs 1 and 2 stay up past the (shortened) healthy period, then fail; run 3 fails at once.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        f"counter = Path({str(counter)!r})\n"
        "run = int(counter.read_text() or 0) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(run))\n"
        "print(f'run {run}', flush=True)\n"
        "if run < 3:\n"
        "    time.sleep(4.5)\n"
        "sys.exit(3)\n"
    )
    op_id = launch_script(watched, tmp_path, code,
                          restart={"policy": "on-failure", "max_restarts": 1, "backoff_seconds": 0.2})
    final = wait_op(watched, op_id, lambda op: op.run == 3 and not op.is_live, timeout=120)
    time.sleep(1.0)  # no fourth run comes
    final = current(watched, op_id)
    # Without the reset, max_restarts 1 would give up after run 2.
    assert (final.run, final.runs, final.restarts, final.outcome) == (3, 3, 2, "failed")
    assert final.exit_reason == "exit code 3; gave up after 1 restart"
    failed = [t for t in watched.events if t.operation.id == op_id and t.kind == "failed"]
    # Each healthy run starts the backoff from S again (never 0.4 s) and counts from restart 1.
    assert [t.operation.description for t in failed] == [
        "exit code 3; restarting in 0.2 s (restart 1 of 1)",
        "exit code 3; restarting in 0.2 s (restart 1 of 1)",
        "exit code 3; gave up after 1 restart",
    ]
    assert watched.ends(op_id) == [(1, "failed"), (2, "failed"), (3, "failed")]


def test_restart_policy_always_and_a_stop_cancels_the_next_run(supervisor: Supervisor, tmp_path: Path) -> None:
    op_id = launch_script(supervisor, tmp_path, "print('done', flush=True)\n",
                          restart={"policy": "always", "max_restarts": 10, "backoff_seconds": 30})
    ended = wait_op(supervisor, op_id, lambda op: not op.is_live)
    assert ended.outcome == "completed" and ended.run == 1 and "restarting in 30 s" in (ended.description or "")
    supervisor.stop(op_id)  # cancels the scheduled run 2
    cancelled = current(supervisor, op_id)
    assert cancelled.run == 1 and "restart cancelled by the user" in (cancelled.description or "")
    with pytest.raises(ControlError):
        supervisor.stop(op_id)  # nothing left to stop or cancel
    # A user's stop is never restarted by the policy.
    live_id = launch_script(supervisor, tmp_path, "import time\ntime.sleep(300)\n",
                            restart={"policy": "always", "backoff_seconds": 0})
    wait_op(supervisor, live_id, lambda op: op.status == "active" and op.pid is not None)
    supervisor.stop(live_id)
    stopped = wait_op(supervisor, live_id, lambda op: not op.is_live)
    time.sleep(0.5)
    assert current(supervisor, live_id).run == 1 and stopped.outcome == "stopped"


def test_restart_action_starts_a_new_run(watched: Watched, tmp_path: Path) -> None:
    supervisor = watched.supervisor
    # It takes a second to end on SIGTERM (as a job saving a checkpoint): the restart is still under way
    # when it is asked again.
    op_id = launch_script(
        supervisor, tmp_path,
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1), sys.exit(0)))\n"
        "print('ready', flush=True)\ntime.sleep(300)\n",
    )
    wait_until(lambda: "ready" in log_text(supervisor, op_id), 60)
    first_pid = current(watched, op_id).pid
    supervisor.restart(op_id)
    with pytest.raises(ControlError) as twice:
        supervisor.restart(op_id)
    assert twice.value.kind == "conflict"
    second = wait_op(watched, op_id, lambda op: op.run == 2 and op.status == "active" and op.pid is not None)
    assert second.pid != first_pid and second.restarts == 0
    ends = watched.ends(op_id)
    assert ends == [(1, "stopped")]
    supervisor.flush()
    with Session(supervisor.engine) as session:
        assert session.get(LaunchedOperation, op_id).run == 2
    # Restart of an ended operation is refused: that is "Start again".
    supervisor.stop(op_id, force=True)
    wait_op(watched, op_id, lambda op: not op.is_live)
    with pytest.raises(ControlError) as ended:
        supervisor.restart(op_id)
    assert ended.value.kind == "conflict"


def test_stop_during_a_pending_restart_wins(supervisor: Supervisor, tmp_path: Path) -> None:
    op_id = launch_script(supervisor, tmp_path, STUBBORN)
    wait_until(lambda: "ready" in log_text(supervisor, op_id), 60)
    supervisor.restart(op_id)  # SIGTERM is ignored: the run lives until the grace's SIGKILL
    supervisor.stop(op_id)  # turns the pending restart into a plain stop (200, not 409)
    ended = wait_op(supervisor, op_id, lambda op: not op.is_live, timeout=GRACE + 60)
    time.sleep(0.5)
    assert current(supervisor, op_id).run == 1 and ended.outcome == "stopped"


def test_multi_line_python_c(supervisor: Supervisor, tmp_path: Path) -> None:
    code = "import os\nfor i in range(3):\n    print(f'line {i}')\nprint(os.environ['DGX_SPARK_USER_NOTE'])\n"
    op = supervisor.launch({"template": "custom", "name": "multi", "type": "program",
                            "command": [sys.executable, "-c", code],
                            "env": {"DGX_SPARK_USER_NOTE": "first\nsecond"}})
    ended = wait_op(supervisor, op.id, lambda o: not o.is_live)
    assert ended.outcome == "completed" and ended.exit_code == 0
    text = log_text(supervisor, op.id)
    assert "line 2\nfirst\nsecond\n" in text
    with pytest.raises(ControlError) as named:
        supervisor.launch({"template": "custom", "name": "a\nb", "command": [sys.executable, "-c", "pass"]})
    assert named.value.field == "name"
    with pytest.raises(ControlError) as nul:
        supervisor.launch({"template": "custom", "command": [sys.executable, "-c", "pass\x00"]})
    assert nul.value.field == "command[2]"


def test_truncated_exit_file_exit_code_from_the_runner_log(supervisor: Supervisor, tmp_path: Path) -> None:
    op_id = launch_script(supervisor, tmp_path, "import sys, time\ntime.sleep(1)\nsys.exit(7)\n")
    exit_file = supervisor.runs_dir / op_id / EXIT_FILE
    # Take the records in hand before the run ends: reconcile must not see the good exit.json.
    with supervisor._lock:
        wait_until(exit_file.exists, 60)
        whole = exit_file.read_text()
        exit_file.write_text(whole[: len(whole) // 2])  # truncated
        ended = current(supervisor, op_id)
    assert ended.status == "failed" and ended.exit_code == 7
    assert ended.exit_reason == "exit code 7" and ended.outcome_source == "log"


def test_recover_exit_reads_either_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = tmp_path / "op.log"
    log.write_text(
        "[dgx-spark 2026-01-01 00:00:00] run 1 starting: python x.py\nout\n"
        "[dgx-spark 2026-01-01 00:00:01] exited: code 0\n"
        "[dgx-spark 2026-01-01 00:00:02] run 2 starting: python x.py\n"
        "Traceback\n[dgx-spark 2026-01-01 00:00:03] exited: killed by SIGKILL\n"
    )
    assert recover_exit(run_dir, [log], 2) == {"exit_code": -9, "signal": "SIGKILL"}
    assert recover_exit(run_dir, [log], 3) is None  # run 3 never wrote its start: unknown
    (run_dir / "runner.log").write_text('noise\nexit {"run": 3, "exit_code": 4, "signal": null}\n')
    assert recover_exit(run_dir, [log], 3)["exit_code"] == 4


def test_restart_policy_validation() -> None:
    assert parse_policy(None) == RestartPolicy()
    policy = parse_policy({"policy": "on-failure", "max_restarts": 2, "backoff_seconds": 1.5})
    assert [policy.delay(k) for k in range(3)] == [1.5, 3.0, 6.0] and policy.delay(40) == MAX_BACKOFF_SECONDS
    assert policy.wants_restart("failed") and not policy.wants_restart("completed")
    assert parse_policy({"policy": "always"}).wants_restart("completed")
    assert not parse_policy({"policy": "always"}).wants_restart("stopped")
    for raw, field in [
        ({"policy": "sometimes"}, "restart.policy"),
        ({"policy": "always", "max_restarts": -1}, "restart.max_restarts"),
        ({"policy": "always", "max_restarts": 1.5}, "restart.max_restarts"),
        ({"policy": "always", "max_restarts": True}, "restart.max_restarts"),
        ({"policy": "always", "backoff_seconds": float("nan")}, "restart.backoff_seconds"),
        ({"policy": "always", "backoff_seconds": 1e9}, "restart.backoff_seconds"),
        ({"policy": "always", "retries": 1}, "restart.retries"),
        ([1], "restart"),
    ]:
        with pytest.raises(PolicyError) as exc:
            parse_policy(raw)
        assert exc.value.field == field, raw


def test_a_scheduled_run_survives_a_dashboard_restart(tmp_path: Path) -> None:
    """The next run is due when the supervisor closes: the next supervisor on the same data starts it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'dgx.db'}")
    migrate(engine)
    config = SupervisorConfig(data_dir=tmp_path / "data", base_url="http://127.0.0.1:1", stop_grace=GRACE)
    first = Supervisor(config, engine)
    first.load()
    second: Supervisor | None = None
    try:
        op_id = launch_script(first, tmp_path, "print('once', flush=True)\n",
                              restart={"policy": "always", "max_restarts": 2, "backoff_seconds": 3})
        ended = wait_op(first, op_id, lambda op: not op.is_live)
        assert ended.run == 1 and "restarting in 3 s" in (ended.description or "")
        first.close()  # its timer is cancelled; the due time is in the database
        second = Supervisor(config, engine)
        second.load()
        again = wait_op(second, op_id, lambda op: op.run == 2 and not op.is_live)
        assert again.restarts == 1 and current(first, op_id).run == 1  # the closed one started nothing
        assert log_text(second, op_id).count("once") == 2
    finally:
        if second is not None:
            second.close()
        reap_launched(tmp_path / "data")


def test_dialog_restart_fields_and_card_runs_text() -> None:
    from dgx_spark.collector.model import Operation as Op
    from dgx_spark.state.control import request_body
    from dgx_spark.state.view import runs_text

    body = request_body("custom", "n", {"command": "python3 -c pass"},
                        {"policy": "on-failure", "max_restarts": "3", "backoff_seconds": "0.5"})
    assert body["restart"] == {"policy": "on-failure", "max_restarts": 3, "backoff_seconds": 0.5}
    assert "restart" not in request_body("custom", "n", {"command": "python3 -c pass"}, {"policy": "no"})
    single = Op(id="launch-000000000001", type="job", name="x", status="active", source="launched")
    assert runs_text(single) == ""
    assert runs_text(single.replace(run=3, runs=3, restarts=2)) == "run 3 · 2 restarts"
    assert runs_text(single.replace(run=2, runs=2)) == "run 2"
