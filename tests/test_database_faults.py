"""A busy or read-only database delays work but never invents or drops it.

Real faults on a real SQLite file: another connection holding ``BEGIN EXCLUSIVE``,
and the database files made immutable with ``chattr +i`` (which stops root too).
Real launched processes, a real supervisor; no doubles.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlmodel import Session, select

from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.database import DatabaseUnavailable, make_engine, migrate, write_with_retry
from dgx_spark.events.detector import Transition
from dgx_spark.events.recorder import EventRecorder
from dgx_spark.events.store import EventStore
from dgx_spark.health import health
from dgx_spark.supervisor.models import LaunchedOperation
from dgx_spark.supervisor.outbox import OUTBOX_FILE, Outbox, apply_entry, upsert_entry
from dgx_spark.supervisor.supervisor import ControlError, Supervisor, SupervisorConfig
from tests.support.dashboard import wait_until

SLEEPER = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.2)"]


@contextlib.contextmanager
def exclusive_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holds the database's write lock (``BEGIN EXCLUSIVE``) until the block ends."""
    holder = sqlite3.connect(db, isolation_level=None, timeout=30)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield holder
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _chattr(flag: str, *paths: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    existing = [str(p) for p in paths if p.exists()]
    return subprocess.run(["chattr", flag, *existing], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def immutable(db: Path) -> Iterator[None]:
    """The database file made immutable (``chattr +i``: not even root may write it).

    Only the main file: SQLite then opens it read-only. (Making the mapped ``-shm`` file
    immutable too is not a fault a user makes, and SQLite answers it with SIGBUS.)
    """
    if not _chattr("+i", db):
        pytest.skip("chattr +i is not available on this filesystem (or not as this user)")
    try:
        yield
    finally:
        _chattr("-i", db)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[sqlalchemy.engine.Engine, Path]]:
    path = tmp_path / "data" / "dgx.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    yield engine, path
    engine.dispose()


def supervisor_for(engine: sqlalchemy.engine.Engine, data_dir: Path) -> Supervisor:
    supervisor = Supervisor(SupervisorConfig(data_dir=data_dir, base_url="http://127.0.0.1:1", stop_grace=2.0), engine)
    supervisor.load()
    return supervisor


def sample(supervisor: Supervisor) -> list[Operation]:
    ctx = SampleContext(now=time.time(), operations=[])
    supervisor.sample(ctx)
    return list(ctx.operations)


def status_of(supervisor: Supervisor, op_id: str) -> Operation | None:
    return next((op for op in sample(supervisor) if op.id == op_id), None)


def stored(engine: sqlalchemy.engine.Engine, op_id: str) -> LaunchedOperation | None:
    """The operation's row as the database has it now."""
    with Session(engine) as session:
        return session.get(LaunchedOperation, op_id)


def launch_sleeper(supervisor: Supervisor, name: str = "sleeper") -> str:
    op = supervisor.launch({"template": "custom", "name": name, "type": "job", "command": SLEEPER})
    wait_until(lambda: (o := status_of(supervisor, op.id)) is not None and o.status == "active" and o.pid, 60)
    supervisor.flush()
    return op.id


# ---- the outbox on its own ---------------------------------------------------------------------


def test_outbox_is_private_ordered_and_survives_a_torn_line(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / OUTBOX_FILE)
    row = LaunchedOperation(id="launch-1", name="n", type="job", template="custom", argv_json="[]",
                            created_at=1.0, status="stopped", stop_requested=True)
    outbox.append(upsert_entry(row.saved()))
    outbox.append({"op": "delete", "id": "launch-2", "transition": None})  # an older version's entry
    with (tmp_path / OUTBOX_FILE).open("ab") as handle:
        handle.write(b'{"op": "upsert", "row": {"id": "tor')  # a crash in the middle of a write
    assert stat.S_IMODE((tmp_path / OUTBOX_FILE).stat().st_mode) == 0o600
    again = Outbox(tmp_path / OUTBOX_FILE)  # a restart reads it back
    assert again.pending == 2
    gone = LaunchedOperation(id="launch-2", name="m", type="job", template="custom", argv_json="[]", created_at=1.0)
    overlay = again.overlay({"launch-2": gone.saved()})
    assert list(overlay) == ["launch-1"] and overlay["launch-1"]["stop_requested"] is True
    seen: list[str] = []
    assert again.replay(lambda entries: seen.extend(e["op"] for e in entries)) == 2
    assert seen == ["upsert", "delete"] and again.pending == 0 and not (tmp_path / OUTBOX_FILE).exists()


def test_failed_replay_keeps_everything(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / OUTBOX_FILE)
    outbox.append({"op": "delete", "id": "launch-3"})

    def refuse(_entries: list[dict[str, object]]) -> None:
        raise DatabaseUnavailable("locked")

    with pytest.raises(DatabaseUnavailable):
        outbox.replay(refuse)
    assert outbox.pending == 1 and Outbox(tmp_path / OUTBOX_FILE).entries() == [{"op": "delete", "id": "launch-3"}]


# ---- the bounded write -------------------------------------------------------------------------


def test_write_with_retry_waits_for_a_short_lock_then_writes(db: tuple[sqlalchemy.engine.Engine, Path]) -> None:
    engine, path = db
    row = LaunchedOperation(id="launch-w", name="w", type="job", template="custom", argv_json="[]", created_at=1.0)
    holder = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    # The holder lets go (from a timer thread) while the write is retrying.
    release = threading.Timer(1.0, lambda: (holder.execute("ROLLBACK"), holder.close()))
    release.start()
    try:
        write_with_retry(engine, lambda s: apply_entry(s, upsert_entry(row.saved())), wait=30)
    finally:
        release.join()
    assert stored(engine, "launch-w") is not None
    assert not health.is_degraded("database")


def test_write_with_retry_gives_up_with_database_unavailable(db: tuple[sqlalchemy.engine.Engine, Path]) -> None:
    engine, path = db
    row = LaunchedOperation(id="launch-x", name="x", type="job", template="custom", argv_json="[]", created_at=1.0)
    with exclusive_lock(path), pytest.raises(DatabaseUnavailable, match="locked"):
        write_with_retry(engine, lambda s: apply_entry(s, upsert_entry(row.saved())), wait=0.5)
    state = health.state("database")
    assert state.degraded and "locked" in (state.last_error or "") and state.since is not None
    assert stored(engine, "launch-x") is None


# ---- the supervisor under a held lock ----------------------------------------------------------


def test_a_launch_waiting_on_a_slow_database_leaves_the_sampler_free(
    db: tuple[sqlalchemy.engine.Engine, Path], tmp_path: Path
) -> None:
    """A launch waits (bounded) for its rows to be saved after it lets go of the lock the sampler needs."""
    engine, _ = db
    supervisor = supervisor_for(engine, tmp_path / "data")
    slow = threading.Event()
    save = supervisor._save

    def slow_save(entry: dict) -> None:  # the database answered the launch's check, then became slow
        slow.wait(30)
        save(entry)

    supervisor._save = slow_save  # type: ignore[method-assign]
    launched: list[Operation] = []
    launching = threading.Thread(target=lambda: launched.append(
        supervisor.launch({"template": "custom", "name": "slow-db", "type": "job", "command": SLEEPER})))
    try:
        launching.start()
        # Its run has started: what is left of the launch is waiting for its writes (about 1 s).
        wait_until(lambda: any(rec.status == "starting" for rec in list(supervisor._ops.values())), 30, 0.01)
        ops = sample(supervisor)  # the sampler's step, which takes the supervisor's lock
        assert launching.is_alive(), "the sampler waited until the launch had finished waiting on the database"
        assert [op.name for op in ops if op.source == "launched"] == ["slow-db"]
        launching.join(10)
        assert launched and launched[0].name == "slow-db"
    finally:
        slow.set()
        launching.join(10)
        for op in launched:
            supervisor.stop(op.id, force=True)
        supervisor.close()


def test_launch_while_locked_is_a_503_and_leaves_no_trace(db: tuple[sqlalchemy.engine.Engine, Path], tmp_path: Path) -> None:
    engine, path = db
    supervisor = supervisor_for(engine, tmp_path / "data")
    try:
        with exclusive_lock(path):
            with pytest.raises(ControlError) as caught:
                supervisor.launch({"template": "custom", "name": "never", "type": "job", "command": SLEEPER})
            assert caught.value.kind == "unavailable" and caught.value.code == "database_unavailable"
            assert "nothing was done" in caught.value.message
            # Not shown, not started, and certainly not a failed "lost" operation.
            assert [op for op in sample(supervisor) if op.source == "launched"] == []
            assert not (tmp_path / "data" / "runs").exists() or not any((tmp_path / "data" / "runs").iterdir())
        with Session(engine) as session:
            assert session.exec(select(LaunchedOperation)).all() == []
        # Recovery: the next launch works as usual.
        op_id = launch_sleeper(supervisor, "after")
        assert stored(engine, op_id) is not None
        supervisor.stop(op_id, force=True)
        wait_until(lambda: (o := status_of(supervisor, op_id)) is not None and not o.is_live, 30)
    finally:
        supervisor.close()


def test_stop_while_locked_is_carried_out_kept_and_saved_later(
    db: tuple[sqlalchemy.engine.Engine, Path], tmp_path: Path
) -> None:
    engine, path = db
    data = tmp_path / "data"
    supervisor = supervisor_for(engine, data)
    try:
        op_id = launch_sleeper(supervisor)
        with exclusive_lock(path):
            stopped = supervisor.stop(op_id)  # no exception: the signal was sent
            assert stopped.stop_requested
            ended = wait_until(lambda: (o := status_of(supervisor, op_id)) is not None and not o.is_live and o, 60)
            assert ended.status == "stopped" and ended.stop_requested, ended
            # The database has not got it; the outbox (0600, in the data folder) has.
            wait_until(lambda: supervisor._outbox.pending >= 2, 60)
            assert stat.S_IMODE((data / OUTBOX_FILE).stat().st_mode) == 0o600
            lines = [json.loads(line) for line in (data / OUTBOX_FILE).read_text().splitlines()]
            assert any(e["row"]["stop_requested"] for e in lines if e["op"] == "upsert")
            assert health.is_degraded("database")
            # A restart while the database is still locked keeps the user's stop: no failure is invented.
            again = Supervisor(supervisor.config, engine)
            again.load()
            restarted = status_of(again, op_id)
            assert restarted is not None and restarted.status == "stopped" and restarted.stop_requested
            again.close()
        # Recovery: the sampler's next rounds hand the outbox to the writer, which saves it.
        wait_until(lambda: (sample(supervisor), supervisor._outbox.pending == 0)[1], 60)
        supervisor.flush()
        row = stored(engine, op_id)
        assert row is not None and row.stop_requested and row.status == "stopped"
        assert row.outcome == "stopped" and "failed" not in (row.exit_reason or "")
        assert not (data / OUTBOX_FILE).exists()
        assert not health.is_degraded("database")
    finally:
        supervisor.close()


def test_stop_with_an_immutable_database_survives_a_restart(
    db: tuple[sqlalchemy.engine.Engine, Path], tmp_path: Path
) -> None:
    engine, path = db
    data = tmp_path / "data"
    supervisor = supervisor_for(engine, data)
    try:
        op_id = launch_sleeper(supervisor)
        with immutable(path):
            engine.dispose()  # new connections see the read-only files
            supervisor.stop(op_id)
            wait_until(lambda: (o := status_of(supervisor, op_id)) is not None and not o.is_live, 60)
            wait_until(lambda: supervisor._outbox.pending >= 2, 60)
            with pytest.raises(ControlError) as caught:  # nothing new can be recorded: 503, not started
                supervisor.launch({"template": "custom", "name": "no", "type": "job", "command": SLEEPER})
            assert caught.value.kind == "unavailable"
            supervisor.close()
            # The dashboard restarts with the database still read-only: the stop is still a stop.
            again = Supervisor(supervisor.config, engine)
            again.load()
            found = status_of(again, op_id)
            assert found is not None and found.status == "stopped" and found.stop_requested
            assert "failed" not in (found.description or "")
            again.close()
        engine.dispose()
        # Writable again: the next start replays the outbox first.
        third = supervisor_for(engine, data)
        try:
            assert third._outbox.pending == 0
            row = stored(engine, op_id)
            assert row is not None and row.stop_requested and row.status == "stopped" and row.outcome == "stopped"
        finally:
            third.close()
    finally:
        with contextlib.suppress(Exception):
            supervisor.close()


# ---- health follows the database, whoever found it away ----------------------------------------


def test_health_says_when_events_wait_and_clears_once_the_database_is_back(
    db: tuple[sqlalchemy.engine.Engine, Path], tmp_path: Path
) -> None:
    """The events recorder reports a locked database; with no outbox to replay, the supervisor's probe clears it."""
    engine, path = db
    supervisor = supervisor_for(engine, tmp_path / "data")
    store = EventStore(engine)
    recorder = EventRecorder(store, retention_seconds=86400)
    recorder.start()
    try:
        health.report_ok("database")
        with exclusive_lock(path):
            crashed = Operation(id="op-77-1", status="failed", type="job", name="crashed", exit_code=3,
                                started_at_ts=time.time() - 60, ended_at_ts=time.time())
            recorder.submit(Transition("failed", time.time(), crashed, "failed"))
            wait_until(lambda: health.is_degraded("database"), 30, message="the recorder never said the database is away")
            assert "events not recorded" in (health.state("database").last_error or "")
            sample(supervisor)  # queues a probe on the writer thread, which fails under the lock
            supervisor.flush()
            assert health.is_degraded("database")
        # The event was kept and is stored now; nothing else writes, yet health recovers.
        wait_until(lambda: [e["kind"] for e in store.events(since_ts=0)] == ["failed"], 30)
        wait_until(lambda: (sample(supervisor), not health.is_degraded("database"))[1], 30,
                   message="the database stayed degraded after it came back")
        assert supervisor._outbox.pending == 0
    finally:
        recorder.stop()
        supervisor.close()


def test_restart_start_again_and_remove_while_locked_are_refused_and_change_nothing(
    db: tuple[sqlalchemy.engine.Engine, Path], tmp_path: Path
) -> None:
    """Actions that would record something new check the database first: 503, and nothing was done."""
    engine, path = db
    supervisor = supervisor_for(engine, tmp_path / "data")
    try:
        op_id = launch_sleeper(supervisor)
        before = status_of(supervisor, op_id)
        assert before is not None
        with exclusive_lock(path), pytest.raises(ControlError) as caught:
            supervisor.restart(op_id)
        assert caught.value.code == "database_unavailable" and "nothing was done" in caught.value.message
        still = status_of(supervisor, op_id)
        assert still is not None and still.status == "active" and (still.pid, still.run) == (before.pid, before.run)
        supervisor.stop(op_id, force=True)
        wait_until(lambda: (o := status_of(supervisor, op_id)) is not None and not o.is_live, 60)
        supervisor.flush()
        with exclusive_lock(path):
            for action in (supervisor.start_again, supervisor.forget):
                with pytest.raises(ControlError) as caught:
                    action(op_id)
                assert caught.value.code == "database_unavailable", action
        ended = status_of(supervisor, op_id)
        assert ended is not None and ended.status == "stopped" and ended.run == before.run  # not started, not removed
        supervisor.forget(op_id)  # the database is back: it works
        assert status_of(supervisor, op_id) is None and stored(engine, op_id) is None
    finally:
        supervisor.close()
