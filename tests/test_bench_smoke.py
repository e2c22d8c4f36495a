"""The benchmark's plumbing (``make bench``): entry point, JSON shape, cleanup. No timings asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.idle import idle_processes
from bench.sampler_cost import read_proc_stat_once

ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_idle_processes_are_started_and_all_killed() -> None:
    with idle_processes(20) as pids:
        assert len(pids) == 20
        assert all(_alive(pid) for pid in pids)
        assert read_proc_stat_once() >= 20
    assert not any(_alive(pid) for pid in pids)


def test_sampler_run_writes_the_documented_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "DGX_SPARK_DATA_DIR": str(tmp_path / "data")}
    args = ["--only", "sampler", "--sizes", "20", "--refreshes", "2", "--warmup", "1"]
    args += ["--interval", "0", "--no-glances", "--out", str(out)]
    # The operations and churn rows too, small: their code runs, in seconds rather than a minute.
    args += ["--ops-row", "20:2", "--churn-row", "20:5", "--settle", "1"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(out.glob("bench-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    row = result["sampler"]["20"]
    for key in ("ours_ms", "glances_ms", "floor_ms", "ratio_vs_glances", "ratio_vs_floor"):
        assert key in row
    assert row["ours_ms"] >= 0 and row["floor_ms"] >= 0
    assert row["glances_ms"] is None  # --no-glances
    assert len(row["samples_ms"]["ours"]) == 2
    assert row["processes_total"] >= 20
    assert result["table"][0]["measurement"].startswith("Sampler CPU / refresh, +20 idle procs")
    assert "| Measurement" in proc.stdout
