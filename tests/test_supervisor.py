"""Launch, stop, start again, remove and logs through the REST API of the real backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dgx_spark.security.token import operation_token
from tests.support.dashboard import TEST_TOKEN, UNTHROTTLED, Dashboard, free_port, wait_until

# The module-scoped `backend` fixture (conftest) runs with these: many control requests in a row.
BACKEND_ENV = UNTHROTTLED


def launched(backend: Dashboard, op_id: str) -> dict[str, Any] | None:
    """The operation with this id in the list, if there."""
    return next((op for op in backend.operations() if op["id"] == op_id), None)


def wait_status(backend: Dashboard, op_id: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the operation shows one of ``statuses``."""
    try:
        return wait_until(
            lambda: (op := launched(backend, op_id)) is not None and op["status"] in statuses and op, timeout
        )
    except AssertionError:
        raise AssertionError(
            f"{op_id} never reached {statuses}: {launched(backend, op_id)}; health: {backend.get_json('/api/health')}"
            f"\n{backend.log_tail(3000)}"
        ) from None


def logs(backend: Dashboard, op_id: str, tail: int = 1000) -> list[str]:
    status, body = backend.request("GET", f"/api/dgx/operations/{op_id}/logs?tail={tail}")
    assert status == 200, body
    return body["data"]["lines"]


