"""The one reader of a discovered process's output: through the process itself, never a path.

A discovered process's stdout (fd 1) and stderr (fd 2) are opened through
``/proc/<pid>/fd/<n>``, relative to a directory handle on ``/proc/<pid>`` whose
start time was checked against the operation id. That magic link is the file
the process holds open, whatever its name points to now: renaming the file or
swapping it for a symlink changes nothing, and a reused PID is refused. Only
regular files are opened (never a terminal, a pipe or a socket). Once the process
has ended nothing is opened again; a handle opened while it lived may still be
read (its last lines).

Two rules decide who may see what:

* ``public``: the process belongs to the dashboard's own user (real and
  effective uid). Another user's process shows its output only to a token holder.
* ``storable``: the output may be kept (events' last lines, history, the
  webhook, progress and outcomes): the process is the dashboard's own user's,
  or its owner could read the file itself (mode bits). Otherwise the dashboard
  would be reading, for anyone, a file its owner cannot.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from dgx_spark.collector import logfile
from dgx_spark.collector.containers import ContainerOutput, ContainerWatcher
from dgx_spark.collector.model import Operation, operation_id
from dgx_spark.redaction import redact_text

logger = logging.getLogger(__name__)

OWN_UID = os.getuid()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MAX_LINE_CHARS = 4000
"""Longest line returned for showing (as for launched logs)."""
MAX_HELD = 256
"""At most this many outputs are held open for the probes (fds are a finite resource)."""
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@functools.cache
def _boot() -> float:
    """Boot time as discovery computes it (ids must match to the hundredth of a second); read once."""
    from dgx_spark.collector.discovery import boot_time

    return boot_time()


def _read_at(dirfd: int, name: str, size: int = 8192) -> bytes | None:
    """A small file inside ``/proc/<pid>`` (relative to its directory handle)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """Who a process runs as: uids and gids (real, effective) and its groups."""

    uids: tuple[int, ...]
    gids: tuple[int, ...]
    groups: frozenset[int]

    @property
    def uid(self) -> int:
        """The real uid."""
        return self.uids[0]

    def is_own(self) -> bool:
        """Whether the process runs as the dashboard's own user (real and effective uid)."""
        return all(uid == OWN_UID for uid in self.uids[:2])

    def can_read(self, info: os.stat_result) -> bool:
        """Whether this owner could open a file with this mode and ownership for reading.

        Mode bits only (ACLs are not looked at); root reads everything.
        """
        uid = self.uids[1] if len(self.uids) > 1 else self.uids[0]
        if uid == 0:
            return True
        if info.st_uid == uid:
            return bool(info.st_mode & stat.S_IRUSR)
        if info.st_gid in self.groups or info.st_gid in self.gids:
            return bool(info.st_mode & stat.S_IRGRP)
        return bool(info.st_mode & stat.S_IROTH)


def _owner(dirfd: int) -> Owner | None:
    """The uids and groups from ``/proc/<pid>/status``."""
    raw = _read_at(dirfd, "status", 16384)
    if raw is None:
        return None
    uids: tuple[int, ...] = ()
    gids: tuple[int, ...] = ()
    groups: frozenset[int] = frozenset()
    try:
        for line in raw.split(b"\n"):
            if line.startswith(b"Uid:"):
                uids = tuple(int(v) for v in line.split()[1:])
            elif line.startswith(b"Gid:"):
                gids = tuple(int(v) for v in line.split()[1:])
            elif line.startswith(b"Groups:"):
                groups = frozenset(int(v) for v in line.split()[1:])
    except ValueError:
        return None
    if len(uids) < 2 or len(gids) < 2:
        return None
    return Owner(uids, gids, groups)


def _start_ticks(dirfd: int) -> int | None:
    """The process's start time in clock ticks since boot (``stat`` field 22)."""
    raw = _read_at(dirfd, "stat", 2048)
    if not raw:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


