"""SQLModel tables for events, the history of ended operations and settings.

``dgx_event`` is the user-facing feed of transitions (one row per event; its
integer id is stable and is what ``?since=`` counts from). ``dgx_history`` holds
one row per ended run of an operation, keyed by the operation's own id and its
run number ("Start again" keeps the id and starts run 2). Both are pruned after
``DGX_SPARK_HISTORY_DAYS``, and beyond a row cap, in small batches by the
recorder thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from dgx_spark.format import iso_utc

logger = logging.getLogger(__name__)

EVENT_KINDS: tuple[str, ...] = (
    "started",
    "ready",
    "completed",
    "failed",
    "stopped",
    "stalled",
    "idle_gpu",
)
TERMINAL_KINDS: frozenset[str] = frozenset({"completed", "failed", "stopped"})
WEBHOOK_SETTING = "webhook_url"
NOTIFY_KINDS_SETTING = "notify_kinds"


class EventRow(SQLModel, table=True):
    """One status transition of one operation."""

    __tablename__ = "dgx_event"
    # Ids are never reused, even after retention deletes the newest rows.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    operation_id: str = Field(index=True, max_length=200)
    run: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    name: str = Field(max_length=500)
    op_type: str = Field(max_length=20)
    kind: str = Field(index=True, max_length=20)
    at: float = Field(index=True)
    exit_code: int | None = None
    # How the run ended (terminal events only): see ``Operation.outcome``.
    outcome: str | None = Field(default=None, max_length=16)
    exit_reason: str | None = Field(default=None, max_length=500)
    outcome_source: str | None = Field(default=None, max_length=16)
    detail: str | None = Field(default=None, max_length=2000)
    log_tail: str | None = None


class HistoryRow(SQLModel, table=True):
    """One ended run of an operation, kept for the retention period."""

    __tablename__ = "dgx_history"

    operation_id: str = Field(primary_key=True, max_length=200)
    run: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    name: str = Field(max_length=500)
    op_type: str = Field(max_length=20)
    status: str = Field(max_length=20)
    source: str = Field(default="discovered", max_length=20)
    description: str | None = None
    command: str | None = None
    pid: int | None = None
    port: int | None = None
    started_at: float | None = None
    ended_at: float = Field(index=True)
    exit_code: int | None = None
    # How the run ended: ``completed`` / ``failed`` / ``stopped``, why, and where that came from
    # (None for rows stored before these columns existed: ``history_to_api`` derives the outcome).
    outcome: str | None = Field(default=None, max_length=16)
    exit_reason: str | None = Field(default=None, max_length=500)
    outcome_source: str | None = Field(default=None, max_length=16)
    peak_memory_bytes: int | None = None
    log_tail: str | None = None


class NotificationSetting(SQLModel, table=True):
    """A setting changed in the UI (e.g. the webhook URL), kept across restarts."""

    __tablename__ = "dgx_notification_setting"

    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(default="")
    updated_at: float = Field(default_factory=time.time)


# SQLModel sets __table__ on each table class at run time; its stubs do not declare it.
TABLES = [EventRow.__table__, HistoryRow.__table__, NotificationSetting.__table__]  # type: ignore[attr-defined]


def _tail_list(raw: str | None) -> list[str]:
    return raw.split("\n") if raw else []


def event_to_api(row: EventRow) -> dict[str, Any]:
    """The JSON shape of one event."""
    return {
        "id": row.id,
        "operation_id": row.operation_id,
        "run": row.run,
        "name": row.name,
        "kind": row.kind,
        "at": iso_utc(row.at),
        "at_ts": row.at,
        "exit_code": row.exit_code,
        "outcome": row.outcome,
        "exit_reason": row.exit_reason,
        "outcome_source": row.outcome_source,
        "type": row.op_type,
        "detail": row.detail,
        "log_tail": _tail_list(row.log_tail),
    }


def history_to_api(row: HistoryRow) -> dict[str, Any]:
    """The JSON shape of one ended run (``id`` is the operation's own; ``run`` tells its runs apart)."""
    duration = None
    if row.started_at is not None:
        duration = max(0, int(row.ended_at - row.started_at))
    return {
        "id": row.operation_id,
        "run": row.run,
        "type": row.op_type,
        "name": row.name,
        "description": row.description,
        "command": row.command,
        "status": row.status,
        "source": row.source,
        "pid": row.pid,
        "port": row.port,
        "started_at": iso_utc(row.started_at),
        "ended_at": iso_utc(row.ended_at),
        "duration_seconds": duration,
        "exit_code": row.exit_code,
        "outcome": row.outcome,
        "exit_reason": row.exit_reason,
        "outcome_source": row.outcome_source,
        "peak_memory_bytes": row.peak_memory_bytes,
        "memory_bytes": row.peak_memory_bytes,
        "log_tail": _tail_list(row.log_tail),
    }


class EventStore:
    """Reads and writes the events tables through one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose database already has the tables."""
        self.engine = engine

    def add_event(self, row: EventRow) -> dict[str, Any]:
        """Insert an event and return its JSON (with its new id)."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
            session.refresh(row)
            return event_to_api(row)

    def has_terminal_event(self, operation_id: str, run: int = 1) -> bool:
        """Whether this run of the operation already has a completed/failed/stopped event."""
        with Session(self.engine) as session:
            stmt = (
                select(EventRow.id)
                .where(EventRow.operation_id == operation_id)
                .where(EventRow.run == run)
                .where(col(EventRow.kind).in_(TERMINAL_KINDS))
                .limit(1)
            )
            return session.exec(stmt).first() is not None

    def upsert_history(self, row: HistoryRow) -> None:
        """Insert or replace the history row of an ended run."""
        with Session(self.engine) as session:
            session.merge(row)
            session.commit()

    def events(
        self,
        *,
        after_id: int | None = None,
        since_ts: float | None = None,
        kinds: Sequence[str] = (),
        operation_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Events oldest first, after an id or from a time on."""
        with Session(self.engine) as session:
            stmt = select(EventRow)
            if after_id is not None:
                stmt = stmt.where(col(EventRow.id) > after_id)
            if since_ts is not None:
                stmt = stmt.where(EventRow.at >= since_ts)
            if kinds:
                stmt = stmt.where(col(EventRow.kind).in_(list(kinds)))
            if operation_id is not None:
                stmt = stmt.where(EventRow.operation_id == operation_id)
            if after_id is None and since_ts is None:
                # No starting point: the newest ``limit`` events, still oldest first.
                rows = session.exec(stmt.order_by(col(EventRow.id).desc()).limit(limit)).all()
                return [event_to_api(r) for r in reversed(rows)]
            rows = session.exec(stmt.order_by(col(EventRow.id)).limit(limit)).all()
            return [event_to_api(r) for r in rows]

    def history(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Ended runs, most recently ended first."""
        with Session(self.engine) as session:
            stmt = (
                select(HistoryRow)
                .order_by(col(HistoryRow.ended_at).desc(), col(HistoryRow.run).desc())
                .limit(limit)
            )
            return [history_to_api(r) for r in session.exec(stmt).all()]

    def history_ids(self) -> set[str]:
        """The ids of every operation in the history."""
        with Session(self.engine) as session:
            return set(session.exec(select(HistoryRow.operation_id)).all())

    def counts(self) -> tuple[int, int]:
        """How many events and history rows are stored."""
        with Session(self.engine) as session:
            events = session.exec(select(sa.func.count()).select_from(EventRow)).one()
            history = session.exec(select(sa.func.count()).select_from(HistoryRow)).one()
            return int(events), int(history)

    def purge_batch(self, cutoff: float, batch: int = 500) -> int:
        """Delete up to ``batch`` events and ``batch`` history rows older than ``cutoff``.

        Returns:
            How many rows were deleted (call again while it is non-zero).
        """
        deleted = 0
        with Session(self.engine) as session:
            ids = session.exec(
                select(EventRow.id).where(EventRow.at < cutoff).order_by(col(EventRow.id)).limit(batch)
            ).all()
            if ids:
                session.exec(sa.delete(EventRow).where(col(EventRow.id).in_(ids)))
                deleted += len(ids)
            keys = session.exec(
                select(HistoryRow.operation_id, HistoryRow.run).where(HistoryRow.ended_at < cutoff).limit(batch)
            ).all()
            deleted += _delete_history(session, keys)
            session.commit()
        return deleted

    def trim_batch(self, max_events: int, max_history: int, batch: int = 500) -> int:
        """Delete up to ``batch`` of the oldest events and history rows beyond the row caps.

        Returns:
            How many rows were deleted (call again while it is non-zero).
        """
        deleted = 0
        with Session(self.engine) as session:
            # The id of the newest event that falls outside the cap; it and older ones go.
            edge = session.exec(
                select(EventRow.id).order_by(col(EventRow.id).desc()).offset(max_events).limit(1)
            ).first()
            if edge is not None:
                ids = session.exec(
                    select(EventRow.id).where(col(EventRow.id) <= edge).order_by(col(EventRow.id)).limit(batch)
                ).all()
                session.exec(sa.delete(EventRow).where(col(EventRow.id).in_(ids)))
                deleted += len(ids)
            total = session.exec(select(sa.func.count()).select_from(HistoryRow)).one()
            extra = min(batch, int(total) - max_history)
            if extra > 0:
                keys = session.exec(
                    select(HistoryRow.operation_id, HistoryRow.run)
                    .order_by(col(HistoryRow.ended_at), col(HistoryRow.run))
                    .limit(extra)
                ).all()
                deleted += _delete_history(session, keys)
            session.commit()
        return deleted

    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None when never set."""
        with Session(self.engine) as session:
            row = session.get(NotificationSetting, key)
            return None if row is None else row.value

    def put_setting(self, key: str, value: str) -> None:
        """Store a setting."""
        with Session(self.engine) as session:
            session.merge(NotificationSetting(key=key, value=value, updated_at=time.time()))
            session.commit()

    def delete_setting(self, key: str) -> None:
        """Forget a setting (its default applies again)."""
        with Session(self.engine) as session:
            row = session.get(NotificationSetting, key)
            if row is not None:
                session.delete(row)
                session.commit()


def _delete_history(session: Session, keys: Sequence[Any]) -> int:
    """Delete the history rows with these (operation id, run) keys; how many."""
    for op_id, run in keys:
        session.exec(
            sa.delete(HistoryRow).where(HistoryRow.operation_id == op_id).where(HistoryRow.run == run)
        )
    return len(keys)


def log_tail_text(lines: Sequence[str]) -> str | None:
    """Lines joined for storage, or None when there are none."""
    return "\n".join(lines) if lines else None


def dumps(value: Any) -> str:
    """Compact JSON (used for webhook bodies and tests)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
