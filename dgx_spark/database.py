"""The database: an engine from ``settings.db_url`` and programmatic alembic migrations.

SQLite gets WAL mode and a busy timeout on every connection; a PostgreSQL URL
works the same way. No Reflex import: the supervisor uses this directly.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import Engine

from dgx_spark.settings import PROJECT_ROOT, settings

logger = logging.getLogger(__name__)

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
ALEMBIC_DIR = PROJECT_ROOT / "alembic"
SQLITE_BUSY_TIMEOUT_MS = 10_000


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


@functools.cache
def get_engine() -> Engine:
    """The process-wide engine for ``settings.db_url``."""
    return make_engine(settings.db_url)


def migrate(engine: Engine | None = None) -> str | None:
    """Bring the schema to the newest alembic revision (``alembic upgrade head``).

    Runs the revisions in ``alembic/versions`` on a connection of ``engine``,
    without going through ``alembic/env.py``, so it works the same from the app,
    the tests and ``reflex db migrate``.

    Args:
        engine: The engine to migrate; the process-wide one by default.

    Returns:
        The revision the database is at afterwards.
    """
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    # The tables must be known before migrating (and for autogenerate users).
    import dgx_spark.supervisor.models  # noqa: F401

    engine = engine or get_engine()
    config = Config(str(ALEMBIC_INI))
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