def launch(backend: Dashboard, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = backend.authed("POST", "/api/dgx/operations", body)
    assert status == 201, answer
    assert answer["data"]["status"] in ("pending", "starting", "running", "active")
    assert answer["data"]["source"] == "launched"
    return answer["data"]


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(body)
    return path


def test_launch_http_server_then_stop(backend: Dashboard, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello from the served folder")
    port = free_port()
    op = launch(
        backend,
        {"template": "http-server", "name": "files", "params": {"port": port, "working_dir": str(tmp_path),
                                                                "python": sys.executable}},
    )
    running = wait_status(backend, op["id"], "running")
    assert running["type"] == "server" and running["port"] == port and running["pid"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=10) as resp:
        assert resp.read() == b"hello from the served folder"
    status, body = backend.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": False})
    assert status == 200, body
    stopped = wait_status(backend, op["id"], "stopped", "failed")
    assert stopped["status"] == "stopped"
    assert stopped["ended_at"] is not None and stopped["exit_code"] is not None
    status, body = backend.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {})
    assert status == 409 and body["error"]["code"] == "conflict"


def test_script_exit_3_is_failed_with_stderr_in_logs(backend: Dashboard, tmp_path: Path) -> None:
    path = script(tmp_path, "crash.py", "import sys\nprint('boom: out of cheese', file=sys.stderr)\nsys.exit(3)\n")
    op = launch(backend, {"template": "training", "name": "crash", "params": {"script": str(path),
                                                                              "python": sys.executable}})
    failed = wait_status(backend, op["id"], "failed", "stopped")
    assert failed["status"] == "failed" and failed["exit_code"] == 3 and failed["type"] == "job"
    assert "boom: out of cheese" in logs(backend, op["id"])


def test_argv_arrives_literally(backend: Dashboard, tmp_path: Path) -> None:
    path = script(tmp_path, "argv.py", "import json, sys\nprint('ARGV=' + json.dumps(sys.argv[1:]))\n")
    values = [";id", "$(id)", "`id`", "a b", "'q'", "&& echo pwned", "*"]
    op = launch(backend, {"template": "custom", "name": "argv", "type": "program",
                          "command": [sys.executable, str(path), *values], "cwd": str(tmp_path)})
    wait_status(backend, op["id"], "stopped", "failed")
    line = wait_until(lambda: next((x for x in logs(backend, op["id"]) if x.startswith("ARGV=")), None), 20)
    assert json.loads(line.removeprefix("ARGV=")) == values


def test_environment_of_a_launch(backend: Dashboard, tmp_path: Path) -> None:
    code = (
        "import os\n"
        "for k in ('DGX_SPARK_OPERATION_ID','PYTHONUNBUFFERED','DGX_SPARK_URL','CUDA_VISIBLE_DEVICES',"
        "'OMP_NUM_THREADS','DGX_SPARK_TOKEN'):\n"
        "    print(f'{k}={os.environ.get(k)}')\n"
    )
    path = script(tmp_path, "env.py", code)
    op = launch(backend, {"template": "custom", "name": "env", "type": "job", "command": [sys.executable, str(path)],
                          "env": {"OMP_NUM_THREADS": "3"}, "gpus": [1]})
    wait_status(backend, op["id"], "stopped")
    lines = logs(backend, op["id"])
    assert f"DGX_SPARK_OPERATION_ID={op['id']}" in lines
    assert "PYTHONUNBUFFERED=1" in lines and "CUDA_VISIBLE_DEVICES=1" in lines and "OMP_NUM_THREADS=3" in lines
    assert f"DGX_SPARK_URL=http://127.0.0.1:{backend.port}" in lines
    # Never the main token: the operation's own (progress-only) token, hidden in the shown log.
    assert "DGX_SPARK_TOKEN=***" in lines
    assert TEST_TOKEN not in "\n".join(lines)
    with urllib.request.urlopen(
        urllib.request.Request(f"{backend.url}/api/dgx/operations/{op['id']}/logs/download",
                               headers={"Host": f"127.0.0.1:{backend.port}",
                                        "Authorization": f"Bearer {TEST_TOKEN}"}), timeout=30
    ) as resp:
        raw = resp.read().decode()
    assert f"DGX_SPARK_TOKEN={operation_token(op['id'], TEST_TOKEN)}\n" in raw and TEST_TOKEN not in raw


def test_start_again_keeps_id_and_log_then_remove(backend: Dashboard, tmp_path: Path) -> None:
    path = script(tmp_path, "once.py", "print('run marker')\n")
    op = launch(backend, {"template": "training", "params": {"script": str(path), "python": sys.executable}})
    wait_status(backend, op["id"], "stopped")
    status, body = backend.authed("POST", f"/api/dgx/operations/{op['id']}/start")
    assert status == 200, body
    assert body["data"]["id"] == op["id"]
    wait_until(lambda: sum("exited: code 0" in x for x in logs(backend, op["id"])) == 2, 60)
    assert logs(backend, op["id"]).count("run marker") == 2
    status, body = backend.authed("DELETE", f"/api/dgx/operations/{op['id']}")
    assert status == 200, body
    assert launched(backend, op["id"]) is None or wait_until(lambda: launched(backend, op["id"]) is None, 10)
    assert backend.request("GET", f"/api/dgx/operations/{op['id']}/logs")[0] == 404
    assert backend.authed("POST", f"/api/dgx/operations/{op['id']}/start")[0] == 404


def test_live_operation_cannot_be_removed_or_started(backend: Dashboard, tmp_path: Path) -> None:
    path = script(tmp_path, "sleep.py", "import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n")
    op = launch(backend, {"template": "training", "params": {"script": str(path), "python": sys.executable}})
    wait_status(backend, op["id"], "active")
    assert backend.authed("DELETE", f"/api/dgx/operations/{op['id']}")[0] == 409
    assert backend.authed("POST", f"/api/dgx/operations/{op['id']}/start")[0] == 409
    status, _ = backend.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": True})
    assert status == 200
    ended = wait_status(backend, op["id"], "stopped", "failed")
    assert ended["status"] == "stopped" and ended["exit_code"] == -signal.SIGKILL


def test_stop_escalates_to_sigkill_after_grace(backend: Dashboard, tmp_path: Path) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM', flush=True))\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.2)\n"
    )
    path = script(tmp_path, "stubborn.py", code)
    op = launch(backend, {"template": "training", "params": {"script": str(path), "python": sys.executable}})
    wait_until(lambda: "ready" in logs(backend, op["id"]), 60)
    assert backend.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {})[0] == 200
    wait_until(lambda: "ignoring SIGTERM" in logs(backend, op["id"]), 30)
    ended = wait_status(backend, op["id"], "stopped", "failed", timeout=90)
    assert ended["exit_code"] == -signal.SIGKILL


