"""Containers: cgroup attribution (table-driven), the engine client against a fake engine on a
unix socket, the watcher and probe, and a real server in its own network namespace."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dgx_spark.collector import containers as ct
from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.model import Container, Operation
from dgx_spark.collector.rules import build_table
from dgx_spark.collector.sampler import SampleContext
from dgx_spark.collector.service_probes import service_kind
from tests.support import other_user, workloads
from tests.support.dashboard import Dashboard, wait_until
from tests.support.fake_engine import FakeContainer, running_engine

ID = "4981d135c52f9bfeca0071fe5f40f1a660feb3c799e3553d7c955c177ca080d8"
ID2 = "a" * 64
POD = "pod5a0f6c3e_1a2b_4c3d_9e8f_0123456789ab"

CGROUPS: list[tuple[str, str, tuple[str, str] | None]] = [
    # (case, /proc/<pid>/cgroup text, (id, runtime) or None)
    ("docker cgroupfs v1", f"12:memory:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n1:name=systemd:/docker/{ID}\n",
     (ID, "docker")),
    ("docker systemd v2", f"0::/system.slice/docker-{ID}.scope\n", (ID, "docker")),
    ("docker systemd v1 hybrid", f"4:memory:/system.slice/docker-{ID}.scope\n0::/system.slice/docker-{ID}.scope\n",
     (ID, "docker")),
    ("podman rootful cgroupfs (seen here)",
     f"9:name=systemd:/libpod_parent/libpod-{ID}\n4:memory:/libpod_parent/libpod-{ID}\n0::/libpod_parent/libpod-{ID}\n",
     (ID, "podman")),
    ("podman systemd v2", f"0::/machine.slice/libpod-{ID}.scope\n", (ID, "podman")),
    ("podman rootless, inner cgroup",
     f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n", (ID, "podman")),
    ("podman's conmon is not the container", f"0::/machine.slice/libpod-conmon-{ID}.scope\n", None),
    ("containerd (nerdctl)", f"0::/system.slice/nerdctl-{ID}.scope\n", (ID, "containerd")),
    ("containerd CRI outside kubepods", f"0::/system.slice/cri-containerd-{ID}.scope\n", (ID, "containerd")),
    ("kubernetes systemd + containerd",
     f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD}.slice/cri-containerd-{ID}.scope\n",
     (ID, "kubernetes")),
    ("kubernetes systemd + cri-o",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{POD}.slice/crio-{ID}.scope\n",
     (ID, "kubernetes")),
    ("kubernetes cgroupfs v1",
     f"11:memory:/kubepods/besteffort/pod5a0f6c3e-1a2b-4c3d-9e8f-0123456789ab/{ID}\n", (ID, "kubernetes")),
    ("kubernetes guaranteed cgroupfs v2", f"0::/kubepods/pod5a0f6c3e-1a2b-4c3d-9e8f-0123456789ab/{ID}\n",
     (ID, "kubernetes")),
    ("cri-o's conmon", f"0::/kubepods.slice/crio-conmon-{ID}.scope\n", None),
    ("host user session", "0::/user.slice/user-1000.slice/session-3.scope\n", None),
    ("host root", "0::/\n", None),
    ("host v1 (this sandbox)", "4:memory:/process_api/df074a016016f5324276bf9a13da5eaf\n1:cpu:/\n0::/\n", None),
    ("docker service itself", "0::/system.slice/docker.service\n", None),
    ("short id is not a container", "0::/docker/4981d135c52f\n", None),
    ("empty", "", None),
]


@pytest.mark.parametrize(("text", "expected"), [(text, exp) for _c, text, exp in CGROUPS],
                         ids=[case for case, _t, _e in CGROUPS])
def test_container_from_cgroup(text: str, expected: tuple[str, str] | None) -> None:
    found = ct.container_from_cgroup(text)
    assert (None if found is None else (found.id, found.runtime)) == expected


def test_this_process_is_in_no_container() -> None:
    assert ct.read_container(os.getpid()) is None
    assert ct.read_container(2**22 + 12345) is None  # no such process: None, no crash


# ------------------------------------------------------------------------------ the engine client
def test_engine_client_speaks_the_api_subset(tmp_path: Path) -> None:
    with running_engine(tmp_path, "podman") as engine:
        engine.add(FakeContainer(ID, "web", image="localhost/bb:1",
                                 ports=[{"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 18080, "Type": "tcp"}]))
        client = ct.EngineClient(engine.socket_path)
        assert ct.engine_of(client.version(), engine.socket_path) == "podman"
        items = client.containers()
        info = ct.info_from_list_item(items[0], "podman")
        assert info is not None
        assert (info.id, info.name, info.image, info.engine) == (ID, "web", "localhost/bb:1", "podman")
        assert info.labels == {"app": "test"}
        assert info.host_port(8080) == 18080 and info.host_port(9999) is None
        assert client.inspect(ID)["State"]["Running"] is True
        # docker stop semantics: the grace period goes as t=; a second stop is a 304.
        assert client.stop(ID, 7) is True
        assert ("POST", f"/containers/{ID}/stop?t=7") in engine.requests
        assert client.stop(ID, 7) is False
        assert client.start(ID) is True and client.start(ID) is False
        with pytest.raises(ct.EngineError) as missing:
            client.stop(ID2, 1)
        assert missing.value.status == 404 and "No such container" in missing.value.message
        # Only hex ids go into a path: a name from elsewhere is refused before any request.
        count = len(engine.requests)
        with pytest.raises(ct.EngineError) as bad:
            client.stop("../../version", 1)
        assert bad.value.status == 400 and len(engine.requests) == count


def test_engine_text_that_is_not_utf8_is_cleaned_as_it_is_read(tmp_path: Path) -> None:
    """A name or label with a lone surrogate (the JSON escape "\\ud800") is shown and stored with U+FFFD."""
    with running_engine(tmp_path, "docker") as engine:
        engine.add(FakeContainer(ID, "web\ud800"))
        client = ct.EngineClient(engine.socket_path)
        info = ct.info_from_list_item(client.containers()[0], "docker")
    assert info is not None and info.name == "web\ufffd"


def test_engine_labels_are_capped() -> None:
    item = {"Id": ID, "Names": ["/web"], "Image": "x",
            "Labels": {f"k{n:03d}": "v" * 1000 for n in range(100)} | {"z" * 300: 7}}
    info = ct.info_from_list_item(item, "docker")
    assert info is not None
    assert len(info.labels) == ct.MAX_LABELS and min(info.labels) == "k000"
    assert all(len(value) == 512 for value in info.labels.values())
    assert ct.info_from_list_item({"Id": ID, "Labels": "junk"}, "docker").labels == {}  # type: ignore[union-attr]


def test_engine_logs_multiplexed_and_tty(tmp_path: Path) -> None:
    base = 1_790_000_000 * 10**9
    with running_engine(tmp_path) as engine:
        box = engine.add(FakeContainer(ID, "job", logs=[
            (base + 1, "stdout", "epoch 1/3"), (base + 2, "stderr", "warning: slow"), (base + 3, "stdout", "epoch 2/3"),
        ]))
        client = ct.EngineClient(engine.socket_path)
        lines = client.logs(ID, tail=10)
        assert [(line.stream, line.text) for line in lines] == [
            ("stdout", "epoch 1/3"), ("stderr", "warning: slow"), ("stdout", "epoch 2/3")]
        assert lines[-1].at_ns == base + 3
        assert [line.text for line in client.logs(ID, tail=1)] == ["epoch 2/3"]
        # Following: only what came after the last line seen.
        box.logs.append((base + 4, "stdout", "epoch 3/3"))
        assert [line.text for line in client.logs(ID, since_ns=base + 3)] == ["epoch 3/3"]
        box.tty = True  # a TTY container's log is one raw stream
        assert [line.text for line in client.logs(ID, tail=2)] == ["epoch 2/3", "epoch 3/3"]


def test_engine_broken_and_slow_answers(tmp_path: Path) -> None:
    with running_engine(tmp_path) as engine:
        engine.broken = True
        client = ct.EngineClient(engine.socket_path, timeout=0.5)
        with pytest.raises(ct.EngineError) as broken:
            client.containers()
        assert broken.value.status == 502
        engine.broken, engine.delay = False, 3.0
        with pytest.raises(ct.EngineError) as slow:
            client.containers()
        assert slow.value.status == 0  # no answer in time


# ------------------------------------------------------------------------------ the watcher
def test_watcher_sees_the_engine_and_says_why_not(tmp_path: Path) -> None:
    missing = ct.ContainerWatcher(str(tmp_path / "none.sock"))
    missing.refresh()
    status = missing.status()
    assert status["visible"] is False and status["engine"] is None
    assert status["reason"] == f"no engine socket at {tmp_path / 'none.sock'}"
    assert missing.controllable() == (False, f"containers: not visible (no engine socket at {tmp_path / 'none.sock'})")
    with pytest.raises(ct.EngineError) as refused:
        missing.client()
    assert refused.value.status == 503
    missing.stop()

    defaults = ct.ContainerWatcher(candidates=(("/nonexistent/docker.sock", "docker"), ("/nonexistent/podman.sock", "podman")))
    defaults._host = None  # as when DGX_SPARK_DOCKER_HOST is unset
    defaults.refresh()
    assert defaults.status()["reason"] == "no engine socket at /nonexistent/docker.sock or /nonexistent/podman.sock"
    assert ct.header_line(defaults.status()) == (
        "containers: not visible (no engine socket at /nonexistent/docker.sock or /nonexistent/podman.sock)")

    bad = ct.ContainerWatcher("tcp://10.0.0.1:2375")
    bad.refresh()
    assert "unix:///path/to/socket" in bad.status()["reason"]

    with running_engine(tmp_path) as engine:
        engine.add(FakeContainer(ID, "web"))
        watcher = ct.ContainerWatcher(f"unix://{engine.socket_path}")
        watcher.refresh()
        assert watcher.status()["visible"] is True and watcher.status()["engine"] == "docker"
        assert watcher.controllable() == (True, None)
        assert ct.header_line(watcher.status()) is None
        info = watcher.lookup(ID)
        assert info is not None and info.name == "web"
        watcher.stop()


def test_a_users_rootless_podman_socket_is_tried_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ct.default_sockets(1000) == (("/var/run/docker.sock", "docker"), ("/run/podman/podman.sock", "podman"),
                                        ("/run/user/1000/podman/podman.sock", "podman"))
    assert ct.default_sockets()[-1][0] == f"/run/user/{os.geteuid()}/podman/podman.sock"
    with running_engine(tmp_path, "podman") as engine:
        engine.add(FakeContainer(ID, "web"))
        # Neither root-owned socket exists; the user's own Podman socket (here the fake's) does.
        monkeypatch.setattr(ct, "DEFAULT_SOCKETS", ((str(tmp_path / "docker.sock"), "docker"),))
        monkeypatch.setattr(ct, "ROOTLESS_PODMAN_SOCKET", engine.socket_path.replace("{", "{{").replace("}", "}}"))
        watcher = ct.ContainerWatcher()
        watcher.refresh()
        assert (watcher.status()["visible"], watcher.status()["engine"]) == (True, "podman")
        assert watcher.status()["socket"] == engine.socket_path
        info = watcher.lookup(ID)
        assert info is not None and info.name == "web"
        watcher.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the socket to another user needs root")
def test_another_users_socket_is_not_used(tmp_path: Path) -> None:
    with running_engine(tmp_path) as engine:
        os.chown(engine.socket_path, 65534, 65534)
        watcher = ct.ContainerWatcher(engine.socket_path)
        watcher.refresh()
        assert watcher.status()["visible"] is False
        assert "belongs to another user (uid 65534)" in watcher.status()["reason"]
        assert engine.requests == []


def _container_op(port_map: tuple[tuple[int | None, int], ...]) -> Operation:
    inner = tuple(sorted(p for _h, p in port_map))
    return Operation(id="op-4242-1", type="server", name="busybox", status="running", description="busybox httpd",
                     pid=4242, pids=(4242,), port=inner[0] if inner else None, ports=inner,
                     container=Container(id=ID, engine="podman"), port_map=port_map)


def test_probe_names_the_container_and_maps_ports(tmp_path: Path) -> None:
    with running_engine(tmp_path, "podman") as engine:
        engine.add(FakeContainer(ID, "web", image="localhost/bb:1", ports=[
            {"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 18080, "Type": "tcp"},
            {"IP": "127.0.0.1", "PrivatePort": 5353, "PublicPort": 15353, "Type": "udp"},
        ]))
        watcher = ct.ContainerWatcher(engine.socket_path)
        watcher.refresh()
        probe = ct.ContainersProbe(watcher)
        ctx = SampleContext(now=time.time(), operations=[_container_op(((None, 8080), (None, 9000)))])
        probe.sample(ctx)
        op = ctx.operations[0]
        assert (op.name, op.description, op.port, op.ports) == ("web", "localhost/bb:1", 18080, (9000, 18080))
        api = op.to_api(time.time())
        assert api["ports"] == [{"host": 18080, "container": 8080}, {"host": None, "container": 9000}]
        assert api["port"] == 18080
        assert api["container"] == {"id": ID, "name": "web", "image": "localhost/bb:1", "engine": "podman",
                                    "labels": {"app": "test"}, "controllable": True, "reason": None}
        assert ctx.containers is not None
        assert ctx.containers.to_api() == {"visible": True, "engine": "podman", "reason": None}
        watcher.stop()


def test_probe_without_engine_keeps_what_proc_tells(tmp_path: Path) -> None:
    watcher = ct.ContainerWatcher(str(tmp_path / "docker.sock"))
    watcher.refresh()
    ctx = SampleContext(now=time.time(), operations=[_container_op(((None, 8080),))])
    ct.ContainersProbe(watcher).sample(ctx)
    api = ctx.operations[0].to_api(time.time())
    assert (api["name"], api["port"]) == ("busybox", 8080)
    assert api["ports"] == [{"host": None, "container": 8080}]
    assert api["container"]["controllable"] is False
    assert api["container"]["labels"] is None  # the engine does not list it: its labels are not known
    assert api["container"]["reason"] == f"containers: not visible (no engine socket at {tmp_path / 'docker.sock'})"
    assert ctx.containers is not None and ctx.containers.visible is False
    watcher.stop()


def test_a_slow_engine_never_stalls_the_probe(tmp_path: Path) -> None:
    with running_engine(tmp_path) as engine:
        engine.delay = 30.0  # slower than any sample
        watcher = ct.ContainerWatcher(engine.socket_path, timeout=60.0)
        probe = ct.ContainersProbe(watcher)
        ctx = SampleContext(now=time.time(), operations=[_container_op(((None, 8080),))])
        probe.sample(ctx)  # starts the watcher; its listing is still waiting on the engine
        wait_until(lambda: engine.requests, 30.0, message="the watcher never asked the engine")
        probe.sample(ctx)
        assert watcher.listings == 0  # both samples returned while the engine was still answering
        assert ctx.containers is not None and ctx.containers.visible is False
        engine.delay = 0.0
        watcher.stop(timeout=0.1)


# ------------------------------------------------------------------------------ another network namespace
def _can_unshare_net() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    if os.geteuid() != 0:
        return "unshare --net needs root"
    return None


@pytest.mark.skipif(_can_unshare_net() is not None, reason=str(_can_unshare_net()))
def test_server_in_its_own_network_namespace_is_listed_with_its_port(tmp_path: Path) -> None:
    port = workloads.free_port()
    argv = ["unshare", "--net", sys.executable, "-m", "http.server", str(port), "--bind", "0.0.0.0"]
    discovery = Discovery(build_table(), min_age=0.0)
    with workloads.spawn(argv, tmp_path, wait=False) as server:
        # unshare execs the server: same pid. Its socket is invisible to a host-wide scan.
        operation = wait_until(
            lambda: next((op for op in discovery(time.time()) if op.pid == server.pid and op.port == port), None),
            30.0, message="the server in its own network namespace was not listed with its port",
        )
        assert operation.type == "server"
        assert operation.ports == (port,)
        assert operation.container is None
        assert operation.to_api(time.time())["ports"] == [port]
        with socket.socket() as probe:  # nothing on the host's side answers on that port
            probe.settimeout(1.0)
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_fold_puts_a_containers_processes_under_one_root() -> None:
    from dgx_spark.collector.containers import CgroupContainer
    from dgx_spark.collector.discovery import _fold_containers, _Known
    from dgx_spark.collector.rules import ProcessFacts, shape_of

    def known(pid: int, start: int, container: str | None) -> _Known:
        facts = ProcessFacts(pid=pid, argv=("x",))
        entry = _Known(facts, shape_of(facts), None, float(start))
        entry.key = (str(pid).encode(), str(start).encode())
        entry.container = CgroupContainer(container, "docker") if container else None
        return entry

    # 10 conmon-like host parent -> 11 container init -> 12 its child; 20 a `docker exec` (parent absent).
    fields = {10: b"1", 11: b"10", 12: b"11", 20: b"99", 30: b"1"}
    table = {10: None, 11: ID, 12: ID, 20: ID, 30: None}
    entries = {str(pid).encode(): (known(pid, pid, cid), [b"S", fields[pid]]) for pid, cid in table.items()}
    children = {b"10": [b"11"], b"11": [b"12"]}
    roots = _fold_containers(entries, children, [b"10", b"20", b"30"])
    assert sorted(roots) == [b"10", b"11", b"30"]
    assert children == {b"10": [], b"11": [b"12", b"20"]}


def test_watcher_thread_stops(tmp_path: Path) -> None:
    watcher = ct.ContainerWatcher(str(tmp_path / "none.sock"), refresh=0.05)
    watcher.start()
    names = {thread.name for thread in threading.enumerate()}
    assert "dgx-spark-containers" in names
    watcher.stop()
    assert watcher._thread is None


def test_no_access_to_the_socket_is_said(tmp_path: Path) -> None:
    missing = tmp_path / "docker.sock"
    with Dashboard(tmp_path / "data", env={"DGX_SPARK_DOCKER_HOST": str(missing)}) as dashboard:
        system = wait_until(
            lambda: (c := dashboard.get_json("/api/dgx/system")["data"]["containers"])["reason"] != "not checked yet" and c,
            60.0,
        )
        assert system == {"visible": False, "engine": None, "reason": f"no engine socket at {missing}"}


# ------------------------------------------------------------------------------ what the page shows
def test_the_card_opens_the_host_port_and_says_why_there_is_no_control(tmp_path: Path) -> None:
    from dgx_spark.state.view import operation_view

    with running_engine(tmp_path, "podman") as engine:
        engine.add(FakeContainer(ID, "comfy", image="yanwk/comfyui-boot:cu124", ports=[
            {"IP": "127.0.0.1", "PrivatePort": 8188, "PublicPort": 9188, "Type": "tcp"}]))
        watcher = ct.ContainerWatcher(engine.socket_path)
        watcher.refresh()
        ctx = SampleContext(now=time.time(), operations=[_container_op(((None, 8188),))])
        ct.ContainersProbe(watcher).sample(ctx)
        watcher.stop()
    view = operation_view(ctx.operations[0], time.time(), host="spark.local")
    assert (view.port, view.url) == (9188, "http://spark.local:9188")  # the published host port, not 8188
    assert (view.container_text, view.container_control) == ("podman container comfy", "")

    blind = ct.ContainerWatcher(str(tmp_path / "docker.sock"))
    blind.refresh()
    ctx = SampleContext(now=time.time(), operations=[_container_op(((None, 8188),))])
    ct.ContainersProbe(blind).sample(ctx)
    view = operation_view(ctx.operations[0], time.time())
    assert view.container_text == f"podman container {ID[:12]}"
    assert view.container_control == f"containers: not visible (no engine socket at {tmp_path / 'docker.sock'})"
    blind.stop()


def test_the_system_header_says_containers_are_not_visible() -> None:
    from dgx_spark.collector.facts import ContainersFacts, SystemFacts
    from dgx_spark.state.system import system_view

    blind = ContainersFacts(visible=False, engine=None, reason="no access to /var/run/docker.sock")
    assert system_view(SystemFacts(containers=blind)).containers_text == (
        "containers: not visible (no access to /var/run/docker.sock)")
    seen = ContainersFacts(visible=True, engine="docker", reason=None)
    assert system_view(SystemFacts(containers=seen)).containers_text == ""
    assert system_view(SystemFacts(containers=ContainersFacts())).containers_text == ""  # not checked yet


# ------------------------------------------------------------------------------ a real cgroup
@contextlib.contextmanager
def _container_cgroup(cid: str) -> Iterator[Path | None]:
    """A real cgroup ``.../docker/<cid>`` (cgroupfs layout) to move processes into; None when none can be made."""
    bases = [Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")]
    for base in bases:
        if not (base / "cgroup.procs").exists():
            continue
        top = base / f"dgx-spark-test-{os.getpid()}"
        folder = top / "docker" / cid
        try:
            folder.mkdir(parents=True)
        except OSError:
            continue
        try:
            yield folder
        finally:
            with contextlib.suppress(AssertionError):  # killed processes leave once reaped
                wait_until(lambda: not (folder / "cgroup.procs").read_text().strip(), 30.0)  # noqa: B023
            for path in (folder, folder.parent, top):
                with contextlib.suppress(OSError):
                    path.rmdir()
        return
    yield None


@pytest.mark.skipif(os.geteuid() != 0, reason="making a cgroup and moving processes into it needs root")
def test_a_containers_processes_are_one_operation_classified_by_what_runs_inside(tmp_path: Path) -> None:
    """Two unrelated real processes in one container's cgroup: one operation, named by the rules, then by the engine."""
    from tests.support.fake_servers import launcher_script

    script = launcher_script(tmp_path / "ComfyUI", "main.py")
    port = workloads.free_port()
    env = {"FAKE_KIND": "comfyui", "FAKE_PORT": str(port)}
    with _container_cgroup(ID2) as cgroup:
        if cgroup is None:
            pytest.skip("no cgroup hierarchy here lets a test make a cgroup")
        argv = [sys.executable, str(script), "--listen", "127.0.0.1", "--port", str(port)]
        with workloads.spawn(argv, tmp_path, port=port, script=script, env=env) as comfy, \
                workloads.spawn(["sleep", "600"], tmp_path, wait=False) as helper:
            for pid in (comfy.pid, helper.pid):  # like a `docker exec`: not a child of the server
                (cgroup / "cgroup.procs").write_text(f"{pid}\n")
            assert ct.read_container(comfy.pid) == ct.CgroupContainer(ID2, "docker")
            discovery = Discovery(build_table(), min_age=0.0)
            op = wait_until(
                lambda: next((o for o in discovery(time.time()) if o.container is not None
                              and o.container.id == ID2 and helper.pid in o.pids and o.port == port), None),
                30.0, message="the container's processes were not one operation with its port",
            )
            others = [o for o in discovery(time.time()) if comfy.pid in o.pids or helper.pid in o.pids]
            assert [o.id for o in others] == [op.id]  # one container, one operation
            assert (op.type, op.name, op.pid) == ("server", "ComfyUI", comfy.pid)  # the rules, inside
            assert op.container == Container(id=ID2, engine="docker")  # what /proc tells, no engine yet
            with running_engine(tmp_path, "docker") as engine:
                engine.add(FakeContainer(ID2, "comfy-box", image="yanwk/comfyui-boot:cu124", ports=[
                    {"IP": "127.0.0.1", "PrivatePort": port, "PublicPort": port, "Type": "tcp"}]))
                watcher = ct.ContainerWatcher(engine.socket_path)
                watcher.refresh()
                ctx = SampleContext(now=time.time(), operations=[op])
                ct.ContainersProbe(watcher).sample(ctx)
                watcher.stop()
            named = ctx.operations[0]
            assert (named.type, named.name, named.description, named.port) == (
                "server", "comfy-box", "yanwk/comfyui-boot:cu124", port)
            assert service_kind(named) == "comfyui"  # what it serves is still read, as ComfyUI's


