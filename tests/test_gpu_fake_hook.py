"""The fake-NVML test hook follows its scenario file; real NVML keeps initialising once."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgx_spark.collector import gpu
from dgx_spark.collector.gpu import NO_GPU_MESSAGE, FakeScenarioSession, GpuReader, NvmlSession
from tests.support.fake_gpu import GIB, NO_GPU, gb10, write_scenario


def test_without_the_hook_the_default_session_is_plain_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpu.FAKE_NVML_ENV, raising=False)
    session = gpu.default_session()
    assert type(session) is NvmlSession
    assert type(GpuReader().session) is NvmlSession


def test_hooked_session_follows_the_scenario_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = tmp_path / "gpu.json"
    write_scenario(scenario, NO_GPU)
    monkeypatch.setenv(gpu.FAKE_NVML_ENV, str(scenario))
    reader = GpuReader(timeout=30)
    assert isinstance(reader.session, FakeScenarioSession)

    first = reader.read()
    assert not first.available and first.message == NO_GPU_MESSAGE
    assert reader.read().message == NO_GPU_MESSAGE  # the failure is kept while the file stays

    write_scenario(scenario, gb10({4242: 3 * GIB}))
    reading = reader.read()
    assert reading.available and reading.unified_memory
    assert reading.devices[0].name == "NVIDIA GB10"
    (process,) = reading.processes
    assert process.pid == 4242 and process.used_memory_bytes == 3 * GIB and process.utilization == 0.0

    write_scenario(scenario, NO_GPU)
    gone = reader.read()
    assert not gone.available and gone.message == NO_GPU_MESSAGE
