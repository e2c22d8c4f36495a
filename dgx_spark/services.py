"""The long-lived services of one backend process, built once from the settings and handed down.

``get_services()`` is the one accessor: it builds one :class:`Services` from the
settings read at start (``dgx_spark.settings``). REST routes receive it through
FastAPI's ``Depends`` (``ServicesDep``); Reflex states call ``get_services()``;
the lifespan task starts and stops what it holds. The parts (engine, audit log,
limits, sampler and what its probes share, supervisor, progress tracker, node hub,
events, service watcher) are built here and take their settings as constructor
arguments, so there is exactly one of each per process and no other module keeps
one of its own (``tests/test_singletons.py``). ``get_sampler``,
``get_supervisor`` and the others below are shortcuts to the same object.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.engine import Engine

from dgx_spark.collector.containers import ContainersProbe, ContainerWatcher
from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.outcome import OutcomeProbe
from dgx_spark.collector.output import OutputHandles
from dgx_spark.collector.proc_events import ExitListener
from dgx_spark.collector.sampler import Probe, Sampler
from dgx_spark.collector.service_probes import ServiceProbe, ServiceWatcher, make_watcher
from dgx_spark.collector.system import SystemProbe
from dgx_spark.control.names import OperationNames
from dgx_spark.control.service import ControlService
from dgx_spark.database import make_engine, migrate
from dgx_spark.events.churn import DEFAULT_WINDOW_SECONDS
from dgx_spark.events.config import events_config
from dgx_spark.events.service import EventsProbe, EventsService
from dgx_spark.events.store import EventStore
from dgx_spark.nodes.hub import NodeHub
from dgx_spark.nodes.store import NodeStore
from dgx_spark.progress.probe import ProgressProbe
from dgx_spark.progress.tracker import ProgressTracker
from dgx_spark.security.audit import AuditLog
from dgx_spark.security.sessions import Credentials
from dgx_spark.security.throttle import Limits
from dgx_spark.settings import Settings, settings
from dgx_spark.supervisor.supervisor import Supervisor, SupervisorConfig

logger = logging.getLogger(__name__)


class Services:
    """Everything one backend process runs, built once from ``settings`` (nothing started)."""

    def __init__(self, app_settings: Settings, engine: Engine) -> None:
        """Build the services; ``lifespan`` starts them."""
        self.settings = app_settings
        self.engine = engine
        # The token and the login sessions (the token is read, or made, when first asked for).
        self.credentials = Credentials(app_settings.data_dir)
        # The audit log and its one writer thread (closed by ``stop``).
        self.audit = AuditLog(engine, retention_seconds=app_settings.events.retention_seconds)
        # The control throttle, the one-at-a-time holds and the log stream caps.
        self.limits = Limits(app_settings.limits)
        # What the probes share: the outputs held open (progress, outcome, events read the same pipes),
        # the kernel's process exits (started by ``lifespan``), the container engine's list (its thread
        # starts on first use).
        self.handles = OutputHandles()
        self.exits = ExitListener()
        self.containers = ContainerWatcher(app_settings.sampler.docker_host)
        self.tracker = ProgressTracker(stall_seconds=app_settings.progress.stall_seconds)
        # None while DGX_SPARK_SERVICE_PROBE_SECONDS=0 turns service probes off.
        self.service_watcher: ServiceWatcher | None = make_watcher(app_settings.sampler.service_probe_seconds)
        self.hub = NodeHub(NodeStore(app_settings.data_dir), app_settings.refresh_seconds,
                           backoff_limit=app_settings.nodes.backoff_max_seconds)
        self.supervisor = Supervisor(
            SupervisorConfig.from_settings(app_settings, operation_token=self.credentials.operation_token),
            engine,
            snapshot=lambda: self.sampler.latest,
            on_change=lambda: self.sampler.request_sample(),
            containers=self.containers,
        )
        self.sampler = Sampler(
            Discovery(rules_file=app_settings.rules_file, events=self.exits),
            probes=self._probes(),
            interval=app_settings.refresh_seconds,
            ended_ttl=app_settings.ended_ttl_seconds,
        )
        # Operation names for ids (toasts, the audit log).
        self.names = OperationNames(lambda: self.sampler, lambda: self.supervisor, engine)
        # Every control action, from the API and the UI alike (dgx_spark/control/service.py).
        self.control = ControlService(lambda: self.supervisor, lambda: self.hub, rate=self.limits.control_rate,
                                      in_flight=self.limits.in_flight, audit=self.audit.record_soon,
                                      name_of=self.names.name)

    def _probes(self) -> list[Probe]:
        """The probes every snapshot runs through, in order, after discovery.

        Each probe lives with its concern (supervisor, resources, GPU, progress,
        events) and is isolated by the sampler: one failing never stops the others.
        """
        return [
            # Containers: before the supervisor, so container operations carry their names and host ports.
            ContainersProbe(self.containers),
            # Supervisor: next, so the resource/GPU/progress probes enrich launched operations too.
            self.supervisor,
            # System + GPU: after anything that adds operations (it reads every op's pids).
            SystemProbe(settings=self.settings.resources),
            # Progress: after anything that adds operations or sets their log_path; before events.
            ProgressProbe(self.tracker, self.handles),
            # Outcome: how discovered operations ended; after progress (reads it), before events.
            OutcomeProbe(handles=self.handles, exits=self.exits),
            # Services: what known servers serve, read by its own thread; the probe only copies results.
            ServiceProbe(self.service_watcher),
            # Events: keep LAST, it compares what every probe above has produced.
            EventsProbe(lambda: self.events),
        ]

    @functools.cached_property
    def events(self) -> EventsService:
        """The events service, built and started on first use (a database that cannot be opened fails here)."""
        # Churn is counted over the time an ended discovered operation would have stayed listed.
        window = self.settings.ended_ttl_seconds or DEFAULT_WINDOW_SECONDS
        service = EventsService(EventStore(self.engine), events_config(self.settings.events),
                                churn_window_seconds=window, handles=self.handles)
        service.start()
        return service

    def events_started(self) -> EventsService | None:
        """The events service if it was built already, else None (nothing is built by asking)."""
        return self.__dict__.get("events")

    def short_lived_ended(self) -> tuple[int, float] | None:
        """How many short-lived commands ended recently, and over how many seconds (None: not started)."""
        service = self.events_started()
        if service is None:
            return None
        return service.churn.count(), service.churn.window_seconds

    def stop(self) -> None:
        """Stop what runs, in order: nodes, the sampler and what it reads, events, the audit writer, the pool."""
        self.hub.stop()
        self.sampler.stop()
        self.exits.stop()
        self.containers.stop()
        if self.service_watcher is not None:
            self.service_watcher.stop()
        if (service := self.events_started()) is not None:
            service.stop()  # after the sampler: its last transitions get stored
        self.handles.retain(())  # close the outputs held open, after everything that reads them
        self.audit.close()  # rows asked for later are written by the caller's thread
        self.engine.dispose()  # its pooled connections; a later use opens new ones


@functools.cache
def get_services() -> Services:
    """The process's services: built once, on first use, from the settings read at start."""
    return Services(settings, make_engine(settings.db_url))


