"""Discovery: turn the machine's process table into operations, cheaply.

The cost of a refresh follows the operations and the churn, not the number of
processes. Each process is known by (pid, start time); what never changes for
it (command line, executable, working directory, owner, classification) is read
once and kept until it exits or ``exec``s. A refresh reads ``/proc/<pid>/stat``
(raw ``os.open``/``os.read``) only for:

- new processes, and the processes of operations (their CPU and RAM move);
- a rotating slice of the others, so every process is re-checked (pid reuse:
  start time; ``exec``: name, code and stack addresses, or the command line
  where those are hidden) within ``VERIFY_EVERY`` refreshes, and processes
  younger than ``YOUNG_SECONDS`` every refresh (a wrapper ``exec``s into its job);
- processes whose parent went away (they were re-parented).

Two modes (``Discovery.mode``): *scan* lists ``/proc`` every refresh (a pid whose
directory inode changed is read again at once, so pid reuse is seen at once); *events*
follows the kernel's process events (``proc_events``: fork, exec, exit), exact
and without listing ``/proc`` except every ``EVENTS_VERIFY_EVERY`` refreshes and
after events were lost. Events are used where the kernel lets the dashboard
listen (root or ``CAP_NET_ADMIN``; any user since Linux 6.6), else it scans.
Listening ports come from ``sockets``.

A process's output is never read here, nor remembered by path: the probes read
it through the process itself (``output``).

Trees fold into one operation: a process whose parent is part of an operation
belongs to it (a launcher's workers, a server's runners, a script's commands).
Processes a rule ignores (daemons, interactive shells, tmux) are boundaries:
what runs under them is looked at on its own.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import pwd
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from dgx_spark.collector.ancestry import ancestor_pids
from dgx_spark.collector.containers import CgroupContainer, container_from_cgroup
from dgx_spark.collector.model import Container, Operation, operation_id
from dgx_spark.collector.proc_events import ChangeFeed, ExitListener
from dgx_spark.collector.rules import (
    CommandShape,
    ProcessFacts,
    Rule,
    RuleTable,
    Verdict,
    load_table,
    shape_of,
)
from dgx_spark.collector.sockets import Key, ListeningTracker, NamespaceListening
from dgx_spark.redaction import redact_command

logger = logging.getLogger(__name__)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PF_KTHREAD = 0x00200000
MIN_AGE_SECONDS = 1.0
"""Processes younger than this are not listed yet (no flicker from ``ps``/``grep``)."""
ACTIVE_CPU_PERCENT = 5.0
"""An operation using more CPU than this (100 = one core) is ``active``."""
VERIFY_EVERY = 5
"""Scan mode: every process is re-checked (pid reuse, ``exec``) at least once in this many refreshes."""
EVENTS_VERIFY_EVERY = 30
"""Events mode: ``/proc`` is listed and every process re-checked once in this many refreshes (a safety net)."""
CLASSIFIED_MAX = 4096
"""Distinct commands whose classification is remembered (then it starts again)."""
_BUCKETS = 60
"""Rotation slots (a multiple of both rotation lengths above)."""
YOUNG_SECONDS = 10.0
"""Scan mode: processes younger than this are re-checked every refresh (a wrapper that ``exec``s)."""
LAUNCH_MARKER = b"DGX_SPARK_OPERATION_ID="
"""Environment variable the supervisor sets on processes the dashboard launches."""
DESCRIPTION_CHARS = 160
# Launcher rules whose description starts with "<launcher> ×<workers>", so a distributed run
# reads differently from a plain run of the same script (both are named after the script).
LAUNCHER_LABELS: dict[str, str] = {
    "torchrun": "torchrun",
    "torch-distributed": "torchrun",
    "accelerate": "accelerate",
    "accelerate-module": "accelerate",
    "deepspeed": "deepspeed",
}
_DASHBOARD_MARKERS = ("reflex", "granian")


def _display_command(argv: Sequence[str]) -> str:
    """The one place a command line becomes display text (secrets redacted)."""
    return redact_command(list(argv))


def _read(path: str, size: int = 4096) -> bytes | None:
    """Read a small /proc file with raw syscalls; ``None`` if it is gone or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, size)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < size:
                break
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _aslr(proc: str) -> bool:
    """Whether address-space randomisation is on (then an ``exec`` moves the stack)."""
    data = _read(f"{proc}/sys/kernel/randomize_va_space")
    return data is None or data.strip() not in (b"0", b"")