class OpenedOutput:
    """An open, checked handle on one output file of a process (close it when done)."""

    def __init__(self, fd: int, info: os.stat_result, owner: Owner, pid: int, fd_number: int) -> None:
        """Wrap an fd opened by :meth:`ProcessOutput.open`."""
        self.fd = fd
        self.identity = (info.st_dev, info.st_ino)
        self.owner = owner
        self.pid = pid
        self.fd_number = fd_number
        self.public = owner.is_own()
        self.storable = self.public or owner.can_read(info)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the handle (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def size(self) -> int:
        """The file's current size (0 when closed)."""
        if self.fd < 0:
            return 0
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return 0

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (b"" when closed or unreadable)."""
        if self.fd < 0 or size <= 0:
            return b""
        try:
            return os.pread(self.fd, size, offset)
        except OSError:
            return b""

    def tail_bytes(self, size: int) -> tuple[bytes, int]:
        """The last ``size`` bytes and the offset they start at."""
        end = self.size()
        start = max(0, end - size)
        return self.pread(end - start, start), start


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessOutput:
    """Where to read one discovered operation's output: its root process, checked on every open.

    Holds no file: picklable, safe to keep in UI state. ``open`` fails once the
    process has ended or its PID belongs to another process.
    """

    op_id: str
    pid: int
    fd_number: int = 1
    proc: str = "/proc"

    @property
    def key(self) -> str:
        """A text form (``proc:<op id>:<pid>:<fd>``) for :meth:`from_key`."""
        return f"proc:{self.op_id}:{self.pid}:{self.fd_number}"

    @staticmethod
    def from_key(text: str) -> ProcessOutput | None:
        """The source a :attr:`key` names, or None when ``text`` is not one."""
        parts = text.split(":")
        if len(parts) != 4 or parts[0] != "proc" or not parts[2].isdigit() or parts[3] not in ("1", "2"):
            return None
        return ProcessOutput(parts[1], int(parts[2]), int(parts[3]))

    @staticmethod
    def of(op: Operation, fd_number: int = 1) -> ProcessOutput | None:
        """The output of a live discovered operation's root process, or None."""
        if op.source != "discovered" or op.pid is None or not op.is_live:
            return None
        return ProcessOutput(op.id, op.pid, fd_number)

    def owner(self) -> Owner | None:
        """Who the process runs as, if it is still the operation's process."""
        dirfd = self._open_dir()
        if dirfd is None:
            return None
        try:
            return _owner(dirfd)
        finally:
            os.close(dirfd)

    def _open_dir(self) -> int | None:
        """A handle on ``/proc/<pid>`` checked to be this operation's process."""
        try:
            dirfd = os.open(f"{self.proc}/{self.pid}", _DIR_FLAGS)
        except OSError:
            return None
        ticks = _start_ticks(dirfd)
        if ticks is None or operation_id(self.pid, ticks / CLOCK_TICKS + _boot()) != self.op_id:
            os.close(dirfd)
            return None
        return dirfd

    def open(self) -> OpenedOutput | None:
        """Open the file the process writes to, through the process; None unless a regular file."""
        dirfd = self._open_dir()
        if dirfd is None:
            return None
        try:
            owner = _owner(dirfd)
            name = f"fd/{self.fd_number}"
            try:
                # stat() follows the magic link to the open file: refuse terminals, pipes, sockets
                # before opening anything (opening a terminal or a FIFO is not harmless).
                target = os.stat(name, dir_fd=dirfd)
            except OSError:
                return None
            if owner is None or not stat.S_ISREG(target.st_mode):
                return None
            try:
                fd = os.open(name, _OPEN_FLAGS, dir_fd=dirfd)
            except OSError:
                return None
            try:
                info = os.fstat(fd)
            except OSError:
                os.close(fd)
                return None
            if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (target.st_dev, target.st_ino):
                os.close(fd)  # fd 1 was replaced between the two looks
                return None
            return OpenedOutput(fd, info, owner, self.pid, self.fd_number)
        finally:
            os.close(dirfd)


LogSource = Path | ProcessOutput | ContainerOutput
"""What the logs route and the logs view read: a launched operation's file, a process's output,
or a container's log from its engine."""


def log_source(text: str, containers: ContainerWatcher | None = None) -> LogSource:
    """The source a stored text names: a ``ProcessOutput``/``ContainerOutput`` key, else a launched log's path.

    ``containers`` is the watcher whose engine a container's log is read from (None: none, nothing is read).
    """
    return ProcessOutput.from_key(text) or ContainerOutput.from_key(text, containers) or Path(text)


def _decode_texts(texts: list[str]) -> list[str]:
    """Engine log lines made safe for showing, like a file's (``decode_lines``)."""
    return decode_lines("\n".join(texts).encode()) if texts else []


def decode_lines(raw: bytes) -> list[str]:
    """Lines for showing: ANSI codes and control characters stripped, secrets hidden, cut long."""
    text = raw.decode("utf-8", errors="replace")
    return [
        redact_text(logfile.strip_ansi(line)[: 2 * MAX_LINE_CHARS])[:MAX_LINE_CHARS] for line in text.splitlines()
    ]


def tail_lines(
    opened: OpenedOutput, lines: int, chunk: int = 64 * 1024, limit: int = 8 * 1024 * 1024
) -> tuple[list[str], int, bool]:
    """The last ``lines`` lines of an open output.

    Returns:
        (lines, size, truncated), as ``logfile.read_tail``.
    """
    size = opened.size()
    position, data = size, b""
    while position > 0 and data.count(b"\n") <= lines and size - position < limit:
        step = min(chunk, position)
        position -= step
        data = opened.pread(step, position) + data
    decoded = decode_lines(data)
    if position > 0 and decoded:
        decoded = decoded[1:]  # probably cut
    truncated = position > 0 or len(decoded) > lines
    return (decoded[-lines:] if lines else []), size, truncated


def lines_after(opened: OpenedOutput, offset: int, limit: int = 1024 * 1024) -> tuple[list[str], int]:
    """Complete lines written after ``offset`` (from 0 again after a truncation)."""
    size = opened.size()
    if offset > size:
        offset = 0
    data = opened.pread(min(limit, size - offset), offset)
    end = data.rfind(b"\n")
    if end < 0:
        return ([], offset) if len(data) < limit else (decode_lines(data), offset + len(data))
    return decode_lines(data[: end + 1]), offset + end + 1


# --------------------------------------------------------------- readers for the logs route and view
def read_tail(source: LogSource, lines: int = 1000) -> tuple[list[str], int, bool] | None:
    """The last lines of a launched log or a live process's output; None when not readable now."""
    if isinstance(source, Path):
        return logfile.read_tail(source, lines)
    if isinstance(source, ContainerOutput):
        found = source.tail(lines)
        return None if found is None else (_decode_texts(found[0]), found[1], found[2])
    opened = source.open()
    if opened is None:
        return None
    with opened:
        return tail_lines(opened, lines)


def read_from(source: LogSource, offset: int) -> tuple[list[str], int]:
    """Complete lines after ``offset`` (nothing once a process's output cannot be opened)."""
    if isinstance(source, Path):
        return logfile.read_from(source, offset)
    if isinstance(source, ContainerOutput):
        texts, new_offset = source.after(offset)
        return _decode_texts(texts), new_offset
    opened = source.open()
    if opened is None:
        return [], offset
    with opened:
        return lines_after(opened, offset)


def size_of(source: LogSource) -> int:
    """How many bytes the log or output holds now (0 when not readable)."""
    if isinstance(source, Path):
        try:
            return source.stat().st_size
        except OSError:
            return 0
    if isinstance(source, ContainerOutput):
        return source.size()
    opened = source.open()
    if opened is None:
        return 0
    with opened:
        return opened.size()


def iter_whole(source: ProcessOutput, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """The raw bytes of a live process's output file, read through one handle."""
    opened = source.open()
    if opened is None:
        return
    with opened:
        offset = 0
        while block := opened.pread(chunk, offset):
            offset += len(block)
            yield block


# Character devices by major number: terminals (pty slaves, virtual consoles, serial lines).
_TERMINAL_MAJORS = frozenset({4, 5, *range(136, 144)})
_DEV_NULL = (1, 3)


def describe_target(source: ProcessOutput) -> str | None:
    """Where a process's output goes when it is not a file the dashboard can read, in words.

    Looks through the checked ``/proc/<pid>`` handle like :meth:`ProcessOutput.open`
    (``stat`` only: nothing is opened). None when it is a regular file.
    """
    dirfd = source._open_dir()
    if dirfd is None:
        return "nowhere any more: the process has ended"
    name = f"fd/{source.fd_number}"
    try:
        try:
            target = os.stat(name, dir_fd=dirfd)
        except FileNotFoundError:
            return "nowhere: its output is closed"
        except PermissionError:
            return "a place the dashboard may not look at (the process runs as another user)"
        except OSError:
            return "a place the dashboard cannot tell"
        if stat.S_ISREG(target.st_mode):
            return None
        if stat.S_ISFIFO(target.st_mode):
            return "a pipe (another program reads it)"
        if stat.S_ISSOCK(target.st_mode):
            return "a socket (for example the systemd journal)"
        if stat.S_ISCHR(target.st_mode):
            device = (os.major(target.st_rdev), os.minor(target.st_rdev))
            if device == _DEV_NULL:
                return "/dev/null (it is thrown away)"
            if device[0] in _TERMINAL_MAJORS:
                try:
                    where = os.readlink(name, dir_fd=dirfd)
                except OSError:
                    where = ""
                return "a terminal" + (f" ({where})" if where.startswith("/dev/") else "")
            return "a device"
        return "something that is not a file"
    finally:
        os.close(dirfd)


def needs_token(source: LogSource | None) -> bool:
    """Whether showing this output needs the token: the process runs as another user.

    A process that has gone needs none: nothing can be opened through it any more.
    A container's log (from its engine, which only root or its group may ask) always does.
    """
    if isinstance(source, ContainerOutput):
        return True
    if not isinstance(source, ProcessOutput):
        return False
    owner = source.owner()
    return owner is not None and not owner.is_own()


# -------------------------------------------------------------------- handles the probes share
class HeldOutput:
    """A live discovered operation's stdout (and a separate stderr file), opened once and kept.

    Kept open until the operation's outcome was read, so its last lines can be
    read after the process has gone without opening anything by name.
    """

    def __init__(self, stdout: OpenedOutput | None, stderr: OpenedOutput | None) -> None:
        """Hold the handles (either may be None)."""
        self.stdout = stdout
        self.stderr = stderr

    @property
    def storable(self) -> bool:
        """Whether what stdout holds may be kept (see the module docstring)."""
        return self.stdout is not None and self.stdout.storable

    def storable_handles(self) -> list[OpenedOutput]:
        """The handles whose content may be kept."""
        return [h for h in (self.stdout, self.stderr) if h is not None and h.storable]

    def tail(self, lines: int, size: int = 16 * 1024) -> list[str]:
        """The last non-empty lines of every storable handle (stdout first), for events and outcomes."""
        result: list[str] = []
        for handle in self.storable_handles():
            data, start = handle.tail_bytes(size)
            text = decode_lines(data.replace(b"\r\n", b"\n"))
            # Carriage-return redraws (progress bars) come out as separate lines; keep content only.
            kept = [line for line in text if line.strip()]
            if start > 0 and kept:
                kept = kept[1:]
            result.extend(kept[-lines:])
        return result

    def close(self) -> None:
        """Close both handles."""
        for handle in (self.stdout, self.stderr):
            if handle is not None:
                handle.close()


_NOTHING = HeldOutput(None, None)


class OutputHandles:
    """The outputs the sampler's probes read, opened once per operation (thread-safe)."""

    def __init__(self, max_open: int = MAX_HELD) -> None:
        """Hold at most ``max_open`` operations' outputs open."""
        self.max_open = max_open
        self._held: dict[str, HeldOutput] = {}
        self._lock = threading.Lock()
        self._full_logged = False

    def get(self, op: Operation) -> HeldOutput | None:
        """The held output of a discovered operation: opened on the first call while it lives."""
        with self._lock:
            held = self._held.get(op.id)
            if held is None:
                held = self._open(op)
                if held is None:
                    return None
                self._held[op.id] = held
        return None if held is _NOTHING else held

    def _open(self, op: Operation) -> HeldOutput | None:
        source = ProcessOutput.of(op)
        if source is None:
            return None  # ended before we looked: nothing is opened by name afterwards
        if sum(1 for h in self._held.values() if h is not _NOTHING) >= self.max_open:
            if not self._full_logged:
                logger.warning("output: %d outputs held open already; not reading more", self.max_open)
                self._full_logged = True
            return None
        stdout = source.open()
        if stdout is None:
            return _NOTHING
        if not stdout.storable:
            stdout.close()  # the probes keep what they read: never another user's unreadable file
            return _NOTHING
        stderr = dataclasses.replace(source, fd_number=2).open()
        if stderr is not None and (stderr.identity == stdout.identity or not stderr.storable):
            stderr.close()  # 2>&1 (the same file), or not ours to keep
            stderr = None
        return HeldOutput(stdout, stderr)

    def release(self, op_id: str) -> None:
        """Close an operation's handles (they will not be opened again)."""
        with self._lock:
            held = self._held.get(op_id)
            if held is not None and held is not _NOTHING:
                held.close()
                self._held[op_id] = _NOTHING

    def retain(self, present: Iterable[str]) -> None:
        """Forget operations no longer in the snapshot."""
        keep = set(present)
        with self._lock:
            for op_id in [i for i in self._held if i not in keep]:
                self._held.pop(op_id).close()

    def open_count(self) -> int:
        """How many operations' outputs are open now."""
        with self._lock:
            return sum(
                1
                for h in self._held.values()
                if h is not _NOTHING and h.stdout is not None and h.stdout.fd >= 0
            )

