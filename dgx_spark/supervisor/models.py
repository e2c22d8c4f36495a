"""The launched operation: one SQLModel table that is also the supervisor's in-memory record.

Plain SQLModel (no Reflex). Times are POSIX seconds (float) so SQLite and
PostgreSQL store them the same way. The supervisor keeps one instance per
operation in memory (never attached to a database session) and saves a copy of
its columns (``model_dump``) on every change; a few private attributes hold what
only this process knows (the runner's handle, a stop or Restart under way).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from pydantic import PrivateAttr
from sqlmodel import Field, SQLModel

from dgx_spark.collector.model import LIVE_STATUSES
from dgx_spark.supervisor.restart import RestartPolicy
from dgx_spark.supervisor.signals import ProcessIdentity


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

    # In this process only, never saved: the runner's handle while this process started it, the
    # run a stop is under way for, the run a user's Restart waits on, the last run whose end a
    # snapshot has shown.
    _runner_proc: subprocess.Popen[bytes] | None = PrivateAttr(default=None)
    _stopping_run: int | None = PrivateAttr(default=None)
    _restart_run: int | None = PrivateAttr(default=None)
    _shown_end_run: int = PrivateAttr(default=0)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> LaunchedOperation:
        """A fresh record from saved columns (a database row's or an outbox entry's); unknown keys are ignored."""
        return cls(**{key: value for key, value in saved.items() if key in cls.model_fields})

    def saved(self) -> dict[str, Any]:
        """The columns as they are now: what the database (or the outbox) stores."""
        return self.model_dump()

    @property
    def argv(self) -> list[str]:
        """The command line."""
        return list(json.loads(self.argv_json))

    @property
    def env(self) -> dict[str, str]:
        """Environment variables the launch added."""
        return dict(json.loads(self.env_json or "{}"))

    @property
    def params(self) -> dict[str, Any]:
        """The template's parameters."""
        return dict(json.loads(self.params_json or "{}"))

    @property
    def restart_policy(self) -> RestartPolicy:
        """When the supervisor starts a next run by itself."""
        return RestartPolicy.from_json(self.restart_json)

    @property
    def is_live(self) -> bool:
        """Whether the operation has not ended."""
        return self.status in LIVE_STATUSES

    @property
    def identity(self) -> ProcessIdentity | None:
        """The command's identity, once the runner reported it."""
        if self.pid is None or self.create_time is None:
            return None
        return ProcessIdentity(self.pid, self.create_time)

    @property
    def runner_identity(self) -> ProcessIdentity | None:
        """The runner's identity."""
        if self.runner_pid is None or self.runner_create_time is None:
            return None
        return ProcessIdentity(self.runner_pid, self.runner_create_time)
