"""Supervisor building blocks without the app: templates, the runner, log rotation, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgx_spark.collector import logfile as oplogs
from dgx_spark.supervisor import templates as tpl
from dgx_spark.supervisor.runner import (
    EXIT_FILE,
    RUNNER_FILE,
    SPEC_FILE,
    write_json_atomic,
)
from dgx_spark.supervisor.signals import (
    ProcessIdentity,
    SignalRefused,
    identity_of,
    send_signal,
)
from tests.support.dashboard import ROOT, wait_until


def _template(name: str) -> tpl.Template:
    return {t.name: t for t in tpl.BUILTIN_TEMPLATES}[name]


def test_training_template_builds_argv_without_shell(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    spec = tpl.build_spec(
        _template("training"),
        "run 1",
        {"script": str(script), "args": ["--lr", "0.1", ";id"], "gpus": [0, 1], "env": {"OMP_NUM_THREADS": "2"}},
    )
    assert spec.argv == ("python3", str(script), "--lr", "0.1", ";id")
    assert spec.type == "job"
    assert spec.env == {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0,1"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"script": "/nonexistent/train.py"}, "params.script"),
        ({}, "params.script"),
        ({"script": "x\x00y"}, "params.script"),
        ({"script": "a\nb"}, "params.script"),
        ({"script": "x" * 1_000_000}, "params.script"),
        ({"script": 5}, "params.script"),
        ({"args": "a", "script": __file__, "gpus": "x"}, "params.gpus[0]"),
        ({"script": __file__, "env": {"LD_PRELOAD": "/x.so"}}, "params.env.LD_PRELOAD"),
        ({"script": __file__, "bogus": 1}, "params.bogus"),
    ],
)
def test_bad_params_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(tpl.SpecError) as caught:
        tpl.build_spec(_template("training"), None, params)
    assert caught.value.field == field


def test_port_range_and_taken(tmp_path: Path) -> None:
    for bad in (0, 70000, -1, "http", True, 8.5):
        with pytest.raises(tpl.SpecError) as caught:
            tpl.build_spec(_template("http-server"), None, {"port": bad})
        assert caught.value.field == "params.port"
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        with pytest.raises(tpl.SpecError, match="in use"):
            tpl.build_spec(_template("http-server"), None, {"port": taken})


def test_user_templates_file(tmp_path: Path) -> None:
    path = tmp_path / "templates.toml"
    path.write_text(
        """
[templates.echo]
title = "Echo"
type = "job"
argv = ["echo", "{word}", ["--times", "{times}"]]
[templates.echo.params.word]
kind = "string"
[templates.echo.params.times]
kind = "int"
required = false

