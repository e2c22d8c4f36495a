"""Migrations from an empty database, and the supervisor on the migrated schema."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import sqlalchemy
from sqlmodel import Session, select

from dgx_spark.collector.sampler import SampleContext
from dgx_spark.database import make_engine, migrate
from dgx_spark.supervisor.models import LaunchedOperation, OperationTransition
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
        statuses = [t.to_status for t in session.exec(
            select(OperationTransition).where(OperationTransition.operation_id == op.id).order_by(OperationTransition.id)
        )]
        assert statuses == ["pending", "starting", "active", "failed"] or statuses[-1] == "failed"
        assert session.get(LaunchedOperation, op.id).exit_code == 5
    supervisor.close()
    again.close()


def test_migrate_from_empty_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh' / 'dgx.db'}")
    head = migrate(engine)
    assert head is not None
    assert migrate(engine) == head  # idempotent
    tables = set(sqlalchemy.inspect(engine).get_table_names())
    assert {"alembic_version", "launched_operation", "operation_transition"} <= tables
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    run_supervisor_round_trip(engine, tmp_path / "data")
