"""Progress against the real backend: launched jobs' output, reports, the helper, stalls, bad input."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dgx_spark.progress.report import report
from tests.support.dashboard import (
    TEST_TOKEN,
    Dashboard,
    free_port,
    running_dashboard,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
# The module (``dgx_spark.progress.report`` the attribute is the function).
report_module = importlib.import_module("dgx_spark.progress.report")

# Prints a tqdm bar redrawn with \r (no newline until the end) with a falling loss,
# up to step ``stop`` of ``total``, then lingers silently. With a ``gate`` path it waits
# half-way (after step ``total // 2``) until that file exists.
TQDM_JOB = """
import os, sys, time
TOTAL = {total}
GATE = {gate!r}
for step in range(1, {stop} + 1):
    loss = 2.0 / step
    sys.stdout.write(f"\\r{{int(100 * step / TOTAL):3d}}%|{{'#' * (step * 10 // TOTAL):<10}}| {{step}}/{{TOTAL}} "
                     f"[00:{{step:02d}}<00:10, 4.00it/s, loss={{loss:.4f}}]")
    sys.stdout.flush()
    while GATE and step == TOTAL // 2 and not os.path.exists(GATE):
        time.sleep(0.05)
    time.sleep({delay})
print()
time.sleep({linger})
"""


def write_job(folder: Path, name: str, body: str) -> Path:
    """A job script in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


# Every job a test launches, so that teardown stops it even when the test failed.
_LAUNCHED: list[tuple[Dashboard, str]] = []


@pytest.fixture(autouse=True)
def _stop_launched() -> Iterator[None]:
    """Stop every job launched during the test and make sure its process is gone."""
    yield
    while _LAUNCHED:
        dashboard, op_id = _LAUNCHED.pop()
        try:
            status, body = dashboard.request("GET", f"/api/dgx/operations/{op_id}")
            pid = body["data"]["pid"] if status == 200 else None
            stop(dashboard, op_id)
        except OSError:  # that dashboard has already gone
            continue
        if pid is not None:
            reap(pid)


def reap(pid: int) -> None:
    """Wait for a stopped job's process to go; SIGKILL it if it lingers."""
    try:
        wait_until(lambda: not _alive(pid), 20)
    except AssertionError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def launch(dashboard: Dashboard, script: Path, name: str, *args: str) -> dict[str, Any]:
    """Launch ``script`` as a job through the supervisor (custom template); return the operation."""
    body = {
        "template": "custom",
        "name": name,
        "type": "job",
        "command": [sys.executable, str(script), *args],
        "cwd": str(script.parent),
    }
    status, answer = dashboard.authed("POST", "/api/dgx/operations", body)
    assert status == 201, answer
    _LAUNCHED.append((dashboard, answer["data"]["id"]))
    return answer["data"]


def operation(dashboard: Dashboard, op_id: str) -> dict[str, Any]:
    """One operation as the API shows it now (all fields None until a snapshot holds it)."""
    status, body = dashboard.request("GET", f"/api/dgx/operations/{op_id}")
    if status == 404:  # launched a moment ago: not in a snapshot yet
        return {"id": op_id, "pid": None, "progress": None, "stalled": None, "status": None}
    assert status == 200, body
    return body["data"]


def stop(dashboard: Dashboard, op_id: str) -> None:
    """Stop a launched operation (best effort)."""
    dashboard.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})


