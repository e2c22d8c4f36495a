"""System route: CPU, RAM, GPUs, network, disks, temperatures, history and warnings (the header)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from dgx_spark.collector.facts import system_payload
from dgx_spark.services import get_sampler

router = APIRouter()


@router.get("/api/dgx/system", summary="System resources")
def get_system() -> dict[str, Any]:
    """The latest snapshot's system view: the same data as the header above the tab.

    ``gpu.available`` is false (and ``gpu.message`` says "No NVIDIA GPU detected")
    where NVML is missing; ``gpu.stale`` is true while NVML misses its deadline.
    ``cpu.per_core_percent``, ``network``, ``temperatures``, ``disks`` and
    ``model_caches`` feed the resources strip; a figure that cannot be read is null.
    Disks and cache sizes are read in the background (``model_caches_read_at``).
    """
    snapshot = get_sampler().latest
    return {"success": True, "data": system_payload(snapshot.system, snapshot.taken_at, snapshot.sequence)}
