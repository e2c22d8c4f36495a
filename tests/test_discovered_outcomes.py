"""How discovered operations ended, and reading their output safely: real processes throughout.

Most tests drive one in-process sampler (discovery, progress, outcome, events) by
hand; the last ones go through the real backend's API. The proc connector needs
root (or CAP_NET_ADMIN) in the initial network namespace: tests that need the
exact exit status skip with the listener's reason where it does not work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dgx_spark.collector import output
from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.model import Operation
from dgx_spark.collector.outcome import (
    KernelLog,
    OomCounters,
    OutcomeProbe,
    decide,
    failure_in,
    record_stop_request,
)
from dgx_spark.collector.output import OutputHandles, ProcessOutput
from dgx_spark.collector.proc_events import ExitListener
from dgx_spark.collector.rules import build_table
from dgx_spark.collector.sampler import Sampler
from dgx_spark.events.detector import EventDetector, Transition
from dgx_spark.progress.probe import ProgressProbe
from dgx_spark.progress.tracker import ProgressTracker
from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until

SEEN = 30.0  # generous: the machine is shared and noisy
OTHER_UID = 65534
OTHER_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "/usr/bin/python3"
"""The system's Python: the other user may not be able to reach the project's virtualenv."""

# A script that says it is ready, waits for the test's go, then does what ``BODY`` says.
_PRELUDE = """
import os, sys, time, traceback
from pathlib import Path
print("loading data", flush=True)
Path(os.environ["WORKLOAD_READY"]).touch()
go = Path(os.environ["GO_FILE"])
while not go.exists():
    time.sleep(0.05)
"""
CRASH = _PRELUDE + """
try:
    raise RuntimeError("boom at step 7")
except RuntimeError:
    traceback.print_exc()
sys.stderr.flush()
sys.exit(3)
"""
SLEEPER = _PRELUDE + """
time.sleep(600)
"""
EPOCHS = """
import os, sys, time
from pathlib import Path
for epoch in range(1, 4):
    print(f"Epoch {epoch}/3 - loss: {1.0 / epoch:.4f}", flush=True)
Path(os.environ["WORKLOAD_READY"]).touch()
go = Path(os.environ["GO_FILE"])
while not go.exists():
    time.sleep(0.05)
"""
HOG = """
import os, time
from pathlib import Path
Path(os.environ["CGROUP_PROCS"]).write_text(str(os.getpid()))
print("in the small cgroup", flush=True)
Path(os.environ["WORKLOAD_READY"]).touch()
go = Path(os.environ["GO_FILE"])
while not go.exists():
    time.sleep(0.05)
hold = []
while True:
    hold.append(bytearray(8 * 1024 * 1024))
"""


# ----------------------------------------------------------------------------- harness
@pytest.fixture(scope="module")
def exits() -> Iterator[ExitListener]:
    """A real proc-connector listener (ready, or with the reason it is not)."""
    listener = ExitListener()
    listener.start()
    wait_until(lambda: listener.ready or listener.reason not in ("checking", "not started"), 10, 0.05)
    yield listener
    listener.stop()


def needs_connector(listener: ExitListener) -> None:
    """Skip unless exact exit statuses come from the kernel here."""
    if not listener.ready:
        pytest.skip(f"no exit statuses from the kernel here: {listener.reason}")


class Harness:
    """One sampler with discovery and the probes that matter here, sampled by hand."""

    def __init__(self, exits: ExitListener | None) -> None:
        self.transitions: list[Transition] = []
        self.handles = OutputHandles()
        self.sampler = Sampler(
            Discovery(build_table(), min_age=0.0),
            probes=[
                ProgressProbe(tracker=ProgressTracker(), handles=self.handles),
                OutcomeProbe(handles=self.handles, exits=exits or ExitListener(), kernel_log=KernelLog()),
                EventDetector(self.transitions.append, handles=self.handles),
            ],
        )

    def rooted(self, pid: int) -> Operation | None:
        """Take a snapshot; the operation rooted at ``pid`` in it."""
        snapshot = self.sampler.sample_once()
        return next((op for op in snapshot.operations if op.pid == pid), None)

    def live(self, pid: int) -> Operation:
        """Sample until the process is listed live (twice, so every probe has seen it)."""
        wait_until(lambda: (op := self.rooted(pid)) is not None and op.is_live, SEEN, 0.05, message="never listed")
        op = self.rooted(pid)
        assert op is not None and op.is_live
        return op

    def ended(self, pid: int) -> Operation:
        """Sample until the operation rooted at ``pid`` has ended."""
        return wait_until(
            lambda: (op := self.rooted(pid)) is not None and not op.is_live and op, SEEN, 0.05, message="never ended"
        )

    def terminal(self, op_id: str) -> Transition:
        """The one terminal transition of an operation."""
        ends = [t for t in self.transitions if t.operation.id == op_id and t.kind in ("completed", "failed", "stopped")]
        assert len(ends) == 1, ends
        return ends[0]


@contextlib.contextmanager
def started(tmp_path: Path, name: str, body: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A script started in its own session, ready, with a go file the test touches."""
    script = workloads.write_script(tmp_path, name, body)
    go = tmp_path / f"{name}.go"
    extra = {"GO_FILE": str(go), **(env or {})}
    with workloads.spawn([sys.executable, str(script)], tmp_path, script=script, ready=True, env=extra) as work:
        work.go = go
        yield work