@pytest.fixture
def sleeper(backend: Dashboard, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A launched job that prints nothing and sleeps: only reports move its progress."""
    script = write_job(tmp_path, "train_quiet.py", "import time\ntime.sleep(600)\n")
    op = launch(backend, script, "quiet training")
    wait_until(lambda: operation(backend, op["id"])["pid"], 60, message="the quiet job never started")
    yield operation(backend, op["id"])
    stop(backend, op["id"])


def test_launched_training_script_progress_rises_from_its_output(backend: Dashboard, tmp_path: Path) -> None:
    # Half-way it waits for the gate, which opens once part-way progress has been seen.
    gate = tmp_path / "gate"
    script = write_job(tmp_path, "train_tqdm.py",
                       TQDM_JOB.format(total=40, stop=40, delay=0.1, linger=600, gate=str(gate)))
    op = launch(backend, script, "tqdm training", "--epochs", "1")
    try:
        first = wait_until(
            lambda: (o := operation(backend, op["id"]))["progress"] and o, 90, message="no progress read from the log"
        )
        gate.touch()
        assert first["progress_source"] == "log"
        assert 0 < first["progress"] < 1
        assert first["metrics"]["train_loss"] > 0
        assert first["metrics"]["total_steps"] == 40
        later = wait_until(
            lambda: (o := operation(backend, op["id"]))["progress"] > first["progress"] and o, 90,
            message="progress did not rise",
        )
        assert later["metrics"]["train_loss"] < first["metrics"]["train_loss"]  # the loss falls with the steps
        assert later["throughput"] == pytest.approx(4.0)  # the bar's own rate
        assert later["stalled"] is False
        done = wait_until(lambda: (o := operation(backend, op["id"]))["progress"] == 1.0 and o, 120)
        assert done["eta_seconds"] == 0
        assert len(done["loss_history"]) >= 2
    finally:
        stop(backend, op["id"])


def test_report_via_api_is_most_trusted_and_keeps_the_api_shape(backend: Dashboard, sleeper: dict[str, Any]) -> None:
    op_id = sleeper["id"]
    body = {"progress": 0.45, "epoch": 25, "total_epochs": 100, "step": 450, "total_steps": 1000,
            "metrics": {"train_loss": 0.342, "accuracy": 0.9}}
    status, answer = backend.authed("POST", f"/api/dgx/operations/{op_id}/progress", body)
    assert status == 200, answer
    assert answer["data"]["accepted"]["progress"] == 0.45
    shown = wait_until(lambda: (o := operation(backend, op_id))["progress"] == 0.45 and o, 30)
    assert shown["metrics"]["epoch"] == 25
    assert shown["metrics"]["train_loss"] == 0.342
    assert shown["total_epochs"] == 100
    assert shown["progress_source"] == "api"
    assert shown["stalled"] is False
    for key in ("eta_seconds", "throughput", "loss_history"):
        assert key in shown
    # A second report moves it on; the ETA comes from the rate between the two.
    status, _ = backend.authed("POST", f"/api/dgx/operations/{op_id}/progress", {"progress": 0.5, "step": 500})
    assert status == 200
    moved = wait_until(lambda: (o := operation(backend, op_id))["progress"] == 0.5 and o, 30)
    assert moved["metrics"]["epoch"] == 25  # kept from the previous report
    assert moved["eta_seconds"] is not None and moved["eta_seconds"] >= 0
    assert moved["throughput"] is not None and moved["throughput"] > 0
    # Listed the same way.
    listed = [o for o in backend.operations(type="job") if o["id"] == op_id]
    assert listed and listed[0]["progress"] == 0.5


def test_report_by_pid(backend: Dashboard, sleeper: dict[str, Any]) -> None:
    status, answer = backend.authed("POST", "/api/dgx/progress", {"pid": sleeper["pid"], "progress": 0.7})
    assert status == 200, answer
    assert answer["data"]["id"] == sleeper["id"]
    wait_until(lambda: operation(backend, sleeper["id"])["progress"] == 0.7, 30)
    status, answer = backend.authed("POST", "/api/dgx/progress", {"pid": 4_000_000, "progress": 0.7})
    assert status == 404 and answer["error"]["field"] == "pid"
    status, answer = backend.authed("POST", "/api/dgx/progress", {"pid": "1", "progress": 0.7})
    assert status == 422 and answer["error"]["field"] == "pid"


def test_helper_inside_a_launched_job_reports_with_the_supervisor_environment(
    backend: Dashboard, tmp_path: Path
) -> None:
    # Nothing but what the supervisor puts in the job's environment (its own operation token).
    script = write_job(
        tmp_path,
        "train_helper.py",
        f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from dgx_spark.progress import report
        token = os.environ.get("DGX_SPARK_TOKEN", "")
        print("token kind", token.split(".")[0] if "." in token else "none", flush=True)
        for epoch in range(1, 61):
            ok = report(progress=epoch / 60, epoch=epoch, total_epochs=60, loss=1.0 / epoch)
            print("reported", epoch, ok, flush=True)
            time.sleep(0.5)
        time.sleep(600)
        """,
    )
    op = launch(backend, script, "helper training")
    try:
        first = wait_until(
            lambda: (o := operation(backend, op["id"]))["progress"] and o, 90, message="the helper never got through"
        )
        assert first["progress_source"] == "helper"
        assert first["total_epochs"] == 60
        wait_until(lambda: operation(backend, op["id"])["progress"] > first["progress"], 90)
        lines = backend.get_json(f"/api/dgx/operations/{op['id']}/logs")["data"]["lines"]
        assert "token kind op1" in lines, lines  # an operation token, never the main one
    finally:
        stop(backend, op["id"])


