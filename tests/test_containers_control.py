"""Stop, start and logs of container operations go through the engine (a fake engine on a unix socket)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dgx_spark.collector import containers as ct
from dgx_spark.collector import output
from dgx_spark.collector.model import Container, Operation, Snapshot
from dgx_spark.database import make_engine, migrate
from dgx_spark.supervisor import templates as tpl
from dgx_spark.supervisor.supervisor import ControlError, Supervisor, SupervisorConfig
from tests.support.dashboard import reap_launched, wait_until
from tests.support.fake_engine import FakeContainer, FakeEngine, running_engine

ID = "4981d135c52f9bfeca0071fe5f40f1a660feb3c799e3553d7c955c177ca080d8"
BASE_NS = 1_790_000_000 * 10**9


def container_op(status: str = "running", control: str | None = None) -> Operation:
    """A discovered container operation as the containers probe leaves it."""
    return Operation(
        id="op-4242-170000000000", type="server", name="web", status=status,  # type: ignore[arg-type]
        description="localhost/bb:1", pid=4242, pids=(4242,) if status == "running" else (),
        port=18080, ports=(18080,), ended_at_ts=None if status == "running" else time.time(),
        container=Container(id=ID, name="web", image="localhost/bb:1", engine="docker", control=control),
        port_map=((18080, 8080),),
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeEngine]:
    """A fake engine with one running container ``web``."""
    with running_engine(tmp_path) as fake:
        fake.add(FakeContainer(ID, "web", logs=[(BASE_NS + 1, "stdout", "listening on 8080"),
                                                (BASE_NS + 2, "stderr", "GET / 200 \x1b[32mok\x1b[0m")]))
        yield fake


def make_supervisor(tmp_path: Path, op: Operation, engine: FakeEngine) -> Supervisor:
    """A supervisor whose latest snapshot holds ``op``."""
    db = make_engine(f"sqlite:///{tmp_path / 'data' / 'dgx.db'}")
    migrate(db)
    config = SupervisorConfig(data_dir=tmp_path / "data", base_url="http://127.0.0.1:1", stop_grace=3.0)
    snapshot = Snapshot(sequence=1, taken_at=time.time(), operations=(op,))
    watcher = ct.ContainerWatcher(engine.socket_path)
    watcher.refresh()
    sup = Supervisor(config, db, snapshot=lambda: snapshot, containers=watcher)
    sup.load()
    return sup


def test_stop_goes_through_the_engine_with_the_grace_period(tmp_path: Path, engine: FakeEngine) -> None:
    sup = make_supervisor(tmp_path, container_op(), engine)
    try:
        op = sup.stop("op-4242-170000000000")
        assert op.container is not None and op.container.name == "web"
        wait_until(lambda: not engine.containers[ID].running, 30.0, message="the engine was not asked to stop it")
        assert ("POST", f"/containers/{ID}/stop?t=3") in engine.requests
    finally:
        sup.close()
        reap_launched(tmp_path / "data")


def test_kill_stops_with_no_grace_and_int_asks_for_sigint(tmp_path: Path, engine: FakeEngine) -> None:
    sup = make_supervisor(tmp_path, container_op(), engine)
    try:
        sup.stop("op-4242-170000000000", force=True)
        wait_until(lambda: ("POST", f"/containers/{ID}/stop?t=0") in engine.requests, 30.0)
        engine.containers[ID].running = True
        sup.stop("op-4242-170000000000", signal_name="int")
        wait_until(lambda: ("POST", f"/containers/{ID}/stop?t=3&signal=SIGINT") in engine.requests, 30.0)
    finally:
        sup.close()


def test_no_access_says_why_and_asks_nothing(tmp_path: Path, engine: FakeEngine) -> None:
    reason = "containers: not visible (no access to /var/run/docker.sock)"
    sup = make_supervisor(tmp_path, container_op(control=reason), engine)
    try:
        count = len(engine.requests)
        with pytest.raises(ControlError) as refused:
            sup.stop("op-4242-170000000000")
        assert refused.value.kind == "forbidden"
        assert refused.value.message == f"container web cannot be controlled here: {reason}"
        assert len(engine.requests) == count
        assert isinstance(sup.find_log("op-4242-170000000000"), output.ProcessOutput | type(None))
    finally:
        sup.close()


def test_stopped_or_gone_container(tmp_path: Path, engine: FakeEngine) -> None:
    sup = make_supervisor(tmp_path, container_op(), engine)
    try:
        engine.containers[ID].running = False
        with pytest.raises(ControlError) as stopped:
            sup.stop("op-4242-170000000000")
        assert (stopped.value.kind, stopped.value.message) == ("conflict", "container web is not running")
        del engine.containers[ID]
        with pytest.raises(ControlError) as gone:
            sup.stop("op-4242-170000000000")
        assert (gone.value.kind, gone.value.message) == ("conflict", "container web no longer exists")
    finally:
        sup.close()


def test_start_again_starts_the_stopped_container(tmp_path: Path, engine: FakeEngine) -> None:
    engine.containers[ID].running = False
    sup = make_supervisor(tmp_path, container_op(status="stopped"), engine)
    try:
        sup.start_again("op-4242-170000000000")
        assert engine.containers[ID].running
        assert ("POST", f"/containers/{ID}/start") in engine.requests
        with pytest.raises(ControlError) as again:
            sup.start_again("op-4242-170000000000")
        assert (again.value.kind, again.value.message) == ("conflict", "container web is already running")
    finally:
        sup.close()


def test_logs_come_from_the_engine_and_follow_by_time(tmp_path: Path, engine: FakeEngine) -> None:
    sup = make_supervisor(tmp_path, container_op(), engine)
    try:
        source = sup.find_log("op-4242-170000000000")
        assert isinstance(source, ct.ContainerOutput)
        assert output.needs_token(source)  # the engine's logs are shown only with the token
        assert output.log_source(source.key, source.watcher) == source
        read = output.read_tail(source, 10)
        assert read is not None
        lines, offset, truncated = read
        assert lines == ["listening on 8080", "GET / 200 ok"]  # ANSI codes stripped like any log
        assert (offset, truncated) == (BASE_NS + 2, False)
        assert output.read_from(source, offset) == ([], offset)
        engine.containers[ID].logs.append((BASE_NS + 3, "stdout", "GET /favicon.ico 404"))
        assert output.read_from(source, offset) == (["GET /favicon.ico 404"], BASE_NS + 3)
        assert output.size_of(source) == BASE_NS + 3
    finally:
        sup.close()


# ------------------------------------------------------------------------------ launch templates
def _container_template(engine: str) -> tpl.Template:
    return next(t for t in tpl.BUILTIN_TEMPLATES if t.name == f"{engine}-run")


def test_docker_template_argv_with_gpus_ports_volumes(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker (the client) is not on PATH: the template checks its program exists")
    spec = tpl.build_spec(_container_template("docker"), "My Web", {
        "image": "nginx:1", "port": 18081, "container_port": 80, "volumes": [f"{tmp_path}:/data:ro"],
        "gpus": [0, 1], "env": {"HF_TOKEN": "hf_secret"},
    }, check_port=False)
    assert list(spec.argv) == [
        "docker", "run", "--rm", "--init", "--name", "dgx-spark-my-web", "--gpus", '"device=0,1"',
        "-p", "127.0.0.1:18081:80", "-v", f"{tmp_path}:/data:ro", "-e", "HF_TOKEN", "nginx:1",
    ]
    # The secret passes through the client's environment, never its command line; no CUDA_VISIBLE_DEVICES.
    assert spec.env == {"HF_TOKEN": "hf_secret"}
    assert spec.params["container_name"] == "dgx-spark-my-web" and "gpu_flags" not in spec.params
    assert spec.type == "server" and spec.port == 18081


def test_podman_template_uses_cdi_devices_and_checks_fields(tmp_path: Path) -> None:
    template = _container_template("podman")
    spec = tpl.build_spec(template, None, {"image": "localhost/bb:1", "port": 18082, "container_port": 8080,
                                           "container_name": "web", "args": "/bin/busybox httpd -f -p 8080"},
                          check_port=False)
    assert list(spec.argv) == [
        "podman", "run", "--rm", "--init", "--name", "web", "--device", "nvidia.com/gpu=all",
        "-p", "127.0.0.1:18082:8080", "localhost/bb:1", "/bin/busybox", "httpd", "-f", "-p", "8080",
    ]
    two = tpl.build_spec(template, None, {"image": "x", "gpus": "0,1"}, check_port=False)
    assert two.argv[6:10] == ("--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1")
    none = tpl.build_spec(template, None, {"image": "x", "gpu": "none"}, check_port=False)
    assert "--device" not in none.argv
    bad = [
        ({"image": "x", "volumes": ["relative:/data"]}, "params.volumes[0]"),
        ({"image": "x", "volumes": [f"{tmp_path}:data"]}, "params.volumes[0]"),
        ({"image": "x", "volumes": [f"{tmp_path}:/data:rx"]}, "params.volumes[0]"),
        ({"image": "x", "volumes": ["/nonexistent/dir:/data"]}, "params.volumes[0]"),
        ({"image": "x", "container_name": "../etc"}, "params.container_name"),
        ({"image": "x", "gpu": "none", "gpus": [0]}, "params.gpus"),
        ({"image": "x", "gpu": "some"}, "params.gpu"),
        ({}, "params.image"),
    ]
    for params, field in bad:
        with pytest.raises(tpl.SpecError) as refused:
            tpl.build_spec(template, None, params, check_port=False)
        assert refused.value.field == field, params
    assert template.to_api()["engine"] == "podman"


def test_container_templates_in_the_dialog_typed_fields_and_preview(tmp_path: Path) -> None:
    """The New Operation dialog's text fields become the same request, and its preview is the whole argv."""
    from dgx_spark.state.control import _param_rows, request_body

    template = _container_template("podman")
    rows = {row["name"]: row for row in _param_rows(template)}
    assert {name: row["kind"] for name, row in rows.items()} == {
        "image": "string", "container_name": "string", "port": "port", "container_port": "port", "gpu": "choice",
        "gpus": "gpus", "volumes": "args", "env": "env", "args": "args"}
    values = {name: row["default"] for name, row in rows.items()} | {
        "image": "localhost/bb:1", "port": "18083", "container_port": "8080", "gpus": "0",
        "volumes": f"{tmp_path}:/data:ro", "env": "HF_TOKEN=hf_secret", "args": "/bin/busybox httpd -f -p 8080"}
    body = request_body("podman-run", "Web", values)
    spec = tpl.build_spec(template, body["name"], body["params"], check_port=False)
    assert spec.display == (
        "podman run --rm --init --name dgx-spark-web --device nvidia.com/gpu=0 -p 127.0.0.1:18083:8080 "
        f"-v {tmp_path}:/data:ro -e HF_TOKEN localhost/bb:1 /bin/busybox httpd -f -p 8080")
    assert "hf_secret" not in spec.display and spec.env == {"HF_TOKEN": "hf_secret"}
    with pytest.raises(tpl.SpecError) as refused:  # a field the dialog shows inline
        body = request_body("podman-run", "Web", values | {"volumes": "relative:/data"})
        tpl.build_spec(template, body["name"], body["params"], check_port=False)
    assert refused.value.field == "params.volumes[0]"
