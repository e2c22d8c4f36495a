"""Migrations from an empty database, and the supervisor on the migrated schema."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import sqlalchemy
from sqlmodel import Session, select

from dgx_spark.collector.sampler import SampleContext
from dgx_spark.database import make_engine, migrate
from dgx_spark.supervisor.models import LaunchedOperation
from dgx_spark.supervisor.supervisor import Supervisor, SupervisorConfig
from tests.support.dashboard import wait_until


def run_supervisor_round_trip(engine: sqlalchemy.engine.Engine, data_dir: Path) -> None:
    """Launch a command that exits 5, see it fail, and find it again from a fresh supervisor."""
    config = SupervisorConfig(data_dir=data_dir, base_url="http://127.0.0.1:1", stop_grace=1.0)
    supervisor = Supervisor(config, engine)
    supervisor.load()
    op = supervisor.launch({"template": "custom", "name": "five", "type": "job",
                            "command": [sys.executable, "-c", "import sys; print('bye'); sys.exit(5)"]})

    def ended() -> bool:
        ctx = SampleContext(now=time.time(), operations=[])
        supervisor.sample(ctx)
        return any(o.id == op.id and o.status == "failed" for o in ctx.operations)

    wait_until(ended, 60)
    supervisor.flush()
    again = Supervisor(config, engine)
    again.load()
    ctx = SampleContext(now=time.time(), operations=[])
    again.sample(ctx)
    [found] = [o for o in ctx.operations if o.id == op.id]
    assert found.status == "failed" and found.exit_code == 5 and found.source == "launched"
    with Session(engine) as session:
        row = session.get(LaunchedOperation, op.id)
        assert row is not None and row.status == "failed" and row.exit_code == 5 and row.outcome == "failed"
        assert [r.id for r in session.exec(select(LaunchedOperation))] == [op.id]
    supervisor.close()
    again.close()


def test_migrate_from_empty_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh' / 'dgx.db'}")
    head = migrate(engine)
    assert head is not None
    assert migrate(engine) == head  # idempotent
    tables = set(sqlalchemy.inspect(engine).get_table_names())
    assert {"alembic_version", "launched_operation", "dgx_event", "dgx_history"} <= tables
    assert "operation_transition" not in tables  # the events tables are the one transition log
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    run_supervisor_round_trip(engine, tmp_path / "data")


def test_upgrade_drops_the_transition_table_and_keeps_launched_operations(tmp_path: Path) -> None:
    """A database at the revision before: its launched operations survive, its transition rows go."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    from dgx_spark.database import ALEMBIC_DIR

    engine = make_engine(f"sqlite:///{tmp_path / 'old' / 'dgx.db'}")
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    script = ScriptDirectory.from_config(config)
    with engine.connect() as connection:
        # What `alembic upgrade e3a91f4c2b6d` does: the schema of the release before.
        with EnvironmentContext(config, script, fn=lambda rev, _: script._upgrade_revs("e3a91f4c2b6d", rev)) as env:
            env.configure(connection=connection, render_as_batch=True)
            with env.begin_transaction():
                env.run_migrations()
        connection.exec_driver_sql(
            "INSERT INTO launched_operation (id, name, type, template, argv_json, env_json, params_json, status,"
            " created_at, stop_requested, run, restart_json, restarts, restart_streak)"
            " VALUES ('launch-0123456789ab', 'old', 'job', 'custom', '[\"true\"]', '{}', '{}', 'failed', 1.0,"
            " 0, 2, '{}', 0, 0)"
        )
        connection.exec_driver_sql(
            "INSERT INTO operation_transition (operation_id, at, to_status) VALUES ('launch-0123456789ab', 1.0, 'failed')"
        )
        connection.commit()
    migrate(engine)
    assert "operation_transition" not in sqlalchemy.inspect(engine).get_table_names()
    with Session(engine) as session:
        row = session.get(LaunchedOperation, "launch-0123456789ab")
        assert row is not None and row.name == "old" and row.run == 2 and row.argv == ["true"]