[templates.broken]
type = "daemon"
argv = ["x"]
"""
    )
    found, problems = tpl.load_user_templates(path)
    assert [t.name for t in found] == ["echo"]
    assert len(problems) == 1 and "broken" in problems[0]
    echo = found[0]
    assert tpl.build_spec(echo, None, {"word": "hi"}).argv == ("echo", "hi")
    assert tpl.build_spec(echo, None, {"word": "hi", "times": 2}).argv == ("echo", "hi", "--times", "2")
    assert "echo" in tpl.all_templates(path)


def test_custom_spec_validation(tmp_path: Path) -> None:
    spec = tpl.build_custom_spec("c", "job", [sys.executable, "-c", "pass"], str(tmp_path), {"HF_HOME": "/x"})
    assert spec.argv[0] == sys.executable and spec.cwd == str(tmp_path)
    cases = [
        (("c", "daemon", ["true"], None, None), "type"),
        (("c", "job", "true; id", None, None), "command"),
        (("c", "job", [], None, None), "command"),
        (("c", "job", ["no-such-program-xyz"], None, None), "command"),
        (("c", "job", ["true"], "/no/such/dir", None), "cwd"),
        (("c", "job", ["true"], None, {"DGX_SPARK_TOKEN": "x"}), "env.DGX_SPARK_TOKEN"),
        (("c", "job", ["true"], None, ["A=1"]), "env"),
        (("a\nb", "job", ["true"], None, None), "name"),
    ]
    for args, field in cases:
        with pytest.raises(tpl.SpecError) as caught:
            tpl.build_custom_spec(*args)
        assert caught.value.field == field, args


def test_launch_checks_are_the_validation_library(tmp_path: Path) -> None:
    from dgx_spark.security.validation import InvalidArgument

    assert tpl.SpecError is InvalidArgument  # one error type, one set of checks
    # An argument may hold a tab (exec carries it); NUL never; a name is one line of text.
    spec = tpl.build_custom_spec("c", "job", [sys.executable, "-c", "pass\t"], None, None)
    assert spec.argv[2] == "pass\t"
    # An environment value may span lines (exec carries it); NUL never.
    assert tpl.build_custom_spec("c", "job", ["true"], None, {"DGX_SPARK_USER_X": "a\nb"}, None).env == {
        "DGX_SPARK_USER_X": "a\nb"}
    refusals = [
        (("c", "job", [sys.executable, "-c", "a\x00b"], None, None), "command[2]", "must not contain NUL bytes"),
        (("c", "job", ["true"], None, {"DGX_SPARK_USER_X": "a\x00b"}), "env.DGX_SPARK_USER_X",
         "must not contain NUL bytes"),
        (("a\x1bb", "job", ["true"], None, None), "name", "must not contain newlines or control characters"),
        (("\ud800", "job", ["true"], None, None), "name", "must be valid UTF-8 text (no lone surrogates)"),
        (("x" * 200, "job", ["true"], None, None), "name", "must be at most 128 characters, got 200"),
        (("c", "job", ["true"], None, None, "80"), None, None),
        (("c", "job", ["true"], None, None, "0"), "port", "must be between 1 and 65535, got 0"),
    ]
    for args, field, message in refusals:
        if field is None:
            assert tpl.build_custom_spec(*args, check_port=False).port == 80  # the dialog's digits
            continue
        with pytest.raises(InvalidArgument) as caught:
            tpl.build_custom_spec(*args, check_port=False)
        assert (caught.value.field, caught.value.message) == (field, message), args


def _run_runner(run_dir: Path, argv: list[str], log: Path, max_bytes: int = 1 << 20) -> subprocess.Popen[bytes]:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        run_dir / SPEC_FILE,
        {"argv": argv, "cwd": None, "env": dict(os.environ), "log_path": str(log),
         "log_max_bytes": max_bytes, "log_backups": 2},
    )
    return subprocess.Popen(
        [sys.executable, "-m", "dgx_spark.supervisor.runner", str(run_dir)], cwd=ROOT, start_new_session=True
    )


def test_runner_records_exit_code_and_output(tmp_path: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    runner = _run_runner(tmp_path / "run", [sys.executable, "-c", code], tmp_path / "op.log")
    assert runner.wait(60) == 0
    info = json.loads((tmp_path / "run" / EXIT_FILE).read_text())
    assert info["exit_code"] == 3
    started = json.loads((tmp_path / "run" / RUNNER_FILE).read_text())
    assert started["pid"] > 0 and started["create_time"] > 0
    text = (tmp_path / "op.log").read_text()
    assert "out" in text and "err" in text and "exited: code 3" in text
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_runner_reports_signal_and_missing_program(tmp_path: Path) -> None:
    runner = _run_runner(tmp_path / "a", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "a.log")
    runner_file = tmp_path / "a" / RUNNER_FILE
    info = wait_until(lambda: runner_file.exists() and json.loads(runner_file.read_text()), 30)
    os.killpg(info["pid"], signal.SIGTERM)
    assert runner.wait(60) == 0
    assert json.loads((tmp_path / "a" / EXIT_FILE).read_text())["exit_code"] == -signal.SIGTERM
    runner = _run_runner(tmp_path / "b", ["/no/such/program"], tmp_path / "b.log")
    assert runner.wait(60) == 0
    assert json.loads((tmp_path / "b" / EXIT_FILE).read_text())["exit_code"] == 127


def test_log_rotation_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    writer = oplogs.LogWriter(path, max_bytes=2048, backups=2)
    for i in range(400):
        writer.write(f"\x1b[31mline {i}\x1b[0m\n".encode())
    writer.close()
    assert path.stat().st_size <= 2048
    assert oplogs.backup_path(path, 1).exists() and oplogs.backup_path(path, 2).exists()
    lines, offset, truncated = oplogs.read_tail(path, 5)
    assert lines == [f"line {i}" for i in range(395, 400)] and truncated
    assert offset == path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b"new 1\nnew 2\npartial")
    assert oplogs.read_from(path, offset) == (["new 1", "new 2"], offset + 12)
    whole = b"".join(oplogs.iter_whole(path))
    assert whole.endswith(b"partial") and b"line 399" in whole


def test_send_signal_refuses_protected_and_reused(tmp_path: Path) -> None:
    for pid in (1, os.getpid(), os.getppid()):
        with pytest.raises(SignalRefused):
            send_signal(ProcessIdentity(pid, 0.0), signal.SIGTERM)
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ident = identity_of(proc.pid)
        assert ident is not None
        with pytest.raises(SignalRefused):
            send_signal(ProcessIdentity(proc.pid, ident.create_time - 100), signal.SIGTERM)
        assert proc.poll() is None
        assert send_signal(ident, signal.SIGTERM, group=True)
        assert proc.wait(30) == -signal.SIGTERM
        time.sleep(0)  # the pid is now reaped: a second send reports it gone
        assert send_signal(ident, signal.SIGTERM) is False
    finally:
        if proc.poll() is None:
            proc.kill()
