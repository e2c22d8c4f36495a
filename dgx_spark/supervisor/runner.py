"""The runner: a small process that stays the parent of one launched command.

Usage: ``python -m dgx_spark.supervisor.runner RUN_DIR``. ``RUN_DIR/spec.json``
holds the argv, cwd, environment and log settings. The runner starts the
command in its own session (no shell), pumps its stdout/stderr into the capped,
rotated log, writes ``runner.json`` (pid + create time) once it is running and
``exit.json`` when it ends, both atomically (tmp file + ``os.replace``), so the
exit status survives a dashboard that is down or was SIGKILLed. The exit status
is also written, before ``exit.json``, as a line of ``runner.log`` and as a note
in the operation's log, so it can be recovered when ``exit.json`` is unreadable
(:func:`recover_exit`). Signals to the runner are forwarded to the command's
process group: SIGINT as SIGINT, SIGTERM and SIGHUP as SIGTERM, SIGUSR1 as SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from dgx_spark.collector.logfile import LogWriter

SPEC_FILE = "spec.json"
RUNNER_FILE = "runner.json"
EXIT_FILE = "exit.json"
# The runner's own stdout/stderr; one ``exit {json}`` line per ended run.
RUNNER_LOG = "runner.log"
DRAIN_SECONDS = 1.0
# What a signal to the runner becomes for the command (SIGUSR1 asks for SIGKILL: the runner must live to record it).
FORWARDED = {
    signal.SIGINT: signal.SIGINT,
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGHUP: signal.SIGTERM,
    signal.SIGUSR1: signal.SIGKILL,
}
_EXIT_LINE = "exit "
# The runner's notes in the operation log: "[dgx-spark <time>] run N starting: ..." / "... exited: code 3".
_NOTE = re.compile(r"^\[dgx-spark [^\]]*\] (?:run (\d+) (starting): |(exited): (?:code (-?\d+)|killed by (\S+)))")
TAIL_BYTES = 256 * 1024


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
        run = spec.get("run")
        self.run_number = run if isinstance(run, int) and not isinstance(run, bool) else 1

    def note(self, text: str) -> None:
        """A line from the runner itself in the operation's log."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.log.write(f"[dgx-spark {stamp}] {text}\n".encode(errors="replace"))

    def _on_signal(self, signum: int, _frame: Any) -> None:
        forwarded = FORWARDED.get(signal.Signals(signum), signal.SIGTERM)
        self.stop_signal = int(forwarded)
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child.pid, forwarded)

    def run(self) -> int:
        """Start the command, pump its output, record its exit; return the runner's exit code."""
        for signum in FORWARDED:
            signal.signal(signum, self._on_signal)
        argv = [str(a) for a in self.spec["argv"]]
        self.note(f"run {self.run_number} starting: {self.spec.get('display') or shlex.join(argv)}")
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
        """Record the exit status (log note, runner.log line, then exit.json atomically); return 0."""
        signame = None
        if code < 0:
            try:
                signame = signal.Signals(-code).name
            except ValueError:
                signame = f"signal {-code}"
        info = {
            "run": self.run_number,
            "pid": pid,
            "exit_code": code,
            "signal": signame,
            "ended_at": time.time(),
            "error": error,
            "stop_signal": self.stop_signal,
        }
        self.note(f"exited: {'killed by ' + signame if signame else f'code {code}'}")
        self.log.close()
        # stdout is runner.log: the second copy, should exit.json be unreadable.
        print(_EXIT_LINE + json.dumps(info), flush=True)
        write_json_atomic(self.run_dir / EXIT_FILE, info)
        return 0


def _tail_lines(path: Path, limit: int = TAIL_BYTES) -> list[str]:
    """The last ``limit`` bytes of a file as lines (empty when unreadable)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()


def _from_runner_log(run_dir: Path, run: int) -> dict[str, Any] | None:
    for line in reversed(_tail_lines(run_dir / RUNNER_LOG)):
        if not line.startswith(_EXIT_LINE):
            continue
        try:
            info = json.loads(line[len(_EXIT_LINE):])
        except ValueError:
            continue
        if isinstance(info, dict) and info.get("run", 1) == run and isinstance(info.get("exit_code"), int):
            return info
    return None


def _from_operation_log(log_paths: list[Path], run: int) -> dict[str, Any] | None:
    """The "exited" note that follows this run's "starting" note (the log may have rotated in between)."""
    lines: list[str] = []
    for path in reversed(log_paths):  # oldest first
        lines += _tail_lines(path)
    exited: dict[str, Any] | None = None
    for line in reversed(lines):
        match = _NOTE.match(line)
        if match is None:
            continue
        if match.group(2):  # a "starting" note
            return exited if match.group(1) == str(run) else None
        if exited is None:
            if match.group(4) is not None:
                exited = {"exit_code": int(match.group(4)), "signal": None}
            else:
                name = match.group(5)
                number = getattr(signal.Signals, name, None) if name.startswith("SIG") else None
                exited = {"exit_code": -int(number) if number else None, "signal": name}
        else:
            exited = None  # two "exited" notes after the last start: not this run's
    return None


def recover_exit(run_dir: Path, log_paths: list[Path], run: int) -> dict[str, Any] | None:
    """How run ``run`` ended, from ``runner.log`` or the operation log's notes (when exit.json is unreadable).

    Args:
        run_dir: The operation's run folder.
        log_paths: The operation log, then its rotated backups (newest first).
        run: The run number.

    Returns:
        A dict like ``exit.json``'s (``exit_code``, ``signal``; no ``ended_at``), or None.
    """
    return _from_runner_log(run_dir, run) or _from_operation_log(log_paths, run)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m dgx_spark.supervisor.runner RUN_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dgx_spark.supervisor.runner RUN_DIR", file=sys.stderr)
        return 2
    return Runner(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
