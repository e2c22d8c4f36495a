"""Migrations and the supervisor against a real PostgreSQL server that this test starts."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from dgx_spark.database import make_engine, migrate
from dgx_spark.supervisor.models import LaunchedOperation
from tests.support.dashboard import free_port, wait_until
from tests.test_migrations import run_supervisor_round_trip

# pg_ctl actions ("stop", "start") of each running test server, by URL (for fault tests).
PG_CTL: dict[str, Callable[[str], None]] = {}


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port (as user postgres when run as root)."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server binaries (initdb) are not installed; `make setup-dev` installs them")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed")
    # Not under pytest's tmp dir: the server's user must be able to reach its files.
    base = Path(tempfile.mkdtemp(prefix="dgx-spark-pg-"))
    os.chmod(base, 0o755)
    cluster, sockets = base / "cluster", base / "sock"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the server as")
        if runuser is None:
            pytest.skip("running as root without runuser")
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        prefix = [runuser, "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*prefix, str(pg_bin / "initdb"), "-D", str(cluster), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True, timeout=180)
    subprocess.run(
        [*prefix, str(pg_bin / "pg_ctl"), "-D", str(cluster), "-l", str(base / "server.log"), "-w", "-t", "120",
         "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
        check=True, capture_output=True, timeout=180,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def pg_ctl(action: str) -> None:
        options = ["-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"]
        subprocess.run(
            [*prefix, str(pg_bin / "pg_ctl"), "-D", str(cluster), "-l", str(base / "server.log"), "-w", "-t", "120",
             *(options if action == "start" else ["-m", "fast"]), action],
            check=True, capture_output=True, timeout=180,
        )

    PG_CTL[url] = pg_ctl
    try:
        engine = make_engine(url)
        wait_until(lambda: _connects(engine), 60)
        engine.dispose()
        yield url
    finally:
        subprocess.run([*prefix, str(pg_bin / "pg_ctl"), "-D", str(cluster), "-m", "immediate", "stop"],
                       check=False, capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def _connects(engine: object) -> bool:
    try:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            conn.exec_driver_sql("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_migrations_and_supervisor_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    import sqlalchemy

    engine = make_engine(postgres_url)
    assert engine.dialect.name == "postgresql"
    head = migrate(engine)
    assert head is not None and migrate(engine) == head
    tables = set(sqlalchemy.inspect(engine).get_table_names())
    assert {"alembic_version", "launched_operation"} <= tables and "operation_transition" not in tables
    run_supervisor_round_trip(engine, tmp_path / "data")
    engine.dispose()


def test_postgres_stopped_and_restarted(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL stopped: a launch is a 503 and leaves nothing; a stop is carried out, kept, and saved later."""
    from dgx_spark.supervisor.supervisor import ControlError
    from tests.test_database_faults import SLEEPER, launch_sleeper, sample, status_of, stored, supervisor_for

    engine = make_engine(postgres_url)
    migrate(engine)
    supervisor = supervisor_for(engine, tmp_path / "data")
    pg_ctl = PG_CTL[postgres_url]
    try:
        op_id = launch_sleeper(supervisor, "pg-sleeper")
        pg_ctl("stop")
        try:
            with pytest.raises(ControlError) as caught:
                supervisor.launch({"template": "custom", "name": "pg-never", "type": "job", "command": SLEEPER})
            assert caught.value.kind == "unavailable" and caught.value.code == "database_unavailable"
            assert not [op for op in sample(supervisor) if op.name == "pg-never"]
            supervisor.stop(op_id)
            ended = wait_until(lambda: (o := status_of(supervisor, op_id)) is not None and not o.is_live and o, 60)
            assert ended.status == "stopped" and ended.stop_requested
            wait_until(lambda: supervisor._outbox.pending >= 1, 60)
        finally:
            pg_ctl("start")
        wait_until(lambda: (sample(supervisor), supervisor._outbox.pending == 0)[1], 90)
        supervisor.flush()
        row = stored(engine, op_id)
        assert row is not None and row.stop_requested and row.status == "stopped" and row.outcome == "stopped"
        with Session(engine) as session:
            assert not session.exec(select(LaunchedOperation).where(LaunchedOperation.name == "pg-never")).all()
    finally:
        supervisor.close()
        engine.dispose()


