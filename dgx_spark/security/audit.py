"""The audit log: every control action, allowed or refused, appended to one table.

Plain SQLModel (no Reflex, no FastAPI), usable from the REST layer and from
event handlers. The table is created by the alembic migrations; writing never
raises (an audit failure is logged, the action's own outcome stands).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from dgx_spark.format import iso_utc
from dgx_spark.redaction import redact_text
from dgx_spark.security.throttle import RateLimiter

logger = logging.getLogger(__name__)

# Outcomes an entry can have.
ALLOWED = "allowed"  # the action was carried out (or accepted)
FAILED = "failed"  # allowed, but it did not succeed (bad input, unknown id, OS refused, ...)
REFUSED = "refused"  # not allowed: no token, foreign origin, throttled, busy
OUTCOMES = (ALLOWED, FAILED, REFUSED)

_LIMITS = {"action": 32, "target": 200, "target_name": 200, "outcome": 16, "client": 64, "via": 16, "detail": 500}


class AuditEntry(SQLModel, table=True):
    """One control action: when, what, on what, how it ended, and who asked."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    action: str = Field(max_length=32, index=True)
    target: str | None = Field(default=None, max_length=200)
    target_name: str | None = Field(default=None, max_length=200)  # the operation's (or node's) name then
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
            "target_name": self.target_name,
            "outcome": self.outcome,
            "status": self.status,
            "client": self.client,
            "via": self.via,
            "detail": self.detail,
        }


# One attempt of the audit writer when the database is busy or away (then it logs and tries again).
AUDIT_WAIT_SECONDS = 30.0


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
    target_name: str | None = None,
    client: str | None = None,
    status: int | None = None,
    via: str = "api",
    detail: str | None = None,
    engine: Engine,
    at: float | None = None,
    wait: float | None = None,
    give_up: bool = True,
) -> AuditEntry | None:
    """Append one entry to the audit log.

    Args:
        action: What was asked: launch, stop, start, remove, progress, login, ...
        outcome: ``allowed``, ``failed`` or ``refused``.
        target: The operation id (or other object) acted on.
        target_name: Its name at the time (an id says little once the operation is gone).
        client: The client's address (and session, for the UI).
        status: The HTTP status answered, when there was one.
        via: ``api`` or ``ui``.
        detail: A short note; secrets in it are redacted.
        engine: The engine to write with.
        at: When it happened (default: now).
        wait: How long a busy or missing database is waited for (default ``AUDIT_WAIT_SECONDS``).
        give_up: False: raise ``DatabaseUnavailable`` after the wait instead of logging and dropping.

    Returns:
        The stored entry, or None when writing failed (logged, never raised unless ``give_up`` is False).
    """
    entry = AuditEntry(
        at=time.time() if at is None else at,
        action=_clip("action", action) or "unknown",
        target=_clip("target", target),
        target_name=_clip("target_name", target_name),
        outcome=_clip("outcome", outcome) or "unknown",
        status=status,
        client=_clip("client", client),
        via=_clip("via", via) or "api",
        detail=_clip("detail", redact_text(detail) if detail else None),
    )
    from dgx_spark.database import DatabaseUnavailable, write_with_retry

    def add(session: Session) -> None:
        session.add(entry)
        session.flush()

    try:
        # Only the writer thread gets here: a busy database may take a while; the entry waits for it.
        write_with_retry(engine, add, wait=AUDIT_WAIT_SECONDS if wait is None else wait, what="audit",
                         expire_on_commit=False)
    except DatabaseUnavailable as exc:
        if not give_up:
            raise
        logger.warning("could not write the audit entry for %s on %s: %s", action, target, exc.message)
        return None
    except Exception:
        logger.exception("could not write the audit entry for %s on %s", action, target)
        return None
    return entry


