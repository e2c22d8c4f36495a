"""Run the real dashboard (``reflex run``) as a subprocess for a test."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Control-rate settings for tests that make many control requests in a row.
UNTHROTTLED = {"DGX_SPARK_CONTROL_RATE": "1000", "DGX_SPARK_CONTROL_BURST": "1000"}
TEST_TOKEN = "test-token-0123456789abcdef0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Only one frontend build may use .web/ at a time, across test runs in this checkout.
# hashlib, not hash(): str hashes differ per process, which would give every process its own lock.
WEB_LOCK = Path(tempfile.gettempdir()) / f"dgx-spark-web-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:16]}.lock"
# The full dashboards this process runs (at most one: they share the checkout's frontend build).
_full_running: list[Dashboard] = []
# A dashboard given DGX_SPARK_FAKE_NVML (a scenario file) gets this folder first on PYTHONPATH:
# its sitecustomize puts the fake NVML into the app (see tests/support/fake_gpu.py).
NVML_SHIM = ROOT / "tests" / "nvml_shim"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dashboard:
    """The dashboard as a child process: backend-only (fast) or full (UI built)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        full: bool = False,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        """Describe a dashboard; ``start`` runs it."""
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.full = full
        self.extra_env = dict(env or {})
        # Next to the data folder, not in it: the app creates that folder itself (tests prove it).
        name = f"{self.data_dir.name}-{'dashboard-full' if full else 'dashboard'}.log"
        self.log_path = log_path or self.data_dir.parent / name
        self.process: subprocess.Popen[bytes] | None = None
        self._lock_file: Any = None

    @property
    def url(self) -> str:
        """Base URL of the dashboard."""
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """The environment the dashboard runs with."""
        env = dict(os.environ)
        env.update(
            {
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                "REFLEX_USE_NPM": "1",
                "PYTHONUNBUFFERED": "1",
                "DGX_SPARK_PORT": str(self.port),
                "DGX_SPARK_HOST": "127.0.0.1",
                "DGX_SPARK_DATA_DIR": str(self.data_dir),
                # Backend-only: a snapshot every 0.5 s (what tests wait on); the full UI: every 1 s.
                "DGX_SPARK_REFRESH_SECONDS": env.get("DGX_SPARK_REFRESH_SECONDS", "1" if self.full else "0.5"),
                "REFLEX_TELEMETRY_ENABLED": "false",
                "DGX_SPARK_TOKEN": TEST_TOKEN,
            }
        )
        env.update(self.extra_env)
        if env.get("DGX_SPARK_FAKE_NVML"):
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(NVML_SHIM), env.get("PYTHONPATH")) if p)
        return env

    def start(self, timeout: float | None = None) -> Dashboard:
        """Start the dashboard and wait until its API answers (the app creates its data folder)."""
        if self.full and self._lock_file is None:
            if _full_running:  # flock is per open file: this process would wait for itself forever
                raise RuntimeError(
                    f"a full dashboard already runs in this process ({_full_running[0].url}): the frontend "
                    "build is one per checkout; use that one (e.g. the full_dashboard fixture)"
                )
            self._lock_file = open(WEB_LOCK, "w")  # noqa: SIM115 - held while running
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            _full_running.append(self)
        if self.data_dir not in (self.log_path.parent, *self.log_path.parents):
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        args = [str(BIN / "reflex"), "run", "--env", "prod"]
        args += ["--single-port"] if self.full else ["--backend-only"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.wait_ready(timeout or (600.0 if self.full else 90.0))
        return self

    def wait_ready(self, timeout: float) -> None:
        """Wait until the API answers and the sampler has taken a snapshot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"dashboard exited early:\n{self.log_tail()}")
            try:
                body = self.get_json("/api/health")
                if body["data"]["sequence"] > 0:
                    if not self.full:
                        return
                    with urllib.request.urlopen(self.url + "/", timeout=5) as resp:
                        if resp.status == 200:
                            return
            except (OSError, urllib.error.URLError, KeyError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"dashboard not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the dashboard's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Make an HTTP request; return (status, parsed JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Host", f"127.0.0.1:{self.port}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def authed(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """A request carrying ``Authorization: Bearer <test token>``."""
        merged = {"Authorization": f"Bearer {TEST_TOKEN}", **(headers or {})}
        return self.request(method, path, body, merged)

    def get_json(self, path: str) -> Any:
        """GET a path and return its JSON (any status)."""
        return self.request("GET", path)[1]

    def operations(self, **query: str) -> list[dict[str, Any]]:
        """The operations the API lists now."""
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        status, body = self.request("GET", "/api/dgx/operations" + (f"?{qs}" if qs else ""))
        assert status == 200, body
        return body["data"]

    def wait_for_refreshes(self, count: int = 2, timeout: float = 60.0) -> None:
        """Wait until the sampler has taken ``count`` more snapshots (each one is pushed to open tabs)."""
        start = self.get_json("/api/health")["data"]["sequence"]
        wait_until(lambda: self.get_json("/api/health")["data"]["sequence"] >= start + count, timeout, 0.05,
                   f"the sampler did not take {count} snapshots after #{start}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop the dashboard (its whole process group)."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Children that left the group (e.g. a frontend server) are reaped by the OS.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.process = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
            if self in _full_running:
                _full_running.remove(self)

    def __enter__(self) -> Dashboard:  # start() returns this instance
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_dashboard(data_dir: Path, **kwargs: Any) -> Iterator[Dashboard]:
    """Run a dashboard for the duration of a ``with`` block."""
    dashboard = Dashboard(data_dir, **kwargs)
    try:
        yield dashboard.start()
    finally:
        dashboard.stop()


def reap_launched(data_dir: Path) -> None:
    """Kill what a test's dashboard launched and left running (runners outlive dashboards by design)."""
    for info_file in (data_dir / "runs").glob("*/runner.json"):
        if (info_file.parent / "exit.json").exists():
            continue
        with contextlib.suppress(ValueError, OSError):
            os.killpg(json.loads(info_file.read_text())["pid"], signal.SIGKILL)



def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05, message: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout}s (last: {last!r})")
