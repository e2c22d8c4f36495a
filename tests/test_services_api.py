"""What servers serve and what programs are, through the real backend's API (real processes, fake servers)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until
from tests.support.fake_servers import launcher_script
from tests.test_training_from_output import EPOCH_BARS

BACKEND_ENV = {"DGX_SPARK_SERVICE_PROBE_SECONDS": "1"}


@contextlib.contextmanager
def fake_server(folder: Path, program: str, kind: str, *args: str, mode: str = "ok") -> Iterator[workloads.Workload]:
    """``python <folder>/<program> <args>``: a fake ``kind`` server as a real process the dashboard discovers."""
    script = launcher_script(folder, program)
    port = workloads.free_port()
    env = {"FAKE_KIND": kind, "FAKE_PORT": str(port), "FAKE_MODE": mode}
    with workloads.spawn([sys.executable, str(script), *args], folder, port=port, script=script, env=env) as work:
        yield work


def listed(backend: Dashboard, pid: int) -> dict[str, Any] | None:
    """The listed operation rooted at ``pid``."""
    return next((op for op in backend.operations() if op["pid"] == pid), None)


def test_ollama_models_in_the_api(backend: Dashboard, tmp_path: Path) -> None:
    with fake_server(tmp_path / "ollama-bin", "ollama", "ollama", "serve") as server:
        op = wait_until(lambda: (o := listed(backend, server.pid)) and o["service"] and o, 60, 0.3,
                        message="the Ollama server's models were never shown")
        assert (op["type"], op["name"], op["port"]) == ("server", "Ollama", server.port)
        service = op["service"]
        assert service["kind"] == "ollama"
        assert service["summary"].startswith("llama3.1:70b · 42 GiB · unloads in 4m")
        assert service["models"][0]["name"] == "llama3.1:70b"
        assert service["models"][0]["expires_at"].endswith("Z")
        assert op["service_source"] == f"http://127.0.0.1:{server.port}/api/ps"
        assert op["service_checked_at"].endswith("Z")
        one = backend.get_json(f"/api/dgx/operations/{op['id']}")["data"]
        assert one["service"]["kind"] == "ollama"


def test_a_broken_server_shows_nothing_and_no_error(backend: Dashboard, tmp_path: Path) -> None:
    with fake_server(tmp_path / "vllm-bin", "vllm", "vllm", "serve", "m", mode="html") as server:
        op = wait_until(lambda: (o := listed(backend, server.pid)) and o["port"] and o, 60, 0.3)
        assert op["name"] == "vLLM · m"
        start = backend.get_json("/api/health")["data"]["sequence"]
        # Several probes (1 s apart) and ten refreshes (0.5 s apart) later: still nothing, and no probe error.
        wait_until(lambda: backend.get_json("/api/health")["data"]["sequence"] >= start + 10, 60, 0.3)
        op = listed(backend, server.pid)
        assert op is not None and op["service"] is None and op["service_source"] is None
        health = backend.get_json("/api/health")["data"]
        assert [e for e in health["errors"] if e["probe"] == "service"] == []
        assert "service probe of " + op["id"] in backend.log_tail(200_000)  # logged (once; see the unit tests)


def test_nohup_python_job_is_listed_as_a_job_with_progress(backend: Dashboard, tmp_path: Path) -> None:
    script = workloads.write_script(tmp_path, "job.py", workloads._READY + EPOCH_BARS)
    with workloads.spawn([sys.executable, str(script)], tmp_path, script=script, ready=True) as job:
        op = wait_until(lambda: (o := listed(backend, job.pid)) and o["type"] == "job" and o["progress"] and o,
                        90, 0.3, message="the program printing epochs never became a job")
        assert op["type_source"] == "output" and op["progress_source"] == "log"
        assert op["total_epochs"] == 200 and op["metrics"]["train_loss"] > 0
        assert any(o["pid"] == job.pid for o in backend.operations(type="job"))