# Refused requests: the first of a kind (client, action, target, status) in a minute is written,
# up to 100 per client at once and then one a second; repeats and the rest are counted and
# written as one "N refused from X" row per client every 5 s.
REFUSED_BURST = 100
REFUSED_RATE = 1.0
REFUSED_REPEAT_SECONDS = 60.0
REFUSED_SUMMARY_SECONDS = 5.0
_MAX_PENDING_CLIENTS = 256
_MAX_SEEN = 10_000


class RefusalGate:
    """Throttles refused requests before they reach the audit log; counts the rest.

    A flood of refused requests (any web page can send no-cors POSTs) would otherwise
    push the real entries out of view. A refusal is written one by one only when the
    same client had no refusal of the same kind (action, target, status) within
    ``repeat_seconds`` and its budget (``burst`` at once, then ``rate`` a second)
    allows; the others become one summary row per client.
    """

    def __init__(
        self,
        write: Callable[[str, int, dict[str, int]], None],
        *,
        rate: float = REFUSED_RATE,
        burst: int = REFUSED_BURST,
        repeat_seconds: float = REFUSED_REPEAT_SECONDS,
        summary_seconds: float = REFUSED_SUMMARY_SECONDS,
    ) -> None:
        """Create a gate; ``write(client, count, by_action)`` stores one summary row."""
        self._write = write
        self._per_client = RateLimiter(rate=rate, burst=burst)
        self._all = RateLimiter(rate=rate * 10, burst=burst * 5)
        self._repeat_seconds = repeat_seconds
        self._summary_seconds = summary_seconds
        self._seen: dict[tuple[str, str, str | None, int | None], float] = {}
        self._pending: dict[str, collections.Counter[str]] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def admit(self, client: str, action: str, target: str | None = None, status: int | None = None) -> bool:
        """Whether this refusal may be written now; if not, it is counted for the summary."""
        key = (client, action, target, status)
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            repeat = last is not None and now - last < self._repeat_seconds
            if not repeat:
                if len(self._seen) >= _MAX_SEEN:
                    self._seen.clear()
                self._seen[key] = now
        if not repeat and self._per_client.allow(client) and self._all.allow("*"):
            return True
        with self._lock:
            if client not in self._pending and len(self._pending) >= _MAX_PENDING_CLIENTS:
                client = "other clients"
            self._pending.setdefault(client, collections.Counter())[action] += 1
            if self._timer is None:
                self._timer = threading.Timer(self._summary_seconds, self.flush)
                self._timer.daemon = True
                self._timer.start()
        return False

    def flush(self) -> None:
        """Write one summary row per client with refusals not written one by one."""
        with self._lock:
            pending, self._pending, self._timer = self._pending, {}, None
        for client, by_action in pending.items():
            self._write(client, sum(by_action.values()), dict(by_action))


# The writer prunes entries older than DGX_SPARK_HISTORY_DAYS at most this often.
PRUNE_EVERY_SECONDS = 600.0
# While the database is away, entries wait for it in order; past this many waiting, new ones are only logged.
MAX_WAITING = 10_000