def boot_time(proc: str = "/proc") -> float:
    """System boot time (seconds since the epoch), as psutil computes it."""
    data = _read(f"{proc}/stat", 65536) or b""
    for line in data.split(b"\n"):
        if line.startswith(b"btime"):
            return float(line.split()[1])
    return time.time() - time.monotonic()


@dataclasses.dataclass(slots=True)
class _Known:
    """What never changes for one process (cached per (pid, start time))."""

    facts: ProcessFacts
    shape: CommandShape
    verdict: Verdict | None
    create_time: float
    listening_verdict: Verdict | None = None
    launched: bool | None = None
    command: str | None = None
    description: str | None = None
    key: Key = (b"", b"")
    cpu_ticks: int = -1
    """CPU ticks (user + system) at the last tick it was part of an operation."""
    cpu_seq: int = -1
    """Which tick ``cpu_ticks`` is from."""
    container: CgroupContainer | None = None
    """The container its cgroup names (None: none, or the dashboard's own)."""
    netns: str | None = None
    """Its network namespace when it is not the dashboard's (its ports are found through it)."""

    def display(self) -> tuple[str, str]:
        """The redacted command line and short description (computed once)."""
        if self.command is None or self.description is None:
            argv = self.facts.argv or (self.facts.comm,)
            self.command = _display_command(argv)
            self.description = _describe(argv)
        return self.command, self.description


_KERNEL = object()
"""Cache entry for kernel threads and processes that vanished mid-read."""
_IGNORED = object()
"""Cache entry for processes a rule says are not operations (daemons, shells)."""
_DEAD = object()
"""Cache entry for zombies (they never come back; the pid's directory goes when reaped)."""


@dataclasses.dataclass(slots=True)
class _Pid:
    """One pid in the process table: who holds it and what its ``stat`` said last."""

    known: _Known | object
    fields: list[bytes]
    """``/proc/<pid>/stat`` after the command name, as of refresh ``read_seq``."""
    start: int
    """Start time in clock ticks since boot (the identity, with the pid)."""
    signature: bytes
    """Name, code start and stack start from ``stat``: they change when the process ``exec``s."""
    ino: int
    """Inode of ``/proc/<pid>`` when it was listed (a new one: another process); 0: not listed yet."""
    slot: int
    """Which refresh of a rotation re-checks it."""
    read_seq: int
    cmdline: bytes | None = None
    """The raw command line, kept only where ``signature`` cannot see an ``exec`` (hidden addresses)."""


