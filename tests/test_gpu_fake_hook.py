"""The fake NVML is test code, injected: in-process by argument, into a dashboard by the shim.

The app has no reference to the fake; ``tests/nvml_shim/sitecustomize.py`` puts it into a
fresh Python that has ``DGX_SPARK_FAKE_NVML`` set, and does nothing without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dgx_spark.collector import gpu
from dgx_spark.collector.gpu import NO_GPU_MESSAGE, GpuReader, NvmlSession
from tests import fake_pynvml
from tests.support.dashboard import NVML_SHIM, ROOT, Dashboard
from tests.support.fake_gpu import FAKE_NVML_ENV, GIB, NO_GPU, FakeScenarioSession, gb10, write_scenario

# Run in a fresh Python: which session the app's reader gets, and what it reads.
PROBE = (
    "import json, sys\n"
    "from dgx_spark.collector.gpu import GpuReader\n"
    "reader = GpuReader(timeout=30)\n"
    "reading = reader.read()\n"
    "print(json.dumps({'session': type(reader.session).__name__, 'available': reading.available,\n"
    "                  'names': [d.name for d in reading.devices], 'pynvml': type(sys.modules.get('pynvml')).__name__,\n"
    "                  'fake': hasattr(sys.modules.get('pynvml'), 'fake')}))\n"
)


def probe(env: dict[str, str]) -> dict[str, object]:
    """What a fresh Python with ``env`` (and the project folder as its cwd) sees."""
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, timeout=120,
                          check=True)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def test_the_app_has_no_reference_to_the_fake() -> None:
    for path in (ROOT / "dgx_spark").rglob("*.py"):
        text = path.read_text()
        for word in ("fake_pynvml", FAKE_NVML_ENV, "FakeScenario", "nvml_shim"):
            assert word not in text, f"{path.relative_to(ROOT)} names {word}"


def test_the_default_session_is_plain_nvml() -> None:
    assert type(gpu.default_session()) is NvmlSession
    assert type(GpuReader().session) is NvmlSession


def test_scenario_session_follows_the_scenario_file(tmp_path: Path) -> None:
    scenario = tmp_path / "gpu.json"
    write_scenario(scenario, NO_GPU)
    reader = GpuReader(FakeScenarioSession(scenario, loader=lambda: fake_pynvml.from_file(scenario)), timeout=30)

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


def test_the_shim_gives_a_dashboard_process_the_fake(tmp_path: Path) -> None:
    scenario = tmp_path / "gpu.json"
    write_scenario(scenario, gb10({4242: GIB}))
    env = Dashboard(tmp_path / "data", env={FAKE_NVML_ENV: str(scenario)}).environment()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(NVML_SHIM)
    seen = probe(env)
    assert seen == {"session": "FakeScenarioSession", "available": True, "names": ["NVIDIA GB10"],
                    "pynvml": "module", "fake": True}


def test_without_the_scenario_the_shim_does_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != FAKE_NVML_ENV}
    env["PYTHONPATH"] = str(NVML_SHIM)
    seen = probe(env)
    assert seen["session"] == "NvmlSession" and seen["fake"] is False
    assert str(NVML_SHIM) not in Dashboard(tmp_path / "data").environment().get("PYTHONPATH", "")
