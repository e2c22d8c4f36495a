"""Discovery reads only what can have changed: exec in place, pid reuse, new processes, the rotation.

Real processes and the real /proc throughout; refreshes are counted, never timed. Each
behaviour runs in both modes where the kernel's process events work here (``events``)
and by scanning /proc (``scan``, also what runs where the events are refused).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.idle import idle_processes
from dgx_spark.collector.discovery import EVENTS_VERIFY_EVERY, VERIFY_EVERY, Discovery
from dgx_spark.collector.model import Operation
from dgx_spark.collector.proc_events import ExitListener
from dgx_spark.collector.rules import build_table
from tests.support.dashboard import Dashboard

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "import time\nfor epoch in range(1, 1001):\n    print(f'Epoch {epoch}/1000', flush=True)\n    time.sleep(0.5)\n"


@functools.cache
def exit_listener() -> ExitListener:
    """One listener for this test module's discoveries (as the app's services hold one), started once."""
    listener = ExitListener()
    listener.start()
    return listener


def events_ready(wait: float = 5.0) -> bool:
    """Whether the listener hears the kernel here (polled, as it checks itself at start)."""
    listener = exit_listener()
    deadline = time.monotonic() + wait
    while not listener.ready and listener.reason == "checking" and time.monotonic() < deadline:
        time.sleep(0.05)
    return listener.ready


@pytest.fixture(params=["scan", "events"])
def mode(request: pytest.FixtureRequest) -> str:
    """Each test runs scanning /proc, and again on kernel process events where they work."""
    if request.param == "events" and not events_ready():
        pytest.skip(f"kernel process events not available here: {exit_listener().reason}")
    return str(request.param)


def make(mode: str, **kwargs: Any) -> Discovery:
    """A discovery in ``mode`` that lists processes as soon as they exist."""
    discovery = Discovery(build_table(), min_age=0.0, events=exit_listener() if mode == "events" else None, **kwargs)
    discovery(time.time())
    assert discovery.mode == mode
    return discovery


def refresh_until(
    discovery: Discovery, check: Callable[[list[Operation]], Any], refreshes: int, pause: float = 0.2
) -> tuple[Any, int]:
    """Refresh up to ``refreshes`` times until ``check`` says yes; (its answer, refreshes used)."""
    for count in range(1, refreshes + 1):
        found = check(discovery(time.time()))
        if found:
            return found, count
        time.sleep(pause)
    raise AssertionError(f"not seen in {refreshes} refreshes")


def rooted(operations: list[Operation], pid: int) -> Operation | None:
    return next((op for op in operations if op.pid == pid), None)


@contextlib.contextmanager
def started(argv: list[str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, killed (group) and reaped at the end."""
    process = subprocess.Popen(
        argv, cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def gated_exec(folder: Path) -> tuple[list[str], Path]:
    """``sh -c`` that waits for a file, then ``exec``s into a training script (same pid)."""
    (folder / "train.py").write_text(TRAIN)
    gate = folder / "go"
    script = f'while [ ! -e "{gate}" ]; do sleep 0.2; done; exec "{sys.executable}" train.py --epochs 1000'
    return ["sh", "-c", script], gate


def test_a_shell_that_execs_into_a_training_script_is_reclassified(tmp_path: Path, mode: str) -> None:
    """Young process: checked every refresh (scan) or told by the kernel (events)."""
    discovery = make(mode)
    argv, gate = gated_exec(tmp_path)
    with started(argv, tmp_path) as shell:
        name = str(shell.pid).encode()
        refresh_until(discovery, lambda _ops: name in discovery._table, 10)
        before = discovery._table[name].known
        assert before.facts.argv[0] == "sh"  # type: ignore[attr-defined]  # seen before the exec
        seen_before = rooted(discovery(time.time()), shell.pid)
        gate.touch()
        job, _count = refresh_until(
            discovery, lambda ops: (op := rooted(ops, shell.pid)) and op.name == "train.py" and op, 25
        )
        assert job.type == "job"
        assert job.pid == shell.pid
        assert job.command.startswith(sys.executable)
        if seen_before is not None:
            assert job.id == seen_before.id  # same process, same identity


def test_an_old_process_that_execs_is_seen_within_the_rotation(tmp_path: Path, mode: str) -> None:
    """Past its young age, an exec is seen by the rotating check (scan) or the kernel's event (events)."""
    discovery = make(mode, young_seconds=0.0)
    argv, gate = gated_exec(tmp_path)
    with started(argv, tmp_path) as shell:
        name = str(shell.pid).encode()
        refresh_until(discovery, lambda _ops: name in discovery._table, 10)
        discovery(time.time())
        gate.touch()
        # Wait until the shell has really exec'd, so the refreshes counted below are the discovery's own.
        deadline = time.monotonic() + 30
        while b"train.py" not in Path(f"/proc/{shell.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the shell never exec'd"
            time.sleep(0.05)
        limit = VERIFY_EVERY + 1 if mode == "scan" else 10
        job, _count = refresh_until(
            discovery, lambda ops: (op := rooted(ops, shell.pid)) and op.name == "train.py" and op, limit, pause=0.1
        )
        assert job.type == "job"


def reuse_pid(pid: int, argv: list[str], cwd: Path) -> subprocess.Popen[bytes] | None:
    """Start ``argv`` as pid ``pid`` (free again) through ``ns_last_pid``; None where that is not allowed."""
    for _attempt in range(200):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
                handle.write(str(pid - 1))
        except OSError:
            return None
        process = subprocess.Popen(
            argv, cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        if process.pid == pid:
            return process
        os.killpg(process.pid, signal.SIGKILL)  # another process took it first: try again
        process.wait()
    return None


@pytest.mark.parametrize("first", ["operation", "idle"])
def test_a_reused_pid_is_another_process(tmp_path: Path, mode: str, first: str) -> None:
    """The pid of an ended process, taken by a new training script: a new operation with a new id."""
    (tmp_path / "train.py").write_text(TRAIN)
    discovery = make(mode, young_seconds=0.0)
    old_argv = [sys.executable, "train.py"] if first == "operation" else ["sleep", "300"]
    old = subprocess.Popen(old_argv, cwd=tmp_path, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    pid = old.pid
    try:
        refresh_until(discovery, lambda _ops: str(pid).encode() in discovery._table, 10)
        old_op = rooted(discovery(time.time()), pid)
        assert (old_op is not None) == (first == "operation")
        # Identity is (pid, start time in clock ticks): two processes on one pid within the same
        # tick look alike to anyone reading /proc. Let the clock move on past the old one's start.
        old_start = discovery._table[str(pid).encode()].start
        while time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK") < old_start + 2:
            time.sleep(0.01)
    finally:
        os.kill(pid, signal.SIGKILL)
        old.wait()
    new = reuse_pid(pid, [sys.executable, "train.py", "--second"], tmp_path)
    if new is None:
        pytest.skip("cannot choose the next pid here (needs root: /proc/sys/kernel/ns_last_pid)")
    try:
        # Scan mode sees the new /proc/<pid> directory on the next refresh; events within a few.
        limit = 1 if mode == "scan" else 10
        job, _count = refresh_until(
            discovery,
            lambda ops: (op := rooted(ops, pid)) and "--second" in op.command and op,
            limit,
        )
        assert job.type == "job"
        if old_op is not None:
            assert job.id != old_op.id
            assert all(op.id != old_op.id for op in discovery(time.time()))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(new.pid, signal.SIGKILL)
        new.wait()


def test_a_new_process_is_listed_within_a_few_refreshes(tmp_path: Path, mode: str) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    discovery = make(mode)
    with started([sys.executable, "train.py"], tmp_path) as job:
        # Scan mode: the very next refresh lists it; events: as soon as the listener has read the fork.
        operation, _count = refresh_until(discovery, lambda ops: rooted(ops, job.pid), 1 if mode == "scan" else 10)
        assert operation.type == "job"
    assert rooted(discovery(time.time()), job.pid) is None


def test_the_rotation_revisits_every_pid_and_reads_a_slice(mode: str) -> None:
    """Structural: within one rotation every process is read again; one refresh reads far from all."""
    every = VERIFY_EVERY if mode == "scan" else EVENTS_VERIFY_EVERY
    # Children of a plain shell reading its commands from a pipe: not an operation, nor are they.
    with idle_processes(600) as sleeps:
        discovery = make(mode, young_seconds=0.0)
        discovery(time.time())
        present = {str(pid).encode() for pid in sleeps}
        assert present <= discovery._table.keys()
        start = discovery._seq
        reads: list[int] = []
        for _ in range(every):
            discovery(time.time())
            reads.append(discovery.reads)
        # Every sleep, still there, was read during the rotation (start time and exec checked).
        assert all(discovery._table[name].read_seq > start for name in present)
        # No refresh read every process (the sleeps are over half the table).
        assert max(reads) < discovery.table_size - len(present) // 2
        # The slices partition the table: each process has exactly one turn in a rotation.
        turns = {name: discovery._table[name].slot % every for name in present}
        assert set(turns.values()) == set(range(every))


def test_without_kernel_events_it_scans(tmp_path: Path) -> None:
    """A listener that does not hear the kernel: discovery says so and still sees starts and execs."""
    silent = ExitListener()  # never started: what a refused or silent connector leaves
    discovery = Discovery(build_table(), min_age=0.0, events=silent)
    discovery(time.time())
    assert discovery.mode == "scan"
    assert "not available" in discovery.mode_reason and silent.reason in discovery.mode_reason
    argv, gate = gated_exec(tmp_path)
    with started(argv, tmp_path) as shell:
        refresh_until(discovery, lambda _ops: str(shell.pid).encode() in discovery._table, 1)
        gate.touch()
        refresh_until(discovery, lambda ops: (op := rooted(ops, shell.pid)) and op.name == "train.py", 25)
    assert discovery.mode == "scan"


def test_a_refused_connector_falls_back_to_scanning(tmp_path: Path) -> None:
    """For real: in another network namespace the kernel refuses the proc connector."""
    code = (
        "import sys, time, json\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from dgx_spark.collector.discovery import Discovery\n"
        "from dgx_spark.collector.proc_events import ExitListener\n"
        "from dgx_spark.collector.rules import build_table\n"
        "listener = ExitListener(); listener.start()\n"
        "discovery = Discovery(build_table(), min_age=0.0, events=listener)\n"
        "ops = discovery(time.time())\n"
        "print(json.dumps([discovery.mode, discovery.mode_reason, listener.ready, discovery.table_size]))\n"
    )
    try:
        result = subprocess.run(
            ["unshare", "--net", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"cannot make a network namespace here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    import json

    mode, reason, ready, size = json.loads(result.stdout.strip().splitlines()[-1])
    assert (mode, ready) == ("scan", False)
    assert reason.startswith("scanning /proc: kernel process events not available")
    assert size > 0


def test_health_says_which_mode_runs(backend: Dashboard) -> None:
    data = backend.get_json("/api/health")["data"]
    assert data["discovery_mode"] in ("events", "scan")
    assert data["discovery_mode_reason"]
    if data["discovery_mode"] == "scan":
        assert data["discovery_mode_reason"].startswith("scanning /proc")
