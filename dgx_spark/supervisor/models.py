"""SQLModel tables: launched operations (with their launch spec) and status transitions.

Plain SQLModel (no Reflex). Times are POSIX seconds (float) so SQLite and
PostgreSQL store them the same way.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class LaunchedOperation(SQLModel, table=True):
    """One operation this dashboard launched, with everything needed to adopt or restart it."""

    __tablename__ = "launched_operation"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=256)
    type: str = Field(max_length=16)
    template: str = Field(max_length=64)
    # The launch spec, as JSON text: argv list, env dict, template params.
    argv_json: str
    env_json: str = "{}"
    params_json: str = "{}"
    cwd: str | None = None
    port: int | None = None
    # The current state.
    status: str = Field(default="pending", max_length=16, index=True)
    detail: str | None = None
    exit_code: int | None = None
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    stop_requested: bool = False
    # Identity of the command and of its runner (pid + create time), and the boot they ran in.
    pid: int | None = None
    create_time: float | None = None
    runner_pid: int | None = None
    runner_create_time: float | None = None
    boot_id: str | None = Field(default=None, max_length=64)
    # Which run this is (1, 2, ... : "Start again", Restart and restart policies start new runs).
    run: int = 1
    # How the current (or last) run ended: completed / failed / stopped, why, and who said so.
    outcome: str | None = Field(default=None, max_length=16)
    exit_reason: str | None = None
    outcome_source: str | None = Field(default=None, max_length=16)
    # The signal the user chose for the stop of the current run: int, term or kill.
    stop_signal: str | None = Field(default=None, max_length=8)
    # The restart policy (JSON: policy, max_restarts, backoff_seconds) and its state.
    restart_json: str = "{}"
    restarts: int = 0
    restart_streak: int = 0
    restart_due_at: float | None = None


class OperationTransition(SQLModel, table=True):
    """A status change of any operation (launched or discovered); the events history builds on it."""

    __tablename__ = "operation_transition"

    id: int | None = Field(default=None, primary_key=True)
    operation_id: str = Field(index=True, max_length=64)
    at: float = Field(index=True)
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    exit_code: int | None = None
    detail: str | None = None
    # The run of a launched operation this transition belongs to (None: discovered).
    run: int | None = None
