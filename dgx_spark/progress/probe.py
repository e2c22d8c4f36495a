"""The sampler probe that fills in training progress on every snapshot.

For each job it reads only the new bytes of the job's output (the log file of a
launched job; a discovered job's stdout through the process itself, see
``collector/output.py``, and only when that output may be kept) and the
``trainer_state.json`` of an ``--output_dir`` when that file changed, hands both
to the tracker, and writes the merged view back onto the operation. Reports that
came in through the API are merged in by the tracker too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dgx_spark.collector.model import Operation
from dgx_spark.collector.output import OpenedOutput, OutputHandles
from dgx_spark.collector.rules import command_args
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.progress.parsers import OutputParser, ProgressUpdate, finite
from dgx_spark.progress.tracker import ProgressTracker, reads_like_training

logger = logging.getLogger(__name__)

# Bytes read from one log per tick; when more arrived, only the newest are read.
MAX_READ_BYTES = 256 * 1024
# The same for a discovered program whose output is read to see whether it is training.
CANDIDATE_READ_BYTES = 64 * 1024
# trainer_state.json files bigger than this are not read.
MAX_STATE_BYTES = 8 * 1024 * 1024

_EPOCH_FLAGS = re.compile(
    r"^--?(?:trainer\.)?(?:num[_-]train[_-]epochs|num[_-]epochs|n[_-]epochs|max[_-]epochs|epochs)$"
)
_OUTPUT_FLAGS = ("--output_dir", "--output-dir")


class LogFollower:
    """Reads what was appended to a file since the last call; survives truncation and rotation.

    Follows a launched job's log by its path (a file in the data folder), or an
    output already opened through a discovered process (``handle``: never reopened).
    """

    def __init__(self, path: str | None, max_read: int = MAX_READ_BYTES, handle: OpenedOutput | None = None) -> None:
        """Follow ``path`` (or ``handle``); the first read starts at most ``max_read`` bytes before the end."""
        self.path = path
        self.handle = handle
        self.max_read = max_read
        self.offset = 0
        self._identity: tuple[int, int] | None = None

    def read_new(self) -> tuple[bytes, bool]:
        """The new bytes, and whether the stream restarted (a new file, or bytes were skipped)."""
        if self.handle is not None:
            if self.handle.fd < 0:
                return b"", False
            fd = os.dup(self.handle.fd)
        elif self.path is None:
            return b"", False
        else:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                return b"", False
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return b"", False
            identity = (info.st_dev, info.st_ino)
            restarted = False
            if identity != self._identity:
                # A new file (first read or rotated): begin at its start, or near its end if large.
                restarted = self._identity is not None
                self._identity = identity
                self.offset = 0
            if info.st_size < self.offset:
                self.offset = 0  # truncated in place
                restarted = True
            if info.st_size - self.offset > self.max_read:
                self.offset = info.st_size - self.max_read
                restarted = True
            if info.st_size == self.offset:
                return b"", restarted
            data = os.pread(fd, min(self.max_read, info.st_size - self.offset), self.offset)
            self.offset += len(data)
            return data, restarted
        except OSError:
            return b"", False
        finally:
            os.close(fd)


def _flag_values(args: list[str], match: Any) -> Iterator[str]:
    """Values of flags accepted by ``match`` (``--flag value`` or ``--flag=value``)."""
    for index, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not match(name):
            continue
        if eq:
            yield value
        elif index + 1 < len(args):
            yield args[index + 1]


def epochs_from_command(args: list[str]) -> int | None:
    """The number of epochs a command line asks for (``--epochs 10``, ``--max_epochs=5``, ...)."""
    for value in _flag_values(args, _EPOCH_FLAGS.match):
        try:
            epochs = int(float(value))
        except ValueError:
            continue
        if 1 <= epochs <= 1_000_000:
            return epochs
    return None


def output_dir_from_command(args: list[str]) -> str | None:
    """The ``--output_dir`` of a command line (Hugging Face scripts), if any."""
    for value in _flag_values(args, lambda name: name in _OUTPUT_FLAGS):
        if value:
            return value
    return None


def process_cwd(pid: int) -> str | None:
    """A process's working directory, or None."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def parse_trainer_state(data: Any) -> ProgressUpdate | None:
    """Progress from the contents of a Hugging Face ``trainer_state.json``."""
    if not isinstance(data, dict):
        return None
    update = ProgressUpdate()
    step = finite(data.get("global_step"))
    max_steps = finite(data.get("max_steps"))
    epochs = finite(data.get("num_train_epochs"))
    epoch = finite(data.get("epoch"))
    if step is not None and step >= 0:
        update.step = int(step)
    if max_steps is not None and max_steps >= 1:
        update.total_steps = int(max_steps)
        if update.step is not None:
            update.progress = min(1.0, update.step / update.total_steps)
    if epochs is not None and epochs >= 1:
        update.total_epochs = int(epochs)
    if epoch is not None and epoch >= 0:
        update.epoch = round(epoch, 3)
    history = data.get("log_history")
    if isinstance(history, list):
        for key, name in (("loss", "train_loss"), ("eval_loss", "eval_loss"), ("learning_rate", "learning_rate")):
            for record in reversed(history):
                value = finite(record.get(key)) if isinstance(record, dict) else None
                if value is not None:
                    update.metrics[name] = value
                    break
    return None if update.is_empty() else update