class AuditLog:
    """The audit log of one process: its engine, its one writer thread and its refusal gate.

    Built by ``dgx_spark.services.Services``; :meth:`close` stops the writer thread.
    One writer keeps entries in order and keeps SQLite off every event loop.
    """

    def __init__(self, engine: Engine, *, retention_seconds: float) -> None:
        """Create the log (the writer thread starts with the first entry).

        Args:
            engine: The database the entries go to.
            retention_seconds: How long entries are kept (``DGX_SPARK_HISTORY_DAYS``).
        """
        self.engine = engine
        self.retention_seconds = retention_seconds
        self.gate = RefusalGate(self._write_summary)
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgx-audit")
        self._last_prune = 0.0  # only the writer thread reads and sets it
        self._closing = threading.Event()
        self._waiting = 0  # entries queued or being written
        self._waiting_lock = threading.Lock()

    def _write_summary(self, client: str, count: int, by_action: dict[str, int]) -> None:
        actions = ", ".join(f"{name} {n}" for name, n in sorted(by_action.items(), key=lambda kv: -kv[1]))
        self.record_soon(
            "refusals",
            REFUSED,
            client=client,
            via="api",
            detail=f"{count} refused from {client} ({actions}), not written one by one",
            _gate=False,
        )

    def _record_and_prune(self, action: str, outcome: str, **fields: Any) -> None:
        """The writer thread's job: write the entry, and now and then drop the old ones.

        A busy or missing database is waited for as long as it takes (entries stay in order);
        only a dashboard that stops meanwhile gives up, and logs what it could not write.
        """
        from dgx_spark.database import DatabaseUnavailable

        try:
            while True:
                try:
                    record_audit(action, outcome, engine=self.engine, give_up=False,
                                 wait=0.0 if self._closing.is_set() else AUDIT_WAIT_SECONDS, **fields)
                    break
                except DatabaseUnavailable as exc:
                    if self._closing.is_set():
                        logger.warning("stopping: the audit entry for %s on %s is lost: %s",
                                       action, fields.get("target"), exc.message)
                        return
                    logger.warning("the audit entry for %s on %s waits for the database: %s",
                                   action, fields.get("target"), exc.message)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        now = time.monotonic()
        if self._last_prune == 0.0 or now - self._last_prune >= PRUNE_EVERY_SECONDS:
            self._last_prune = now
            try:
                prune_audit(time.time() - self.retention_seconds, engine=self.engine)
            except (sa.exc.SQLAlchemyError, OSError) as exc:  # housekeeping: the entry is written; try later
                logger.warning("could not prune the audit log: %s: %s", type(exc).__name__, exc)

    def record_soon(self, action: str, outcome: str, *, _gate: bool = True, **fields: Any) -> None:
        """Queue an audit entry for the writer thread; returns at once, never raises.

        Use this from async code (ASGI layer, event handlers); ``record_audit`` itself blocks.
        Refused requests pass the per-client refusal gate first (a flood becomes a count).
        """
        if _gate and outcome == REFUSED and not self.gate.admit(
            str(fields.get("client") or "unknown"), action, fields.get("target"), fields.get("status")
        ):
            return
        fields.setdefault("at", time.time())  # when it happened, however long the database keeps it waiting
        with self._waiting_lock:
            if self._waiting >= MAX_WAITING:
                logger.warning("audit: %d entries wait for the database; the entry for %s on %s is lost",
                               self._waiting, action, fields.get("target"))
                return
            self._waiting += 1
        try:
            self._writer.submit(self._record_and_prune, action, outcome, **fields)
        except RuntimeError:  # closed, or the interpreter is shutting down: write it here
            with self._waiting_lock:
                self._waiting -= 1
            record_audit(action, outcome, engine=self.engine, **fields)

    def entries(self, **query: Any) -> list[AuditEntry]:
        """The newest entries first (the filters of :func:`list_audit`)."""
        return list_audit(engine=self.engine, **query)

    def close(self) -> None:
        """Write the refusals counted so far and what the writer holds, then stop it.

        Entries asked for later are written by the caller's thread. With the database away,
        what waits gets one more try each, then is logged as lost.
        """
        self._closing.set()
        self.gate.flush()
        self._writer.shutdown(wait=True)


def prune_audit(cutoff: float, *, engine: Engine, batch: int = 1000) -> int:
    """Delete entries older than ``cutoff`` (a Unix time), in batches; returns how many."""
    deleted = 0
    while True:
        with Session(engine) as session:
            ids = session.exec(
                select(AuditEntry.id).where(AuditEntry.at < cutoff).order_by(col(AuditEntry.id)).limit(batch)
            ).all()
            if not ids:
                return deleted
            session.exec(sa.delete(AuditEntry).where(col(AuditEntry.id).in_(ids)))
            session.commit()
            deleted += len(ids)


def list_audit(
    *,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
    outcome: str | None = None,
    target: str | None = None,
    engine: Engine,
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
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query).all())