def test_the_real_backend_on_a_stopped_postgres(postgres_url: str, tmp_path: Path) -> None:
    """The dashboard on PostgreSQL, stopped under it: reads and launches are 503 envelopes, health says so,
    a stop is carried out and kept; restarted: saved, no failure invented, healthy again."""
    import psycopg

    from tests.support.dashboard import UNTHROTTLED, Dashboard, reap_launched
    from tests.test_database_faults import SLEEPER

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS dashboard_faults")
        conn.execute("CREATE DATABASE dashboard_faults")
    url = postgres_url.rsplit("/", 1)[0] + "/dashboard_faults"
    pg_ctl = PG_CTL[postgres_url]
    data = tmp_path / "data"
    env = {**UNTHROTTLED, "DGX_SPARK_DB_URL": url, "DGX_SPARK_STOP_GRACE_SECONDS": "3"}
    stopped = False
    try:
        with Dashboard(data, env=env) as dash:
            status, body = dash.authed("POST", "/api/dgx/operations",
                                       {"template": "custom", "name": "pg-api-sleeper", "type": "job",
                                        "command": SLEEPER})
            assert status == 201, body
            op_id = body["data"]["id"]

            def find() -> dict[str, Any] | None:
                return next((op for op in dash.operations() if op["id"] == op_id), None)

            wait_until(lambda: (op := find()) is not None and op["status"] == "active", 60)
            pg_ctl("stop")
            stopped = True
            for path in ("/api/dgx/events", "/api/dgx/history", "/api/dgx/audit"):
                status, body = dash.authed("GET", path)
                assert status == 503, (path, body)
                assert body["success"] is False and body["error"]["code"] == "database_unavailable", (path, body)
            health = dash.get_json("/api/health")["data"]
            assert health["components"]["database"]["status"] == "degraded" and health["status"] == "degraded"
            assert any(e["probe"] == "database" for e in health["errors"]), health["errors"]
            status, body = dash.authed("POST", "/api/dgx/operations",
                                       {"template": "custom", "name": "pg-api-never", "type": "job",
                                        "command": SLEEPER})
            assert status == 503 and body["error"]["code"] == "database_unavailable", body
            status, body = dash.authed("POST", f"/api/dgx/operations/{op_id}/stop")
            assert status == 200, body  # carried out, whatever the database says
            wait_until(lambda: (op := find()) is not None and op["status"] == "stopped", 60)
            wait_until((data / "outbox.jsonl").exists, 30)
            assert not [op for op in dash.operations() if op["name"] == "pg-api-never"]
            pg_ctl("start")
            stopped = False
            # Back: the outbox is saved, the events arrive, nothing failed, and health says ok again.
            wait_until(lambda: not (data / "outbox.jsonl").exists(), 90)

            def kinds() -> list[str]:
                status, body = dash.request("GET", f"/api/dgx/events?operation_id={op_id}&limit=100")
                return [e["kind"] for e in body["data"]] if status == 200 else []

            wait_until(lambda: "stopped" in kinds(), 60)
            assert "failed" not in kinds()
            wait_until(lambda: dash.get_json("/api/health")["data"]["components"]["database"]["status"] == "ok", 60)
            for path in ("/api/dgx/history", "/api/dgx/audit"):
                assert dash.authed("GET", path)[0] == 200, path
            assert find()["status"] == "stopped"
    finally:
        if stopped:
            pg_ctl("start")
        reap_launched(data)
    with Session(make_engine(url)) as session:
        row = session.get(LaunchedOperation, op_id)
        assert row is not None and row.status == "stopped" and row.stop_requested
        assert not session.exec(select(LaunchedOperation).where(LaunchedOperation.name == "pg-api-never")).all()