def test_a_jobs_operation_token_reports_only_its_own_progress(
    backend: Dashboard, sleeper: dict[str, Any], tmp_path: Path
) -> None:
    # The job hands its environment's token to the test (a real launched job, the real token).
    token_file = tmp_path / "job_token"
    script = write_job(
        tmp_path,
        "train_token.py",
        f"""
        import os, time
        with open({str(token_file)!r} + ".part", "w") as out:
            out.write(os.environ.get("DGX_SPARK_TOKEN", ""))
        os.replace({str(token_file)!r} + ".part", {str(token_file)!r})
        time.sleep(600)
        """,
    )
    op = launch(backend, script, "token holder")
    wait_until(lambda: token_file.exists(), 60, message="the job never wrote its token")
    job_token = token_file.read_text()
    assert job_token.startswith("op1.") and job_token != TEST_TOKEN and TEST_TOKEN not in job_token
    as_job = {"Authorization": f"Bearer {job_token}"}
    wait_until(lambda: operation(backend, op["id"])["pid"], 60)

    status, answer = backend.request("POST", f"/api/dgx/operations/{op['id']}/progress", {"progress": 0.25}, as_job)
    assert status == 200, answer
    wait_until(lambda: operation(backend, op["id"])["progress"] == 0.25, 30)

    # Anything else with it is refused and changes nothing.
    other = sleeper["id"]
    refused = [
        ("POST", f"/api/dgx/operations/{other}/progress", {"progress": 0.9}),
        ("POST", "/api/dgx/progress", {"pid": sleeper["pid"], "progress": 0.9}),
        ("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": True}),
        ("POST", f"/api/dgx/operations/{other}/stop", {"force": True}),
        ("POST", f"/api/dgx/operations/{op['id']}/start", {}),
        ("DELETE", f"/api/dgx/operations/{op['id']}", None),
        ("POST", "/api/dgx/operations", {"template": "custom", "name": "x", "type": "job",
                                         "command": [sys.executable, "-c", "print(1)"]}),
        ("GET", "/api/dgx/audit", None),
        ("GET", f"/api/dgx/operations/{op['id']}/logs/download", None),
        ("GET", f"/api/dgx/operations/{op['id']}/progress", None),
    ]
    for method, path, body in refused:
        status, answer = backend.request(method, path, body, as_job)
        assert status in (401, 403), (method, path, status, answer)
    # A token for another operation id, or a tampered one, is no good either.
    tampered = job_token[:-1] + ("0" if job_token[-1] != "0" else "1")
    for bad in (tampered, "op1." + "0" * 64, job_token + "x"):
        status, _ = backend.request("POST", f"/api/dgx/operations/{op['id']}/progress", {"progress": 0.5},
                                    {"Authorization": f"Bearer {bad}"})
        assert status == 401
    assert operation(backend, other)["progress"] != 0.9
    assert operation(backend, op["id"])["status"] in ("running", "active")
    assert operation(backend, op["id"])["progress"] == 0.25