class TrainerStateReader:
    """Watches ``trainer_state.json`` in an output dir and its ``checkpoint-*`` folders."""

    def __init__(self, output_dir: Path) -> None:
        """Watch ``output_dir``."""
        self.output_dir = output_dir
        self._seen: tuple[str, int] | None = None

    def _newest(self) -> tuple[Path, os.stat_result] | None:
        candidates = [self.output_dir / "trainer_state.json"]
        with contextlib.suppress(OSError), os.scandir(self.output_dir) as entries:
            candidates += [
                Path(e.path) / "trainer_state.json"
                for e in entries
                if e.name.startswith("checkpoint-") and e.is_dir(follow_symlinks=False)
            ]
        newest: tuple[Path, os.stat_result] | None = None
        for path in candidates:
            try:
                info = path.stat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and (newest is None or info.st_mtime_ns > newest[1].st_mtime_ns):
                newest = (path, info)
        return newest

    def read_if_changed(self) -> ProgressUpdate | None:
        """The file's progress when the newest one changed since the last call, else None."""
        newest = self._newest()
        if newest is None:
            return None
        path, info = newest
        key = (str(path), info.st_mtime_ns)
        if key == self._seen or info.st_size > MAX_STATE_BYTES:
            return None
        self._seen = key
        try:
            data = json.loads(path.read_bytes(), parse_constant=lambda _: None)
        except (OSError, ValueError):
            return None
        return parse_trainer_state(data)


class _Watch:
    """What the probe follows for one operation."""

    def __init__(self, op: Operation, max_read: int = MAX_READ_BYTES) -> None:
        args = command_args(op.command)
        self.max_read = max_read
        self.epochs = epochs_from_command(args)
        self.log_path: str | None = None
        self.output: OpenedOutput | None = None
        self.follower: LogFollower | None = None
        self.parser = OutputParser()
        self.parser.state.total_epochs = self.epochs
        self.state_reader: TrainerStateReader | None = None
        output_dir = output_dir_from_command(args)
        if output_dir:
            base = op.cwd or (process_cwd(op.pid) if op.pid else None)
            path = Path(output_dir).expanduser()
            if not path.is_absolute() and base:
                path = Path(base) / path
            if path.is_absolute():
                self.state_reader = TrainerStateReader(path)

    def follow(self, path: str | None, output: OpenedOutput | None = None) -> None:
        """Follow ``path`` or ``output`` from now on (a new one means a new follower and parser)."""
        if path == self.log_path and output is self.output:
            return
        self.log_path, self.output = path, output
        self.follower = LogFollower(path, self.max_read, handle=output) if path or output else None
        self.parser = OutputParser()
        self.parser.state.total_epochs = self.epochs


