"""The supervisor: launches, stops, re-adopts and reports operations this dashboard starts.

State lives in memory (one ``LaunchedOperation`` per operation: the table's own
class) and a copy of its columns is written to the database on every change by a
single writer thread, so the sampler never waits on the database. Each launched
command runs under a runner process (``runner.py``) that records its pid and exit
status in ``runs/<id>/``; those files are the truth after a dashboard restart. The supervisor is also a probe:
``sample`` merges launched operations into every snapshot.

Each start of an operation is a *run* (1, 2, ...: "Start again", Restart and
restart policies keep the id). Everything that acts later — a stop's SIGKILL
after the grace period, a scheduled restart — is bound to the run it was
issued for and does nothing to any other run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import psutil
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from dgx_spark.collector.containers import (
    ContainerOutput,
    ContainerWatcher,
    EngineClient,
    EngineError,
)
from dgx_spark.collector.logfile import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, backup_path
from dgx_spark.collector.model import (
    ENDED_STATUSES,
    Operation,
    Snapshot,
    operation_id,
)
from dgx_spark.collector.outcome import record_stop_request
from dgx_spark.collector.output import ProcessOutput
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.database import WRITE_WAIT_SECONDS, DatabaseUnavailable, probe_writable, write_with_retry
from dgx_spark.health import health
from dgx_spark.redaction import redact_command
from dgx_spark.settings import PROJECT_ROOT, Settings
from dgx_spark.startup import user_umask
from dgx_spark.supervisor import templates as tpl
from dgx_spark.supervisor.models import LaunchedOperation
from dgx_spark.supervisor.outbox import OUTBOX_FILE, Outbox, apply_entry, delete_entry, upsert_entry
from dgx_spark.supervisor.restart import HEALTHY_SECONDS, PolicyError, RestartPolicy, parse_policy
from dgx_spark.supervisor.runner import (
    EXIT_FILE,
    RUNNER_FILE,
    SPEC_FILE,
    boot_id,
    read_json,
    recover_exit,
    write_json_atomic,
)
from dgx_spark.supervisor.signals import (
    ProcessIdentity,
    SignalDenied,
    SignalRefused,
    is_alive,
    send_signal,
)

logger = logging.getLogger(__name__)

_DISCOVERED_ID = re.compile(r"^op-(\d{1,10})-(\d{1,16})$")
_LAUNCHED_ID = re.compile(r"^launch-[0-9a-f]{12}$")

# The signals a user may stop with: interrupt (lets a training script checkpoint), terminate, kill.
STOP_SIGNALS: dict[str, signal.Signals] = {"int": signal.SIGINT, "term": signal.SIGTERM, "kill": signal.SIGKILL}
# How long a new run waits for one snapshot to show the previous run's end (its own terminal event).
SHOWN_END_WAIT_SECONDS = 5.0
# While the database is reported degraded and nothing waits in the outbox: how often the writer probes it.
PROBE_EVERY_SECONDS = 5.0

# What went wrong with a control action, in the product's words (the API maps each kind to an HTTP
# status in one place, the UI to a message): bad input, no such operation, not in a state for it,
# another action on it under way, not permitted, not logged in, too many actions, a component away,
# a container engine or node that answered with an error, a fault of ours.
ErrorKind = Literal[
    "invalid", "not_found", "conflict", "busy", "forbidden", "unauthorized", "throttled", "unavailable",
    "upstream", "internal",
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)


class ControlError(Exception):
    """A control action that cannot be done: its kind, a message, the field at fault."""

    def __init__(self, kind: ErrorKind, message: str, field: str | None = None, code: str | None = None) -> None:
        """Create the error; ``code`` names it more precisely than its kind (e.g. ``database_unavailable``)."""
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown control error kind {kind!r}")
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.field = field
        self.code = code


@dataclasses.dataclass(frozen=True)
class SupervisorConfig:
    """Supervisor settings (from ``Settings.supervisor``: DGX_SPARK_STOP_GRACE_SECONDS, _LOG_MAX_BYTES, ...)."""

    data_dir: Path
    base_url: str
    stop_grace: float = 10.0
    log_max_bytes: int = DEFAULT_MAX_BYTES
    log_backups: int = DEFAULT_BACKUPS
    templates_file: Path | None = None
    # Makes the token a launched command gets as DGX_SPARK_TOKEN: it may only report
    # that operation's progress. None: launched commands get no token.
    operation_token: Callable[[str], str] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, operation_token: Callable[[str], str] | None = None
    ) -> SupervisorConfig:
        """The supervisor's part of the app's settings (``settings.supervisor`` and the data folder).

        ``operation_token`` makes a launched command's token (the services' credentials).
        """
        return cls(
            data_dir=settings.data_dir,
            base_url=settings.base_url,
            stop_grace=settings.supervisor.stop_grace_seconds,
            log_max_bytes=settings.supervisor.log_max_bytes,
            log_backups=settings.supervisor.log_backups,
            templates_file=settings.storage.templates_file,
            operation_token=operation_token,
        )


# What a live launched operation takes from its discovered process: what it uses, how far it got.
MEASURED_FIELDS: tuple[str, ...] = (
    "ports", "pids", "user", "progress", "metrics", "total_epochs", "eta_seconds", "throughput", "stalled",
    "progress_source", "cpu_percent", "memory_bytes", "gpu_memory_bytes", "gpu_utilization", "gpu_indices",
    "idle_gpu",
)


def as_operation(rec: LaunchedOperation, found: Operation | None, *, title: str, log_path: str) -> Operation:
    """A launched operation as the collector's immutable ``Operation``.

    Args:
        rec: The supervisor's record.
        found: Its command (or runner) as discovery saw it in this snapshot; used while it is live.
        title: What it is when it has not ended (the template's title).
        log_path: Its log file.
    """
    live = rec.is_live
    measured: dict[str, Any] = (
        {name: getattr(found, name) for name in MEASURED_FIELDS} if found is not None and live else {}
    )
    if not measured and rec.pid and live:
        measured["pids"] = (rec.pid,)
    ended: dict[str, Any] = {} if live else {"outcome": rec.outcome, "exit_reason": rec.exit_reason,
                             "outcome_source": rec.outcome_source}
    return Operation(
        id=rec.id,
        type=rec.type,  # type: ignore[arg-type]
        name=rec.name,
        status=rec.status,  # type: ignore[arg-type]
        description=rec.detail if not live and rec.detail else title,
        started_at_ts=rec.started_at or rec.created_at,
        ended_at_ts=rec.ended_at,
        port=rec.port if rec.port is not None or found is None or not live else found.port,
        pid=rec.pid,
        command=redact_command(rec.argv),
        source="launched",
        exit_code=rec.exit_code,
        log_path=log_path,
        cwd=rec.cwd,
        stop_requested=rec.stop_requested,
        run=rec.run,
        runs=rec.run,
        restarts=rec.restarts,
        **measured,
        **ended,
    )


class Supervisor:
    """Launch/stop/start-again/forget operations; a probe that merges them into snapshots."""

    name = "supervisor"

    def __init__(
        self,
        config: SupervisorConfig,
        engine: Engine,
        *,
        snapshot: Callable[[], Snapshot] | None = None,
        on_change: Callable[[], None] | None = None,
        containers: ContainerWatcher | None = None,
    ) -> None:
        """Create a supervisor; call ``load`` before use to re-adopt what the database knows.

        ``containers``: the watcher whose engine stops, starts and reads container
        operations (the services' one; None: container operations cannot be controlled).
        """
        self.config = config
        self._containers = containers
        self.engine = engine
        self.logs_dir = config.data_dir / "logs"
        self.runs_dir = config.data_dir / "runs"
        self._snapshot = snapshot
        self._on_change = on_change
        self._ops: dict[str, LaunchedOperation] = {}
        self._owned_ids: set[str] = set()
        self._lock = threading.RLock()
        # Notified (lock held) when a snapshot has shown the end of a run.
        self._shown = threading.Condition(self._lock)
        # Timers of scheduled runs; cancelled by ``close`` (the next start of the app reschedules them).
        self._timers: set[threading.Timer] = set()
        self._closed = False
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgx-spark-db")
        # Writes the database could not take (a stop that was carried out): saved on disk, replayed later.
        self._outbox = Outbox(config.data_dir / OUTBOX_FILE)
        self._last_replay = 0.0
        self._last_probe = 0.0
        self._replay_queued = False
        # Per thread: the writes a control action waits for once it has let go of the lock.
        self._saves = threading.local()
        self._boot_id = boot_id()
        self._templates: dict[str, tpl.Template] = {}
        self._templates_mtime: float | None = -1.0
        self.template_problems: list[str] = []

    # ---- templates -------------------------------------------------------------------------
    def templates(self) -> dict[str, tpl.Template]:
        """Built-in and user templates (the user file is re-read when it changes)."""
        path = self.config.templates_file
        try:
            mtime = path.stat().st_mtime if path is not None else None
        except OSError:
            mtime = None
        if mtime != self._templates_mtime:
            user, problems = tpl.load_user_templates(path) if path is not None else ([], [])
            merged = {t.name: t for t in tpl.BUILTIN_TEMPLATES}
            merged.update({t.name: t for t in user})
            self._templates, self.template_problems, self._templates_mtime = merged, problems, mtime
            for problem in problems:
                logger.warning("templates: %s", problem)
        return self._templates

    def build_spec(self, body: Mapping[str, Any], *, check_port: bool = True) -> tpl.LaunchSpec:
        """Validate a launch request (the API's JSON body) into a spec.

        Raises:
            ControlError: invalid, naming the field (an unknown template too).
        """
        template_name = body.get("template")
        if not isinstance(template_name, str) or not template_name:
            raise ControlError("invalid", "template: must be a template name", "template")
        try:
            if template_name == tpl.CUSTOM:
                spec = tpl.build_custom_spec(
                    body.get("name"), body.get("type"), body.get("command"), body.get("cwd"),
                    body.get("env"), body.get("port"), body.get("gpus"), check_port=check_port,
                )
            else:
                template = self.templates().get(template_name)
                if template is None:
                    raise ControlError("invalid", f"template: unknown template {template_name[:64]!r}", "template")
                extra = [k for k in ("command", "cwd", "env", "type") if body.get(k) is not None]
                if extra:
                    raise ControlError("invalid", f"{extra[0]}: only for the custom template", extra[0])
                spec = tpl.build_spec(template, body.get("name"), body.get("params"), check_port=check_port)
        except tpl.SpecError as exc:
            raise ControlError("invalid", str(exc), exc.field) from exc
        if check_port and spec.port is not None:
            with self._lock:
                clash = any(r.is_live and r.port == spec.port for r in self._ops.values())
            if clash:
                field = "port" if spec.template == tpl.CUSTOM else "params.port"
                raise ControlError("invalid", f"{field}: port {spec.port} is taken by a launched operation", field)
        self.restart_policy(body)
        return spec

    @staticmethod
    def restart_policy(body: Mapping[str, Any]) -> RestartPolicy:
        """The launch body's ``restart`` policy (none: never restart).

        Raises:
            ControlError: invalid, naming the bad field (``restart.policy``...).
        """
        try:
            return parse_policy(body.get("restart"))
        except PolicyError as exc:
            raise ControlError("invalid", str(exc), exc.field) from exc

    @staticmethod
    def stop_signal(name: Any) -> signal.Signals:
        """The signal a stop's ``signal`` choice names.

        Raises:
            ControlError: invalid when it is not int, term or kill.
        """
        sig = STOP_SIGNALS.get(name) if isinstance(name, str) else None
        if sig is None:
            raise ControlError("invalid", f"signal: must be one of {', '.join(STOP_SIGNALS)}", "signal")
        return sig

    # ---- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Read every launched operation from the database and reconcile it with reality."""
        self._replay_outbox(wait=WRITE_WAIT_SECONDS)  # e.g. a stop saved while the database was away
        with Session(self.engine) as session:
            stored = {row.id: row.saved() for row in session.exec(select(LaunchedOperation)).all()}
        # What the database could not take yet still counts (a user's stop stays a stop).
        rows = self._outbox.overlay(stored)
        with self._lock:
            for saved in rows.values():
                rec = LaunchedOperation.from_saved(saved)  # our own record, never bound to a session
                self._ops[rec.id] = rec
                self._own(rec)
            for rec in list(self._ops.values()):
                if rec.is_live:
                    self._reconcile(rec, startup=True)
                elif rec.restart_due_at is not None and rec._stopping_run is None:
                    # A next run was due when the dashboard went down: keep the promise.
                    automatic = rec.outcome != "stopped"
                    why = self._restart_why(rec) if automatic else "restarted by the user"
                    self._timer(max(0.0, rec.restart_due_at - time.time()), rec, why, automatic)
        logger.info("supervisor: %d launched operation(s) known", len(rows))

    def close(self) -> None:
        """Flush pending database writes. Launched commands keep running.

        Scheduled runs are not started by this instance any more; their due time is saved and the
        next ``load`` schedules them again.
        """
        with self._lock:
            self._closed = True
            timers, self._timers = list(self._timers), set()
        for timer in timers:
            timer.cancel()
        self._writer.shutdown(wait=True)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued database write is done."""
        self._writer.submit(lambda: None).result(timeout)

    # ---- actions ---------------------------------------------------------------------------
    def launch(self, body: Mapping[str, Any]) -> Operation:
        """Validate and start a new operation; it is ``starting`` when this returns."""
        spec = self.build_spec(body)
        policy = self.restart_policy(body)
        now = time.time()
        rec = LaunchedOperation(
            id=f"launch-{secrets.token_hex(6)}", name=spec.name, type=spec.type, template=spec.template,
            argv_json=json.dumps(list(spec.argv)), env_json=json.dumps(dict(spec.env)),
            params_json=json.dumps(dict(spec.params)), cwd=spec.cwd, port=spec.port, status="pending",
            created_at=now, restart_json=policy.to_json(),
        )
        self._require_database()  # 503 before anything starts: a launch nobody could record is not made
        with self._saved_after(), self._lock:
            self._ops[rec.id] = rec
            self._record(rec, "pending", "accepted", wait=True, from_status=None)
            self._spawn(rec)
        self._changed()
        return self.operation(rec.id) or self._as_operation(rec, None)

    def start_again(self, op_id: str) -> Operation:
        """Start an ended launched operation again with its saved spec: same id and log, a new run.

        A restart the policy scheduled is superseded; the restart streak starts again.

        Raises:
            ControlError: not_found, conflict (not ended), invalid (port taken, program gone), unavailable (database).
        """
        container_op = self._container_op(op_id)
        if container_op is not None:
            return self._start_container(container_op)
        self._require_database()
        with self._saved_after(), self._lock:
            rec = self._ops.get(op_id)
            if rec is None:
                raise self._not_launched(op_id, "started again")
            if rec.is_live:
                self._reconcile(rec)
            if rec.is_live:
                raise ControlError("conflict", f"operation {op_id} is {rec.status}, not ended")
            self._await_shown_end(rec)
            if rec.is_live or self._ops.get(op_id) is not rec:  # started or removed meanwhile
                raise ControlError("conflict", f"operation {op_id} changed meanwhile ({rec.status}); try again")
            self._check_startable(rec)
            rec.restart_streak = 0
            self._begin_run(rec, "started again")
        self._changed()
        return self.operation(op_id) or self._as_operation(rec, None)

    def restart(self, op_id: str, *, signal_name: str = "term") -> Operation:
        """Stop a running launched operation, then start it again as a new run (same id and spec).

        The new run starts as soon as the current one has ended (SIGKILL after the grace period).

        Raises:
            ControlError: not_found, conflict (not running, already restarting), forbidden, unavailable (database).
        """
        sig = self.stop_signal(signal_name)
        self._require_database()
        with self._lock:
            rec = self._ops.get(op_id)
            if rec is None:
                raise self._not_launched(op_id, "restarted")
            if rec.is_live:
                self._reconcile(rec)
            if not rec.is_live:
                raise ControlError("conflict", f"operation {op_id} is {rec.status}, not running; start it again instead")
            plan = self._begin_stop(rec, signal_name, sig, restart=True)
        if plan is not None:
            self._send_stop(rec, *plan)
        self._changed()
        return self._as_operation(rec, None)

    def _check_startable(self, rec: LaunchedOperation) -> None:
        """Raise ControlError (422) when a new run could not start: port taken, program gone (lock held)."""
        field = "params.port" if rec.template != tpl.CUSTOM else "port"
        if rec.port is not None and (
            tpl.port_in_use(rec.port)
            or any(r.is_live and r.port == rec.port for r in self._ops.values())
        ):
            raise ControlError("invalid", f"{field}: port {rec.port} is already in use", field)
        try:
            tpl.resolve_executable(list(rec.argv), rec.cwd, "command")
        except tpl.SpecError as exc:
            raise ControlError("invalid", str(exc), exc.field) from exc

    def _begin_run(self, rec: LaunchedOperation, why: str) -> None:
        """Start the next run of an ended operation (lock held): a new run number, fresh run state."""
        rec.run += 1
        rec.pid = rec.create_time = rec.runner_pid = rec.runner_create_time = None
        rec.exit_code = rec.ended_at = rec.started_at = None
        rec.outcome = rec.exit_reason = rec.outcome_source = None
        rec.stop_requested = False
        rec.stop_signal = None
        rec.restart_due_at = None
        rec._stopping_run = rec._restart_run = None
        self._record(rec, "pending", why, wait=True)
        self._spawn(rec)

    def _await_shown_end(self, rec: LaunchedOperation) -> None:
        """Wait (bounded, lock held) until a snapshot has shown how the current run ended.

        So the run gets its own terminal event before the next run replaces it.
        """
        if self._snapshot is None or rec._shown_end_run >= rec.run:
            return
        run = rec.run
        self._changed()  # ask the sampler for a snapshot now
        self._shown.wait_for(
            lambda: rec._shown_end_run >= run or rec.run != run or rec.is_live, SHOWN_END_WAIT_SECONDS
        )

    def stop(self, op_id: str, *, force: bool = False, signal_name: str = "term") -> Operation:
        """Signal the operation's process group, then SIGKILL after the grace period.

        ``signal_name``: ``int`` (SIGINT: lets a training script checkpoint), ``term`` (SIGTERM)
        or ``kill`` (SIGKILL now, as ``force``). Stopping an ended launched operation whose
        next run is scheduled (restart policy) cancels that run. A pending Restart becomes a stop.

        Raises:
            ControlError: not_found, conflict (ended, being stopped), forbidden, invalid (bad signal).
        """
        name = "kill" if force else signal_name
        sig = self.stop_signal(name)
        with self._lock:
            rec = self._ops.get(op_id)
            plan = None
            if rec is not None:
                if rec.is_live:
                    self._reconcile(rec)  # it may have ended; learn the command's pid
                if not rec.is_live:
                    if rec.restart_due_at is not None:
                        self._cancel_next_run(rec)
                        return self._as_operation(rec, None)
                    raise ControlError("conflict", f"operation {op_id} has already ended ({rec.status})")
                plan = self._begin_stop(rec, name, sig, restart=False)
        if rec is None:
            container_op = self._container_op(op_id)
            if container_op is not None:
                return self._stop_container(container_op, name)
            return self._stop_discovered(op_id, sig, name == "kill")
        if plan is not None:
            self._send_stop(rec, *plan)
        self._changed()
        return self._as_operation(rec, None)

    def _begin_stop(
        self, rec: LaunchedOperation, name: str, sig: signal.Signals, *, restart: bool,
    ) -> tuple[int, ProcessIdentity, bool, signal.Signals] | None:
        """Mark a stop (or Restart) of the current run (lock held); what to signal, or None for nothing.

        Raises:
            ControlError: conflict when this run is already being stopped (a SIGKILL is always allowed).
        """
        run = rec.run
        target, group = self._stop_target(rec)
        if rec._stopping_run == run:
            if restart:
                if rec._restart_run == run:
                    raise ControlError("conflict", f"operation {rec.id} is already being restarted")
                rec._restart_run = run  # the stop under way ends the run; then the new run starts
                return None
            if rec._restart_run == run:
                rec._restart_run = None  # a Stop wins over the pending Restart
                return (run, target, group, sig) if sig == signal.SIGKILL and target is not None else None
            if sig != signal.SIGKILL:
                raise ControlError("conflict", f"operation {rec.id} is already being stopped")
            return (run, target, group, sig) if target is not None else None
        if target is None:
            raise ControlError("conflict", f"operation {rec.id} has no process to signal yet; try again")
        rec.stop_requested = True
        rec.stop_signal = name
        rec._stopping_run = run
        rec._restart_run = run if restart else None
        self._persist(rec)
        return run, target, group, sig

    def _send_stop(self, rec: LaunchedOperation, run: int, target: ProcessIdentity, group: bool, sig: signal.Signals) -> None:
        """Send a stop's signal (no lock held); SIGKILL that run alone after the grace period."""
        if not group and sig == signal.SIGKILL:
            sig = signal.SIGUSR1  # to the runner: it forwards SIGKILL and lives to record the exit
        try:
            self._signal(target, sig, group=group)
        except ControlError:
            with self._lock:
                if rec.run == run and rec._stopping_run == run:
                    rec._stopping_run = rec._restart_run = rec.stop_signal = None
                    rec.stop_requested = False
                    self._persist(rec)
            raise
        if sig not in (signal.SIGKILL, signal.SIGUSR1):
            self._escalate_later(target, group, rec, run)

    # ---- containers: through their engine ------------------------------------------------------
    def _container_op(self, op_id: str) -> Operation | None:
        """The discovered container operation with this id in the latest snapshot, if it is one."""
        with self._lock:
            if op_id in self._ops:
                return None
        snapshot = self._snapshot() if self._snapshot else None
        op = snapshot.find(op_id) if snapshot else None
        return op if op is not None and op.source == "discovered" and op.container is not None else None

    def _engine_for(self, op: Operation) -> EngineClient:
        """The engine's client for a container operation, or a ControlError saying why not."""
        assert op.container is not None
        label = op.container.name or op.container.id[:12]
        reason = op.container.control
        if reason is None:
            if self._containers is None:
                reason = "no container engine is watched in this process"
            else:
                try:
                    return self._containers.client()
                except EngineError as exc:
                    reason = exc.message
        kind: ErrorKind = "forbidden" if "no access" in reason or "another user" in reason else "unavailable"
        raise ControlError(kind, f"container {label} cannot be controlled here: {reason}", code="container_engine")

    def _engine_error(self, op: Operation, exc: EngineError) -> ControlError:
        assert op.container is not None
        label = op.container.name or op.container.id[:12]
        if exc.status == 404:
            return ControlError("conflict", f"container {label} no longer exists")
        return ControlError("upstream" if exc.status else "unavailable", f"container {label}: the engine said: {exc.message}",
                            code="container_engine")

    def _stop_container(self, op: Operation, name: str) -> Operation:
        """``docker stop`` through the engine: its stop signal, then SIGKILL after the grace period.

        ``kill`` stops with no grace; ``int`` asks the engine for SIGINT as the stop signal.
        The engine call (which waits for the container to end) runs in the background.
        """
        assert op.container is not None
        client = self._engine_for(op)
        if not op.is_live:
            raise ControlError("conflict", f"operation {op.id} has already ended ({op.status})")
        try:
            running = (client.inspect(op.container.id).get("State") or {}).get("Running")
        except EngineError as exc:
            raise self._engine_error(op, exc) from exc
        label = op.container.name or op.container.id[:12]
        if running is False:
            raise ControlError("conflict", f"container {label} is not running")
        grace = 0 if name == "kill" else max(1, round(self.config.stop_grace))
        record_stop_request(op.id)  # its outcome is then "stopped by the user"

        def stop() -> None:
            try:
                client.stop(op.container.id, grace, "SIGINT" if name == "int" else None)  # type: ignore[union-attr]
                logger.info("container %s stopped through the engine (grace %ds)", label, grace)
            except EngineError as exc:
                logger.warning("container %s: stop failed: %s", label, exc.message)
            self._changed()

        threading.Thread(target=stop, name="dgx-spark-container-stop", daemon=True).start()
        return op

    def _start_container(self, op: Operation) -> Operation:
        """``docker start`` through the engine; the container's new processes are a new operation."""
        assert op.container is not None
        client = self._engine_for(op)
        label = op.container.name or op.container.id[:12]
        if op.is_live:
            raise ControlError("conflict", f"container {label} is running; stop it first")
        try:
            started = client.start(op.container.id)
        except EngineError as exc:
            raise self._engine_error(op, exc) from exc
        if not started:
            raise ControlError("conflict", f"container {label} is already running")
        self._changed()
        return op

    def _stop_discovered(self, op_id: str, sig: int, force: bool) -> Operation:
        snapshot = self._snapshot() if self._snapshot else None
        op = snapshot.find(op_id) if snapshot else None
        match = _DISCOVERED_ID.match(op_id)
        if op is None or match is None or op.pid is None:
            raise ControlError("not_found", f"no operation with id {op_id!r}", "id")
        if not op.is_live:
            raise ControlError("conflict", f"operation {op_id} has already ended ({op.status})")
        pid = int(match.group(1))
        try:
            create_time = psutil.Process(pid).create_time()
        except Exception as exc:
            raise ControlError("conflict", f"operation {op_id} is no longer running") from exc
        if operation_id(pid, create_time) != op_id:
            raise ControlError("conflict", f"pid {pid} now belongs to another process")
        target = ProcessIdentity(pid, create_time)
        try:
            group = os.getpgid(pid) == pid and os.getpgid(pid) != os.getpgrp()
        except OSError:
            group = False
        self._signal(target, sig, group=group)
        record_stop_request(op_id)  # its outcome is then "stopped by the user", whatever the signal did
        if not force:
            self._escalate_later(target, group, None, 0)
        self._changed()
        return op

    def _signal(self, target: ProcessIdentity, sig: int, *, group: bool) -> None:
        try:
            send_signal(target, sig, group=group)
        except SignalRefused as exc:
            raise ControlError("forbidden", f"refused: {exc}") from exc
        except SignalDenied as exc:
            raise ControlError("forbidden", f"not permitted: {exc}") from exc

    def _stop_target(self, rec: LaunchedOperation) -> tuple[ProcessIdentity | None, bool]:
        """The command's process group once known; before that the runner (it forwards SIGTERM)."""
        if rec.identity is not None:
            return rec.identity, True
        return rec.runner_identity, False

    def _escalate_later(self, target: ProcessIdentity, group: bool, rec: LaunchedOperation | None, run: int) -> None:
        """SIGKILL after the grace period: only run ``run`` of ``rec`` (or the discovered ``target``)."""

        def escalate() -> None:
            nonlocal target, group
            try:
                if rec is not None:
                    with self._lock:
                        # The run this stop was issued for, and no other: a newer run is left alone.
                        if self._ops.get(rec.id) is not rec or rec.run != run:
                            return
                        if rec.is_live:
                            self._reconcile(rec)
                        if not rec.is_live or rec.run != run:
                            return
                        # Never SIGKILL the runner while its command may live: it would lose the exit code.
                        target, group = self._stop_target(rec)  # type: ignore[assignment]
                        if target is None:
                            return
                if is_alive(target):
                    logger.info("stop: pid %d outlived the grace period; SIGKILL", target.pid)
                    # The runner (command not started yet) turns SIGUSR1 into SIGKILL for the command.
                    send_signal(target, signal.SIGKILL if group or rec is None else signal.SIGUSR1, group=group)
            except (SignalRefused, SignalDenied) as exc:
                logger.warning("stop: could not SIGKILL pid %d: %s", target.pid, exc)
            finally:
                if rec is not None:
                    with self._lock:
                        if rec.run == run and rec._stopping_run == run:
                            rec._stopping_run = None

        timer = threading.Timer(self.config.stop_grace, escalate)
        timer.daemon = True
        timer.start()

    def forget(self, op_id: str) -> None:
        """Remove an ended launched operation, its run files and its logs."""
        self._require_database()
        with self._lock:
            rec = self._ops.get(op_id)
            if rec is None:
                raise self._not_launched(op_id, "removed")
            if rec.is_live:
                self._reconcile(rec)  # it may have ended since the last sample
            if rec.is_live:
                raise ControlError("conflict", f"operation {op_id} is {rec.status}; stop it first")
            del self._ops[op_id]
        # Durable either way (database or outbox); wait a little so a reload rarely shows it.
        with contextlib.suppress(concurrent.futures.TimeoutError):
            self._writer.submit(self._save, delete_entry(op_id)).result(WRITE_WAIT_SECONDS * 2)
        shutil.rmtree(self.runs_dir / op_id, ignore_errors=True)
        for index in range(self.config.log_backups, -1, -1):
            path = self.log_path(op_id) if index == 0 else backup_path(self.log_path(op_id), index)
            with contextlib.suppress(OSError):
                path.unlink()
        self._changed()

    def _not_launched(self, op_id: str, verb: str) -> ControlError:
        snapshot = self._snapshot() if self._snapshot else None
        if snapshot is not None and snapshot.find(op_id) is not None:
            return ControlError("conflict", f"operation {op_id} was not launched here; it cannot be {verb}")
        return ControlError("not_found", f"no operation with id {op_id!r}", "id")

    # ---- queries ---------------------------------------------------------------------------
    def log_path(self, op_id: str) -> Path:
        """Where a launched operation's log lives (ids are checked, never client paths)."""
        if not _LAUNCHED_ID.match(op_id):
            raise ValueError(f"not a launched operation id: {op_id!r}")
        return self.logs_dir / f"{op_id}.log"

    def find_log(self, op_id: str) -> Path | ProcessOutput | ContainerOutput | None:
        """The log of any operation: launched ones' file, or a live discovered one's output.

        A discovered operation's output is read through its process (``collector/output.py``),
        never by a path; ended ones have none.

        Raises:
            ControlError: not_found when no such operation is known.
        """
        with self._lock:
            if op_id in self._ops:
                return self.log_path(op_id)
        snapshot = self._snapshot() if self._snapshot else None
        op = snapshot.find(op_id) if snapshot else None
        if op is None:
            raise ControlError("not_found", f"no operation with id {op_id!r}", "id")
        if op.source == "launched":
            return Path(op.log_path) if op.log_path else None
        if op.container is not None and op.container.control is None:
            # The engine keeps it, even after the end.
            return ContainerOutput(op.id, op.container.id, self._containers)
        return ProcessOutput.of(op)

    def is_launched(self, op_id: str) -> bool:
        """Whether this supervisor launched the operation."""
        with self._lock:
            return op_id in self._ops

    def operation(self, op_id: str) -> Operation | None:
        """A launched operation as the latest snapshot shows it (or from memory)."""
        snapshot = self._snapshot() if self._snapshot else None
        found = snapshot.find(op_id) if snapshot else None
        if found is not None and found.source == "launched":
            with self._lock:
                rec = self._ops.get(op_id)
                if rec is not None and rec.status != found.status:
                    return self._as_operation(rec, None)
            return found
        with self._lock:
            rec = self._ops.get(op_id)
            return self._as_operation(rec, None) if rec else None

    def spec_of(self, op_id: str) -> dict[str, Any] | None:
        """The saved launch spec of a launched operation (for display)."""
        with self._lock:
            rec = self._ops.get(op_id)
            if rec is None:
                return None
            return {"template": rec.template, "argv": list(rec.argv), "cwd": rec.cwd,
                    "env": dict(rec.env), "params": dict(rec.params), "port": rec.port,
                    "restart": rec.restart_policy.to_api()}

    # ---- the probe -------------------------------------------------------------------------
    def sample(self, ctx: SampleContext) -> None:
        """Update launched operations and merge them into the snapshot being built."""
        with self._lock:
            for rec in list(self._ops.values()):
                if rec.is_live:
                    self._reconcile(rec)
            records = list(self._ops.values())
            owned = set(self._owned_ids)
        by_pid: dict[int, Operation] = {}
        by_container: dict[str, Operation] = {}  # a container template's container runs under its engine
        for op in ctx.operations:
            if op.source != "discovered" or not op.is_live:
                continue
            if op.container is not None and op.container.name:
                by_container.setdefault(op.container.name, op)
            for pid in (op.pid, *op.pids):
                if pid is not None:
                    by_pid.setdefault(pid, op)
        consumed: set[str] = set()
        merged: list[Operation] = []
        with self._lock:
            for rec in records:
                found = None
                if rec.is_live:
                    found = by_pid.get(rec.pid or -1) or by_pid.get(rec.runner_pid or -1)
                    if rec.params.get("container_name"):
                        found = by_container.get(str(rec.params["container_name"])) or found
                if found is not None:
                    consumed.add(found.id)
                    if rec.status == "starting" and rec.type == "server" and rec.port in found.ports:
                        self._record(rec, "running", None)
                op = self._as_operation(rec, found)
                merged.append(op)
                if not op.is_live and rec._shown_end_run < rec.run:
                    rec._shown_end_run = rec.run  # this snapshot shows how the run ended
            self._shown.notify_all()
        self._queue_replay()  # never waits: the writer thread saves what the outbox holds (or checks the database)
        ctx.operations[:] = [
            op for op in ctx.operations if op.id not in consumed and op.id not in owned
        ] + merged

    # ---- internals -------------------------------------------------------------------------
    def _as_operation(self, rec: LaunchedOperation, found: Operation | None) -> Operation:
        """The record as the collector's immutable ``Operation``; ``found``: its discovered process."""
        return as_operation(rec, found, title=self._title(rec), log_path=str(self.log_path(rec.id)))

    def _title(self, rec: LaunchedOperation) -> str:
        if rec.template == tpl.CUSTOM:
            return "Custom command"
        template = self._templates.get(rec.template)
        return template.title if template else rec.template

    def _own(self, rec: LaunchedOperation) -> None:
        """Remember the discovered ids of our command and runner, to hide their duplicates."""
        for pid, created in ((rec.pid, rec.create_time), (rec.runner_pid, rec.runner_create_time)):
            if pid is not None and created is not None:
                self._owned_ids.add(operation_id(pid, created))

    def _child_env(self, rec: LaunchedOperation) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DGX_SPARK_")}
        env.update(rec.env)
        env["PYTHONUNBUFFERED"] = "1"
        env["DGX_SPARK_OPERATION_ID"] = rec.id
        env["DGX_SPARK_URL"] = self.config.base_url
        if self.config.operation_token is not None:
            # Never the main token (stripped above): one that only reports this operation's progress.
            try:
                env["DGX_SPARK_TOKEN"] = self.config.operation_token(rec.id)
            except Exception as exc:  # noqa: BLE001 - the job still runs, it just cannot report
                logger.warning("supervisor: no progress token for %s: %s", rec.id, exc)
        return env

    def _spawn(self, rec: LaunchedOperation) -> None:
        """Start the runner for ``rec`` (lock held); ``starting`` on success, ``failed`` if not."""
        run_dir = self.runs_dir / rec.id
        run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for name in (RUNNER_FILE, EXIT_FILE):
            with contextlib.suppress(FileNotFoundError):
                (run_dir / name).unlink()
        spec_path = run_dir / SPEC_FILE
        write_json_atomic(
            spec_path,
            {
                "operation_id": rec.id,
                "run": rec.run,
                "argv": rec.argv,
                "display": redact_command(rec.argv),
                "cwd": rec.cwd,
                "env": self._child_env(rec),
                "log_path": str(self.log_path(rec.id)),
                "log_max_bytes": self.config.log_max_bytes,
                "log_backups": self.config.log_backups,
                "umask": user_umask(),  # the user's, not the app's 077
            },
        )
        os.chmod(spec_path, 0o600)
        runner_log = open(run_dir / "runner.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dgx_spark.supervisor.runner", str(run_dir)],
                cwd=PROJECT_ROOT,
                env={**self._child_env(rec), "PYTHONPATH": str(PROJECT_ROOT)},
                stdin=subprocess.DEVNULL,
                stdout=runner_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            rec.ended_at = time.time()
            self._record(rec, "failed", f"could not start the runner: {exc}", wait=True)
            raise ControlError("internal", f"could not start the runner: {exc}") from exc
        finally:
            runner_log.close()
        rec._runner_proc = proc
        rec.runner_pid = proc.pid
        try:
            rec.runner_create_time = psutil.Process(proc.pid).create_time()
        except Exception:  # noqa: BLE001 - it may already be gone; the exit file tells
            rec.runner_create_time = None
        rec.boot_id = self._boot_id
        self._own(rec)
        self._record(rec, "starting", None, wait=True)
        waiter = threading.Thread(target=self._on_runner_exit, args=(rec, rec.run, proc),
                                  name=f"dgx-spark-wait-{rec.id}", daemon=True)
        waiter.start()

    def _on_runner_exit(self, rec: LaunchedOperation, run: int, proc: subprocess.Popen[bytes]) -> None:
        """Learn a run's end as soon as its runner exits (the sampler would see it a tick later)."""
        proc.wait()
        with self._lock:
            if self._ops.get(rec.id) is rec and rec.run == run and rec.is_live:
                self._reconcile(rec)

    def _reconcile(self, rec: LaunchedOperation, *, startup: bool = False) -> None:
        """Bring a live record up to date with the runner's files and the process table (lock held)."""
        run_dir = self.runs_dir / rec.id
        if rec._runner_proc is not None and rec._runner_proc.poll() is not None:
            rec._runner_proc = None  # reaped
        if rec.pid is None:
            self._adopt_runner_file(rec, run_dir)
        if self._concluded(rec, run_dir) or rec.pid is None:
            return
        if startup:
            logger.info("supervisor: re-adopted %s (pid %s)", rec.id, rec.pid)
        if rec.status in ("pending", "starting"):
            self._advance_start(rec)

    def _adopt_runner_file(self, rec: LaunchedOperation, run_dir: Path) -> None:
        """Take the command's pid and start from the runner's file once it wrote it (lock held)."""
        info = read_json(run_dir / RUNNER_FILE)
        if info is None or not isinstance(info.get("pid"), int):
            return
        rec.pid = info["pid"]
        rec.create_time = info.get("create_time")
        rec.runner_pid = info.get("runner_pid", rec.runner_pid)
        rec.runner_create_time = info.get("runner_create_time", rec.runner_create_time)
        rec.started_at = info.get("started_at") or time.time()
        rec.boot_id = info.get("boot_id") or rec.boot_id
        self._own(rec)
        self._persist(rec)

    def _concluded(self, rec: LaunchedOperation, run_dir: Path) -> bool:
        """Whether the run ended (exit file, a restarted machine, command and runner gone); concludes it."""
        exit_info = read_json(run_dir / EXIT_FILE)
        if exit_info is not None:
            self._finish(rec, exit_info)
            return True
        if (run_dir / EXIT_FILE).exists():
            # The runner finished, but its exit file is unreadable (e.g. truncated): its logs tell.
            self._finish_from_logs(rec, "its exit file is unreadable")
            return True
        if rec.boot_id and self._boot_id and rec.boot_id != self._boot_id:
            rec.ended_at = time.time()
            rec.exit_code = None
            rec._runner_proc = None
            self._conclude(rec, "lost: the machine restarted while it ran", "unknown")
            return True
        command_alive = rec.identity is not None and is_alive(rec.identity)
        runner_alive = rec._runner_proc is not None or (
            rec.runner_identity is not None and is_alive(rec.runner_identity)
        )
        if command_alive or runner_alive:
            return False
        # Re-read: the runner may have written the exit file just now.
        exit_info = read_json(run_dir / EXIT_FILE)
        if exit_info is not None:
            self._finish(rec, exit_info)
        else:
            self._finish_from_logs(rec, "ended while its runner was gone")
        return True

    def _advance_start(self, rec: LaunchedOperation) -> None:
        """A starting run is running once its server listens (other types at once) (lock held)."""
        if rec.type != "server" or rec.port is None:
            self._record(rec, "active" if rec.type == "job" else "running", None)
        elif tpl.port_in_use(rec.port):
            self._record(rec, "running", f"listening on port {rec.port}")
        elif rec.status == "pending":
            self._record(rec, "starting", None)

    def _finish(self, rec: LaunchedOperation, info: Mapping[str, Any], source: str = "runner") -> None:
        """The current run ended as ``info`` (exit.json's shape) says (lock held)."""
        code = info.get("exit_code")
        rec.exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
        ended = info.get("ended_at")
        rec.ended_at = float(ended) if isinstance(ended, (int, float)) else time.time()
        signame = info.get("signal") if isinstance(info.get("signal"), str) else None
        if info.get("error"):
            ending = str(info["error"])
        elif signame:
            ending = f"killed by {signame}"
        elif rec.exit_code is None:
            ending = "exit code unknown"
        else:
            ending = f"exit code {rec.exit_code}"
        rec._runner_proc = None
        self._conclude(rec, ending, source, signame)

    def _finish_from_logs(self, rec: LaunchedOperation, why: str) -> None:
        """No readable exit file: the runner's log lines say how the run ended, or it is lost (lock held)."""
        log = self.log_path(rec.id)
        paths = [log] + [backup_path(log, i) for i in range(1, self.config.log_backups + 1)]
        info = recover_exit(self.runs_dir / rec.id, paths, rec.run)
        if info is not None:
            logger.info("supervisor: %s: %s; exit status read from the runner's log", rec.id, why)
            self._finish(rec, info, "log")
            return
        rec.ended_at = time.time()
        rec.exit_code = None
        rec._runner_proc = None
        self._conclude(rec, f"lost: {why}; exit code unknown", "unknown")

    def _conclude(self, rec: LaunchedOperation, ending: str, source: str, signame: str | None = None) -> None:
        """Record the run's outcome (lock held); a pending Restart or the restart policy schedules the next run."""
        restarting = rec._restart_run == rec.run
        if rec.stop_requested or restarting:
            outcome, reason = "stopped", self._user_stop_reason(rec, ending, signame, restarting)
        elif rec.exit_code == 0:
            outcome, reason = "completed", ending
        else:
            outcome, reason = "failed", ending
        rec.outcome, rec.exit_reason, rec.outcome_source = outcome, reason, source
        rec._stopping_run = None
        detail = reason
        if restarting:
            self._schedule_run(rec, 0.0, "restarted by the user", automatic=False)
        elif not rec.stop_requested and rec.restart_policy.wants_restart(outcome):
            detail = self._apply_policy(rec, reason)
        self._record(rec, "failed" if outcome == "failed" else "stopped", detail)

    @staticmethod
    def _user_stop_reason(rec: LaunchedOperation, ending: str, signame: str | None, restarting: bool) -> str:
        """E.g. "stopped by the user (SIGTERM)", "... (SIGTERM, then SIGKILL)", "... (SIGINT; exit code 0)"."""
        verb = "restarted" if restarting else "stopped"
        chosen = STOP_SIGNALS.get(rec.stop_signal or "")
        if chosen is None:
            return f"{verb} by the user ({ending})"
        if signame == chosen.name:
            return f"{verb} by the user ({chosen.name})"
        if signame:
            return f"{verb} by the user ({chosen.name}, then {signame})"
        return f"{verb} by the user ({chosen.name}; {ending})"

    def _apply_policy(self, rec: LaunchedOperation, reason: str) -> str:
        """Schedule the policy's next run, or give up (lock held); the run's description."""
        policy = rec.restart_policy
        uptime = (rec.ended_at or time.time()) - (rec.started_at or rec.ended_at or time.time())
        if uptime >= HEALTHY_SECONDS:
            rec.restart_streak = 0  # it stayed up: the backoff and the count start again
        if rec.restart_streak >= policy.max_restarts:
            if policy.max_restarts > 0:
                count = rec.restart_streak
                rec.exit_reason = f"{reason}; gave up after {count} restart{'s' if count != 1 else ''}"
            return rec.exit_reason or reason
        delay = policy.delay(rec.restart_streak)
        self._schedule_run(rec, delay, self._restart_why(rec), automatic=True)
        return f"{reason}; restarting in {delay:g} s (restart {rec.restart_streak + 1} of {policy.max_restarts})"

    @staticmethod
    def _restart_why(rec: LaunchedOperation) -> str:
        policy = rec.restart_policy
        return f"restart {rec.restart_streak + 1} of {policy.max_restarts} (policy {policy.policy})"

    def _schedule_run(self, rec: LaunchedOperation, delay: float, why: str, *, automatic: bool) -> None:
        """Start the next run after ``delay`` seconds, unless something else happens to the operation first."""
        rec.restart_due_at = time.time() + delay
        self._timer(delay, rec, why, automatic)

    def _timer(self, delay: float, rec: LaunchedOperation, why: str, automatic: bool) -> None:
        """Start a daemon timer for the next run of ``rec`` (lock held)."""
        if self._closed:
            return
        timer = threading.Timer(delay, self._start_due_run, args=(rec, rec.run, why, automatic))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _due(self, rec: LaunchedOperation, run: int) -> bool:
        """Whether the next run scheduled after run ``run`` is still wanted (lock held)."""
        return (self._ops.get(rec.id) is rec and rec.run == run and not rec.is_live
                and rec.restart_due_at is not None)

    def _start_due_run(self, rec: LaunchedOperation, run: int, why: str, automatic: bool) -> None:
        """The timer of a scheduled run: start it if nothing (Start again, Stop, Remove) came first."""
        try:
            with self._lock:
                self._timers.difference_update([t for t in self._timers if not t.is_alive()])
                if self._closed or not self._due(rec, run):
                    return
                self._await_shown_end(rec)
                if self._closed or not self._due(rec, run):
                    return
                try:
                    self._check_startable(rec)
                except ControlError as exc:
                    rec.restart_due_at = None
                    rec.exit_reason = f"{rec.exit_reason}; could not start again: {exc.message}"
                    self._record(rec, "failed", rec.exit_reason)
                    return
                if automatic:
                    rec.restarts += 1
                    rec.restart_streak += 1
                self._begin_run(rec, why)
        except ControlError as exc:
            logger.warning("supervisor: could not start the next run of %s: %s", rec.id, exc.message)
        except Exception:
            logger.exception("supervisor: could not start the next run of %s", rec.id)
        self._changed()

    def _cancel_next_run(self, rec: LaunchedOperation) -> None:
        """A Stop of an ended operation whose next run is scheduled: no next run (lock held)."""
        rec.restart_due_at = None
        reason = rec.exit_reason or rec.detail or ""
        if reason.startswith("restarted by the user"):  # the user's Restart, then their Stop: a stop
            rec.exit_reason = "stopped" + reason.removeprefix("restarted")
            self._record(rec, rec.status, rec.exit_reason)
            return
        self._record(rec, rec.status, f"{reason}; restart cancelled by the user")

    def _record(
        self, rec: LaunchedOperation, status: str, detail: str | None, *, wait: bool = False, from_status: Any = ...,
    ) -> None:
        """Change status (lock held): memory now, database on the writer thread.

        The write is never lost: what the database cannot take goes to the outbox.
        With ``wait``, the action around it (``_saved_after``) waits, briefly and once the
        lock is let go, until it is saved (not while the database is degraded).
        """
        previous = rec.status if from_status is ... else from_status
        if previous == status and detail == rec.detail and from_status is ...:
            return
        rec.status = status
        if detail is not None or status in ENDED_STATUSES or status == "pending":
            rec.detail = detail
        logger.info("operation %s: %s -> %s%s", rec.id, previous, status, f" ({detail})" if detail else "")
        if self._closed:  # shut down: the next start learns how its runs ended from their exit files
            return
        future = self._writer.submit(self._save, upsert_entry(rec.saved()))
        waiting = getattr(self._saves, "futures", None)
        if wait and waiting is not None:
            waiting.append(future)
        self._changed()

    @contextlib.contextmanager
    def _saved_after(self) -> Iterator[None]:
        """Around a control action: wait (bounded) for the writes it asked to wait for, after the lock.

        Entered before the lock, so the wait happens once the lock is let go:
        the sampler, which needs the lock, never waits on the database.
        """
        self._saves.futures = []
        try:
            yield
        finally:
            futures, self._saves.futures = self._saves.futures, None
            if futures and not health.is_degraded("database"):
                concurrent.futures.wait(futures, timeout=1.0)

    def _persist(self, rec: LaunchedOperation) -> None:
        """Save the record's columns as they are now (lock held; the write happens on the writer thread)."""
        if not self._closed:
            self._writer.submit(self._save, upsert_entry(rec.saved()))

    # ---- durable writes (writer thread) -------------------------------------------------------
    def _save(self, entry: dict[str, Any]) -> None:
        """Write one entry to the database, or to the outbox when it cannot take it (writer thread).

        Order is kept: while the outbox holds anything, new entries go behind it.
        """
        try:
            if not self._replay_outbox():
                self._to_outbox(entry)
                return
            write_with_retry(self.engine, lambda session: apply_entry(session, entry), what="supervisor write")
        except DatabaseUnavailable:
            self._to_outbox(entry)
        except Exception:
            logger.exception("supervisor: database write failed (%s)", entry.get("op"))

    def _to_outbox(self, entry: dict[str, Any]) -> None:
        try:
            self._outbox.append(entry)
        except OSError as exc:
            logger.error("supervisor: neither the database nor the outbox took a write: %s", exc)
            health.report_error("database", f"outbox not writable: {exc}")
        health.set_details("database", pending_writes=self._outbox.pending)

    def _replay_outbox(self, *, wait: float = 0.0) -> bool:
        """Save what the outbox holds (writer thread, or ``load``); True when it is empty afterwards.

        With ``wait`` 0 it tries at most once a second, one attempt each.
        """
        if not self._outbox.pending:
            return True
        now = time.monotonic()
        if not wait and now - self._last_replay < 1.0:
            return False
        self._last_replay = now

        def apply_all(entries: list[dict[str, Any]]) -> None:
            def work(session: Session) -> None:
                for entry in entries:
                    apply_entry(session, entry)

            write_with_retry(self.engine, work, wait=wait, what="outbox replay")

        try:
            self._outbox.replay(apply_all)
        except DatabaseUnavailable:
            return False
        except Exception:
            # Not the database being away: one broken entry must not hold back the others forever.
            logger.exception("supervisor: outbox replay failed; saving entries one by one")
            with contextlib.suppress(DatabaseUnavailable):
                self._outbox.replay(self._apply_each)
        health.set_details("database", pending_writes=self._outbox.pending)
        return not self._outbox.pending

    def _apply_each(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            def apply_one(session: Session, entry: dict[str, Any] = entry) -> None:
                apply_entry(session, entry)

            try:
                write_with_retry(self.engine, apply_one, wait=0)
            except DatabaseUnavailable:
                raise
            except Exception:
                logger.exception("supervisor: dropping an outbox entry the database refuses: %s", entry.get("op"))

    def _queue_replay(self) -> None:
        """Ask the writer thread to replay the outbox (sampler thread; never waits).

        With nothing to replay but the database reported degraded (a failed read, the events
        recorder, the audit writer), it asks for one write probe every ``PROBE_EVERY_SECONDS``
        instead, so that health and the page's banner clear once the database is back even when
        nothing else writes.
        """
        if self._replay_queued:
            return
        if not self._outbox.pending:
            now = time.monotonic()
            if not health.is_degraded("database") or now - self._last_probe < PROBE_EVERY_SECONDS:
                return
            self._last_probe = now
        self._replay_queued = True

        def replay() -> None:
            self._replay_queued = False
            if self._outbox.pending:
                self._replay_outbox()
                return
            try:
                probe_writable(self.engine, wait=0)
            except DatabaseUnavailable:
                pass  # still away: it stays degraded
            except Exception:
                logger.warning("supervisor: the database probe failed", exc_info=True)

        with contextlib.suppress(RuntimeError):  # the writer is shut down
            self._writer.submit(replay)

    def _require_database(self) -> None:
        """Before an action is carried out: 503 when the database cannot record it now.

        Runs on the writer thread (behind any queued write, outbox first), outside the lock.
        """

        def check() -> None:
            if not self._replay_outbox(wait=WRITE_WAIT_SECONDS):
                raise DatabaseUnavailable("earlier changes are still waiting for the database")
            probe_writable(self.engine)

        try:
            self._writer.submit(check).result(WRITE_WAIT_SECONDS * 4)
        except (DatabaseUnavailable, concurrent.futures.TimeoutError) as exc:
            message = getattr(exc, "message", None) or "the database did not answer in time"
            raise ControlError(
                "unavailable", f"{message}; nothing was done, try again in a moment", code="database_unavailable"
            ) from exc

    def _changed(self) -> None:
        if self._on_change is not None:
            with contextlib.suppress(Exception):
                self._on_change()
