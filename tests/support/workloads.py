"""Real workloads for tests: servers, training-like jobs, scripts, memory and CPU hogs.

Every helper is a context manager that writes its script into a folder the test
owns (usually ``tmp_path``), starts it in a new session (own process group, no
controlling terminal) and kills the whole group on exit, even if the test fails.

    with workloads.http_server(tmp_path) as server:
        wait_until(lambda: find(server.pid))
        assert server.port ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PYTHON = sys.executable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Workload:
    """A running workload: its root process, where it runs, and how to stop it."""

    process: subprocess.Popen[bytes]
    folder: Path
    port: int | None = None
    script: Path | None = None
    ready_file: Path | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        """The root process id (also the process group id)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the root process is still running."""
        return self.process.poll() is None

    def children_pids(self) -> list[int]:
        """Pids of the direct children of the root process (from /proc)."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[1]) == self.pid:
                found.append(int(name))
        return found

    def wait_ready(self, timeout: float = 30.0) -> Workload:
        """Wait until the workload says it is ready (or its port answers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"workload exited early with {self.process.returncode}: {self.log()}")
            if self.ready_file is not None and self.ready_file.exists():
                return self
            if self.ready_file is None and self.port is not None and _port_open(self.port):
                return self
            if self.ready_file is None and self.port is None:
                return self
            time.sleep(0.02)
        raise TimeoutError(f"workload not ready after {timeout}s: {self.log()}")

    def log(self) -> str:
        """What the workload printed so far (stdout and stderr)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the whole process group; SIGKILL whatever is left after ``timeout``."""
        kill_group(self.process, sig, timeout)


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal a process group, wait for its leader, then SIGKILL the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def spawn(
    argv: Sequence[str],
    folder: Path,
    *,
    port: int | None = None,
    script: Path | None = None,
    ready: bool = False,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = 30.0,
) -> Iterator[Workload]:
    """Start ``argv`` in ``folder`` in its own session; kill its group on exit.

    Args:
        argv: The command (never through a shell).
        folder: Working directory; its log goes there too.
        port: The port it will listen on, if any (used to wait for readiness).
        script: The script file it runs, if any (for the test's information).
        ready: Whether the command touches ``$WORKLOAD_READY`` when it is ready.
        env: Extra environment variables.
        wait: Whether to wait until it is ready before yielding.
        timeout: How long to wait for readiness.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = (script.stem if script else Path(argv[0]).name) + f"-{time.monotonic_ns()}"
    log_path = folder / f"{stem}.log"
    ready_file = folder / f"{stem}.ready" if ready else None
    full_env = dict(os.environ)
    full_env.pop("DGX_SPARK_OPERATION_ID", None)
    full_env["PYTHONUNBUFFERED"] = "1"
    if ready_file is not None:
        full_env["WORKLOAD_READY"] = str(ready_file)
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            cwd=folder,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    workload = Workload(process, folder, port=port, script=script, ready_file=ready_file, log_path=log_path)
    try:
        if wait:
            workload.wait_ready(timeout)
        yield workload
    finally:
        workload.kill()


def write_script(folder: Path, name: str, body: str) -> Path:
    """Write a script file (dedented) into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


_READY = """
import os
def ready():
    path = os.environ.get("WORKLOAD_READY")
    if path:
        open(path, "w").close()
"""


@contextlib.contextmanager
def http_server(folder: Path, port: int | None = None) -> Iterator[Workload]:
    """``python -m http.server PORT --bind 127.0.0.1`` in ``folder``; waits until it answers."""
    port = port or free_port()
    argv = [PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with spawn(argv, folder, port=port) as workload:
        yield workload


@contextlib.contextmanager
def training_script(
    folder: Path,
    name: str = "train_tiny.py",
    *,
    epochs: int = 1000,
    seconds_per_epoch: float = 0.5,
    args: Sequence[str] = (),
) -> Iterator[Workload]:
    """A training-like script that prints ``Epoch i/N - loss: x`` lines and sleeps."""
    script = write_script(
        folder,
        name,
        _READY
        + f"""
import sys, time
ready()
EPOCHS = {epochs}
for epoch in range(1, EPOCHS + 1):
    loss = 1.0 / epoch
    print(f"Epoch {{epoch}}/{{EPOCHS}} - loss: {{loss:.4f}}", flush=True)
    time.sleep({seconds_per_epoch})
""",
    )
    with spawn([PYTHON, str(script), *args], folder, script=script, ready=True) as workload:
        yield workload


@contextlib.contextmanager
def launcher_with_workers(
    folder: Path, workers: int = 4, name: str = "train_launcher.py"
) -> Iterator[Workload]:
    """A torchrun-like launcher that starts ``workers`` child worker processes and waits."""
    worker = write_script(
        folder,
        "worker.py",
        """
        import sys, time
        rank = int(sys.argv[1])
        while True:
            time.sleep(1)
        """,
    )
    script = write_script(
        folder,
        name,
        _READY
        + f"""
import subprocess, sys, time
procs = [subprocess.Popen([sys.executable, {str(worker)!r}, str(rank)]) for rank in range({workers})]
ready()
for proc in procs:
    proc.wait()
""",
    )
    with spawn([PYTHON, str(script), "--nproc", str(workers)], folder, script=script, ready=True) as workload:
        yield workload


@contextlib.contextmanager
def bash_loop(folder: Path, name: str = "loop.sh") -> Iterator[Workload]:
    """``bash loop.sh``: an endless loop of ``sleep 1``."""
    script = write_script(
        folder,
        name,
        """
        #!/bin/bash
        [ -n "$WORKLOAD_READY" ] && touch "$WORKLOAD_READY"
        while true; do
            sleep 1
        done
        """,
    )
    with spawn(["bash", str(script)], folder, script=script, ready=True) as workload:
        yield workload


@contextlib.contextmanager
def plain_sleep(folder: Path, seconds: int = 300) -> Iterator[Workload]:
    """A plain ``sleep`` with no terminal (not an operation)."""
    with spawn(["sleep", str(seconds)], folder) as workload:
        yield workload


@contextlib.contextmanager
def memory_hog(folder: Path, megabytes: int = 200, name: str = "hold_memory.py") -> Iterator[Workload]:
    """A script that allocates and touches ``megabytes`` MB, then sleeps; ready once touched."""
    script = write_script(
        folder,
        name,
        _READY
        + f"""
import time
block = bytearray({megabytes} * 1024 * 1024)
for offset in range(0, len(block), 4096):
    block[offset] = 1
ready()
while True:
    time.sleep(1)
""",
    )
    with spawn([PYTHON, str(script)], folder, script=script, ready=True) as workload:
        yield workload


@contextlib.contextmanager
def busy_loop(folder: Path, name: str = "spin.py") -> Iterator[Workload]:
    """A script that burns one CPU core."""
    script = write_script(
        folder,
        name,
        _READY
        + """
ready()
while True:
    pass
""",
    )
    with spawn([PYTHON, str(script)], folder, script=script, ready=True) as workload:
        yield workload


@contextlib.contextmanager
def memory_tree(
    folder: Path, children: int = 2, megabytes_each: int = 100, name: str = "tree_memory.py"
) -> Iterator[Workload]:
    """A parent script whose ``children`` each allocate and touch ``megabytes_each`` MB."""
    child = write_script(
        folder,
        "child_memory.py",
        f"""
        import sys, time
        block = bytearray({megabytes_each} * 1024 * 1024)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        open(sys.argv[1], "w").close()
        while True:
            time.sleep(1)
        """,
    )
    script = write_script(
        folder,
        name,
        _READY
        + f"""
import os, subprocess, sys, time
marks = [os.path.join({str(folder)!r}, f"child-{{i}}-{{os.getpid()}}.ready") for i in range({children})]
procs = [subprocess.Popen([sys.executable, {str(child)!r}, mark]) for mark in marks]
while not all(os.path.exists(mark) for mark in marks):
    time.sleep(0.05)
ready()
for proc in procs:
    proc.wait()
""",
    )
    with spawn([PYTHON, str(script)], folder, script=script, ready=True, timeout=60) as workload:
        yield workload