_WATCH_AS_OTHER_USER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from dgx_spark.collector import containers as ct
watcher = ct.ContainerWatcher(sys.argv[2])
watcher.refresh()
print(json.dumps({"status": watcher.status(), "header": ct.header_line(watcher.status())}))
"""


@pytest.mark.skipif(other_user.unavailable_reason() is not None, reason=str(other_user.unavailable_reason()))
def test_a_dashboard_without_access_to_the_socket_says_so() -> None:
    """A dashboard run by a user who may not open root's 0600 engine socket: not visible, with why."""
    folder = Path(tempfile.mkdtemp(prefix="dgx-spark-sock-"))
    try:
        folder.chmod(0o755)
        path = folder / "docker.sock"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            path.chmod(0o600)
            root = str(Path(__file__).resolve().parents[1])
            done = other_user.run_as_other_user(_WATCH_AS_OTHER_USER, root, str(path))
            seen = json.loads(done.stdout)
            assert (seen["status"]["visible"], seen["status"]["engine"]) == (False, None)
            assert seen["status"]["reason"] == f"no access to {path}"
            assert seen["header"] == f"containers: not visible (no access to {path})"
            folder.chmod(0o700)  # not even its folder can be looked into
            seen = json.loads(other_user.run_as_other_user(_WATCH_AS_OTHER_USER, root, str(path)).stdout)
            assert seen["header"] == f"containers: not visible (no access to {path} (Permission denied))"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
