"""Migrations and the supervisor against a real PostgreSQL server that this test starts."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dgx_spark.database import make_engine, migrate
from tests.support.dashboard import free_port, wait_until
from tests.test_migrations import run_supervisor_round_trip


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
    assert {"alembic_version", "launched_operation", "operation_transition"} <= tables
    run_supervisor_round_trip(engine, tmp_path / "data")
    engine.dispose()
