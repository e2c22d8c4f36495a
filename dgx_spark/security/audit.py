"""The audit log: every control action, allowed or refused, appended to one table.

Plain SQLModel (no Reflex, no FastAPI), usable from the REST layer and from
event handlers. The table is created by the alembic migrations; writing never
raises (an audit failure is logged, the action's own outcome stands).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import time
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from dgx_spark.collector.model import iso_utc
from dgx_spark.security.redaction import redact_text
from dgx_spark.settings import settings

logger = logging.getLogger(__name__)

# Outcomes an entry can have.
ALLOWED = "allowed"  # the action was carried out (or accepted)
FAILED = "failed"  # allowed, but it did not succeed (bad input, unknown id, OS refused, ...)
REFUSED = "refused"  # not allowed: no token, foreign origin, throttled, busy
OUTCOMES = (ALLOWED, FAILED, REFUSED)

_LIMITS = {"action": 32, "target": 200, "outcome": 16, "client": 64, "via": 16, "detail": 500}


class AuditEntry(SQLModel, table=True):
    """One control action: when, what, on what, how it ended, and who asked."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    action: str = Field(max_length=32, index=True)
    target: str | None = Field(default=None, max_length=200)
    outcome: str = Field(max_length=16)
    status: int | None = None
    client: str | None = Field(default=None, max_length=64)
    via: str = Field(default="api", max_length=16)
    detail: str | None = Field(default=None, max_length=500)

    def to_api(self) -> dict[str, Any]:
        """The entry as the API and the UI show it."""
        return {
            "id": self.id,
            "at": iso_utc(self.at),
            "timestamp": self.at,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "status": self.status,
            "client": self.client,
            "via": self.via,
            "detail": self.detail,
        }


@functools.cache
def _engine() -> Engine:
    try:
        from dgx_spark.database import get_engine
    except ImportError:  # the database module is not there: a plain engine
        from sqlmodel import create_engine

        return create_engine(settings.db_url, connect_args={"check_same_thread": False})
    return get_engine()


def _clip(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value)
    limit = _LIMITS[name]
    return value if len(value) <= limit else value[: limit - 1] + "…"


def record_audit(
    action: str,
    outcome: str,
    *,
    target: str | None = None,
    client: str | None = None,
    status: int | None = None,
    via: str = "api",
    detail: str | None = None,
    engine: Engine | None = None,
) -> AuditEntry | None:
    """Append one entry to the audit log.

    Args:
        action: What was asked: launch, stop, start, remove, progress, login, ...
        outcome: ``allowed``, ``failed`` or ``refused``.
        target: The operation id (or other object) acted on.
        client: The client's address (and session, for the UI).
        status: The HTTP status answered, when there was one.
        via: ``api`` or ``ui``.
        detail: A short note; secrets in it are redacted.
        engine: The engine to write with (the app's by default).

    Returns:
        The stored entry, or None when writing failed (logged, never raised).
    """
    entry = AuditEntry(
        at=time.time(),
        action=_clip("action", action) or "unknown",
        target=_clip("target", target),
        outcome=_clip("outcome", outcome) or "unknown",
        status=status,
        client=_clip("client", client),
        via=_clip("via", via) or "api",
        detail=_clip("detail", redact_text(detail) if detail else None),
    )
    try:
        with Session(engine or _engine(), expire_on_commit=False) as session:
            session.add(entry)
            session.commit()
            session.refresh(entry)
    except Exception:
        logger.exception("could not write the audit entry for %s on %s", action, target)
        return None
    return entry


# One writer thread keeps entries in order and keeps SQLite off every event loop.
_writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgx-audit")


def record_audit_soon(action: str, outcome: str, **fields: Any) -> None:
    """Queue an audit entry for the writer thread; returns at once, never raises.

    Use this from async code (ASGI layer, event handlers); ``record_audit`` itself blocks.
    """
    try:
        _writer.submit(record_audit, action, outcome, **fields)
    except RuntimeError:  # interpreter shutting down
        record_audit(action, outcome, **fields)


def list_audit(
    *,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
    outcome: str | None = None,
    target: str | None = None,
    engine: Engine | None = None,
) -> list[AuditEntry]:
    """The newest entries first, optionally filtered and paged by id."""
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(max(1, min(limit, 1000)))
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if outcome is not None:
        query = query.where(AuditEntry.outcome == outcome)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    with Session(engine or _engine(), expire_on_commit=False) as session:
        return list(session.exec(query).all())
