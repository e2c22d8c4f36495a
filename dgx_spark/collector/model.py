"""Immutable values the collector produces: operations and snapshots.

A field that cannot be read is ``None``, never a crash and never a fake 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from dgx_spark.collector.facts import SystemFacts
from dgx_spark.format import iso_utc

OperationType = Literal["server", "job", "program"]
OperationStatus = Literal["running", "active", "starting", "pending", "stopped", "failed"]

OPERATION_TYPES: tuple[str, ...] = ("server", "job", "program")
OPERATION_STATUSES: tuple[str, ...] = (
    "running",
    "active",
    "starting",
    "pending",
    "stopped",
    "failed",
)
LIVE_STATUSES: frozenset[str] = frozenset({"running", "active", "starting", "pending"})
OUTCOMES: tuple[str, ...] = ("completed", "failed", "stopped")
OUTCOME_SOURCES: tuple[str, ...] = ("runner", "kernel", "log", "progress", "unknown")
INFERRED_SOURCES: frozenset[str] = frozenset({"log", "progress"})
"""Outcome sources that are an inference (the UI says "likely"); ``runner`` and ``kernel`` are facts."""
ENDED_STATUSES: frozenset[str] = frozenset({"stopped", "failed"})

# The operation's core fields, in this order, then the extras. ``to_api`` emits exactly these.
CORE_FIELDS: tuple[str, ...] = (
    "id",
    "type",
    "name",
    "description",
    "status",
    "started_at",
    "port",
    "progress",
    "metrics",
    "pid",
    "uptime",
)
EXTRA_FIELDS: tuple[str, ...] = (
    "command",
    "user",
    "process_count",
    "ports",
    "source",
    "ended_at",
    "exit_code",
    "cpu_percent",
    "memory_bytes",
    "gpu_memory_bytes",
    "gpu_utilization",
    "gpu_indices",
    "idle_gpu",
    "total_epochs",
    "eta_seconds",
    "throughput",
    "stalled",
    "progress_source",
    "loss_history",
    "stop_requested",
    "outcome",
    "exit_reason",
    "outcome_source",
    "run",
    "runs",
    "restarts",
    "container",
    "type_source",
    "service",
    "service_source",
    "service_checked_at",
)
API_FIELDS: tuple[str, ...] = CORE_FIELDS + EXTRA_FIELDS


def operation_id(pid: int, create_time: float) -> str:
    """A stable id for a process: a reused PID gives a new id."""
    return f"op-{pid}-{int(create_time * 100)}"


@dataclasses.dataclass(frozen=True, slots=True)
class Container:
    """The container an operation runs in (``collector/containers.py``)."""

    id: str
    name: str | None = None
    image: str | None = None
    engine: str | None = None
    """``docker`` / ``podman`` when the engine lists it, else the runtime its cgroup names."""
    control: str | None = None
    """Why stop, start and logs cannot go through the engine (None: they can)."""
    labels: tuple[tuple[str, str], ...] | None = None
    """The engine's labels as (key, value) pairs, sorted (None: the engine does not list it)."""

    def to_api(self) -> dict[str, Any]:
        """``{"id", "name", "image", "engine", "labels", "controllable", "reason"}``."""
        return {
            "id": self.id,
            "name": self.name,
            "image": self.image,
            "engine": self.engine,
            "labels": dict(self.labels) if self.labels is not None else None,
            "controllable": self.control is None,
            "reason": self.control,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """One operation: a server, a training job or a program, possibly many processes."""

    id: str
    type: OperationType
    name: str
    status: OperationStatus
    description: str | None = None
    started_at_ts: float | None = None
    ended_at_ts: float | None = None
    port: int | None = None
    ports: tuple[int, ...] = ()
    pid: int | None = None
    pids: tuple[int, ...] = ()
    command: str | None = None
    user: str | None = None
    source: Literal["discovered", "launched"] = "discovered"
    exit_code: int | None = None
    # Progress (training jobs).
    progress: float | None = None
    metrics: Mapping[str, Any] | None = None
    total_epochs: int | None = None
    eta_seconds: float | None = None
    throughput: float | None = None
    stalled: bool | None = None
    progress_source: str | None = None
    # Recent train-loss values, oldest first (bounded; for a sparkline).
    loss_history: tuple[float, ...] | None = None
    # Resources, summed over the folded tree.
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    gpu_memory_bytes: int | None = None
    gpu_utilization: float | None = None
    gpu_indices: tuple[int, ...] | None = None
    idle_gpu: bool | None = None
    # A launched operation's log file (discovered ones' output is read through the process).
    log_path: str | None = None
    cwd: str | None = None
    # A launched operation: whether a user asked it to stop (None: not known, e.g. discovered).
    stop_requested: bool | None = None
    # Which run of the operation this is (1, 2, … for "Start again"); events and history are per run.
    run: int = 1
    # How many runs it has had so far, and how many of them its restart policy started (launched ones).
    runs: int = 1
    restarts: int = 0
    # How an ended operation ended (None while live): ``completed`` / ``failed`` / ``stopped``,
    # a short reason (``exit code 3``, ``killed by SIGKILL``...) and where that came from
    # (``runner``, ``kernel``, ``log``, ``progress``, ``unknown``).
    outcome: str | None = None
    exit_reason: str | None = None
    outcome_source: str | None = None
    # Last lines of a discovered operation's output, read through the process while it
    # lived, kept only when they may be stored (see ``collector/output.py``). Not in the API.
    output_tail: tuple[str, ...] | None = None
    # Where the type came from when it is not the command line's: ``output`` (a program whose
    # own output reads like training, see ``progress/probe.py``); None otherwise.
    type_source: str | None = None
    # What a known server serves (``collector/service_probes.py``): a JSON-ready mapping with
    # ``kind`` and ``summary``, where it was read (``service_source``) and when.
    service: Mapping[str, Any] | None = None
    service_source: str | None = None
    service_checked_at_ts: float | None = None
    # The container it runs in (one container = one operation), and its ports as
    # (host port or None when not published, port inside the container's network namespace).
    container: Container | None = None
    port_map: tuple[tuple[int | None, int], ...] | None = None

    def __post_init__(self) -> None:
        if self.metrics is not None and not isinstance(self.metrics, MappingProxyType):
            object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def process_count(self) -> int:
        """How many processes the operation holds."""
        return len(self.pids)

    @property
    def is_live(self) -> bool:
        """Whether the operation has not ended."""
        return self.status in LIVE_STATUSES

    def uptime(self, now: float) -> int | None:
        """Whole seconds since start, up to the end for ended operations."""
        if self.started_at_ts is None:
            return None
        end = self.ended_at_ts if self.ended_at_ts is not None else now
        return max(0, int(end - self.started_at_ts))

    def replace(self, **changes: Any) -> Operation:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_api(self, now: float) -> dict[str, Any]:
        """The API's JSON shape: the core fields, then the documented extras."""
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "description": self.description,
            "status": self.status,
            "started_at": iso_utc(self.started_at_ts),
            "port": self.port,
            "progress": self.progress,
            "metrics": dict(self.metrics) if self.metrics is not None else None,
            "pid": self.pid,
            "uptime": self.uptime(now),
            "command": self.command,
            "user": self.user,
            "process_count": self.process_count,
            "ports": self._api_ports(),
            "source": self.source,
            "ended_at": iso_utc(self.ended_at_ts),
            "exit_code": self.exit_code,
            "cpu_percent": self.cpu_percent,
            "memory_bytes": self.memory_bytes,
            "gpu_memory_bytes": self.gpu_memory_bytes,
            "gpu_utilization": self.gpu_utilization,
            "gpu_indices": list(self.gpu_indices) if self.gpu_indices is not None else None,
            "idle_gpu": self.idle_gpu,
            "total_epochs": self.total_epochs,
            "eta_seconds": self.eta_seconds,
            "throughput": self.throughput,
            "stalled": self.stalled,
            "progress_source": self.progress_source,
            "loss_history": list(self.loss_history) if self.loss_history is not None else None,
            "stop_requested": self.stop_requested,
            "outcome": self.outcome,
            "exit_reason": self.exit_reason,
            "outcome_source": self.outcome_source,
            "run": self.run,
            "runs": self.runs,
            "restarts": self.restarts,
            "container": self.container.to_api() if self.container is not None else None,
            "type_source": self.type_source,
            "service": dict(self.service) if self.service is not None else None,
            "service_source": self.service_source,
            "service_checked_at": iso_utc(self.service_checked_at_ts),
        }

    def _api_ports(self) -> list[Any]:
        """Port numbers; for a container, ``{"host": 8188, "container": 8188}`` objects."""
        if self.container is None:
            return list(self.ports)
        return [{"host": host, "container": inner} for host, inner in self.port_map or ()]


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeError:
    """A probe that failed during a sample."""

    probe: str
    message: str
    since: float


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one sample saw. Immutable; shared by every tab and request."""

    sequence: int
    taken_at: float
    operations: tuple[Operation, ...]
    errors: tuple[ProbeError, ...] = ()
    system: SystemFacts | None = None  # None: the system probe has not run (or failed) in this sample
    duration_ms: float | None = None
    cpu_ms: float | None = None

    def find(self, op_id: str) -> Operation | None:
        """The operation with this id, if present."""
        for operation in self.operations:
            if operation.id == op_id:
                return operation
        return None

    def to_api(self) -> list[dict[str, Any]]:
        """Every operation in the API's JSON shape."""
        return [operation.to_api(self.taken_at) for operation in self.operations]


EMPTY_SNAPSHOT = Snapshot(sequence=0, taken_at=0.0, operations=())