# What a route declares to receive the services: ``services: ServicesDep``.
ServicesDep = Annotated[Services, Depends(get_services)]


def get_sampler() -> Sampler:
    """The process-wide sampler (not started before the lifespan)."""
    return get_services().sampler


def get_supervisor() -> Supervisor:
    """The process-wide supervisor of launched operations (``load`` runs in the lifespan)."""
    return get_services().supervisor


def get_tracker() -> ProgressTracker:
    """The progress tracker shared by the progress probe and the API."""
    return get_services().tracker


def get_hub() -> NodeHub:
    """The node hub (one poller per remote node)."""
    return get_services().hub


def get_events() -> EventsService:
    """The events service (built and started on first use)."""
    return get_services().events


def short_lived_ended() -> tuple[int, float] | None:
    """How many short-lived commands ended recently, and over how many seconds (None: not started)."""
    return get_services().short_lived_ended()


def get_control() -> ControlService:
    """The control service: every control action of the API and the UI goes through it."""
    return get_services().control


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Start the services with the backend and stop them with it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services = get_services()  # built, nothing started
    migrate(services.engine)  # the schema first: fresh data dirs must work without `reflex db migrate`
    services.supervisor.load()
    services.exits.start()  # the kernel's process events, before the first sample
    services.sampler.start()
    logger.info("sampler started (every %.1fs)", services.sampler.interval)
    services.hub.start()  # one poller per remote node (dgx_spark/nodes)
    try:
        yield
    finally:
        services.stop()
