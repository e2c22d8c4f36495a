"""Exact process events from the kernel: the netlink process-events connector.

The kernel's proc connector (``NETLINK_CONNECTOR``, ``CN_IDX_PROC``) multicasts a
``PROC_EVENT_EXIT`` for every process that ends, with its wait status (exit code,
or the signal that killed it), a ``PROC_EVENT_FORK`` for every process (and
thread) started and a ``PROC_EVENT_EXEC`` for every ``exec``. Listening needs root
or ``CAP_NET_ADMIN`` on older kernels (any user since Linux 6.6) and the initial
network namespace; where it is refused, or where it stays silent (checked once at
start with a short-lived child), the listener says so once in the log and
``ready`` stays False: outcomes then come from weaker sources and discovery
falls back to scanning ``/proc``.

One background thread reads the socket. It keeps the status of the processes
the sampler asked to watch (the roots of discovered operations), and a bounded
ring of the most recent others. Each ``ChangeFeed`` (discovery has one) collects
the pids started, exec'd and ended since it was last read.
"""

from __future__ import annotations

import collections
import errno
import logging
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import weakref

logger = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000
NLMSG_DONE = 3
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EXIT = struct.Struct("=iiII")  # pid, tgid, exit_code (wait status), exit_signal
_FORK = struct.Struct("=iiii")  # parent pid, parent tgid, child pid, child tgid
_EXEC = struct.Struct("=ii")  # pid, tgid
_WHAT = struct.Struct("=I")
_EVENT_HEAD = 16  # what, cpu, timestamp_ns
RECENT = 4096
"""Exits of unwatched processes remembered (a ring)."""
BATCH_SECONDS = 0.05
"""After reading what is queued, the thread waits this long: events gather, one wake-up reads many."""
FEED_MAX = 200_000
"""Pids a feed holds before it gives up and says events were lost (nobody read it)."""


class ChangeFeed:
    """Processes started, exec'd and ended since the last ``take`` (fed by the listener's thread)."""

    __slots__ = ("__weakref__", "_lock", "execed", "exited", "forked", "lost")

    def __init__(self, lock: threading.Lock) -> None:
        """An empty feed that starts ``lost`` (nothing before it was created is in it)."""
        self._lock = lock
        self.forked: set[int] = set()
        self.execed: set[int] = set()
        self.exited: set[int] = set()
        self.lost = True

    def take(self) -> tuple[set[int], set[int], set[int], bool]:
        """(forked, exec'd, exited, complete) since the last call; ``complete`` is False after a loss."""
        with self._lock:
            taken = (self.forked, self.execed, self.exited, not self.lost)
            self.forked, self.execed, self.exited, self.lost = set(), set(), set(), False
        return taken

    def _overflowed(self) -> None:
        """Called with the lock held: drop everything and say so."""
        self.forked.clear()
        self.execed.clear()
        self.exited.clear()
        self.lost = True


