"""Nearly full disks and hot sensors become header warnings, once per snapshot.

The disk tests use a real, small tmpfs that the test fills (mounting needs root; without it
they skip with the reason, and the pure functions are still checked with real statvfs numbers
of the test's own folder). Temperatures come through ``read_temperatures`` from readings shaped
like psutil's; the GPU's through the fake NVML (the one allowed double).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest

from dgx_spark.collector import host
from dgx_spark.collector.facts import Filesystem, SystemFacts, TemperatureReading
from dgx_spark.collector.gpu import GpuReader, NvmlSession
from dgx_spark.collector.host import DiskWatcher, Place
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.collector.system import SystemProbe, disk_warnings, temperature_warnings
from dgx_spark.settings import ResourceSettings
from dgx_spark.state.system import system_view
from tests import fake_pynvml
from tests.support.dashboard import running_dashboard, wait_until

MIB = 1 << 20
FS_BYTES = 8 * MIB


class shwtemp(NamedTuple):  # the shape of psutil.sensors_temperatures() entries
    """One sensor reading as psutil gives it."""

    label: str
    current: float
    high: float | None
    critical: float | None


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    """A fresh ``FS_BYTES`` tmpfs mounted at ``where`` (skips the test where mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount(8) here")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={FS_BYTES},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, share: float) -> Path:
    """Write one file so the filesystem under ``folder`` is ``share`` used."""
    path = folder / "blob.bin"
    path.write_bytes(b"\0" * int(FS_BYTES * share))
    return path


def sample(probe: SystemProbe) -> SystemFacts:
    """One real tick of the system probe; its ``ctx.system``."""
    ctx = SampleContext(now=time.time(), operations=[])
    probe.sample(ctx)
    assert ctx.system is not None
    return ctx.system


def kinds(system: SystemFacts, kind: str) -> list[dict[str, Any]]:
    """The warnings of one kind, as ``GET /api/dgx/system`` shows them."""
    return [w.to_api() for w in system.warnings if w.kind == kind]


def disks(*entries: dict[str, Any]) -> list[Filesystem]:
    """``host.read_filesystems`` entries as the probe types them."""
    return [Filesystem.from_host(entry) for entry in entries]


def temperatures(readings: list[dict[str, Any]] | None) -> list[TemperatureReading] | None:
    """``host.read_temperatures`` readings as the probe types them."""
    return None if readings is None else [TemperatureReading.from_host(reading) for reading in readings]


def test_a_nearly_full_filesystem_is_a_warning_until_it_is_freed(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs") as mounted:
        watcher = DiskWatcher([Place("huggingface", "Hugging Face cache", mounted / "hf")], [])
        probe = SystemProbe(disks=watcher, temperatures=lambda: [], settings=ResourceSettings())
        try:
            blob = fill(mounted, 0.95)
            watcher.scan_filesystems()
            (warning,) = kinds(sample(probe), "disk_full")
            assert warning["mount"] == str(mounted)
            assert warning["labels"] == ["Hugging Face cache"]  # a folder not made yet: its parent's disk
            assert warning["percent"] > host.DISK_WARNING_PERCENT
            assert warning["total_bytes"] == psutil.disk_usage(str(mounted)).total
            assert warning["level"] == "warning"
            assert warning["message"].startswith(f"Disk nearly full: {mounted} (Hugging Face cache) is 9")
            assert "free of 8.0 MiB" in warning["message"]
            # The header shows it as an amber banner (memory pressure stays red).
            view = system_view(sample(probe))
            assert [(w.kind, w.level) for w in view.warnings if w.kind == "disk_full"] == [("disk_full", "warning")]

            # 80 % used: no warning (the line is "more than 90 % used").
            blob.unlink()
            fill(mounted, 0.80)
            watcher.scan_filesystems()
            assert kinds(sample(probe), "disk_full") == []
        finally:
            watcher.stop()


def test_disk_warnings_from_real_statvfs_numbers(tmp_path: Path) -> None:
    # This test's own folder: real numbers (nearly always far from full here).
    (disk,) = host.read_filesystems([Place("data", "data", tmp_path)])
    expected = [disk["mount"]] if disk["percent"] > host.DISK_WARNING_PERCENT else []
    assert [w.filesystem.mount for w in disk_warnings(disks(disk))] == expected
    # The same filesystem with its numbers moved past the line, as read_filesystems would say it.
    used = int(disk["total_bytes"] * 0.93)
    full = {**disk, "used_bytes": used, "free_bytes": disk["total_bytes"] - used, "percent": 93.0, "warning": True}
    (warning,) = disk_warnings(disks(full, disk if not disk["warning"] else {**disk, "warning": False}))
    assert warning.filesystem.percent == 93.0 and "93 % used" in warning.message
    # Nothing read yet (the watcher's first scan runs in its thread): no warning, no crash.
    assert disk_warnings(None) == [] and disk_warnings([]) == []


def test_hot_sensors_make_one_temperature_warning_hottest_first() -> None:
    readings = host.read_temperatures(
        lambda: {
            "coretemp": [shwtemp("Package id 0", 101.0, 90.0, 100.0), shwtemp("Core 0", 60.0, 90.0, 100.0)],
            "nvme": [shwtemp("Composite", 41.0, 84.0, 89.0)],
            "acpitz": [shwtemp("", 88.0, None, 95.0)],
        }
    )
    assert readings is not None
    (warning,) = [w.to_api() for w in temperature_warnings(temperatures(readings))]
    assert warning["kind"] == "temperature"
    assert warning["level"] == "critical"  # the worst of its sensors: 101 °C is past "critical"
    assert [s["name"] for s in warning["sensors"]] == ["coretemp Package id 0", "acpitz"]
    assert warning["message"] == (
        "Too hot: coretemp Package id 0 101 °C (high 90 °C, critical 100 °C); acpitz 88 °C (critical 95 °C)"
    )
    # Only warnings: "Running hot", amber.
    warm = host.read_temperatures(lambda: {"nvme": [shwtemp("Composite", 81.0, 84.0, 89.0)]})
    (warning,) = [w.to_api() for w in temperature_warnings(temperatures(warm))]
    assert warning["level"] == "warning" and warning["message"].startswith("Running hot: nvme Composite 81 °C")
    # Cool, none exposed, or unreadable: no warning.
    cool = host.read_temperatures(lambda: {"nvme": [shwtemp("Composite", 40.0, 84.0, 89.0)]})
    assert temperature_warnings(temperatures(cool)) == temperature_warnings([]) == temperature_warnings(None) == []


def test_a_hot_gpu_is_in_the_temperature_warning_and_the_header() -> None:
    module = fake_pynvml.build({"devices": [{
        "name": "NVIDIA GB10", "uuid": "GPU-hot", "memory": None, "utilization": 99, "temperature": 92,
        "power_mw": 90_000, "power_limit_mw": None, "compute": [], "graphics": [], "samples": [],
    }]})
    disks = DiskWatcher([], [])
    probe = SystemProbe(GpuReader(NvmlSession(module), timeout=10.0), settings=ResourceSettings(), disks=disks,
                        temperatures=lambda: [])
    try:
        system = sample(probe)
    finally:
        disks.stop()
    (warning,) = kinds(system, "temperature")
    assert warning["level"] == "critical" and warning["message"] == "Too hot: GPU 0 92 °C"
    view = system_view(system)
    banners = [(w.kind, w.level, w.message) for w in view.warnings]
    assert ("temperature", "critical", "Too hot: GPU 0 92 °C") in banners
    # Idle GPU holders show on their cards, not as header banners.
    assert all(w.kind != "idle_gpu" for w in view.warnings)


def test_the_api_and_the_header_warn_about_a_full_model_cache_disk(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs") as mounted:
        (mounted / "hf").mkdir()
        fill(mounted, 0.95)
        with running_dashboard(tmp_path / "data", env={"HF_HOME": str(mounted / "hf")}) as dash:
            def warned() -> list[dict[str, Any]]:
                data = dash.get_json("/api/dgx/system")["data"]
                return [w for w in data["warnings"] if w["kind"] == "disk_full"]

            (warning,) = wait_until(warned, 60, message="no disk_full warning in /api/dgx/system")
            assert warning["mount"] == str(mounted) and warning["labels"] == ["Hugging Face cache"]
            assert warning["message"].startswith(f"Disk nearly full: {mounted} (Hugging Face cache)")
