"""GET /api/dgx/system's resources-strip fields through the real backend.

The backend runs with ``HF_HOME`` and ``OLLAMA_MODELS`` pointing at folders of
known sizes; its disk watcher sizes them in the background.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import _fail_on_logged_errors
from tests.support.dashboard import Dashboard, reap_launched, wait_until

MIB = 1 << 20


@pytest.fixture(scope="module")
def caches_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dashboard, Path]]:
    """A backend whose Hugging Face cache holds 3 MiB in two models, and no Ollama folder."""
    folder = tmp_path_factory.mktemp("resources")
    hf = folder / "hf"
    for name, size in (("models--acme--big", 2 * MIB), ("models--acme--small", MIB)):
        blob = hf / "hub" / name / "blobs" / "0"
        blob.parent.mkdir(parents=True)
        blob.write_bytes(b"\0" * size)
    dashboard = Dashboard(
        folder / "data", env={"HF_HOME": str(hf), "OLLAMA_MODELS": str(folder / "no-ollama")}
    )
    dashboard.start()
    yield dashboard, hf
    dashboard.stop()
    reap_launched(dashboard.data_dir)
    _fail_on_logged_errors(dashboard)


def system(dashboard: Dashboard) -> dict[str, Any]:
    """The data of GET /api/dgx/system (asserting the envelope)."""
    status, body = dashboard.request("GET", "/api/dgx/system")
    assert status == 200, body
    assert body["success"] is True
    return body["data"]


def test_system_has_cores_network_temperatures_disks_and_caches(caches_backend: tuple[Dashboard, Path]) -> None:
    dashboard, hf = caches_backend
    data = wait_until(
        lambda: (d := system(dashboard))["model_caches"] and d["network"]["rx_bytes_per_second"] is not None and d,
        timeout=60,
        message="the resources fields never filled",
    )
    cores = data["cpu"]["per_core_percent"]
    assert len(cores) == psutil.cpu_count() and all(c is None or 0 <= c <= 100 for c in cores)
    network = data["network"]
    assert network["tx_bytes_per_second"] >= 0 and network["rx_bytes"] >= 0
    assert "lo" not in network["interfaces"]
    # Temperatures: a list where the machine exposes sensors (maybe empty), null where unreadable.
    assert data["temperatures"] is None or isinstance(data["temperatures"], list)
    caches = {cache["key"]: cache for cache in data["model_caches"]}
    assert caches["huggingface"]["path"] == str(hf)
    assert caches["huggingface"]["size_bytes"] == 3 * MIB
    assert [m["name"] for m in caches["huggingface"]["largest"]] == ["acme/big", "acme/small"]
    assert caches["ollama"]["exists"] is False and caches["ollama"]["size_bytes"] is None
    assert data["model_caches_read_at"] is not None
    # One entry per filesystem; the data folder, home and the HF cache are all named.
    labels = [label for disk in data["disks"] for label in disk["labels"]]
    assert {"data", "home", "Hugging Face cache"} <= set(labels)
    for disk in data["disks"]:
        vfs = os.statvfs(disk["mount"])
        assert disk["total_bytes"] == vfs.f_blocks * vfs.f_frsize
        assert disk["warning"] is (disk["percent"] > 90)
    history = data["history"]
    for key in ("network_rx_bytes_per_second", "network_tx_bytes_per_second", "temperature_max_c"):
        assert len(history[key]) == len(history["at"])