def describe_status(status: int) -> tuple[int | None, int | None, bool]:
    """A wait status as (exit code, signal, core dumped); exactly one of the first two is set."""
    sig = status & 0x7F
    if sig == 0:
        return (status >> 8) & 0xFF, None, False
    return None, sig, bool(status & 0x80)


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9, ``signal 77`` for numbers without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class ExitListener:
    """Listens for process exits on the proc connector in a daemon thread."""

    def __init__(self, self_test: bool = True) -> None:
        """Create a listener; ``start`` opens the socket."""
        self._self_test = self_test
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._watched: set[int] = set()
        self._kept: dict[int, tuple[int, float]] = {}
        self._recent: collections.OrderedDict[int, tuple[int, float]] = collections.OrderedDict()
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._stop = threading.Event()
        self._feeds: list[weakref.ref[ChangeFeed]] = []
        self.ready = False
        self.reason = "not started"
        self.received = 0
        self._overflow_logged = False

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Open the socket and start the thread (idempotent; failures are logged once)."""
        if self._thread is not None:
            return
        try:
            self._socket = self._open()
        except OSError as exc:
            self.reason = f"proc connector refused: {exc.strerror or exc}"
            logger.info(
                "exit statuses: %s; outcomes of discovered operations use weaker sources", self.reason
            )
            self._thread = threading.Thread(target=lambda: None)  # never start twice
            return
        self.reason = "checking"
        self._thread = threading.Thread(target=self._run, name="dgx-spark-proc-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(3)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self.ready = False

    @property
    def cpu_seconds(self) -> float:
        """CPU time the listening thread has used so far (0 when it does not run)."""
        thread = self._thread
        if thread is None or thread.ident is None or not thread.is_alive():
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, AttributeError):
            return 0.0

    def feed(self) -> ChangeFeed:
        """A new feed of process changes (forgotten when its owner drops it)."""
        feed = ChangeFeed(self._lock)
        with self._lock:
            self._feeds = [ref for ref in self._feeds if ref() is not None] + [weakref.ref(feed)]
        return feed

    def _live_feeds(self) -> list[ChangeFeed]:
        """The feeds still owned by someone (called with the lock held; drops the others)."""
        feeds = [feed for ref in self._feeds if (feed := ref()) is not None]
        if len(feeds) != len(self._feeds):
            self._feeds = [weakref.ref(feed) for feed in feeds]
        return feeds

    @staticmethod
    def _open() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, 4 * 1024 * 1024)  # SO_RCVBUFFORCE (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.bind((0, CN_IDX_PROC))
            payload = struct.pack("=I", PROC_CN_MCAST_LISTEN)
            cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0)
            header = _NLMSG.pack(_NLMSG.size + len(cn) + len(payload), NLMSG_DONE, 0, 0, 0)
            sock.send(header + cn + payload)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _run(self) -> None:
        sock = self._socket
        assert sock is not None
        check_pid = self._spawn_check() if self._self_test else None
        check_deadline = time.monotonic() + 3.0
        if check_pid is None:
            self._set_ready("listening")
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while not self._stop.is_set():
            if check_pid is not None and not self.ready:
                with self._lock:
                    seen = check_pid in self._recent
                if seen:
                    self._set_ready("listening")
                elif time.monotonic() > check_deadline:
                    self.reason = "the proc connector sends no events here (another network namespace?)"
                    logger.info(
                        "exit statuses: %s; outcomes of discovered operations use weaker sources", self.reason
                    )
                    return
            if not poller.poll(500):
                continue
            if not self._drain(sock):
                return
            # Let the next events gather in the socket's buffer: one wake-up per batch, not per event.
            self._stop.wait(BATCH_SECONDS)

    def _drain(self, sock: socket.socket) -> bool:
        """Read and parse every queued event; False when the socket failed for good."""
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._lost()
                    if not self._overflow_logged:
                        logger.warning("process events: some were dropped (too many at once); discovery rescans")
                        self._overflow_logged = True
                    continue
                if self._stop.is_set():
                    return False
                self.ready = False
                self.reason = f"proc connector failed: {exc}"
                logger.warning("exit statuses: %s", self.reason)
                return False
            self._parse(data)

    def _set_ready(self, reason: str) -> None:
        self.ready = True
        self.reason = reason
        logger.info("exit statuses: listening to the kernel's process events")

    @staticmethod
    def _spawn_check() -> int | None:
        """Start a child that exits at once; its exit event proves the connector works here."""
        try:
            child = subprocess.Popen(
                ["/bin/true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError:
            return None
        child.wait()
        return child.pid

    def _lost(self) -> None:
        """Events were dropped: every feed must say so (its reader rescans)."""
        with self._lock:
            for feed in self._live_feeds():
                feed._overflowed()

    def _parse(self, data: bytes) -> None:
        offset = 0
        now = time.time()
        feeds = bool(self._feeds)
        while offset + _NLMSG.size <= len(data):
            length = _NLMSG.unpack_from(data, offset)[0]
            if length < _NLMSG.size:
                return
            event = offset + _NLMSG.size + _CN_MSG.size
            body = event + _EVENT_HEAD
            end = offset + length
            if body <= end:
                (what,) = _WHAT.unpack_from(data, event)
                if what == PROC_EVENT_EXIT and body + _EXIT.size <= end:
                    pid, tgid, status, _exit_signal = _EXIT.unpack_from(data, body)
                    if pid == tgid:  # the process, not one of its threads
                        self._record(pid, status, now)
                elif feeds and what == PROC_EVENT_FORK and body + _FORK.size <= end:
                    child_pid, child_tgid = _FORK.unpack_from(data, body)[2:]
                    if child_pid == child_tgid:  # a process, not a thread
                        self._changed(child_pid, 0)
                elif feeds and what == PROC_EVENT_EXEC and body + _EXEC.size <= end:
                    self._changed(_EXEC.unpack_from(data, body)[1], 1)
            offset += (length + 3) & ~3

    def _changed(self, pid: int, kind: int) -> None:
        """Tell every feed that ``pid`` was started (kind 0) or exec'd (kind 1)."""
        with self._lock:
            for feed in self._live_feeds():
                target = feed.forked if kind == 0 else feed.execed
                target.add(pid)
                if len(target) > FEED_MAX:
                    feed._overflowed()

    def _record(self, pid: int, status: int, now: float) -> None:
        with self._arrived:
            self.received += 1
            for feed in self._live_feeds():
                feed.exited.add(pid)
                if len(feed.exited) > FEED_MAX:
                    feed._overflowed()
            if pid in self._watched:
                self._kept[pid] = (status, now)
            else:
                self._recent[pid] = (status, now)
                self._recent.move_to_end(pid)
                while len(self._recent) > RECENT:
                    self._recent.popitem(last=False)
            self._arrived.notify_all()

    # -------------------------------------------------------------------- queries
    def watch(self, pids: set[int]) -> None:
        """Keep the exit statuses of these processes (and forget those no longer watched)."""
        with self._lock:
            self._watched = set(pids)
            for pid in [p for p in self._kept if p not in self._watched]:
                del self._kept[pid]

    def status_of(self, pid: int, since: float, wait: float = 0.0) -> int | None:
        """The wait status of ``pid`` if it exited at or after ``since`` (waiting up to ``wait`` s)."""
        deadline = time.monotonic() + wait
        with self._arrived:
            while True:
                found = self._kept.get(pid) or self._recent.get(pid)
                if found is not None and found[1] >= since:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0 or not self.ready:
                    return None
                self._arrived.wait(left)