class ProgressProbe:
    """Sampler probe: progress, epoch, loss, ETA, throughput and stalled for jobs.

    A discovered program's output is read too (when it may be kept): once it reads
    like training (``reads_like_training``) the program is shown as a job, with
    ``type_source`` ``"output"``, and stays one while it is listed.
    """

    name = "progress"

    def __init__(self, tracker: ProgressTracker, handles: OutputHandles | None = None) -> None:
        """Use ``tracker`` and ``handles`` (the services' ones; by default handles of its own)."""
        self.tracker = tracker
        self.handles = handles or OutputHandles()
        self._watches: dict[str, _Watch] = {}
        # Discovered programs shown as jobs because of what they print.
        self._by_output: set[str] = set()

    def sample(self, ctx: SampleContext) -> None:
        """Read the jobs' new output and write every known progress onto its operation."""
        present: set[str] = set()
        for index, op in enumerate(ctx.operations):
            present.add(op.id)
            if op.type == "job":
                self._observe(op)
            elif (op.id in self._by_output or _may_be_training(op)) and self._observe(
                op, candidate=op.id not in self._by_output
            ):
                op = ctx.operations[index] = op.replace(type="job", type_source="output")
            self.tracker.record(op.id, ctx.now)
            view = self.tracker.view(op.id, ctx.now, alive=op.is_live)
            if view is not None:
                ctx.operations[index] = op.replace(**view.operation_fields(op.metrics))
        for op_id in [i for i in self._watches if i not in present]:
            del self._watches[op_id]
        self._by_output &= present
        self.tracker.forget(present)
        self.handles.retain(present)

    def _observe(self, op: Operation, candidate: bool = False) -> bool:
        """Feed the tracker with what this job's output and files say now.

        A ``candidate`` (a discovered program) is read the same way, but the tracker
        hears of it only once its output reads like training. Returns whether the
        operation is a job because of its output.
        """
        watch = self._watches.get(op.id)
        if watch is None:
            watch = self._watches[op.id] = _Watch(op, CANDIDATE_READ_BYTES if candidate else MAX_READ_BYTES)
            if watch.epochs is not None and not candidate:
                self.tracker.update(op.id, "command", ProgressUpdate(total_epochs=watch.epochs))
        if op.source == "discovered":
            # Opened once through the process while it lives, and kept until its outcome was
            # read: the last lines written before it ended are read here too.
            held = self.handles.get(op)
            watch.follow(None, held.stdout if held is not None and held.storable else None)
        else:
            watch.follow(op.log_path)
        if watch.follower is not None:
            data, restarted = watch.follower.read_new()
            if restarted:
                watch.parser = OutputParser()
                watch.parser.state.total_epochs = watch.epochs
                data = _from_first_line_break(data)
            if data and watch.parser.feed(data):
                if candidate and reads_like_training(watch.parser.state):
                    candidate = False
                    self._by_output.add(op.id)
                    logger.info("progress: %s (pid %s) prints training progress: shown as a job", op.name, op.pid)
                    if watch.epochs is not None:
                        self.tracker.update(op.id, "command", ProgressUpdate(total_epochs=watch.epochs))
                if not candidate:
                    self.tracker.update(op.id, "log", watch.parser.state)
        if candidate:
            return False
        if watch.state_reader is not None and op.is_live:
            update = watch.state_reader.read_if_changed()
            if update is not None:
                self.tracker.update(op.id, "trainer_state", update)
        return op.id in self._by_output


def _may_be_training(op: Operation) -> bool:
    """A live discovered program: its output may show it is a training job."""
    return op.type == "program" and op.source == "discovered" and op.is_live


def _from_first_line_break(data: bytes) -> bytes:
    """Drop the (probably cut) first line of a read that did not start at a line start."""
    cut = min((i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0), default=-1)
    return data[cut + 1 :] if cut >= 0 else b""
