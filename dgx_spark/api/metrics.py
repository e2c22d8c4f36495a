"""``GET /metrics``: the latest snapshot in the Prometheus text format (``prometheus-client``).

Built from the sampler's latest snapshot on each scrape (no sampling of its own):
per operation ``dgx_spark_operation_info{node,id,type,name,status}`` and its
CPU, memory, GPU memory, progress and uptime (``{node,id}``); this machine's
GPUs, CPU and RAM; the sampler's own CPU time and the snapshot's age; and each
remote node's health. ``?node=all`` adds the remote nodes' last known operations
(``node`` = their id); by default only this machine's (``node="local"``), so a
Prometheus that scrapes every node sees each operation once. Access: from
loopback under ``DGX_SPARK_AUTH=local``, with ``Authorization: Bearer <token>``
otherwise (see ``security.middleware``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dgx_spark.collector.model import Snapshot
from dgx_spark.nodes.protocol import LOCAL_NODE, app_version
from dgx_spark.services import get_hub, get_sampler

router = APIRouter()

METRICS_PATH = "/metrics"
NODE_STATUSES = ("connecting", "online", "offline", "unauthorized", "incompatible")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _op_rows(snapshot: Snapshot, include_remote: bool) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(node id, API dict) of every operation to export."""
    now = snapshot.taken_at
    for op in snapshot.operations:
        yield LOCAL_NODE, op.to_api(now)
    if include_remote:
        for node, state in get_hub().states():
            for item in state.operations:
                yield node.id, item