def test_logs_follow_offset_stream_and_download(backend: Dashboard, tmp_path: Path) -> None:
    code = (
        "import time\n"
        "print('\\x1b[32mgreen start\\x1b[0m', flush=True)\n"
        "for i in range(1500): print(f'line {i}')\n"
        "import sys; sys.stdout.flush()\n"
        "time.sleep(3)\n"
        "print('late line', flush=True)\n"
        "time.sleep(300)\n"
    )
    path = script(tmp_path, "chatty.py", code)
    op = launch(backend, {"template": "training", "params": {"script": str(path), "python": sys.executable}})
    wait_until(lambda: "line 1499" in logs(backend, op["id"]), 60)
    _, body = backend.request("GET", f"/api/dgx/operations/{op['id']}/logs?tail=1000")
    data = body["data"]
    assert len(data["lines"]) == 1000 and data["truncated"] is True and data["lines"][-1] == "line 1499"
    assert backend.request("GET", f"/api/dgx/operations/{op['id']}/logs?tail=20000")[0] == 422
    request = urllib.request.Request(
        f"{backend.url}/api/dgx/operations/{op['id']}/logs/stream?offset={data['offset']}",
        headers={"Host": f"127.0.0.1:{backend.port}"},
    )
    with urllib.request.urlopen(request, timeout=60) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline and "late line" not in seen:
            raw = stream.readline().decode()
            if raw.startswith("data: "):
                seen += json.loads(raw[6:])["lines"]
        assert "late line" in seen
    _, body = backend.request("GET", f"/api/dgx/operations/{op['id']}/logs?tail=1")
    assert body["data"]["lines"] == ["late line"]
    with urllib.request.urlopen(
        urllib.request.Request(f"{backend.url}/api/dgx/operations/{op['id']}/logs/download",
                               headers={"Host": f"127.0.0.1:{backend.port}",
                                        "Authorization": f"Bearer {TEST_TOKEN}"}), timeout=30
    ) as resp:
        whole = resp.read().decode()
        assert "attachment" in resp.headers["Content-Disposition"]
    assert "\x1b[32mgreen start" in whole and "line 0\n" in whole and "late line" in whole
    backend.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": True})
    wait_status(backend, op["id"], "stopped", "failed")


def test_log_lines_hide_secrets_and_the_raw_download_needs_the_token(backend: Dashboard, tmp_path: Path) -> None:
    code = (
        "import time\n"
        "print('[I] Jupyter Server is running at: http://127.0.0.1:8888/lab?token=abcdef0123456789', flush=True)\n"
        "print('launching with --token abc123secret --port 8888', flush=True)\n"
        "print('mirror https://user:pass@host/simple', flush=True)\n"
        "time.sleep(4)\n"
        "print('later --api-key=late456secret', flush=True)\n"
        "time.sleep(300)\n"
    )
    path = script(tmp_path, "leaky.py", code)
    op = launch(backend, {"template": "training", "params": {"script": str(path), "python": sys.executable}})
    wait_until(lambda: any("mirror" in line for line in logs(backend, op["id"])), 60)
    _, body = backend.request("GET", f"/api/dgx/operations/{op['id']}/logs?tail=100")
    shown = "\n".join(body["data"]["lines"])
    assert "--token ***" in shown and "https://user:***@host/simple" in shown and "token=***" in shown, shown
    for secret in ("abc123secret", "user:pass@", "abcdef0123456789"):
        assert secret not in shown
    _, body = backend.request("GET", f"/api/dgx/operations/{op['id']}/logs?offset=0")
    assert "abc123secret" not in json.dumps(body) and "--token ***" in json.dumps(body)
    request = urllib.request.Request(
        f"{backend.url}/api/dgx/operations/{op['id']}/logs/stream?offset=0",  # from the start: every line
        headers={"Host": f"127.0.0.1:{backend.port}"},
    )
    with urllib.request.urlopen(request, timeout=120) as stream:
        deadline = time.monotonic() + 120  # generous: the machine is shared and at times very loaded
        seen: list[str] = []
        while time.monotonic() < deadline and not any("later" in line for line in seen):
            raw = stream.readline().decode()
            if raw.startswith("data: "):
                seen += json.loads(raw[6:])["lines"]
    assert any("--api-key=***" in line for line in seen) and "late456secret" not in "".join(seen), seen
    # The raw download keeps the bytes as written, so it needs the token, even from loopback.
    url = f"/api/dgx/operations/{op['id']}/logs/download"
    status, refused = backend.request("GET", url)
    assert status == 401 and refused["success"] is False
    with urllib.request.urlopen(
        urllib.request.Request(f"{backend.url}{url}", headers={"Host": f"127.0.0.1:{backend.port}",
                                                               "Authorization": f"Bearer {TEST_TOKEN}"}),
        timeout=30,
    ) as resp:
        assert "--token abc123secret" in resp.read().decode()
    backend.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {"force": True})
    wait_status(backend, op["id"], "stopped", "failed")