def reap(work: Any) -> None:
    """Wait for the workload's process (a zombie is not listed, a reaped one is gone)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        work.process.wait(30)


# ----------------------------------------------------------------------------- pure rules
def test_failure_lines_and_the_outcome_table() -> None:
    traceback_tail = [
        "step 6 ok",
        "Traceback (most recent call last):",
        '  File "train.py", line 9, in <module>',
        "    raise RuntimeError('boom')",
        "RuntimeError: boom",
    ]
    assert failure_in(traceback_tail) == ("failed", "Traceback: RuntimeError: boom")
    assert failure_in(["Traceback (most recent call last):", '  File "x.py"', "KeyboardInterrupt"]) == (
        "stopped",
        "Traceback: KeyboardInterrupt",
    )
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert failure_in(["epoch 1", oom]) == ("failed", oom)
    assert failure_in(["run.sh: line 3: 4242 Killed   python train.py"])[0] == "failed"  # type: ignore[index]
    assert failure_in(["Segmentation fault (core dumped)"]) == ("failed", "Segmentation fault (core dumped)")
    assert failure_in(["NCCL error in: ProcessGroupNCCL.cpp:1, unhandled system error"])[0] == "failed"  # type: ignore[index]
    assert failure_in(["all good", "done"]) is None
    # A handled error long before the end is not how it ended.
    assert failure_in(["Traceback (most recent call last):", "ValueError: retried"] + ["ok"] * 20) is None

    assert decide(status=3 << 8)["exit_reason"] == "exit code 3"
    assert decide(status=0)["outcome"] == "completed"
    assert decide(status=signal.SIGKILL) | {} == {
        "status": "failed", "exit_code": -9, "outcome": "failed",
        "exit_reason": "killed by SIGKILL", "outcome_source": "kernel",
    }
    assert decide(status=signal.SIGKILL, oom=True)["exit_reason"] == "killed by the OOM killer"
    assert decide(status=signal.SIGSEGV | 0x80)["exit_reason"] == "killed by SIGSEGV (core dumped)"
    assert decide(status=signal.SIGTERM)["outcome"] == "stopped"
    assert decide(status=signal.SIGKILL, stop_requested=True)["exit_reason"] == "stopped by the user (SIGKILL)"
    assert decide(status=0, stop_requested=True)["outcome"] == "stopped"
    assert decide(status=None, log=("failed", "CUDA out of memory"))["outcome_source"] == "log"
    assert decide(status=None, progress="reached epoch 3/3")["outcome"] == "completed"
    unknown = decide(status=None)
    assert unknown["outcome"] == "stopped" and unknown["outcome_source"] == "unknown" and unknown["exit_code"] is None


# ----------------------------------------------------------------------------- outcomes, real processes
def test_exit_3_after_a_traceback_is_failed_with_the_exact_code(tmp_path: Path, exits: ExitListener) -> None:
    needs_connector(exits)
    harness = Harness(exits)
    with started(tmp_path, "crash.py", CRASH) as work:
        harness.live(work.pid)
        work.go.touch()
        reap(work)
        ended = harness.ended(work.pid)
    assert ended.status == "failed" and ended.outcome == "failed"
    assert ended.exit_code == 3 and ended.outcome_source == "kernel"
    assert ended.exit_reason == "Traceback: RuntimeError: boom at step 7 (exit code 3)"
    api = ended.to_api(time.time())
    assert (api["outcome"], api["exit_code"], api["outcome_source"]) == ("failed", 3, "kernel")
    event = harness.terminal(ended.id)
    assert event.kind == "failed" and "exit code 3" in event.detail
    assert event.log_tail is not None and "RuntimeError: boom at step 7" in event.log_tail


def test_without_the_connector_the_traceback_decides_and_says_likely(tmp_path: Path) -> None:
    harness = Harness(None)  # a listener that never started: no exact status
    with started(tmp_path, "crash.py", CRASH) as work:
        harness.live(work.pid)
        work.go.touch()
        reap(work)
        ended = harness.ended(work.pid)
    assert (ended.status, ended.outcome, ended.outcome_source) == ("failed", "failed", "log")
    assert ended.exit_code is None  # not knowable here
    assert ended.exit_reason == "Traceback: RuntimeError: boom at step 7"
    assert harness.terminal(ended.id).detail == "likely failed: Traceback: RuntimeError: boom at step 7"


def test_sigkill_is_failed_killed_by_sigkill(tmp_path: Path, exits: ExitListener) -> None:
    needs_connector(exits)
    harness = Harness(exits)
    with started(tmp_path, "worker.py", SLEEPER) as work:
        harness.live(work.pid)
        os.kill(work.pid, signal.SIGKILL)
        reap(work)
        ended = harness.ended(work.pid)
    assert (ended.status, ended.outcome, ended.exit_code) == ("failed", "failed", -9)
    assert (ended.exit_reason, ended.outcome_source) == ("killed by SIGKILL", "kernel")
    assert harness.terminal(ended.id).kind == "failed"


def test_sigterm_is_stopped(tmp_path: Path, exits: ExitListener) -> None:
    needs_connector(exits)
    harness = Harness(exits)
    with started(tmp_path, "worker.py", SLEEPER) as work:
        harness.live(work.pid)
        os.kill(work.pid, signal.SIGTERM)
        reap(work)
        ended = harness.ended(work.pid)
    assert (ended.status, ended.outcome, ended.exit_code) == ("stopped", "stopped", -15)
    assert ended.exit_reason == "stopped by SIGTERM"
    assert harness.terminal(ended.id).kind == "stopped"


@pytest.mark.parametrize("connector", [True, False], ids=["exit-status", "progress-only"])
def test_a_job_that_finished_its_epochs_completed(tmp_path: Path, exits: ExitListener, connector: bool) -> None:
    if connector:
        needs_connector(exits)
    harness = Harness(exits if connector else None)
    with started(tmp_path, "train_small.py", EPOCHS) as work:
        live = harness.live(work.pid)
        assert live.type == "job"
        wait_until(lambda: (op := harness.rooted(work.pid)) and op.progress == 1.0, SEEN, 0.05)
        work.go.touch()
        reap(work)
        ended = harness.ended(work.pid)
    assert (ended.status, ended.outcome) == ("stopped", "completed")  # grey dot, outcome says which
    if connector:
        assert (ended.exit_code, ended.exit_reason, ended.outcome_source) == (0, "exit code 0", "kernel")
    else:
        assert (ended.exit_code, ended.exit_reason, ended.outcome_source) == (None, "reached epoch 3/3", "progress")
        assert harness.terminal(ended.id).detail == "likely completed: reached epoch 3/3"
    assert harness.terminal(ended.id).kind == "completed"


@contextlib.contextmanager
def small_memory_cgroup(limit: int = 64 * 1024 * 1024) -> Iterator[Path]:
    """A child of this process's memory cgroup (v1 or v2) limited to ``limit`` bytes; skip if not allowed."""
    counters = OomCounters()
    own = counters.counter_file(os.getpid())
    if own is None:
        pytest.skip("no memory cgroup to nest in here (no memory controller mounted)")
    parent = Path(own).parent
    folder = parent / f"dgx-spark-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        folder.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup under {parent}: {exc.strerror}")
    try:
        try:
            if (folder / "memory.max").exists():  # cgroup v2
                (folder / "memory.max").write_text(str(limit))
                with contextlib.suppress(OSError):
                    (folder / "memory.swap.max").write_text("0")
            else:  # cgroup v1
                (folder / "memory.limit_in_bytes").write_text(str(limit))
                with contextlib.suppress(OSError):
                    (folder / "memory.memsw.limit_in_bytes").write_text(str(limit))
        except OSError as exc:
            pytest.skip(f"cannot limit memory in {folder}: {exc.strerror}")
        yield folder
    finally:
        wait_until(lambda: not (folder / "cgroup.procs").read_text().strip(), 30, 0.1)
        with contextlib.suppress(OSError):
            folder.rmdir()