def test_helper_posts_to_a_running_app(
    backend: Dashboard, sleeper: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DGX_SPARK_URL", backend.url)
    monkeypatch.setenv("DGX_SPARK_TOKEN", TEST_TOKEN)
    monkeypatch.setenv("DGX_SPARK_OPERATION_ID", sleeper["id"])
    monkeypatch.setattr(report_module._backoff, "quiet_until", 0.0)
    assert report(progress=0.3, epoch=3, total_epochs=10, train_loss=0.5, accuracy=float("nan")) is True
    shown = wait_until(lambda: (o := operation(backend, sleeper["id"]))["progress"] == 0.3 and o, 30)
    assert shown["progress_source"] == "helper"
    assert shown["metrics"]["train_loss"] == 0.5 and "accuracy" not in shown["metrics"]
    monkeypatch.setenv("DGX_SPARK_TOKEN", "wrong")
    assert report(progress=0.4) is False  # refused, not raised


def test_helper_never_raises_when_the_app_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGX_SPARK_OPERATION_ID", "op-1-2")
    monkeypatch.setenv("DGX_SPARK_TOKEN", "x")
    for url in (f"http://127.0.0.1:{free_port()}", "not a url", "http://[::1"):
        monkeypatch.setattr(report_module._backoff, "quiet_until", 0.0)
        monkeypatch.setenv("DGX_SPARK_URL", url)
        assert report(progress=0.5, epoch=1, loss=0.1) is False
    # A server that accepts connections but never answers: the short timeout gives up.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setattr(report_module._backoff, "quiet_until", 0.0)
        monkeypatch.setenv("DGX_SPARK_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        assert report(progress=0.5, timeout=0.5) is False
        assert report(progress=0.6) is False  # backing off: returns at once


BAD_BODIES: list[tuple[Any, str, int]] = [
    ({"progress": 1.5}, "progress", 422),
    ({"progress": -0.01}, "progress", 422),
    ({"progress": float("nan")}, "progress", 422),
    ({"progress": float("inf")}, "progress", 422),
    ({"progress": "0.5"}, "progress", 422),
    ({"epoch": "three"}, "epoch", 422),
    ({"epoch": 5, "total_epochs": 4}, "epoch", 422),
    ({"total_steps": 0}, "total_steps", 422),
    ({"metrics": {"train_loss": "low"}}, "metrics.train_loss", 422),
    ({"metrics": {"train_loss": float("nan")}}, "metrics.train_loss", 422),
    ({"metrics": "loss=1"}, "metrics", 422),
    ({"progess": 0.5}, "progess", 422),
    ({}, "body", 422),
    ([1, 2], "body", 422),
    ({"progress": 0.5, "metrics": {"pad": 1, "note": "x" * 20_000}}, "body", 413),
]


def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
    backend: Dashboard, sleeper: dict[str, Any]
) -> None:
    op_id = sleeper["id"]
    for body, field, code in BAD_BODIES:
        status, answer = backend.authed("POST", f"/api/dgx/operations/{op_id}/progress", body)
        assert status == code, (body, answer)
        assert answer["success"] is False and answer["error"]["field"] == field, (body, answer)
    raw = urllib.request.Request(
        f"{backend.url}/api/dgx/operations/{op_id}/progress", data=b"{not json", method="POST",
        headers={"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(raw, timeout=30)
    assert refused.value.code == 400
    status, answer = backend.authed("POST", "/api/dgx/operations/op-1-2/progress", {"progress": 0.5})
    assert status == 404 and answer["error"]["field"] == "id"
    # The health endpoint shows a snapshot taken after all that; the job still has no progress.
    seq = backend.get_json("/api/health")["data"]["sequence"]
    wait_until(lambda: backend.get_json("/api/health")["data"]["sequence"] > seq + 1, 30)
    shown = operation(backend, op_id)
    assert shown["progress"] is None and shown["progress_source"] is None
    assert "Traceback" not in backend.log_tail(200_000)


def test_reports_need_the_token(backend: Dashboard, sleeper: dict[str, Any]) -> None:
    status, answer = backend.request("POST", f"/api/dgx/operations/{sleeper['id']}/progress", {"progress": 0.9})
    assert status == 401, answer
    status, answer = backend.request("POST", "/api/dgx/progress", {"pid": sleeper["pid"], "progress": 0.9})
    assert status == 401, answer
    assert operation(backend, sleeper["id"])["progress"] != 0.9


def test_stalled_when_a_job_stops_printing(tmp_path: Path) -> None:
    script = write_job(tmp_path / "job", "train_stall.py", TQDM_JOB.format(total=40, stop=12, delay=0.3, linger=600, gate=""))
    with running_dashboard(tmp_path / "dash", env={"DGX_SPARK_STALL_SECONDS": "4"}) as dashboard:
        op = launch(dashboard, script, "stalling training")
        moving = wait_until(lambda: (o := operation(dashboard, op["id"]))["progress"] and o, 90)
        pid = moving["pid"]
        assert moving["stalled"] is False
        stalled = wait_until(lambda: (o := operation(dashboard, op["id"]))["stalled"] and o, 90,
                             message="never marked stalled")
        assert stalled["progress"] == pytest.approx(0.3)  # stuck at step 12 of 40, still alive
        assert stalled["status"] in ("running", "active")
        assert stalled["eta_seconds"] is None
        stop(dashboard, op["id"])
        ended = wait_until(lambda: (o := operation(dashboard, op["id"]))["status"] in ("stopped", "failed") and o, 60)
        assert ended["stalled"] is False
        reap(pid)
        log = dashboard.log_tail(200_000)
    assert "Traceback (most recent call last)" not in log


def test_discovered_job_progress_from_its_stdout_file(backend: Dashboard, tmp_path: Path) -> None:
    from tests.support import workloads

    with workloads.training_script(tmp_path, "train_discovered.py", epochs=500, seconds_per_epoch=0.3) as job:
        def found() -> dict[str, Any] | None:
            for op in backend.operations(type="job"):
                if op["pid"] == job.pid and op["progress"]:
                    return op
            return None

        first = wait_until(found, 90, 0.5, message="the discovered job's output was never read")
        assert first["source"] == "discovered" and first["progress_source"] == "log"
        assert first["total_epochs"] == 500
        assert first["metrics"]["train_loss"] == pytest.approx(1.0 / first["metrics"]["epoch"], rel=1e-3)
        wait_until(lambda: (op := found()) and op["metrics"]["epoch"] > first["metrics"]["epoch"], 90, 0.5)


def test_trainer_state_json_in_the_output_dir(backend: Dashboard, tmp_path: Path) -> None:
    script = write_job(
        tmp_path,
        "train_hf.py",
        """
        import json, os, sys, time
        out = sys.argv[sys.argv.index("--output_dir") + 1]
        for step in range(10, 1001, 10):
            folder = os.path.join(out, f"checkpoint-{step}")
            os.makedirs(folder, exist_ok=True)
            state = {"global_step": step, "max_steps": 1000, "num_train_epochs": 4, "epoch": step / 250,
                     "log_history": [{"loss": 1.0 / step, "learning_rate": 5e-05, "step": step}]}
            with open(os.path.join(folder, "trainer_state.json"), "w") as handle:
                json.dump(state, handle)
            time.sleep(0.5)
        time.sleep(600)
        """,
    )
    op = launch(backend, script, "hf training", "--output_dir", "out", "--num_train_epochs", "4")
    first = wait_until(lambda: (o := operation(backend, op["id"]))["progress"] and o, 90,
                       message="trainer_state.json was never read")
    assert first["progress_source"] == "trainer_state"
    assert first["total_epochs"] == 4
    assert first["metrics"]["step"] == round(first["progress"] * 1000)
    assert first["metrics"]["train_loss"] == pytest.approx(1.0 / first["metrics"]["step"])
    wait_until(lambda: operation(backend, op["id"])["progress"] > first["progress"], 90)
