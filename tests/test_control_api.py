"""Bad input to the control API: 4xx naming the field, and nothing is spawned."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.dashboard import UNTHROTTLED, Dashboard

# The module-scoped `backend` fixture (conftest) runs with these: many control requests in a row.
BACKEND_ENV = UNTHROTTLED

SCRIPT = str(Path(__file__).resolve())


def nothing_spawned(backend: Dashboard) -> None:
    launched = [op for op in backend.operations() if op["source"] == "launched"]
    assert launched == []
    logs = backend.data_dir / "logs"
    assert not logs.exists() or not any(logs.iterdir())


def taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


BAD: list[tuple[str, Any, str]] = [
    ("unknown template", {"template": "nope", "params": {}}, "template"),
    ("template not a string", {"template": ["training"]}, "template"),
    ("missing template", {"name": "x"}, "template"),
    ("port zero", {"template": "http-server", "params": {"port": 0}}, "params.port"),
    ("port too big", {"template": "http-server", "params": {"port": 65536}}, "params.port"),
    ("port as list", {"template": "http-server", "params": {"port": [8000]}}, "params.port"),
    ("port as bool", {"template": "http-server", "params": {"port": True}}, "params.port"),
    ("missing script", {"template": "training", "params": {"script": "/no/such/train.py"}}, "params.script"),
    ("script required", {"template": "training", "params": {}}, "params.script"),
    ("NUL in script", {"template": "training", "params": {"script": SCRIPT + "\x00"}}, "params.script"),
    ("newline in name", {"template": "training", "name": "a\nb", "params": {"script": SCRIPT}}, "name"),
    ("10 kB name", {"template": "training", "name": "x" * 10_000, "params": {"script": SCRIPT}}, "name"),
    ("10 kB arg", {"template": "training", "params": {"script": SCRIPT, "args": ["y" * 10_000]}}, "params.args[0]"),
    ("args wrong type", {"template": "training", "params": {"script": SCRIPT, "args": {"a": 1}}}, "params.args"),
    ("params not an object", {"template": "training", "params": ["x"]}, "params"),
    ("unknown param", {"template": "training", "params": {"script": SCRIPT, "shell": True}}, "params.shell"),
    ("env not allowed", {"template": "training", "params": {"script": SCRIPT, "env": {"LD_PRELOAD": "x"}}},
     "params.env.LD_PRELOAD"),
    ("gpu index bad", {"template": "training", "params": {"script": SCRIPT, "gpus": [-1]}}, "params.gpus[0]"),
    ("custom command as string", {"template": "custom", "command": "rm -rf /tmp/x; id"}, "command"),
    ("custom empty command", {"template": "custom", "command": []}, "command"),
    ("custom unknown program", {"template": "custom", "command": ["no-such-program-xyz"]}, "command"),
    ("custom NUL arg", {"template": "custom", "command": [sys.executable, "a\x00b"]}, "command[1]"),
    ("custom bad type", {"template": "custom", "type": "daemon", "command": [sys.executable]}, "type"),
    ("custom bad cwd", {"template": "custom", "command": [sys.executable], "cwd": "/no/such/dir"}, "cwd"),
    ("custom env type", {"template": "custom", "command": [sys.executable], "env": "A=1"}, "env"),
    ("custom token env", {"template": "custom", "command": [sys.executable], "env": {"DGX_SPARK_TOKEN": "x"}},
     "env.DGX_SPARK_TOKEN"),
    ("command for a template", {"template": "training", "command": ["id"], "params": {"script": SCRIPT}}, "command"),
    ("unknown field", {"template": "training", "params": {"script": SCRIPT}, "shell": "bash"}, "shell"),
    ("body not an object", ["training"], "body"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in BAD], ids=[n for n, _, _ in BAD])
def test_bad_launch_is_422_naming_the_field(backend: Dashboard, body: Any, field: str) -> None:
    status, answer = backend.authed("POST", "/api/dgx/operations", body)
    assert status == 422, answer
    assert answer["success"] is False
    assert answer["error"]["field"] == field, answer
    assert len(answer["error"]["message"]) < 1000
    nothing_spawned(backend)


@pytest.mark.parametrize("body", [
    {"template": "training", "name": "x" * 1_000_000, "params": {"script": SCRIPT}},
    {"template": "training", "params": {"script": SCRIPT, "args": ["y" * 1_000_000]}},
], ids=["1 MB name", "1 MB arg"])
def test_launch_body_over_64_kib_is_413(backend: Dashboard, body: Any) -> None:
    status, answer = backend.authed("POST", "/api/dgx/operations", body)
    assert status == 413, answer
    assert answer["success"] is False and answer["error"]["code"] == "payload_too_large"
    nothing_spawned(backend)


def test_port_taken_is_422(backend: Dashboard) -> None:
    with taken_port() as sock:
        port = sock.getsockname()[1]
        status, answer = backend.authed("POST", "/api/dgx/operations",
                                        {"template": "http-server", "params": {"port": port}})
    assert status == 422 and answer["error"]["field"] == "params.port"
    assert "in use" in answer["error"]["message"]
    nothing_spawned(backend)


def test_malformed_json_is_4xx(backend: Dashboard) -> None:
    import urllib.error
    import urllib.request

    from tests.support.dashboard import TEST_TOKEN

    req = urllib.request.Request(backend.url + "/api/dgx/operations", data=b"{not json", method="POST")
    req.add_header("Host", f"127.0.0.1:{backend.port}")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {TEST_TOKEN}")
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("accepted")
    except urllib.error.HTTPError as err:
        assert 400 <= err.code < 500
    nothing_spawned(backend)


@pytest.mark.parametrize("method,suffix", [("POST", "/stop"), ("POST", "/start"), ("DELETE", "")])
def test_actions_on_unknown_ids_are_404(backend: Dashboard, method: str, suffix: str) -> None:
    status, answer = backend.authed(method, f"/api/dgx/operations/launch-0123456789ab{suffix}", {} if method == "POST" else None)
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found"


def test_stop_body_is_typed(backend: Dashboard) -> None:
    status, answer = backend.authed("POST", "/api/dgx/operations/launch-0123456789ab/stop", {"force": "yes"})
    assert status == 422 and answer["error"]["field"] == "force"


def test_logs_tail_out_of_range_is_422(backend: Dashboard) -> None:
    status, answer = backend.request("GET", "/api/dgx/operations/op-1-1/logs?tail=-5")
    assert status == 422 and answer["error"]["field"] == "tail"
