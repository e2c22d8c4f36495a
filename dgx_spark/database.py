"""The database: an engine from ``settings.db_url`` and programmatic alembic migrations.

SQLite gets WAL mode and a busy timeout on every connection; a PostgreSQL URL
works the same way. No Reflex import: the supervisor uses this directly.

A busy or missing database is expected, not a crash: :func:`write_with_retry`
retries a write for a bounded time and then raises :class:`DatabaseUnavailable`
(the API answers 503 ``database_unavailable``); every outcome is reported to
:data:`dgx_spark.health.health` under ``database``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import Engine
from sqlmodel import Session

from dgx_spark.health import health
from dgx_spark.settings import PROJECT_ROOT, settings

logger = logging.getLogger(__name__)

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
# The migrations: ``alembic/`` in a checkout (where ``reflex db`` finds them); an installed wheel carries
# them as ``dgx_spark/migrations`` (setup.py), and there ``PROJECT_ROOT / "alembic"`` is the alembic library.
PACKAGED_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ALEMBIC_DIR = PACKAGED_MIGRATIONS if PACKAGED_MIGRATIONS.is_dir() else PROJECT_ROOT / "alembic"
# One attempt waits this long for a SQLite lock; write_with_retry tries again until WRITE_WAIT_SECONDS.
SQLITE_BUSY_TIMEOUT_MS = 2_000
# How long a write may wait for a busy or missing database before the caller is told (503).
WRITE_WAIT_SECONDS = 5.0
PG_CONNECT_TIMEOUT_SECONDS = 3

T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database could not take a write (or read) within the bounded wait."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        """Create the error; ``cause`` is the last driver error."""
        super().__init__(message)
        self.message = message
        self.cause = cause


def describe_error(exc: BaseException) -> str:
    """A one-line description of a driver error (no SQL, no parameters)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {text}"[:300]


def is_unavailable_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is busy, read-only or unreachable (not a bug in the query)."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError
        | sqlalchemy.exc.DisconnectionError
        | sqlalchemy.exc.TimeoutError,
    )


def write_with_retry(
    engine: Engine,
    work: Callable[[Session], T],
    *,
    wait: float = WRITE_WAIT_SECONDS,
    what: str = "write",
    expire_on_commit: bool = True,
) -> T:
    """Run ``work(session)`` and commit, retrying while the database is busy or away.

    Args:
        engine: The engine to write through.
        work: Adds/merges/deletes on the session; its result is returned after the commit.
        wait: The longest time to keep retrying (0: one attempt).
        what: Names the write in logs.
        expire_on_commit: Passed to the session (False keeps added objects readable afterwards).

    Returns:
        What ``work`` returned.

    Raises:
        DatabaseUnavailable: The database did not take the write within ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    delay = 0.05
    attempt = 0
    while True:
        attempt += 1
        try:
            with Session(engine, expire_on_commit=expire_on_commit) as session:
                result = work(session)
                session.commit()
            health.report_ok("database")
            return result
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            message = describe_error(exc)
            health.report_error("database", message)
            if "readonly" in message or "read-only" in message:
                # Connections opened while the file was read-only stay so: open new ones next time.
                engine.dispose()
            if time.monotonic() + delay >= deadline:
                logger.warning("database: %s failed after %d attempt(s): %s", what, attempt, message)
                raise DatabaseUnavailable(f"the database is unavailable ({message})", exc) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def probe_writable(engine: Engine, *, wait: float = WRITE_WAIT_SECONDS) -> None:
    """Check that the database takes a write now (a write statement that changes no row).

    Raises:
        DatabaseUnavailable: It is locked, read-only or unreachable for ``wait`` seconds.
    """

    def touch(session: Session) -> None:
        session.execute(sqlalchemy.text("UPDATE launched_operation SET id = id WHERE 1 = 0"))

    write_with_retry(engine, touch, wait=wait, what="probe")


def normalize_url(url: str) -> str:
    """Use the psycopg (v3) driver for plain ``postgresql://`` URLs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite connections get WAL, a busy timeout and foreign keys.

    Args:
        url: A SQLAlchemy database URL.

    Returns:
        The engine.
    """
    url = normalize_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("postgresql"):
        # A stopped server answers at once; an unreachable host must not hang a request.
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS}
    engine = sqlalchemy.create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @sqlalchemy.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def migrate(engine: Engine | None = None) -> str | None:
    """Bring the schema to the newest alembic revision (``alembic upgrade head``).

    Runs the revisions in ``alembic/versions`` on a connection of ``engine``,
    without going through ``alembic/env.py``, so it works the same from the app,
    the tests and ``reflex db migrate``.

    Args:
        engine: The engine to migrate; by default one made for ``settings.db_url``
            for this call only (the app's own engine is ``Services.engine``).

    Returns:
        The revision the database is at afterwards.
    """
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    if engine is None:
        own = make_engine(settings.db_url)
        try:
            return migrate(own)
        finally:
            own.dispose()
    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()  # no alembic.ini when installed
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    script = ScriptDirectory.from_config(config)

    def upgrade(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs("head", rev)  # what `alembic upgrade` does

    with engine.connect() as connection:
        with EnvironmentContext(config, script, fn=upgrade) as env:
            env.configure(connection=connection, render_as_batch=True)
            with env.begin_transaction():
                env.run_migrations()
        connection.commit()
        revision = MigrationContext.configure(connection).get_current_revision()
    logger.info("database at revision %s", revision)
    return revision