@pytest.mark.parametrize("connector", [True, False], ids=["exit-status", "cgroup-and-kernel-log"])
def test_an_oom_kill_in_a_small_cgroup_is_failed_by_the_oom_killer(
    tmp_path: Path, exits: ExitListener, connector: bool
) -> None:
    if connector:
        needs_connector(exits)
    harness = Harness(exits if connector else None)
    with small_memory_cgroup() as folder, started(
        tmp_path, "hog.py", HOG, env={"CGROUP_PROCS": str(folder / "cgroup.procs")}
    ) as work:
        harness.live(work.pid)
        work.go.touch()
        reap(work)
        assert work.process.returncode == -signal.SIGKILL
        ended = harness.ended(work.pid)
    assert (ended.status, ended.outcome, ended.outcome_source) == ("failed", "failed", "kernel")
    assert ended.exit_reason == "killed by the OOM killer"
    assert ended.exit_code == (-9 if connector else None)
    assert harness.terminal(ended.id).kind == "failed"


# ----------------------------------------------------------------------------- reading output safely
def test_a_symlink_swap_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER\n")
    secret.chmod(0o600)
    harness = Harness(None)
    with started(tmp_path, "worker.py", SLEEPER) as work:
        op = harness.live(work.pid)
        assert work.log_path is not None
        work.log_path.unlink()
        work.log_path.symlink_to(secret)  # the name now points at another file
        source = ProcessOutput.of(op)
        assert source is not None
        read = output.read_tail(source, 10)
        assert read is not None
        assert read[0] == ["loading data"] and "TOP-SECRET-MARKER" not in str(read)
        os.kill(work.pid, signal.SIGKILL)
        reap(work)
        ended = harness.ended(work.pid)
        assert output.read_tail(source, 10) is None  # gone: nothing is opened by name afterwards
    assert "TOP-SECRET-MARKER" not in str(ended.output_tail)
    assert ended.output_tail == ("loading data",)


