"""The runner: a small process that stays the parent of one launched command.

Usage: ``python -m dgx_spark.supervisor.runner RUN_DIR``. ``RUN_DIR/spec.json``
holds the argv, cwd, environment and log settings. The runner starts the
command in its own session (no shell), pumps its stdout/stderr into the capped,
rotated log, writes ``runner.json`` (pid + create time) once it is running and
``exit.json`` when it ends, both atomically (tmp file + ``os.replace``), so the
exit status survives a dashboard that is down or was SIGKILLed. A SIGTERM to the
runner is forwarded to the command's process group.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from dgx_spark.supervisor.logs import LogWriter

SPEC_FILE = "spec.json"
RUNNER_FILE = "runner.json"
EXIT_FILE = "exit.json"
DRAIN_SECONDS = 1.0


def boot_id() -> str | None:
    """This boot's id (changes at every reboot), or None when unreadable."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so readers see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Runner:
    """Runs one command to its end and records what happened."""

    def __init__(self, run_dir: Path) -> None:
        """Load the spec from ``run_dir``."""
        self.run_dir = run_dir
        spec = read_json(run_dir / SPEC_FILE)
        if spec is None:
            raise SystemExit(f"runner: no readable {SPEC_FILE} in {run_dir}")
        self.spec = spec
        self.log = LogWriter(Path(spec["log_path"]), int(spec["log_max_bytes"]), int(spec["log_backups"]))
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None

    def note(self, text: str) -> None:
        """A line from the runner itself in the operation's log."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.log.write(f"[dgx-spark {stamp}] {text}\n".encode(errors="replace"))

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum
        if self.child is not None and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signal.SIGTERM if signum != signal.SIGKILL else signum)
            except (ProcessLookupError, PermissionError):
                pass

    def run(self) -> int:
        """Start the command, pump its output, record its exit; return the runner's exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        argv = [str(a) for a in self.spec["argv"]]
        self.note(f"starting: {self.spec.get('display') or shlex.join(argv)}")
        if self.stop_signal is not None:
            return self.finish(None, -int(self.stop_signal), "stopped before start")
        read_fd, write_fd = os.pipe()
        try:
            self.child = subprocess.Popen(
                argv,
                cwd=self.spec.get("cwd") or None,
                env=self.spec["env"],
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
                close_fds=True,
                # The app runs with umask 077 (private data folder); the job gets the user's own.
                umask=int(self.spec.get("umask", -1)),
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            self.note(f"could not start: {exc.strerror or exc}")
            return self.finish(None, code, f"could not start: {exc.strerror or exc}")
        os.close(write_fd)
        child = self.child
        try:
            create_time = psutil.Process(child.pid).create_time()
        except psutil.Error:
            create_time = None
        me = psutil.Process()
        write_json_atomic(
            self.run_dir / RUNNER_FILE,
            {
                "pid": child.pid,
                "create_time": create_time,
                "runner_pid": me.pid,
                "runner_create_time": me.create_time(),
                "started_at": time.time(),
                "boot_id": boot_id(),
            },
        )
        if self.stop_signal is not None:
            self._on_signal(self.stop_signal, None)
        self._pump(read_fd, child)
        code = child.wait()
        return self.finish(child.pid, code, None)

    def _pump(self, read_fd: int, child: subprocess.Popen[bytes]) -> None:
        """Copy output to the log until the command exits (then drain briefly) or EOF."""
        drain_until: float | None = None
        try:
            while True:
                try:
                    ready, _, _ = select.select([read_fd], [], [], 0.25)
                except InterruptedError:
                    continue
                if ready:
                    data = os.read(read_fd, 65536)
                    if not data:
                        return
                    self.log.write(data)
                    continue
                if drain_until is None and child.poll() is not None:
                    # Children of the command may hold the pipe open: do not wait forever.
                    drain_until = time.monotonic() + DRAIN_SECONDS
                if drain_until is not None and time.monotonic() > drain_until:
                    return
        finally:
            os.close(read_fd)

    def finish(self, pid: int | None, code: int, error: str | None) -> int:
        """Record the exit status atomically, note it in the log; return 0."""
        signame = None
        if code < 0:
            try:
                signame = signal.Signals(-code).name
            except ValueError:
                signame = f"signal {-code}"
        write_json_atomic(
            self.run_dir / EXIT_FILE,
            {
                "pid": pid,
                "exit_code": code,
                "signal": signame,
                "ended_at": time.time(),
                "error": error,
                "stop_signal": self.stop_signal,
            },
        )
        self.note(f"exited: {'killed by ' + signame if signame else f'code {code}'}")
        self.log.close()
        return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m dgx_spark.supervisor.runner RUN_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dgx_spark.supervisor.runner RUN_DIR", file=sys.stderr)
        return 2
    return Runner(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