class Discovery:
    """Turns the process table into operations (one call per sampler tick)."""

    def __init__(
        self,
        rules: RuleTable | None = None,
        *,
        rules_file: Path | None = None,
        proc: str = "/proc",
        min_age: float = MIN_AGE_SECONDS,
        exclude_self: bool = True,
        events: ExitListener | None = None,
        young_seconds: float = YOUNG_SECONDS,
    ) -> None:
        """Create a discovery.

        Args:
            rules: A fixed rule table; default: built-ins plus ``rules_file``.
            rules_file: The user's TOML rules (default ``settings.rules_file``);
                reloaded when it changes.
            proc: Where procfs is mounted.
            min_age: Seconds a process must live before it is listed.
            exclude_self: Leave out the dashboard's own processes.
            events: Follow the kernel's process events where they work, heard by this
                listener (the services' one); None: always scan.
            young_seconds: Scan mode: re-check processes this young every refresh.
        """
        if rules is None and rules_file is None:
            from dgx_spark.settings import settings

            rules_file = settings.rules_file
        self._fixed_rules = rules
        self._rules_file = rules_file
        self._rules_mtime: float | None = None
        self.rules: RuleTable = rules or load_table(rules_file)
        if rules is None:
            self._rules_mtime = self._mtime()
        self.proc = proc
        self._proc_b = proc.encode()
        self._proc_prefix = self._proc_b + b"/"
        self.min_age = min_age
        self.exclude_self = exclude_self
        self.own_pid = os.getpid()
        self.boot_time = boot_time(proc)
        self.listening = ListeningTracker(proc)
        self.namespaces = NamespaceListening(proc)
        self._host_netns = _readlink(f"{proc}/self/ns/net")
        own_cgroup = _read(f"{proc}/self/cgroup", 16384)
        own_container = container_from_cgroup(own_cgroup.decode("utf-8", "replace")) if own_cgroup else None
        self._own_container = own_container.id if own_container is not None else None
        self._table: dict[bytes, _Pid] = {}
        # Indexes over the table, kept in step by _put/_drop: what a refresh may have to look at.
        self._entries: dict[bytes, tuple[_Known, list[bytes]]] = {}
        self._loud: set[bytes] = set()
        self._buckets: list[set[bytes]] = [set() for _ in range(_BUCKETS)]
        self._kids: dict[bytes, set[bytes]] = {}
        self._young: dict[bytes, int] = {}
        self._inos: dict[bytes, int] = {}
        self._slots = 0
        self.young_seconds = young_seconds
        self._aslr = _aslr(proc)
        self.events = events
        self._feed: ChangeFeed | None = None
        self._mode = "scan"
        self.reads = 0
        """``stat`` files read by the last refresh (how much of the table it looked at)."""
        self._users: dict[int, str] = {}
        self._classified: dict[tuple[object, ...], tuple[CommandShape, Verdict | None]] = {}
        self._cgroups: dict[bytes, CgroupContainer | None] = {}
        self._seq = 0
        self._prev_ops: set[str] = set()
        self._prev_mono: float | None = None
        self._prev_time: float | None = None

    # ----------------------------------------------------------------- rules
    def _mtime(self) -> float | None:
        if self._rules_file is None:
            return None
        try:
            return self._rules_file.stat().st_mtime
        except OSError:
            return None

    def _maybe_reload_rules(self) -> None:
        if self._fixed_rules is not None:
            return
        mtime = self._mtime()
        if mtime != self._rules_mtime:
            self._rules_mtime = mtime
            self.rules = load_table(self._rules_file)
            self._forget()  # every process is classified again
            logger.info("classification rules reloaded from %s", self._rules_file)

    def _forget(self) -> None:
        """Forget every process (the next refresh learns them all again)."""
        self._table.clear()
        self._entries.clear()
        self._loud.clear()
        for bucket in self._buckets:
            bucket.clear()
        self._kids.clear()
        self._young.clear()
        self._inos = {}
        self._classified.clear()

    # ------------------------------------------------------------ cold facts
    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def _learn(self, pid: int, ppid: int, comm: str, tty: bool, start: int) -> _Known | object:
        """Read the facts that never change for a new process, and classify it."""
        base = f"{self.proc}/{pid}"
        raw = _read(f"{base}/cmdline")
        if raw is None:
            return _KERNEL
        argv = tuple(part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0")) if raw else ()
        try:
            uid = os.stat(base).st_uid
        except OSError:
            return _KERNEL
        facts = ProcessFacts(
            pid=pid,
            ppid=ppid,
            argv=argv,
            comm=comm,
            exe=_readlink(f"{base}/exe"),
            cwd=_readlink(f"{base}/cwd"),
            user=self._user(uid),
            tty=tty,
        )
        # Churn repeats itself (a loop's `sleep 1`, a monitor's `nvidia-smi`): classify a command once.
        same = (argv, comm, facts.exe, facts.cwd, facts.user, tty)
        cached = self._classified.get(same) if comm else None
        if cached is None:
            shape = shape_of(facts)
            cached = (shape, self.rules.classify(facts, shape))
            if len(self._classified) >= CLASSIFIED_MAX:
                self._classified.clear()
            self._classified[same] = cached
        shape, verdict = cached
        known = _Known(facts, shape, verdict, start / CLOCK_TICKS + self.boot_time)
        cgroup = _read(f"{base}/cgroup", 16384)
        container: CgroupContainer | None = None
        if cgroup and cgroup in self._cgroups:  # processes share cgroups: work each one out once
            container = self._cgroups[cgroup]
        elif cgroup:
            container = container_from_cgroup(cgroup.decode("utf-8", "replace"))
            if len(self._cgroups) >= CLASSIFIED_MAX:
                self._cgroups.clear()
            self._cgroups[cgroup] = container
        if container is not None and container.id != self._own_container:
            known.container = container
        netns = _readlink(f"{base}/ns/net")
        if netns is not None and self._host_netns is not None and netns != self._host_netns:
            known.netns = netns
        return known

    def _verdict(self, known: _Known, listening: bool) -> Verdict | None:
        if not listening:
            return known.verdict
        if known.listening_verdict is None:
            facts = dataclasses.replace(known.facts, listening=True)
            known.listening_verdict = self.rules.classify(facts, known.shape)
        return known.listening_verdict

    def _launched(self, known: _Known) -> bool:
        """Whether the dashboard launched this process (marker in its environment)."""
        if known.launched is None:
            raw = _read(f"{self.proc}/{known.facts.pid}/environ", 65536)
            known.launched = raw is not None and (raw.startswith(LAUNCH_MARKER) or b"\0" + LAUNCH_MARKER in raw)
            name = known.key[0]
            if self._entries.get(name, (None,))[0] is known:
                self._sort(name, known)
        return known.launched

    # ------------------------------------------------------------------ tick
    def __call__(self, now: float) -> list[Operation]:
        """Scan the process table once and return the live operations."""
        # The scan holds thousands of small containers alive at once; letting the cyclic
        # GC run in the middle of it means walking them (and the whole heap) for nothing.
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return self._scan(now)
        finally:
            if paused:
                gc.enable()

    @property
    def mode(self) -> str:
        """``events`` (kernel process events) or ``scan`` (listing ``/proc``), as of the last refresh."""
        return self._mode

    @property
    def mode_reason(self) -> str:
        """Why this mode: what the kernel's process events said, in words."""
        if self._mode == "events":
            return "following the kernel's process events (proc connector: fork, exec, exit)"
        if self.events is None:
            return "scanning /proc: kernel process events turned off"
        return f"scanning /proc: kernel process events not available ({self.events.reason})"

    @property
    def _known(self) -> dict[Key, _Known | object]:
        """What is known per live process identity (for tests and diagnostics)."""
        return {(name, entry.fields[19]): entry.known for name, entry in self._table.items()}

    @property
    def table_size(self) -> int:
        """How many processes the table holds (kernel threads included)."""
        return len(self._table)

    def _stat(self, name: bytes) -> tuple[bytes, int, list[bytes]] | None:
        """``/proc/<pid>/stat`` as (data, index of the ``)`` closing the name, fields after it)."""
        try:
            fd = os.open(self._proc_prefix + name + b"/stat", os.O_RDONLY)
        except OSError:
            return None
        try:
            data = os.read(fd, 1024)
        except OSError:
            return None
        finally:
            os.close(fd)
        self.reads += 1
        close = data.rfind(b")")
        # state ppid pgrp session tty tpgid flags ... utime(11) stime(12) ... starttime(19) vsize rss(21)
        # rsslim startcode(23) endcode startstack(25)
        fields = data[close + 2 :].split(None, 26)
        if len(fields) < 27:
            return None
        return data, close, fields

    def _cmdline(self, name: bytes) -> bytes | None:
        return _read(f"{self.proc}/{name.decode()}/cmdline")

    # ------------------------------------------------------- the process table
    def _put(self, name: bytes, entry: _Pid, previous: _Pid | None) -> None:
        """Store ``entry`` for ``name`` and keep the indexes in step (``previous``: what it replaces)."""
        if previous is not None:
            self._unindex(name, previous)
        self._table[name] = entry
        self._buckets[entry.slot % _BUCKETS].add(name)
        self._kids.setdefault(entry.fields[1], set()).add(name)
        if entry.known.__class__ is _Known:
            self._entries[name] = (entry.known, entry.fields)
        self._sort(name, entry.known)

    def _sort(self, name: bytes, known: _Known | object) -> None:
        """Keep ``name`` among the loud processes, or not: those a refresh looks at beyond trees.

        Quiet: a candidate no rule names, in no container or other network namespace,
        not launched by the dashboard. Alone (no children, no port) it is no operation.
        """
        if known.__class__ is _Known and (
            known.verdict is not None
            or known.container is not None
            or known.netns is not None
            or known.launched is not False
        ):
            self._loud.add(name)
        else:
            self._loud.discard(name)

    def _unindex(self, name: bytes, entry: _Pid) -> None:
        self._buckets[entry.slot % _BUCKETS].discard(name)
        kids = self._kids.get(entry.fields[1])
        if kids is not None:
            kids.discard(name)
            if not kids:
                del self._kids[entry.fields[1]]
        self._entries.pop(name, None)
        self._loud.discard(name)
        self._young.pop(name, None)

    def _drop(self, name: bytes) -> None:
        """Forget a pid that went away."""
        entry = self._table.pop(name, None)
        if entry is not None:
            self._unindex(name, entry)

    def _add(self, name: bytes, ino: int, seq: int) -> None:
        """Learn a pid seen for the first time (or held by another process than before)."""
        read = self._stat(name)
        previous = self._table.get(name)
        if read is None:
            if previous is not None:
                self._drop(name)
            return
        data, close, fields = read
        known = _DEAD if fields[0] == b"Z" else self._learn_stat(name, data, close, fields)
        signature = data[:close] + b" " + fields[23] + b" " + fields[25]
        self._slots += 1
        entry = _Pid(known, fields, int(fields[19]), signature, ino, self._slots, seq)
        if known.__class__ is _Known and (fields[25] == b"0" or not self._aslr):
            entry.cmdline = self._cmdline(name)
        self._put(name, entry, previous)
        if known is not _KERNEL and known is not _DEAD:
            self._young[name] = entry.start

    def _verify(self, name: bytes, entry: _Pid, ino: int, seq: int, execed: bool = False) -> bool:
        """Read a known pid's ``stat`` again: same process? ``exec``'d? False when it is gone."""
        read = self._stat(name)
        if read is None:
            self._drop(name)
            return False
        data, close, fields = read
        if int(fields[19]) != entry.start:  # the pid was reused: another process
            self._add(name, ino, seq)
            return name in self._table
        if ino:
            entry.ino = ino
        entry.read_seq = seq
        if fields[1] != entry.fields[1]:  # re-parented
            self._unindex(name, entry)
            entry.fields = fields
            self._put(name, entry, None)
        else:
            entry.fields = fields
        known = entry.known
        if known is _KERNEL or known is _DEAD:
            return True
        if fields[0] == b"Z":
            entry.known = _DEAD
            self._entries.pop(name, None)
            self._loud.discard(name)
            return True
        signature = data[:close] + b" " + fields[23] + b" " + fields[25]
        if not execed and signature == entry.signature:
            if entry.cmdline is not None:
                cmdline = self._cmdline(name)  # addresses hidden: the command line tells
                execed = cmdline is not None and cmdline != entry.cmdline
            if not execed:
                if known.__class__ is _Known:
                    self._entries[name] = (known, fields)
                return True
        # It exec'd: another program in the same process (same pid, same start time).
        entry.signature = signature
        entry.known = self._learn_stat(name, data, close, fields)
        if known.__class__ is _Known and entry.known.__class__ is _Known:
            entry.known.cpu_ticks = known.cpu_ticks
            entry.known.cpu_seq = known.cpu_seq
        entry.cmdline = None
        if entry.known.__class__ is _Known:
            if fields[25] == b"0" or not self._aslr:
                entry.cmdline = self._cmdline(name)
            self._entries[name] = (entry.known, fields)
        else:
            self._entries.pop(name, None)
        self._sort(name, entry.known)
        return True

    def _take_events(self) -> tuple[set[int], set[int], set[int], bool] | None:
        """Process events since the last refresh, or None when discovery must scan."""
        listener = self.events
        if listener is None:
            return None
        if self._feed is None:
            self._feed = listener.feed()
        taken = self._feed.take()
        return taken if listener.ready else None

    def _refresh_table(self, seq: int) -> dict[bytes, tuple[_Known, list[bytes]]]:
        """Bring the process table up to date, reading as little as it can; the candidates.

        Returns pid -> (cached facts, ``stat`` fields) of the processes that may be
        part of an operation (kernel threads, zombies and ignored ones left out).
        The ``stat`` fields of a process not read this refresh are from its last read.
        """
        table = self._table
        self.reads = 0
        events = self._take_events()
        dirty: set[bytes] = set()
        if events is None:
            full, every = True, VERIFY_EVERY
            young = (time.clock_gettime(time.CLOCK_BOOTTIME) - self.young_seconds) * CLOCK_TICKS
            for name in [name for name, start in self._young.items() if start <= young]:
                del self._young[name]
            check = set(self._young)
        else:
            forked, execed, exited, complete = events
            full = not complete or self._mode != "events" or seq % EVENTS_VERIFY_EVERY == 0
            every = EVENTS_VERIFY_EVERY
            self._young.clear()
            dirty = {str(pid).encode() for pid in execed}
            check = set(dirty)
        self._mode = "scan" if events is None else "events"
        if full:
            listing = {item.name: item.inode() for item in os.scandir(self._proc_b) if item.name.isdigit()}
            gone = table.keys() - listing.keys()
            changed = listing.items() - self._inos.items()  # new pids, and pids in another directory
            self._inos = listing
        else:
            ended = {str(pid).encode() for pid in exited - forked}
            gone = table.keys() & ended
            changed = {(str(pid).encode(), 0) for pid in forked}
        for name in gone:
            check.update(self._kids.get(name, ()))  # re-parented
            self._drop(name)
        for name, ino in changed:
            entry = table.get(name)
            if entry is None:
                self._add(name, ino, seq)
            else:  # another /proc/<pid> directory: most likely another process (the start time tells)
                self._verify(name, entry, ino, seq, name in dirty)
        phase = seq % every
        for bucket in range(phase, _BUCKETS, every):
            check.update(self._buckets[bucket])
        for name in check:
            entry = table.get(name)
            if entry is not None and entry.read_seq != seq:
                self._verify(name, entry, 0, seq, name in dirty)
        return self._entries

    def _fresh_tree(self, tree: list[bytes], entries: dict[bytes, tuple[_Known, list[bytes]]], seq: int) -> list[bytes]:
        """An operation's tree with every member's ``stat`` from this refresh (gone ones left out)."""
        table = self._table
        fresh: list[bytes] = []
        for pid in tree:
            entry = table.get(pid)
            if entry is None:
                continue
            if entry.read_seq != seq and not self._verify(pid, entry, 0, seq):
                continue
            if pid in entries:
                fresh.append(pid)
        if fresh and fresh[0] != tree[0]:
            return []  # the root went (or exec'd into something ignored): not this operation any more
        return fresh

    def _scan(self, now: float) -> list[Operation]:
        """One refresh of the process table (see ``__call__``)."""
        self._maybe_reload_rules()
        mono = time.monotonic()
        self._seq = seq = self._seq + 1
        entries = self._refresh_table(seq)

        loud = self._loud

        # Listening ports: candidates are members, newest first (only read when needed).
        self.listening.update(
            lambda pid: entry[0].key if (entry := entries.get(pid)) is not None else None,
            lambda: sorted((known.key for known, _fields in entries.values()), key=_start_of, reverse=True),
        )
        ports_by_key = self.listening.ports_by_key()
        unreadable = self.listening.unreadable
        # Processes in other network namespaces (all loud): their ports are found through the namespace.
        namespaces: dict[str, list[Key]] = {}
        for name in loud:
            known = entries[name][0]
            if known.netns is not None:
                namespaces.setdefault(known.netns, []).append(known.key)
        ports_by_key.update(self.namespaces.update(namespaces))
        if self.namespaces.unreadable:
            unreadable = unreadable | self.namespaces.unreadable

        # Trees: only parents among the candidates have children; roots worth a look are loud
        # processes, parents and listeners whose parent is no candidate (quiet loners are skipped).
        children: dict[bytes, list[bytes]] = {}
        kids_index = self._kids
        for parent in [pid for pid in kids_index if pid in entries]:
            kids = [pid for pid in kids_index[parent] if pid in entries]
            if kids:
                kids.sort(key=_pid_order)
                children[parent] = kids
        candidates = set(loud)
        candidates.update(children)
        candidates.update(key[0] for key in ports_by_key if key[0] in entries)
        roots = sorted((pid for pid in candidates if entries[pid][1][1] not in entries), key=_pid_order)
        if self.exclude_self:
            roots = self._without_dashboard(entries, children, roots)
        roots = _fold_containers(entries, children, roots, loud)

        elapsed = None if self._prev_mono is None else mono - self._prev_mono
        tick = _Tick(now, elapsed, seq, self._prev_time, ports_by_key, unreadable)
        operations: list[Operation] = []
        min_age = self.min_age
        for root in roots:
            root_known = entries[root][0]
            if now - root_known.create_time < min_age:
                continue
            if (
                root_known.launched is False
                and root_known.verdict is None
                and root_known.container is None
                and root not in children
                and root_known.key not in ports_by_key
            ):
                continue  # a lone process no rule names: _fold would say "not an operation"
            tree = [root]
            index = 0
            while index < len(tree):
                tree.extend(children.get(tree[index], ()))
                index += 1
            if not self._may_be_operation(tree, entries, ports_by_key):
                continue
            tree = self._fresh_tree(tree, entries, seq)
            if not tree:
                continue
            operation = self._fold(tree, entries, tick)
            if operation is not None:
                operations.append(operation)
        self._prev_ops = {op.id for op in operations}
        self._prev_mono = mono
        self._prev_time = now
        operations.sort(key=lambda op: (op.started_at_ts or 0.0, op.id))
        return operations

    def _learn_stat(self, name: bytes, data: bytes, close: int, fields: list[bytes]) -> _Known | object:
        """Cache entry for a process seen for the first time."""
        pid = int(name)
        if int(fields[6]) & PF_KTHREAD or pid == 1:
            return _KERNEL
        comm = data[data.find(b"(") + 1 : close].decode("utf-8", "replace")
        known = self._learn(pid, int(fields[1]), comm, fields[4] != b"0", int(fields[19]))
        if isinstance(known, _Known):
            known.key = (name, fields[19])
            if known.verdict is not None and known.verdict.type == "ignore":
                return _IGNORED
        return known

    def _may_be_operation(
        self, tree: list[bytes], entries: dict[bytes, tuple[_Known, list[bytes]]], ports_by_key: dict[Key, list[int]]
    ) -> bool:
        """Whether ``_fold`` could make an operation of this tree (from what is cached: no reads)."""
        root_known = entries[tree[0]][0]
        if root_known.container is not None:
            return True
        for pid in tree:
            known = entries[pid][0]
            if known.verdict is not None or known.key in ports_by_key:
                return True
        return self._launched(root_known)

    def _fold(self, tree: list[bytes], entries: dict[bytes, tuple[_Known, list[bytes]]], tick: _Tick) -> Operation | None:
        """One operation from a process tree, or ``None`` when nothing in it is one."""
        root_known = entries[tree[0]][0]
        ports: set[int] = set()
        inner_ports: set[int] = set()
        representative: tuple[_Known, Verdict] | None = None
        fallback: tuple[_Known, Verdict] | None = None
        ports_unknown = False
        ports_by_key = tick.ports_by_key
        unreadable = tick.unreadable
        seq = tick.seq
        previous_seq = seq - 1
        born_after = tick.prev_time if tick.prev_time is not None else float("inf")
        ticks_delta = 0
        rss_pages = 0
        pids: list[int] = []
        for pid in tree:
            known, fields = entries[pid]
            key = known.key
            pids.append(known.facts.pid)
            # Resources: CPU from tick deltas, RSS summed.
            ticks = int(fields[11]) + int(fields[12])
            rss_pages += int(fields[21])
            if known.cpu_seq == previous_seq:
                ticks_delta += ticks - known.cpu_ticks
            elif known.create_time >= born_after:
                ticks_delta += ticks  # born since the last tick: all its CPU is new
            known.cpu_ticks = ticks
            known.cpu_seq = seq
            # Classification and ports.
            own_ports = ports_by_key.get(key)
            if own_ports:
                ports.update(own_ports)
                if known.netns is not None:
                    inner_ports.update(own_ports)
                verdict = self._verdict(known, True)
            else:
                verdict = known.verdict
            if key in unreadable:
                ports_unknown = True
            if verdict is None:
                continue
            if representative is None and not verdict.rule.generic:
                representative = (known, verdict)
            if fallback is None:
                fallback = (known, verdict)
        # A specific rule (root first, then the first in the tree) names the tree; else the root's.
        chosen = representative or fallback
        container = root_known.container
        if chosen is None:
            if container is None and not self._launched(root_known):
                return None
            lead, verdict = root_known, None
        else:
            lead, verdict = chosen
        rule = verdict.rule if verdict is not None else None
        op_type = verdict.type if verdict is not None else "program"
        if op_type == "program" and ports:
            op_type = "server"
        name = verdict.name if verdict is not None else (lead.shape.entry or lead.facts.comm)

        op_id = operation_id(root_known.facts.pid, root_known.create_time)
        cpu_percent = None
        if tick.elapsed and op_id in self._prev_ops:  # first sighting: no interval yet
            cpu_percent = round(max(0.0, ticks_delta / CLOCK_TICKS / tick.elapsed * 100.0), 1)
        sorted_ports = tuple(sorted(ports))
        port = _main_port(rule, sorted_ports)
        status = _status_of(op_type, rule, bool(sorted_ports), ports_unknown, cpu_percent)
        return Operation(
            id=op_id,
            type=op_type,  # type: ignore[arg-type]
            name=name,
            status=status,  # type: ignore[arg-type]
            description=_launcher_prefix(rule, lead, tree, entries) + lead.display()[1],
            started_at_ts=root_known.create_time,
            port=port,
            ports=sorted_ports,
            pid=root_known.facts.pid,
            pids=tuple(pids),
            command=root_known.display()[0],
            user=root_known.facts.user,
            cpu_percent=cpu_percent,
            memory_bytes=rss_pages * PAGE_SIZE,
            cwd=root_known.facts.cwd,
            container=Container(id=container.id, engine=container.runtime) if container is not None else None,
            port_map=(
                tuple((None if p in inner_ports else p, p) for p in sorted_ports) if container is not None else None
            ),
        )

    def _ancestors(self) -> list[bytes]:
        """Our own pid and its ancestors (read directly: some are not operations)."""
        return [str(pid).encode() for pid in ancestor_pids(self.own_pid, self.proc)]

    def _without_dashboard(
        self,
        entries: dict[bytes, tuple[_Known, list[bytes]]],
        children: dict[bytes, list[bytes]],
        roots: list[bytes],
    ) -> list[bytes]:
        """Roots without the dashboard's own processes; what the dashboard launched becomes roots.

        Left out: our own pid, its ancestors, and every descendant of a
        ``reflex``/``granian`` ancestor (sibling workers, the frontend server),
        except processes carrying the launch marker and what runs under them.
        """
        ancestors = self._ancestors()
        excluded = set(ancestors)
        stack = [
            pid
            for pid in ancestors[1:]
            if pid in entries
            and any(marker in arg for arg in entries[pid][0].facts.argv for marker in _DASHBOARD_MARKERS)
        ]
        while stack:
            parent = stack.pop()
            for child in children.get(parent, ()):
                if child in excluded or self._launched(entries[child][0]):
                    continue
                excluded.add(child)
                stack.append(child)
        kept = [pid for pid in roots if pid not in excluded]
        for parent in excluded:
            kept.extend(child for child in children.get(parent, ()) if child not in excluded)
        return kept


def _pid_order(pid: bytes) -> tuple[int, bytes]:
    """Numeric order of pids spelt in bytes (as /proc lists them)."""
    return len(pid), pid


def _start_of(key: Key) -> int:
    return int(key[1])


def _main_port(rule: Rule | None, ports: tuple[int, ...]) -> int | None:
    """The port a person opens: the rule's own when it listens there, else the lowest."""
    if not ports:
        return None
    return rule.port if rule is not None and rule.port in ports else ports[0]


def _status_of(op_type: str, rule: Rule | None, listening: bool, ports_unknown: bool,
               cpu_percent: float | None) -> str:
    """starting (a known server not listening yet, when its sockets could be read), active (busy), running."""
    if op_type == "server" and not listening and rule is not None and not rule.generic and not ports_unknown:
        return "starting"
    if cpu_percent is not None and cpu_percent > ACTIVE_CPU_PERCENT:
        return "active"
    return "running"

def _fold_containers(
    entries: dict[bytes, tuple[_Known, list[bytes]]],
    children: dict[bytes, list[bytes]],
    roots: list[bytes],
    loud: Iterable[bytes] | None = None,
) -> list[bytes]:
    """Roots with each container's processes under one root: one container, one operation.

    A container's top processes (its init, ``docker exec`` sessions: those whose
    parent is not in the same container) are taken from under their parents
    (conmon, a shim) and put under the oldest of them.
    """
    tops: dict[str, list[bytes]] = {}
    # Every process in a container is loud (None: look at every candidate).
    members = entries if loud is None else loud
    for pid in sorted((pid for pid in members if entries[pid][0].container is not None), key=_pid_order):
        known, fields = entries[pid]
        container = known.container
        if container is None:
            continue
        parent = entries.get(fields[1])
        if parent is None or parent[0].container != container:
            tops.setdefault(container.id, []).append(pid)
    if not tops:
        return roots
    kept = set(roots)
    for members in tops.values():
        members.sort(key=lambda pid: _start_of(entries[pid][0].key))
        for top in members:
            siblings = children.get(entries[top][1][1])
            if siblings is not None and top in siblings:
                siblings.remove(top)
            kept.discard(top)
        kept.add(members[0])
        if len(members) > 1:
            children.setdefault(members[0], []).extend(members[1:])
    before = set(roots)
    return [pid for pid in roots if pid in kept] + [m[0] for m in tops.values() if m[0] not in before]


@dataclasses.dataclass(slots=True)
class _Tick:
    """What one tick shares between the trees it folds."""

    now: float
    elapsed: float | None
    seq: int
    prev_time: float | None
    ports_by_key: dict[Key, list[int]]
    unreadable: set[Key]


def _launcher_prefix(
    rule: Rule | None, lead: _Known, tree: list[bytes], entries: dict[bytes, tuple[_Known, list[bytes]]]
) -> str:
    """``"torchrun ×4 · "`` for a launcher with 4 worker processes (its direct children); else ``""``."""
    label = LAUNCHER_LABELS.get(rule.id) if rule is not None else None
    if label is None:
        return ""
    workers = sum(1 for pid in tree if entries[pid][0].facts.ppid == lead.facts.pid)
    return f"{label} ×{workers} · " if workers else ""


def _describe(argv: Sequence[str]) -> str:
    """A short description from a command line: program base names, secrets hidden."""
    parts = list(argv)
    if parts:
        parts[0] = parts[0].rsplit("/", 1)[-1]
    if len(parts) > 1 and parts[1].startswith("/") and parts[1].count("/") > 2:
        parts[1] = parts[1].rsplit("/", 1)[-1]
    text = _display_command(parts)
    if len(text) > DESCRIPTION_CHARS:
        text = text[: DESCRIPTION_CHARS - 1].rstrip() + "…"
    return text
