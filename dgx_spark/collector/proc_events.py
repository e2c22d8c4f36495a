"""Exact exit statuses from the kernel: the netlink process-events connector.

The kernel's proc connector (``NETLINK_CONNECTOR``, ``CN_IDX_PROC``) multicasts a
``PROC_EVENT_EXIT`` for every process that ends, with its wait status (exit code,
or the signal that killed it). Listening needs root or ``CAP_NET_ADMIN`` and the
initial network namespace; where it is refused, or where it stays silent (checked
once at start with a short-lived child), the listener says so once in the log and
``ready`` stays False: outcomes then come from weaker sources.

One background thread reads the socket. It keeps the status of the processes
the sampler asked to watch (the roots of discovered operations), and a bounded
ring of the most recent others.
"""

from __future__ import annotations

import collections
import errno
import logging
import signal
import socket
import struct
import subprocess
import threading
import time

logger = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXIT = 0x80000000
NLMSG_DONE = 3
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EXIT = struct.Struct("=iiII")  # pid, tgid, exit_code (wait status), exit_signal
_EVENT_HEAD = 16  # what, cpu, timestamp_ns
RECENT = 4096
"""Exits of unwatched processes remembered (a ring)."""


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
        self.ready = False
        self.reason = "not started"
        self.received = 0

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
            sock.settimeout(0.5)
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
        overflow_logged = False
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
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    if not overflow_logged:
                        logger.warning("exit statuses: events were dropped (too many exits at once)")
                        overflow_logged = True
                    continue
                if self._stop.is_set():
                    return
                self.ready = False
                self.reason = f"proc connector failed: {exc}"
                logger.warning("exit statuses: %s", self.reason)
                return
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

    def _parse(self, data: bytes) -> None:
        offset = 0
        now = time.time()
        while offset + _NLMSG.size <= len(data):
            length = _NLMSG.unpack_from(data, offset)[0]
            if length < _NLMSG.size:
                return
            event = offset + _NLMSG.size + _CN_MSG.size
            if event + _EVENT_HEAD + _EXIT.size <= offset + length:
                (what,) = struct.unpack_from("=I", data, event)
                if what == PROC_EVENT_EXIT:
                    pid, tgid, status, _exit_signal = _EXIT.unpack_from(data, event + _EVENT_HEAD)
                    if pid == tgid:  # the process, not one of its threads
                        self._record(pid, status, now)
            offset += (length + 3) & ~3

    def _record(self, pid: int, status: int, now: float) -> None:
        with self._arrived:
            self.received += 1
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


_listener: ExitListener | None = None
_listener_lock = threading.Lock()


def get_exit_listener() -> ExitListener:
    """The process-wide listener, started on first use."""
    global _listener
    with _listener_lock:
        if _listener is None:
            _listener = ExitListener()
            _listener.start()
        return _listener
