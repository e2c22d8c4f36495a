"""End to end with a real container engine: Debian's podman (rootful, runc, vfs storage, no registry).

A busybox httpd container published on a loopback port shows as ONE server operation named
after the container, with the host port; Stop through the API stops the container.
``make setup-dev`` installs podman, runc and busybox-static (scripts/ensure_podman.sh);
without them, or without root, the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until

IMAGE = "localhost/dgx-spark-busybox:1"
NAME = "dgx-spark-e2e-web"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "rootful podman needs root"
    for program in ("podman", "runc"):
        if shutil.which(program) is None:
            return f"{program} is not installed (scripts/ensure_podman.sh installs it as root)"
    if not Path("/bin/busybox").exists():
        return "busybox-static is not installed (scripts/ensure_podman.sh installs it as root)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


class Podman:
    """podman with its own storage under a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        conf = folder / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")  # crun/runc may not set RLIMIT_NPROC here
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.base = [
            "podman", "--root", str(folder / "storage"), "--runroot", str(folder / "run"),
            "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
        ]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one podman command."""
        return subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, timeout=120,
                              check=check)

    def running(self, name: str) -> bool | None:
        """Whether the container runs (None when it does not exist)."""
        done = self("inspect", name, check=False)
        if done.returncode != 0:
            return None
        return bool(json.loads(done.stdout)[0]["State"]["Running"])


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Podman, Path]]:
    """podman with a local busybox image, and its Docker-compatible API on a socket of its own."""
    folder = tmp_path_factory.mktemp("podman")
    engine = Podman(folder)
    rootfs = folder / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        info = tarfile.TarInfo("tmp")
        info.type, info.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(info)
    engine("import", str(rootfs), IMAGE)
    sock = folder / "podman.sock"
    service = subprocess.Popen(
        [*engine.base, "system", "service", "--time=0", f"unix://{sock}"], env=engine.env,
        stdout=subprocess.DEVNULL, stderr=open(folder / "service.log", "wb"),  # noqa: SIM115 - owned by the child
        start_new_session=True,
    )
    try:
        wait_until(sock.exists, 60.0, message="podman's API socket did not appear")
        yield engine, sock
    finally:
        engine("rm", "-f", "-t", "0", NAME, check=False)
        workloads.kill_group(service)  # type: ignore[arg-type]
        engine("system", "reset", "--force", check=False)
        shutil.rmtree(folder / "storage", ignore_errors=True)


def container_ops(dashboard: Dashboard, name: str) -> list[dict[str, Any]]:
    """Live operations that the API says run in container ``name``."""
    return [
        op for op in dashboard.operations()
        if (op.get("container") or {}).get("name") == name and op["status"] not in ("stopped", "failed")
    ]


def test_busybox_container_is_one_server_named_after_it_and_stops(
    podman: tuple[Podman, Path], tmp_path: Path,
) -> None:
    engine, sock = podman
    host_port = workloads.free_port()
    engine("run", "-d", "--name", NAME, "--label", "dgx-spark.test=e2e", "-p", f"127.0.0.1:{host_port}:8080", IMAGE,
           "/bin/busybox", "httpd", "-f", "-p", "8080")
    cid = json.loads(engine("inspect", NAME).stdout)[0]["Id"]
    env = {"DGX_SPARK_DOCKER_HOST": f"unix://{sock}", "DGX_SPARK_STOP_GRACE_SECONDS": "2"}
    with Dashboard(tmp_path / "data", env=env) as dashboard:
        op = wait_until(
            lambda: (found := container_ops(dashboard, NAME)) and found[0]["port"] == host_port and found[0],
            60.0, message="the container was not listed as a server with its host port",
        )
        assert len(container_ops(dashboard, NAME)) == 1  # one container, one operation
        assert [o for o in dashboard.operations() if (o.get("container") or {}).get("id") == cid] == [op]
        assert (op["type"], op["name"], op["description"]) == ("server", NAME, IMAGE)
        assert op["ports"] == [{"host": host_port, "container": 8080}]
        assert op["container"] == {"id": cid, "name": NAME, "image": IMAGE, "engine": "podman",
                                   "labels": {"dgx-spark.test": "e2e"}, "controllable": True, "reason": None}
        system = dashboard.get_json("/api/dgx/system")["data"]["containers"]
        assert system == {"visible": True, "engine": "podman", "reason": None}

        status, body = dashboard.authed("POST", f"/api/dgx/operations/{op['id']}/stop", {})
        assert status == 200, body
        wait_until(lambda: engine.running(NAME) is False, 60.0, message="the container was not stopped")
        wait_until(lambda: not container_ops(dashboard, NAME), 60.0, message="the container's operation did not end")
        # Listed as ended (or only counted, when it lived under 30 s): never as a failure.
        ended = [o for o in dashboard.operations() if o["id"] == op["id"]]
        assert all(o["outcome"] == "stopped" for o in ended), ended

        # Start again goes through the engine too: the container's new process is a new operation.
        status, body = dashboard.authed("POST", f"/api/dgx/operations/{op['id']}/start", {})
        assert status == 200, body
        wait_until(lambda: engine.running(NAME) is True, 60.0, message="the container was not started again")
        with contextlib.suppress(Exception):
            engine("stop", "-t", "0", NAME, check=False)