class SnapshotCollector:
    """A prometheus-client collector reading the latest snapshot and the nodes' states."""

    def __init__(self, include_remote: bool) -> None:
        """Export this machine's operations, plus the remote nodes' when ``include_remote``."""
        self.include_remote = include_remote

    def collect(self) -> Iterable[Metric]:
        """The metric families of one scrape."""
        sampler = get_sampler()
        snapshot = sampler.latest
        now = time.time()
        yield from self._operations(snapshot)
        yield from self._machine(snapshot)
        build = InfoMetricFamily("dgx_spark_build", "The dashboard's version", labels=[])
        build.add_metric([], {"version": app_version()})
        yield build
        cpu = CounterMetricFamily("dgx_spark_sampler_cpu_seconds", "CPU time the sampler has used since start")
        cpu.add_metric([], sampler.cpu_seconds)
        yield cpu
        age = GaugeMetricFamily("dgx_spark_snapshot_age_seconds", "Seconds since the latest snapshot was taken")
        if snapshot.sequence:
            age.add_metric([], max(0.0, now - snapshot.taken_at))
        yield age
        duration = GaugeMetricFamily("dgx_spark_snapshot_duration_seconds", "Wall time the latest snapshot took")
        if snapshot.duration_ms is not None:
            duration.add_metric([], snapshot.duration_ms / 1000.0)
        yield duration
        running = GaugeMetricFamily("dgx_spark_sampler_running", "1 while the sampler runs")
        running.add_metric([], 1.0 if sampler.running else 0.0)
        yield running
        yield from self._nodes(now)

    def _operations(self, snapshot: Snapshot) -> Iterator[Metric]:
        info = GaugeMetricFamily("dgx_spark_operation_info", "One per operation (value 1), with its labels",
                                 labels=["node", "id", "type", "name", "status"])
        families = {
            "cpu_percent": GaugeMetricFamily("dgx_spark_operation_cpu_percent",
                                             "CPU use of the operation's process tree, % of one core",
                                             labels=["node", "id"]),
            "memory_bytes": GaugeMetricFamily("dgx_spark_operation_memory_bytes",
                                              "Resident memory of the operation's process tree",
                                              labels=["node", "id"]),
            "gpu_memory_bytes": GaugeMetricFamily("dgx_spark_operation_gpu_memory_bytes",
                                                  "GPU memory the operation holds", labels=["node", "id"]),
            "progress": GaugeMetricFamily("dgx_spark_operation_progress_ratio",
                                          "A job's progress, 0 to 1", labels=["node", "id"]),
            "uptime": GaugeMetricFamily("dgx_spark_operation_uptime_seconds",
                                        "Seconds since the operation started (to its end when ended)",
                                        labels=["node", "id"]),
        }
        seen: set[tuple[str, str]] = set()
        for node, item in _op_rows(snapshot, self.include_remote):
            key = (node, str(item.get("id")))
            if key in seen:
                continue
            seen.add(key)
            info.add_metric([node, key[1], str(item.get("type")), str(item.get("name")),
                             str(item.get("status"))], 1.0)
            for field, family in families.items():
                value = _number(item.get(field))
                if value is not None:
                    family.add_metric(list(key), value)
        yield info
        yield from families.values()

    def _machine(self, snapshot: Snapshot) -> Iterator[Metric]:
        system = snapshot.system
        cpu = GaugeMetricFamily("dgx_spark_cpu_percent", "This machine's CPU use, % of all cores", labels=["node"])
        if system is not None and system.cpu is not None and system.cpu.percent is not None:
            cpu.add_metric([LOCAL_NODE], system.cpu.percent)
        yield cpu
        memory = system.memory if system is not None else None
        for used, name, doc in (
            (True, "dgx_spark_memory_used_bytes", "This machine's RAM in use"),
            (False, "dgx_spark_memory_total_bytes", "This machine's RAM"),
        ):
            family = GaugeMetricFamily(name, doc, labels=["node"])
            figure = None if memory is None else (memory.used_bytes if used else memory.total_bytes)
            if figure is not None:
                family.add_metric([LOCAL_NODE], float(figure))
            yield family
        devices = system.gpu.devices if system is not None and system.gpu is not None else ()
        gpu_families = [
            ("utilization", GaugeMetricFamily("dgx_spark_gpu_utilization_percent", "GPU utilisation",
                                              labels=["node", "gpu", "name"])),
            ("memory_used_bytes", GaugeMetricFamily("dgx_spark_gpu_memory_used_bytes", "GPU memory in use",
                                                    labels=["node", "gpu", "name"])),
            ("memory_total_bytes", GaugeMetricFamily("dgx_spark_gpu_memory_total_bytes", "GPU memory",
                                                     labels=["node", "gpu", "name"])),
            ("temperature_c", GaugeMetricFamily("dgx_spark_gpu_temperature_celsius", "GPU temperature",
                                                labels=["node", "gpu", "name"])),
            ("power_watts", GaugeMetricFamily("dgx_spark_gpu_power_watts", "GPU power draw",
                                              labels=["node", "gpu", "name"])),
        ]
        for device in devices:
            labels = [LOCAL_NODE, str(device.index), str(device.name or "")]
            for field, family in gpu_families:
                if (number := _number(getattr(device, field))) is not None:
                    family.add_metric(labels, number)
        for _, family in gpu_families:
            yield family

    def _nodes(self, now: float) -> Iterator[Metric]:
        hub = get_hub()
        up = GaugeMetricFamily("dgx_spark_node_up", "1 when a remote node answered its last poll", labels=["node"])
        status = GaugeMetricFamily("dgx_spark_node_status", "A remote node's status (1 for the current one)",
                                   labels=["node", "status"])
        latency = GaugeMetricFamily("dgx_spark_node_latency_seconds", "How long the node's last poll took",
                                    labels=["node"])
        age = GaugeMetricFamily("dgx_spark_node_age_seconds", "Seconds since the node last answered",
                                labels=["node"])
        for node, state in hub.states():
            up.add_metric([node.id], 1.0 if state.status == "online" else 0.0)
            for name in NODE_STATUSES:
                status.add_metric([node.id, name], 1.0 if state.status == name else 0.0)
            if state.latency_ms is not None:
                latency.add_metric([node.id], state.latency_ms / 1000.0)
            if (seconds := state.age(now)) is not None:
                age.add_metric([node.id], seconds)
        yield from (up, status, latency, age)


def render_metrics(include_remote: bool) -> bytes:
    """The exposition text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(include_remote))
    return generate_latest(registry)


@router.get(METRICS_PATH, summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(
    node: str | None = Query(default=None, pattern="^(local|all)$",
                             description="all: add the remote nodes' last known operations"),
) -> Response:
    """The latest snapshot in the Prometheus text format."""
    body = render_metrics(include_remote=node == "all")
    return Response(content=body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