def test_templates_are_listed(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/dgx/templates")
    assert status == 200
    names = {t["name"] for t in body["data"]}
    assert {"comfyui", "ollama", "vllm", "jupyterlab", "llama-server", "training", "custom"} <= names
    training = next(t for t in body["data"] if t["name"] == "training")
    assert training["type"] == "job" and any(p["name"] == "script" for p in training["params"])


def test_stop_a_discovered_operation(backend: Dashboard, tmp_path: Path) -> None:
    path = script(tmp_path, "lonely_server.py", "import time\nwhile True: time.sleep(0.5)\n")
    proc = subprocess.Popen([sys.executable, str(path)], start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        found = wait_until(
            lambda: next((o for o in backend.operations() if o["pid"] == proc.pid or proc.pid in o.get("pids", [])), None),
            60,
            message="discovery never listed the test's own process",
        )
        assert found["source"] == "discovered"
        status, body = backend.authed("POST", f"/api/dgx/operations/{found['id']}/stop", {})
        assert status == 200, body
        assert proc.wait(60) == -signal.SIGTERM
        assert backend.authed("POST", "/api/dgx/operations/op-1-0/stop", {})[0] in (403, 404)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("path", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "op-1-2", "launch-000000000000"])
def test_logs_for_unknown_ids_are_404(backend: Dashboard, path: str) -> None:
    status, body = backend.request("GET", f"/api/dgx/operations/{path}/logs")
    assert status == 404, body


def test_start_again_inside_the_default_grace_is_a_run_of_its_own(backend: Dashboard, tmp_path: Path) -> None:
    """Launch, Stop, Start again within the default 10 s grace, wait 11 s: the old timer leaves run 2 alone."""
    path = script(tmp_path, "sleeper.py", "import time\nprint('ready', flush=True)\ntime.sleep(600)\n")
    op = launch(backend, {"template": "training", "params": {"script": str(path), "python": sys.executable}})
    wait_until(lambda: "ready" in logs(backend, op["id"]), 60)
    assert backend.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {})[0] == 200
    wait_status(backend, op["id"], "stopped")
    time.sleep(1)
    status, body = backend.authed("POST", f"/api/dgx/operations/{op['id']}/start")
    assert status == 200 and body["data"]["run"] == 2, body
    second = wait_status(backend, op["id"], "active")
    time.sleep(11)  # past the first stop's grace period: its SIGKILL was for run 1 only
    alive = launched(backend, op["id"])
    assert alive is not None and alive["status"] == "active" and alive["run"] == 2 and alive["pid"] == second["pid"]
    status, body = backend.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {})
    assert status == 200, body  # run 2's own stop, not "already being stopped"
    ended = wait_status(backend, op["id"], "stopped", "failed")
    assert ended["status"] == "stopped" and ended["exit_code"] == -signal.SIGTERM and ended["run"] == 2
    assert ended["exit_reason"] == "stopped by the user (SIGTERM)" and ended["outcome"] == "stopped"

    def ends() -> list[tuple[int, str]]:
        _, events = backend.request("GET", f"/api/dgx/events?operation_id={op['id']}&limit=100")
        return sorted((e["run"], e["kind"]) for e in events["data"] if e["kind"] in ("stopped", "failed", "completed"))

    assert wait_until(lambda: ends() == [(1, "stopped"), (2, "stopped")], 30)
