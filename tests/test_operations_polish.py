"""The tab's smaller points without a browser: the ended/live split of the tab's view, a
distributed launcher's title, and the usual docs addresses leading to the API's.

The launcher test runs real processes through the real discovery; the redirects are
asked of the real backend.
"""

from __future__ import annotations

import http.client
import sys
import time
from pathlib import Path

from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.model import Operation, Snapshot
from dgx_spark.collector.query import OperationQuery
from dgx_spark.collector.rules import build_table
from dgx_spark.state.tab_view import tab_view
from dgx_spark.state.view import SECTIONS
from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until

NOW = time.time()


def _op(op_id: str, op_type: str, status: str, started: float, ended: float | None = None) -> Operation:
    return Operation(id=op_id, type=op_type, name=op_id, status=status, pid=None,  # type: ignore[arg-type]
                     started_at_ts=NOW - started, ended_at_ts=None if ended is None else NOW - ended)


def test_ended_operations_are_apart_and_counts_count_live_ones() -> None:
    snapshot = Snapshot(sequence=10**9, taken_at=NOW, operations=(
        _op("srv-live", "server", "running", 300),
        _op("srv-old-end", "server", "stopped", 600, ended=500),
        _op("srv-new-end", "server", "failed", 400, ended=10),
        _op("job-live", "job", "active", 100),
        _op("prg-end", "program", "stopped", 50, ended=40),
    ))
    view = tab_view(snapshot, "polish.test", OperationQuery())
    live = {name: [v.id for v in view.live[i]] for i, name in enumerate(SECTIONS)}
    ended = {name: [v.id for v in view.ended[i]] for i, name in enumerate(SECTIONS)}
    assert live == {"servers": ["srv-live"], "jobs": ["job-live"], "programs": []}
    # Newest end first in the "Recently ended" strip.
    assert ended == {"servers": ["srv-new-end", "srv-old-end"], "jobs": [], "programs": ["prg-end"]}
    assert view.counts == (1, 1, 0) and view.ended_count == 3 and view.running_count == 2
    assert all(v.ended_at.endswith("Z") for part in view.ended for v in part)
    assert all(v.ended_at == "" for part in view.live for v in part)


LAUNCHER = """\
#!{python}
import subprocess, sys, os
workers = int(sys.argv[2])
procs = [subprocess.Popen([sys.executable, sys.argv[3], str(rank)]) for rank in range(workers)]
open(os.environ["WORKLOAD_READY"], "w").close()
for proc in procs:
    proc.wait()
"""
TRAIN = """
import time
while True:
    time.sleep(1)
"""


def test_a_torchrun_job_says_torchrun_and_its_workers(tmp_path: Path) -> None:
    """A torchrun job and a plain run of the same script share a name; the description tells them apart."""
    train = workloads.write_script(tmp_path, "train.py", TRAIN)
    launcher = workloads.write_script(tmp_path, "torchrun", LAUNCHER.format(python=sys.executable))
    discovery = Discovery(build_table(), min_age=0.0)
    with (
        workloads.spawn([str(launcher), "--nproc_per_node", "3", str(train)], tmp_path, script=launcher,
                        ready=True) as distributed,
        workloads.spawn([sys.executable, str(train)], tmp_path, script=train) as plain,
    ):
        def both() -> tuple[Operation, Operation] | None:
            ops = {op.pid: op for op in discovery(time.time())}
            first, second = ops.get(distributed.pid), ops.get(plain.pid)
            if first is None or second is None or first.process_count < 4:
                return None
            return first, second

        torchrun_op, plain_op = wait_until(both, 30, message="the two jobs were not both listed")
        assert torchrun_op.type == plain_op.type == "job"
        assert torchrun_op.name == plain_op.name == "train.py"
        assert (torchrun_op.description or "").startswith("torchrun ×3 · ")
        assert "×" not in (plain_op.description or "")


def _raw(dash: Dashboard, method: str, path: str) -> tuple[int, str]:
    """One request, redirects not followed: the status and the Location header."""
    connection = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=30)
    try:
        connection.request(method, path, headers={"Host": f"127.0.0.1:{dash.port}"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location") or ""
    finally:
        connection.close()


def test_openapi_and_docs_redirect_to_the_api(backend: Dashboard) -> None:
    for path, target in (("/openapi.json", "/api/openapi.json"), ("/docs", "/api/docs")):
        for method in ("GET", "HEAD"):
            assert _raw(backend, method, path) == (308, target), (method, path)
    # Nothing from the request goes into the target (no open redirect).
    assert _raw(backend, "GET", "/docs?target=https://example.com") == (308, "/api/docs")
    status, body = backend.request("GET", "/openapi.json")  # followed: the API's schema
    assert status == 200 and "/api/dgx/operations" in body["paths"]


def test_reflex_first_run_line_says_the_real_next_step() -> None:
    """Reflex's own CLI logger, with our filter: the "uv run reflex run" advice becomes what happens."""
    import logging

    import reflex.reflex as reflex_cli
    from reflex_base.utils import log

    from dgx_spark.startup import INIT_NEXT_STEP, reword_reflex_init

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    reword_reflex_init()
    reword_reflex_init()  # twice: one filter
    keep = Keep()
    reflex_cli.logger.addHandler(keep)
    level = reflex_cli.logger.level
    reflex_cli.logger.setLevel(logging.DEBUG)
    try:
        reflex_cli.logger.log(log.SUCCESS, "Initialized dgx_spark. Run `uv run reflex run` to start the app.")
        reflex_cli.logger.log(log.SUCCESS, "Something else")
    finally:
        reflex_cli.logger.removeHandler(keep)
        reflex_cli.logger.setLevel(level)
    assert seen == [INIT_NEXT_STEP, "Something else"]
    assert len(reflex_cli.logger.filters) == 1


def test_it_per_second_is_read_wherever_the_output_states_it() -> None:
    """The same output gives the same it/s, whether the job prints it itself or tqdm does, and
    whether reading began during an evaluation bar (a discovered job) or at the start (a launched one)."""
    from dgx_spark.progress.parsers import parse_text

    for line, rate in (
        ("step 100/1000 loss 0.23 3.1 it/s\n", 3.1),
        ("[step 100/1000] loss=0.23 | 12 steps/s\n", 12.0),
        ("Epoch [1/5], Step [100/600], Loss: 0.2345, 2.50s/it\n", 0.4),
        ("train:  45%|####      | 9/20 [00:02<00:03,  3.10 samples/s]\n", 3.1),  # tqdm unit=" samples"
    ):
        assert parse_text(line).throughput == rate, line
    for line in ("loaded 12 files/s\n", "v1.2 it/s\n", "lr 3e-4 tok/s 12000\n"):
        assert parse_text(line).throughput is None, line
    training = " 30%|###       | 300/1000 [00:10<00:20, 30.0it/s]\n"
    evaluation = " 12%|#         | 6/50 [00:01<00:09, 6.0it/s]\n"
    from_start = parse_text(training + evaluation)
    mid_evaluation = parse_text(evaluation + training + evaluation)
    assert from_start.throughput == mid_evaluation.throughput == 30.0
    assert from_start.total_steps == mid_evaluation.total_steps == 1000 and mid_evaluation.step == 300
    # The Trainer's banner says how long the run is: a longer bar does not replace it.
    banner = "  Total optimization steps = 50\n"
    assert parse_text(banner + evaluation + training).total_steps == 50
