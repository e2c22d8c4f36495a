"""Test code only: the fake NVML inside a dashboard a test starts (``DGX_SPARK_FAKE_NVML``).

``tests/support/dashboard.py`` puts this folder first on ``PYTHONPATH`` when a test gives
the dashboard a scenario file, so Python imports this module at start-up in each of that
dashboard's processes. With ``DGX_SPARK_FAKE_NVML=<scenario.json>`` set it

1. makes ``import pynvml`` give ``tests/fake_pynvml.py`` serving that scenario, and
2. once the app imports ``dgx_spark.collector.gpu``, makes its default NVML session a
   ``FakeScenarioSession`` (``tests/support/fake_gpu.py``), which starts NVML over when the
   scenario file changes, so a test can make a GPU appear or vanish under a running app.

Without the variable it does nothing. The app itself knows nothing of the fake.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

FAKE_NVML_ENV = "DGX_SPARK_FAKE_NVML"
GPU_MODULE = "dgx_spark.collector.gpu"
TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path) -> ModuleType:
    """Import a test module by its file (the app's folder need not be on ``sys.path`` yet)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _AfterGpuImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``dgx_spark.collector.gpu`` to patch it once loaded."""

    def __init__(self, scenario: Path) -> None:
        self.scenario = scenario

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """Let the other finders find the module, then run ``_install`` after it executes."""
        if fullname != GPU_MODULE:
            return None
        sys.meta_path.remove(self)  # once, and not in our own lookup below
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        execute = loader.exec_module
        scenario = self.scenario

        def exec_module(module: ModuleType) -> None:
            execute(module)
            _install(module, scenario)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _install(gpu: ModuleType, scenario: Path) -> None:
    """Make the app's default NVML session follow the scenario file."""
    fake_gpu = _load("dgx_spark_tests_fake_gpu", TESTS / "support" / "fake_gpu.py")
    gpu.default_session = lambda: fake_gpu.FakeScenarioSession(scenario)


def _main() -> None:
    raw = os.environ.get(FAKE_NVML_ENV, "").strip()
    if not raw:
        return
    scenario = Path(raw)
    fake = _load("dgx_spark_tests_fake_pynvml", TESTS / "fake_pynvml.py")
    sys.modules["pynvml"] = fake.from_file(scenario)
    sys.meta_path.insert(0, _AfterGpuImport(scenario))


_main()
