"""The long-lived services of one backend process, built once and shared.

The Reflex state, the REST API and the lifespan task all get the sampler (and
later the supervisor) from here, so there is exactly one per process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from dgx_spark.collector.containers import ContainersProbe
from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.outcome import OutcomeProbe
from dgx_spark.collector.sampler import Probe, Sampler
from dgx_spark.collector.service_probes import ServiceProbe, stop_watcher
from dgx_spark.collector.system import SystemProbe
from dgx_spark.database import get_engine, migrate
from dgx_spark.events.service import EventsProbe, stop_events
from dgx_spark.progress.probe import ProgressProbe
from dgx_spark.settings import settings
from dgx_spark.supervisor.supervisor import Supervisor, SupervisorConfig

logger = logging.getLogger(__name__)


def default_probes() -> list[Probe]:
    """The probes every snapshot runs through, in order, after discovery.

    Each probe lives with its concern (supervisor, resources, GPU, progress,
    events) and is isolated by the sampler: one failing never stops the others.
    """
    probes: list[Probe] = []
    # Containers: before the supervisor, so container operations carry their names and host ports.
    probes.append(ContainersProbe())
    # Supervisor: next, so the resource/GPU/progress probes enrich launched operations too.
    probes.append(get_supervisor())
    # System + GPU: after anything that adds operations (it reads every op's pids).
    probes.append(SystemProbe(settings=settings.resources))
    # Progress: after anything that adds operations or sets their log_path; before events.
    probes.append(ProgressProbe())
    # Outcome: how discovered operations ended; after progress (reads it), before events.
    probes.append(OutcomeProbe())
    # Services: what known servers serve, read by its own thread; the probe only copies results.
    probes.append(ServiceProbe())
    # Events: keep LAST, it compares what every probe above has produced.
    probes.append(EventsProbe())
    return probes


@functools.cache
def get_sampler() -> Sampler:
    """The process-wide sampler (created on first use, not started)."""
    return Sampler(
        Discovery(),
        probes=default_probes(),
        interval=settings.refresh_seconds,
        ended_ttl=settings.ended_ttl_seconds,
    )


@functools.cache
def get_supervisor() -> Supervisor:
    """The process-wide supervisor of launched operations (``load`` runs in the lifespan)."""
    return Supervisor(
        SupervisorConfig.from_settings(settings),
        get_engine(),
        snapshot=lambda: get_sampler().latest,
        on_change=lambda: get_sampler().request_sample(),
    )


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Start the services with the backend and stop them with it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate()  # the schema first: fresh data dirs must work without `reflex db migrate`
    get_supervisor().load()
    sampler = get_sampler()
    sampler.start()
    logger.info("sampler started (every %.1fs)", sampler.interval)
    from dgx_spark.nodes.hub import get_hub

    get_hub().start()  # one poller per remote node (dgx_spark/nodes)
    try:
        yield
    finally:
        get_hub().stop()
        sampler.stop()
        stop_watcher()
        stop_events()  # after the sampler: its last transitions get stored
