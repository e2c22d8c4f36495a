"""The resources strip's readers with real files, folders and counters."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest

from dgx_spark.collector import host
from dgx_spark.collector.facts import system_payload
from dgx_spark.collector.host import DiskWatcher, Place
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.collector.system import SystemProbe
from tests.support.dashboard import wait_until

MIB = 1 << 20


class shwtemp(NamedTuple):  # the shape of psutil.sensors_temperatures() entries
    """One sensor reading as psutil gives it."""

    label: str
    current: float
    high: float | None
    critical: float | None


def write(path: Path, size: int) -> Path:
    """A file of exactly ``size`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def fake_hf_cache(root: Path) -> None:
    """A Hugging Face cache laid out like huggingface_hub's: blobs, snapshot links, a dataset."""
    big = root / "hub" / "models--meta-llama--Llama-3.1-8B"
    blob = write(big / "blobs" / "aaa", 3 * MIB)
    (big / "snapshots" / "rev1").mkdir(parents=True)
    (big / "snapshots" / "rev1" / "model.safetensors").symlink_to(blob)  # not counted twice
    write(root / "hub" / "models--org--small" / "blobs" / "bbb", MIB)
    write(root / "hub" / "datasets--org--data" / "blobs" / "ccc", 2 * MIB)
    write(root / "hub" / "version.txt", 1)
    write(root / "token", 10)
    os.link(blob, big / "blobs" / "hardlink")  # one inode: counted once
    os.mkfifo(root / "hub" / "a-fifo")  # never opened, never counted


def test_hf_cache_size_and_biggest_models_from_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "hf"
    fake_hf_cache(root)
    monkeypatch.setenv("HF_HOME", str(root))
    filesystems, caches = host.default_places(tmp_path / "data")
    hf = next(place for place in caches if place.key == "huggingface")
    assert hf.path == root
    assert any(place.path == root for place in filesystems)
    result = host.size_cache(hf)
    assert result["exists"] is True
    assert result["size_bytes"] == 6 * MIB + 11
    assert result["largest"] == [
        {"name": "meta-llama/Llama-3.1-8B", "size_bytes": 3 * MIB},
        {"name": "dataset org/data", "size_bytes": 2 * MIB},
        {"name": "org/small", "size_bytes": MIB},
    ]
    assert result["error"] is None and result["partial"] is False


def test_a_model_folder_named_in_bytes_that_are_not_utf8_is_listed_cleaned(tmp_path: Path) -> None:
    """Such a name reaches Python as lone surrogates; listed as they are they would break the header's JSON."""
    root = tmp_path / "hf"
    write(Path(os.fsdecode(bytes(root / "hub") + b"/models--org--na\xffme")) / "blobs" / "x", MIB)
    result = host.size_cache(Place("huggingface", "Hugging Face", root))
    assert result["largest"] == [{"name": "org/na\ufffdme", "size_bytes": MIB}]
    json.dumps(result, ensure_ascii=False).encode("utf-8")


def test_cache_that_is_a_link_to_another_folder_is_followed_once(tmp_path: Path) -> None:
    real = tmp_path / "disk2" / "hf"
    write(real / "hub" / "models--a--b" / "blobs" / "x", MIB)
    link = tmp_path / "hf-link"
    link.symlink_to(real)
    assert host.size_cache(Place("huggingface", "Hugging Face", link))["size_bytes"] == MIB


def test_missing_cache_is_unknown_not_zero(tmp_path: Path) -> None:
    result = host.size_cache(Place("ollama", "Ollama", tmp_path / "nothing"))
    assert result["exists"] is False
    assert result["size_bytes"] is None


def test_ollama_models_from_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    write(root / "blobs" / "sha256-1", 4 * MIB)
    write(root / "blobs" / "sha256-2", MIB)
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "llama3" / "8b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"config": {"size": 100}, "layers": [{"size": 4194304}, {"size": 1048476}]}')
    other = root / "manifests" / "registry.ollama.ai" / "someone" / "tiny" / "latest"
    other.parent.mkdir(parents=True)
    other.write_text('{"layers": [{"size": 10}]}')
    os.mkfifo(root / "manifests" / "registry.ollama.ai" / "library" / "llama3" / "fifo")  # never blocks
    (root / "manifests" / "registry.ollama.ai" / "library" / "llama3" / "bad").write_text("{not json")
    _, caches = host.default_places(tmp_path / "data")
    ollama = next(place for place in caches if place.key == "ollama")
    assert ollama.path == root
    result = host.size_cache(ollama)
    assert result["size_bytes"] == 5 * MIB + len(manifest.read_bytes()) + len(other.read_bytes()) + len("{not json")
    assert result["largest"] == [
        {"name": "llama3:8b", "size_bytes": 5 * MIB},
        {"name": "someone/tiny:latest", "size_bytes": 10},
    ]


def test_hf_home_default_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert host.hf_home({}) == Path.home() / ".cache" / "huggingface"
    assert host.hf_home({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "huggingface"
    assert host.hf_home({"HF_HOME": str(tmp_path / "h"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "h"
    assert host.ollama_models({}) == Path.home() / ".ollama" / "models"


def test_filesystems_merge_places_on_one_disk_and_match_statvfs(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    places = [
        Place("data", "data", tmp_path / "data"),
        Place("huggingface", "Hugging Face cache", tmp_path / "not-made-yet" / "hf"),  # its parent's disk
    ]
    [disk] = host.read_filesystems(places)
    assert disk["labels"] == ["data", "Hugging Face cache"]
    vfs = os.statvfs(tmp_path)
    assert disk["total_bytes"] == vfs.f_blocks * vfs.f_frsize
    assert disk["used_bytes"] + disk["free_bytes"] <= disk["total_bytes"]
    assert disk["warning"] is (disk["percent"] > host.DISK_WARNING_PERCENT)
    assert Path(disk["mount"]).is_dir()
    assert os.stat(disk["mount"]).st_dev == os.stat(tmp_path).st_dev


def test_disk_watcher_reads_in_its_own_thread(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    write(root / "hub" / "models--a--b" / "blobs" / "x", 2 * MIB)
    watcher = DiskWatcher(
        [Place("data", "data", tmp_path)],
        [Place("huggingface", "Hugging Face", root)],
        free_seconds=0.2,
        cache_seconds=0.2,
    )
    assert watcher.latest()["filesystems"] is None  # nothing read before it starts
    watcher.start()
    try:
        wait_until(lambda: watcher.latest()["model_caches"], 30, message="the watcher never sized the cache")
        assert watcher.latest()["model_caches"][0]["size_bytes"] == 2 * MIB
        write(root / "hub" / "models--a--b" / "blobs" / "y", MIB)  # the next slow scan sees it
        wait_until(
            lambda: watcher.latest()["model_caches"][0]["size_bytes"] == 3 * MIB, 30, message="the cache grew unseen"
        )
    finally:
        watcher.stop()


def test_temperature_levels_near_limits() -> None:
    assert host.temperature_level(50, 80, 100) == "ok"
    assert host.temperature_level(76, 80, 100) == "warning"  # within 5 °C of high
    assert host.temperature_level(86, None, 100) == "warning"  # within 15 °C of critical
    assert host.temperature_level(100, 80, 100) == "critical"
    assert host.temperature_level(90, None, None) == "ok"  # no limits known


def test_temperatures_hottest_per_sensor_and_unreadable_is_none() -> None:
    readings = {
        "coretemp": [shwtemp("Package id 0", 71.0, 80.0, 100.0), shwtemp("Core 0", 65.0, 80.0, 100.0)],
        "nvme": [shwtemp("Composite", 40.0, 0.0, None)],  # high 0: no limit
    }
    result = host.read_temperatures(lambda: readings)
    assert result == [
        {"sensor": "coretemp", "label": "Package id 0", "current_c": 71.0, "high_c": 80.0,
         "critical_c": 100.0, "level": "ok"},
        {"sensor": "nvme", "label": "Composite", "current_c": 40.0, "high_c": None, "critical_c": None,
         "level": "ok"},
    ]

    def broken() -> dict[str, list[shwtemp]]:
        raise OSError("sysfs went away")

    assert host.read_temperatures(broken) is None
    real = host.read_temperatures()  # this machine: a list (often empty in a container) or None
    assert real is None or isinstance(real, list)


def test_per_core_and_network_meters_read_real_counters(tmp_path: Path) -> None:
    cores = host.PerCoreMeter()
    assert cores() is None  # no interval yet
    sum(i * i for i in range(200_000))  # a little work between the two readings
    percents = cores()
    assert percents is not None and len(percents) == psutil.cpu_count()
    assert all(p is None or 0 <= p <= 100 for p in percents)
    meter = host.NetworkMeter()
    first = meter(time.time())
    assert first["rx_bytes_per_second"] is None and first["rx_bytes"] is not None
    second = meter(time.time() + 1)
    assert second["rx_bytes_per_second"] is not None and second["rx_bytes_per_second"] >= 0
    assert "lo" not in second["interfaces"]
    # Interfaces with a device link are the physical ones; without any, all but loopback count.
    (tmp_path / "eth0" / "device").mkdir(parents=True)
    (tmp_path / "docker0").mkdir()
    assert host.physical_interfaces(["lo", "eth0", "docker0"], str(tmp_path)) == ["eth0"]
    assert host.physical_interfaces(["lo", "veth1", "docker0"], str(tmp_path)) == ["docker0", "veth1"]


def test_system_probe_fills_the_new_fields_and_survives_failures(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    write(root / "hub" / "models--a--b" / "blobs" / "x", MIB)
    watcher = DiskWatcher([Place("data", "data", tmp_path)], [Place("huggingface", "Hugging Face", root)])

    def broken() -> None:
        raise RuntimeError("no sensors")

    probe = SystemProbe(disks=watcher, temperatures=broken)  # type: ignore[arg-type]
    try:
        for _ in range(2):
            ctx = SampleContext(now=time.time(), operations=[])
            probe.sample(ctx)
        wait_until(lambda: watcher.latest()["model_caches"], 30, message="the watcher never ran")
        ctx = SampleContext(now=time.time() + 1, operations=[])
        probe.sample(ctx)
    finally:
        watcher.stop()
    data = system_payload(ctx.system, ctx.now, 3)
    assert data["temperatures"] is None  # unreadable: null, not a crash
    assert len(data["cpu"]["per_core_percent"]) == psutil.cpu_count()
    assert data["network"]["rx_bytes_per_second"] is not None
    assert data["disks"][0]["labels"] == ["data"]
    assert data["model_caches"][0]["size_bytes"] == MIB
    history = data["history"]
    assert len(history["network_rx_bytes_per_second"]) == len(history["at"]) == 3
    assert history["temperature_max_c"] == [None, None, None]
    # An empty snapshot still has every key (null where unknown).
    empty = system_payload(None, 0, 0)
    assert empty["disks"] is None and empty["model_caches"] is None and empty["temperatures"] is None
    assert empty["network"]["rx_bytes_per_second"] is None
