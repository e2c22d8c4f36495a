"""Discovery with real processes: through the real backend, and in-process for details."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.model import Operation, operation_id
from dgx_spark.collector.output import ProcessOutput
from dgx_spark.collector.rules import build_table, load_table
from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until

FOUND = 30.0  # generous: refresh is 1 s, the machine is shared and noisy
GONE = 30.0


def listed(backend: Dashboard, pid: int) -> dict[str, Any] | None:
    """The live operation rooted at ``pid``, as the API lists it."""
    for operation in backend.operations():
        if operation["pid"] == pid and operation["status"] not in ("stopped", "failed"):
            return operation
    return None


def gone(backend: Dashboard, pid: int) -> bool:
    """Whether no live operation is rooted at ``pid`` any more."""
    return listed(backend, pid) is None


def test_http_server_is_a_server_with_its_port(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.http_server(tmp_path) as server:
        operation = wait_until(lambda: listed(backend, server.pid), FOUND, message="http server not listed")
        operation = wait_until(
            lambda: (op := listed(backend, server.pid)) and op["port"] == server.port and op, FOUND
        )
        assert operation["type"] == "server"
        assert operation["name"] == "HTTP server"
        assert operation["ports"] == [server.port]
        assert operation["status"] in ("running", "active")
        assert "http.server" in operation["command"]
        server.kill()
        wait_until(lambda: gone(backend, server.pid), GONE, message="server still listed as live")


def test_training_script_is_a_job(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.training_script(tmp_path, "train_tiny.py") as job:
        operation = wait_until(lambda: listed(backend, job.pid), FOUND, message="training script not listed")
        assert operation["type"] == "job"
        assert operation["name"] == "train_tiny.py"
        assert operation["pid"] == job.pid
        assert operation["port"] is None
        assert operation["user"]
        assert operation["started_at"].endswith("Z")
        job.kill()
        wait_until(lambda: gone(backend, job.pid), GONE)


def test_launcher_with_four_workers_is_one_job(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.launcher_with_workers(tmp_path, workers=4) as launcher:
        workers = launcher.children_pids()
        assert len(workers) == 4
        operation = wait_until(
            lambda: (op := listed(backend, launcher.pid)) and op["process_count"] >= 5 and op,
            FOUND,
            message="launcher not listed with its workers",
        )
        assert operation["type"] == "job"
        assert operation["name"] == "train_launcher.py"
        roots = {op["pid"] for op in backend.operations()}
        assert not roots & set(workers), "a worker was listed as an operation of its own"
        launcher.kill()
        wait_until(lambda: gone(backend, launcher.pid), GONE)


def test_bash_loop_is_a_program(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.bash_loop(tmp_path, "loop.sh") as loop:
        operation = wait_until(lambda: listed(backend, loop.pid), FOUND, message="bash loop not listed")
        assert operation["type"] == "program"
        assert operation["name"] == "loop.sh"
        assert operation["pid"] == loop.pid
        loop.kill()
        wait_until(lambda: gone(backend, loop.pid), GONE)


def test_plain_sleep_is_not_an_operation(backend: Dashboard, tmp_path: Path) -> None:
    with workloads.plain_sleep(tmp_path, 300) as sleeper, workloads.bash_loop(tmp_path, "witness.sh") as witness:
        # Once a later-started witness is listed, the older sleep had every chance to be.
        wait_until(lambda: listed(backend, witness.pid), FOUND, message="witness not listed")
        sequence = backend.get_json("/api/health")["data"]["sequence"]
        wait_until(lambda: backend.get_json("/api/health")["data"]["sequence"] >= sequence + 2, FOUND)
        assert sleeper.alive()
        assert listed(backend, sleeper.pid) is None
        all_pids = [op["pid"] for op in backend.operations()]
        assert sleeper.pid not in all_pids


def test_dashboard_does_not_list_itself(backend: Dashboard) -> None:
    assert backend.process is not None
    wait_until(lambda: backend.get_json("/api/health")["data"]["sequence"] >= 2, FOUND)
    pids = {op["pid"] for op in backend.operations()}
    assert backend.process.pid not in pids
    assert os.getpid() not in pids


# ----------------------------------------------------------------------------- in-process


def ticks(discovery: Discovery, count: int = 2, pause: float = 0.3) -> list[Operation]:
    """Run a few ticks and return the last result."""
    result: list[Operation] = []
    for _ in range(count):
        result = discovery(time.time())
        time.sleep(pause)
    return result


def rooted(operations: list[Operation], pid: int) -> Operation | None:
    return next((op for op in operations if op.pid == pid), None)


def test_operation_id_is_stable_and_matches_psutil(tmp_path: Path) -> None:
    import psutil

    discovery = Discovery(build_table(), min_age=0.0)
    with workloads.bash_loop(tmp_path) as loop:
        first = wait_until(lambda: rooted(discovery(time.time()), loop.pid), FOUND)
        second = wait_until(lambda: rooted(discovery(time.time()), loop.pid), FOUND)
        assert first.id == second.id == operation_id(loop.pid, psutil.Process(loop.pid).create_time())
        assert first.cpu_percent is None  # first sighting
        assert second.cpu_percent is not None
        # Its output is read through the process, never remembered by path.
        assert first.log_path is None
        opened = ProcessOutput.of(first).open()  # type: ignore[union-attr]
        assert opened is not None and opened.public and opened.storable
        with opened:
            assert os.fstat(opened.fd).st_ino == os.stat(loop.log_path).st_ino  # type: ignore[arg-type]
        assert first.cwd == str(tmp_path)


def test_young_processes_wait_their_turn(tmp_path: Path) -> None:
    patient = Discovery(build_table(), min_age=3600.0)
    eager = Discovery(build_table(), min_age=0.0)
    with workloads.bash_loop(tmp_path) as loop:
        assert rooted(ticks(patient), loop.pid) is None
        assert wait_until(lambda: rooted(eager(time.time()), loop.pid), FOUND).type == "program"


def test_known_server_is_starting_until_it_listens(tmp_path: Path) -> None:
    port = workloads.free_port()
    script = workloads.write_script(
        tmp_path,
        "slow_api.py",
        f"""
        import http.server, time
        time.sleep(4)
        http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler).serve_forever()
        """,
    )
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nid = "slow-api"\ntype = "server"\nname = "Slow API"\nscript = ["slow_api.py"]\n')
    discovery = Discovery(load_table(rules), min_age=0.0)
    with workloads.spawn([sys.executable, str(script)], tmp_path, script=script, wait=False) as server:
        starting = wait_until(lambda: rooted(discovery(time.time()), server.pid), FOUND)
        assert (starting.type, starting.name, starting.status, starting.port) == ("server", "Slow API", "starting", None)
        running = wait_until(
            lambda: (op := rooted(discovery(time.time()), server.pid)) and op.port == port and op, FOUND
        )
        assert running.status in ("running", "active")
        assert running.ports == (port,)


def test_any_listening_script_is_a_server(tmp_path: Path) -> None:
    port = workloads.free_port()
    script = workloads.write_script(
        tmp_path,
        "my_api.py",
        f"""
        import socket, time
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", {port}))
        sock.listen()
        time.sleep(600)
        """,
    )
    discovery = Discovery(build_table(), min_age=0.0)
    with workloads.spawn([sys.executable, str(script)], tmp_path, port=port) as api:
        operation = wait_until(
            lambda: (op := rooted(discovery(time.time()), api.pid)) and op.type == "server" and op, FOUND
        )
        assert (operation.name, operation.port) == ("my_api.py", port)


def test_shell_script_folds_the_commands_it_runs(tmp_path: Path) -> None:
    """A wrapper script running a training script: one job named after the training script."""
    workloads.write_script(tmp_path, "train_wrapped.py", "import time\ntime.sleep(600)\n")
    script = workloads.write_script(
        tmp_path, "run.sh", f'#!/bin/bash\n"{sys.executable}" train_wrapped.py --epochs 3\n'
    )
    discovery = Discovery(build_table(), min_age=0.0)
    with workloads.spawn(["bash", str(script)], tmp_path, script=script) as wrapper:
        operation = wait_until(
            lambda: (op := rooted(discovery(time.time()), wrapper.pid)) and op.process_count == 2 and op, FOUND
        )
        assert (operation.type, operation.name) == ("job", "train_wrapped.py")
        child = wrapper.children_pids()
        assert set(operation.pids) == {wrapper.pid, *child}
        assert all(rooted(discovery(time.time()), pid) is None for pid in child)


def test_launched_processes_are_kept_even_if_plain(tmp_path: Path) -> None:
    """A plain sleep carrying the launch marker is an operation (the supervisor merges it)."""
    discovery = Discovery(build_table(), min_age=0.0)
    with workloads.spawn(
        ["sleep", "300"], tmp_path, env={"DGX_SPARK_OPERATION_ID": "launch-test"}
    ) as launched, workloads.plain_sleep(tmp_path) as plain:
        operation = wait_until(lambda: rooted(discovery(time.time()), launched.pid), FOUND)
        assert (operation.type, operation.name) == ("program", "sleep")
        assert rooted(discovery(time.time()), plain.pid) is None


def test_dead_processes_leave_the_cache(tmp_path: Path) -> None:
    discovery = Discovery(build_table(), min_age=0.0)
    discovery(time.time())
    before = len(discovery._known)
    processes = [
        subprocess.Popen(["sleep", "300"], start_new_session=True, stdin=subprocess.DEVNULL) for _ in range(80)
    ]
    try:
        wait_until(lambda: discovery(time.time()) is not None and len(discovery._known) >= before + 80, FOUND)
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    discovery(time.time())
    assert len(discovery._known) < before + 80