def test_a_reused_pid_or_a_terminal_is_refused(tmp_path: Path) -> None:
    harness = Harness(None)
    with started(tmp_path, "worker.py", SLEEPER) as work:
        op = harness.live(work.pid)
        assert ProcessOutput(op.id + "1", op.pid).open() is None  # same pid, another start time
        assert ProcessOutput(op.id, op.pid, fd_number=0).open() is None  # stdin is /dev/null
    # A process whose stdout is a pipe: never opened (reading it would steal its output).
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdout=subprocess.PIPE) as child:
        try:
            pipe_op = Operation(id="x", type="program", name="x", status="running", pid=child.pid)
            assert ProcessOutput.of(pipe_op).open() is None  # type: ignore[union-attr]
        finally:
            child.kill()


@contextlib.contextmanager
def other_users_process(stdout_owner: int, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping Python program running as uid 65534, its stdout a 0600 file owned by ``stdout_owner``."""
    if os.getuid() != 0:
        pytest.skip("playing another user needs root here")
    script = folder / "other_worker.py"
    script.write_text(
        "import sys, time\nprint('other user line', flush=True)\n"
        "print('Traceback (most recent call last):', file=sys.stderr)\n"
        "print('ValueError: theirs', file=sys.stderr, flush=True)\ntime.sleep(600)\n"
    )
    script.chmod(0o644)
    log = folder / "other.log"
    log.touch(mode=0o600)
    os.chown(log, stdout_owner, stdout_owner)
    with open(log, "ab") as handle:
        try:
            process = subprocess.Popen(
                [OTHER_PYTHON, str(script)], cwd="/", stdout=handle, stderr=handle, stdin=subprocess.DEVNULL,
                user=OTHER_UID, group=OTHER_UID, extra_groups=[], start_new_session=True,
            )
        except OSError as exc:
            pytest.skip(f"cannot run a process as uid {OTHER_UID}: {exc}")
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder the other user can read scripts from (pytest's tmp folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="dgx-spark-h2-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_another_users_output_is_not_public(shared_folder: Path, exits: ExitListener) -> None:
    harness = Harness(exits)
    with other_users_process(OTHER_UID, shared_folder) as process:
        op = harness.live(process.pid)
        source = ProcessOutput.of(op)
        assert source is not None and output.needs_token(source)
        opened = source.open()
        assert opened is not None
        with opened:
            assert not opened.public and opened.storable  # its own file: it may be kept, shown with the token
    # A file its owner cannot read (opened for it by root) is neither shown without the token nor kept.
    with other_users_process(0, shared_folder) as process:
        op = harness.live(process.pid)
        opened = ProcessOutput.of(op).open()  # type: ignore[union-attr]
        assert opened is not None
        with opened:
            assert not opened.public and not opened.storable
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        ended = harness.ended(process.pid)
    assert ended.output_tail is None  # nothing read for keeping
    assert "theirs" not in str(ended.exit_reason)
    assert harness.terminal(ended.id).log_tail == ()


# ----------------------------------------------------------------------------- through the real backend
def _listed(backend: Dashboard, pid: int) -> dict[str, Any] | None:
    return next((op for op in backend.operations() if op["pid"] == pid), None)


def test_the_api_shows_the_outcome_and_guards_other_users_logs(
    backend: Dashboard, tmp_path: Path, shared_folder: Path, exits: ExitListener
) -> None:
    # The outcome fields of a discovered crash, as the API lists them.
    with started(tmp_path, "crash.py", CRASH) as work:
        wait_until(lambda: (op := _listed(backend, work.pid)) and op["status"] in ("running", "active"), SEEN)
        work.go.touch()
        reap(work)
        ended = wait_until(lambda: (op := _listed(backend, work.pid)) and op["status"] == "failed" and op, SEEN)
    assert ended["outcome"] == "failed" and "RuntimeError: boom at step 7" in ended["exit_reason"]
    if exits.ready:
        assert (ended["exit_code"], ended["outcome_source"]) == (3, "kernel")
    # A symlink swap: the route reads the file the process holds, not what the name points to now.
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER\n")
    secret.chmod(0o600)
    with started(tmp_path, "worker.py", SLEEPER) as work:
        op = wait_until(lambda: _listed(backend, work.pid), SEEN)
        assert work.log_path is not None
        work.log_path.unlink()
        work.log_path.symlink_to(secret)
        for status, body in (backend.request("GET", path_of(op, 3)), backend.authed("GET", path_of(op, 3))):
            assert status == 200 and body["data"]["available"] is True
            assert "TOP-SECRET-MARKER" not in str(body) and body["data"]["lines"] == ["loading data"]
    # Another user's process: its log only with the token.
    with other_users_process(OTHER_UID, shared_folder) as process:
        op = wait_until(lambda: _listed(backend, process.pid), SEEN)
        status, body = backend.request("GET", path_of(op, 5))
        assert status == 401 and body["success"] is False and "another user" in body["error"]["message"]
        status, body = backend.request("GET", f"/api/dgx/operations/{op['id']}/logs/stream")
        assert status == 401
        status, body = backend.authed("GET", path_of(op, 5))
        assert status == 200 and "other user line" in body["data"]["lines"]


def path_of(op: dict[str, Any], tail: int) -> str:
    """The logs route of an operation."""
    return f"/api/dgx/operations/{op['id']}/logs?tail={tail}"


def test_the_card_view_says_how_it_ended_and_when_it_is_inferred() -> None:
    from dgx_spark.state.view import operation_view

    base = Operation(id="op-1-1", type="job", name="train.py", status="failed", started_at_ts=1.0, ended_at_ts=9.0)
    exact = operation_view(base.replace(**decide(status=3 << 8, log=("failed", "Traceback: RuntimeError: boom"))), 10.0)
    assert exact.outcome == "failed" and exact.outcome_source == "kernel"
    assert exact.outcome_text == "Failed: Traceback: RuntimeError: boom (exit code 3)"
    assert exact.outcome_title == "Exit status reported by the kernel"
    inferred = operation_view(base.replace(**decide(status=None, log=("failed", "CUDA out of memory"))), 10.0)
    assert inferred.outcome_text == "Likely failed: CUDA out of memory"
    done = operation_view(base.replace(**decide(status=None, progress="reached epoch 3/3")), 10.0)
    assert (done.status, done.outcome_text) == ("stopped", "Likely completed: reached epoch 3/3")
    stopped = operation_view(base.replace(**decide(status=signal.SIGTERM)), 10.0)
    assert stopped.outcome_text == "Stopped by SIGTERM"
    live = operation_view(base.replace(status="running", outcome=None), 10.0)
    assert live.outcome_text == "" and live.outcome == ""


def test_a_discovered_operation_stopped_from_the_dashboard_is_stopped_by_the_user(
    tmp_path: Path, exits: ExitListener
) -> None:
    needs_connector(exits)
    harness = Harness(exits)
    with started(tmp_path, "worker.py", SLEEPER) as work:
        op = harness.live(work.pid)
        record_stop_request(op.id)  # what the supervisor notes when its Stop signals a discovered process
        os.kill(work.pid, signal.SIGKILL)  # e.g. after the grace period
        reap(work)
        ended = harness.ended(work.pid)
    assert (ended.status, ended.outcome, ended.exit_code) == ("stopped", "stopped", -9)
    assert (ended.exit_reason, ended.stop_requested) == ("stopped by the user (SIGKILL)", True)
    assert harness.terminal(ended.id).kind == "stopped"
