"""The first run works everywhere.

The README's promise, tested as a new user meets it: a fresh clone of HEAD (our
virtualenv linked in, nothing else prepared), no data folder, then ``make run`` and
plain ``reflex run`` (dev mode). The app makes its own private data folder; SIGTERM
or Ctrl-C stops ``make run`` with a browser tab open; ``git status`` stays clean.
Uncommitted changes are not in the clone: these tests check what is committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Page, expect

from dgx_spark import startup
from dgx_spark.devserver import MARKER, add_dev_host_plugin
from dgx_spark.settings import load_settings, reflex_dev_mode
from tests.support.dashboard import BIN, ROOT, Dashboard, free_port, reap_launched, wait_until

VENV = BIN.parent
# How long a stop may take, all of it (granian kills a worker still there after 10 s).
STOP_WITHIN = 15.0
START_TIMEOUT = 600.0  # a first build downloads the frontend packages


def mode(path: Path) -> int:
    """The permission bits of a path (not following a symlink)."""
    return stat.S_IMODE(path.lstat().st_mode)


# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("argv", "environ", "dev"),
    [
        (["/x/.venv/bin/reflex", "run"], {}, True),
        (["/x/.venv/bin/reflex", "run", "--env", "dev"], {}, True),
        (["/x/.venv/bin/reflex", "run", "--env", "prod", "--single-port"], {}, False),
        (["/x/.venv/bin/reflex", "run", "--env=prod"], {"REFLEX_ENV_MODE": "dev"}, False),
        (["/x/.venv/bin/reflex", "run", "--env", "preview"], {}, False),
        (["/x/.venv/bin/reflex", "db", "migrate"], {}, False),
        (["/x/lib/python3.11/site-packages/reflex/__main__.py", "run"], {}, True),
        (["granian-worker"], {"REFLEX_ENV_MODE": "dev"}, True),
        (["granian-worker"], {"REFLEX_ENV_MODE": "prod"}, False),
        (["pytest"], {}, False),
    ],
)
def test_dev_mode_is_read_from_reflex_run(argv: list[str], environ: dict[str, str], dev: bool) -> None:
    assert reflex_dev_mode(argv, environ) is dev


def test_dev_mode_puts_the_backend_on_the_next_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DGX_SPARK_PORT", "3100")
    monkeypatch.setenv("DGX_SPARK_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["/x/bin/reflex", "run"])
    dev = load_settings()
    assert (dev.port, dev.api_port, dev.base_url) == (3100, 3101, "http://127.0.0.1:3101")
    monkeypatch.setattr(sys, "argv", ["/x/bin/reflex", "run", "--env", "prod"])
    prod = load_settings()
    assert (prod.port, prod.api_port, prod.base_url) == (3100, 3100, "http://127.0.0.1:3100")


def test_dev_host_plugin_patches_reflex_vite_config_once() -> None:
    from reflex_base.compiler import templates

    original = templates.vite_config_template(
        base="/", hmr=True, force_full_reload=False, experimental_hmr=False, sourcemap=False
    )
    patched = add_dev_host_plugin(original)
    assert f"{MARKER}()," in patched and "process.env.DGX_SPARK_HOST" in patched
    assert add_dev_host_plugin(patched) == patched
    with pytest.raises(RuntimeError, match=r"vite\.config\.js"):
        add_dev_host_plugin("module.exports = {}")


def test_data_folder_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        data = tmp_path / "a" / "b" / "data"
        assert startup.ensure_data_dir(data) == []
    finally:
        os.umask(old)
    assert data.is_dir() and mode(data) == 0o700


def test_existing_files_are_made_private_links_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "runs" / "op-1").mkdir(parents=True)
    for folder in (data, data / "runs", data / "runs" / "op-1"):
        folder.chmod(0o755)
    for name, bits in [("dgx_spark.db", 0o644), ("dgx_spark.db-wal", 0o644), ("runs/op-1/spec.json", 0o640),
                       ("token", 0o600), ("run.sh", 0o755)]:
        (data / name).write_text("x")
        (data / name).chmod(bits)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (data / "link").symlink_to(outside)
    fixed = startup.ensure_data_dir(data)
    assert {p.relative_to(data).as_posix() for p in fixed} == {
        ".", "runs", "runs/op-1", "dgx_spark.db", "dgx_spark.db-wal", "runs/op-1/spec.json", "run.sh"
    }
    assert mode(data) == mode(data / "runs") == 0o700
    assert mode(data / "dgx_spark.db") == mode(data / "dgx_spark.db-wal") == mode(data / "token") == 0o600
    assert mode(data / "runs/op-1/spec.json") == 0o600
    assert mode(data / "run.sh") == 0o700  # the owner keeps what it had
    assert mode(outside) == 0o644


def test_database_files_are_checked(tmp_path: Path) -> None:
    startup.check_sqlite_file(tmp_path / "missing.db")
    (tmp_path / "empty.db").touch()
    startup.check_sqlite_file(tmp_path / "empty.db")
    good = tmp_path / "good.db"
    with sqlite3.connect(good) as db:
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 2000)
    db.close()
    startup.check_sqlite_file(good)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(startup.StartupError, match="not an SQLite database"):
        startup.check_sqlite_file(garbage)
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    data[5000:9000] = b"\xff" * 4000  # the table's pages
    damaged.write_bytes(bytes(data))
    with pytest.raises(startup.StartupError, match="corrupt") as info:
        startup.check_sqlite_file(damaged)
    assert "\n" not in str(info.value)


def test_signal_handler_may_set_the_event_its_thread_holds() -> None:
    """Why ``make run`` once hung after SIGTERM: a SIGTERM handler setting granian's Event while its thread holds the lock."""
    event = startup.SignalSafeEvent()
    previous = signal.signal(signal.SIGUSR1, lambda *_: event.set())
    try:
        with event._cond:  # where granian's main thread is right after a worker's exit woke it
            signal.raise_signal(signal.SIGUSR1)  # the handler runs here; a plain Event deadlocks
        assert event.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert startup.harden_granian()
    from granian.server.common import AbstractServer

    assert getattr(AbstractServer, "_dgx_spark_hardened", False)


# ----------------------------------------------------------------------------- the real app


def _reflex(args: list[str], data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DGX_SPARK_", "REFLEX_"))}
    env.update({"DGX_SPARK_DATA_DIR": str(data_dir), "DGX_SPARK_PORT": str(port),
                "REFLEX_TELEMETRY_ENABLED": "false", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    return subprocess.run([str(BIN / "reflex"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, check=False)


def test_reflex_db_migrate_creates_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    result = _reflex(["db", "migrate"], data, free_port())
    assert result.returncode == 0, result.stdout + result.stderr
    assert mode(data) == 0o700
    assert mode(data / "dgx_spark.db") == 0o600


def test_corrupt_database_stops_startup_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dgx_spark.db").write_bytes(b"this is not a database" * 300)
    result = _reflex(["run", "--env", "prod", "--backend-only"], data, free_port())
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output and "App running" not in output, output
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "dgx_spark.db is corrupt" in lines[0], output
    assert "Move it away" in lines[0]


def test_backend_makes_existing_data_private_and_jobs_keep_the_user_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "notes.txt").write_text("left readable by an older version")
    (data / "notes.txt").chmod(0o644)
    # The user starts the app with umask 027 (an earlier test may have imported the app's startup
    # into this process, which sets 077 and remembers the umask before it in the environment).
    monkeypatch.delenv("DGX_SPARK_USER_UMASK", raising=False)
    user_umask = 0o027
    previous = os.umask(user_umask)
    try:
        dash = Dashboard(data).start()
    finally:
        os.umask(previous)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(dash.stop)
        assert mode(data) == 0o700 and mode(data / "notes.txt") == 0o600
        assert "took group/other permissions off 2 path(s)" in dash.log_tail()
        status, body = dash.authed("POST", "/api/dgx/operations", {
            "template": "custom", "name": "umask", "type": "program", "command": ["sh", "-c", "umask"]})
        assert status == 201, body
        op_id = body["data"]["id"]

        def output() -> list[str]:
            lines = dash.request("GET", f"/api/dgx/operations/{op_id}/logs?tail=50")[1]["data"]["lines"]
            return [line for line in lines if line.strip().isdigit()]

        # The job gets the user's umask back; what the app writes stays private.
        assert wait_until(output, 60) == [f"{user_umask:04o}"]
        for path in [data, *data.rglob("*")]:
            if path.is_symlink():
                continue
            assert mode(path) & 0o077 == 0, f"{path} is {mode(path):o}"
            assert mode(path) == (0o700 if path.is_dir() else 0o600), f"{path} is {mode(path):o}"
    reap_launched(data)


# ----------------------------------------------------------------------------- a fresh clone


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of HEAD with our virtualenv linked in as ``.venv`` (installing it again is slow)."""
    path = tmp_path_factory.mktemp("clone") / "dgx-spark"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(path)], check=True, timeout=120)
    (path / ".venv").symlink_to(VENV)
    # Our virtualenv is up to date with these: make must not reinstall it.
    for name in ("requirements.txt", "requirements-dev.txt"):
        os.utime(path / name, (0, 0))
    assert git_status(path) == ""
    return path


def git_status(path: Path) -> str:
    """``git status --porcelain`` of a checkout."""
    return subprocess.run(["git", "status", "--porcelain"], cwd=path, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def clean_env(port: int) -> dict[str, str]:
    """The environment of a new user: none of the app's settings, a port of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DGX_SPARK_", "REFLEX_", "VIRTUAL_ENV"))}
    env.update({"DGX_SPARK_PORT": str(port), "REFLEX_TELEMETRY_ENABLED": "false"})
    return env


@contextlib.contextmanager
def started(args: list[str], cwd: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command in its own process group; whatever is left of the group is killed afterwards."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=clean_env(port), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def answers(url: str) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def wait_answering(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Wait until ``url`` answers 200 while ``proc`` runs."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early ({proc.returncode}):\n{log.read_text()[-4000:]}"
        if answers(url) == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()[-4000:]}")


def listening(port: int) -> list[str]:
    """The addresses some process listens on at ``port``."""
    return sorted({c.laddr.ip for c in psutil.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN and c.laddr.port == port})


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_stops(proc: subprocess.Popen[bytes], sig: int, *, group: bool, ports: list[int], log: Path) -> None:
    """Send ``sig`` (to the process or its whole group, as Ctrl-C does) and check all of it ends."""
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        proc.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_WITHIN}s after signal {sig}:\n{log.read_text()[-4000:]}")
    wait_until(lambda: not group_alive(proc.pid), 10, message="a process of the app outlived it")
    for port in ports:
        assert listening(port) == [], f"port {port} is still in use"


def test_make_run_from_a_fresh_clone(clone: Path, page: Page, tmp_path: Path) -> None:
    """README: ``make run`` on a fresh clone serves page and API; SIGTERM stops it; the tree stays clean."""
    assert not (clone / ".data").exists()
    port = free_port()
    log = tmp_path / "make-run.log"
    with started(["make", "run"], clone, port, log) as proc:
        wait_answering(proc, f"http://127.0.0.1:{port}/", log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/dgx/operations", timeout=30) as resp:
            reply = json.loads(resp.read())
        assert reply["success"] is True and isinstance(reply["data"], list)
        assert listening(port) == ["127.0.0.1"]
        # A new user's empty history says how long it keeps things, in days, not a variable's name.
        page.goto(f"http://127.0.0.1:{port}/history")
        expect(page.locator("#history-empty")).to_contain_text(
            "are kept here for 7 days (DGX_SPARK_HISTORY_DAYS).", timeout=120_000)
        # A browser tab, so that websockets and a live loop exist when the signal comes.
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#operations-sections")).to_be_visible(timeout=120_000)
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/api/health") == 200, 30)
        assert_stops(proc, signal.SIGTERM, group=False, ports=[port], log=log)
    data = clone / ".data"
    assert mode(data) == 0o700
    assert all(mode(p) == 0o600 for p in data.iterdir() if p.is_file()), {p.name: oct(mode(p)) for p in data.iterdir()}
    assert git_status(clone) == "", git_status(clone)


def test_make_run_stops_on_ctrl_c(clone: Path, page: Page, tmp_path: Path) -> None:
    """Ctrl-C in a terminal: SIGINT to make, reflex and the workers at once."""
    port = free_port()
    log = tmp_path / "make-run.log"
    with started(["make", "run"], clone, port, log) as proc:
        wait_answering(proc, f"http://127.0.0.1:{port}/", log)
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#operations-sections")).to_be_visible(timeout=120_000)
        assert_stops(proc, signal.SIGINT, group=True, ports=[port], log=log)
    assert git_status(clone) == "", git_status(clone)


def test_reflex_run_env_prod_from_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    """``reflex run --env prod`` (without ``--single-port``) serves page and API on the one port."""
    port = free_port()
    log = tmp_path / "reflex-run-prod.log"
    with started([str(clone / ".venv" / "bin" / "reflex"), "run", "--env", "prod"], clone, port, log) as proc:
        wait_answering(proc, f"http://127.0.0.1:{port}/", log)
        assert answers(f"http://127.0.0.1:{port}/api/health") == 200
        assert listening(port) == ["127.0.0.1"]
        assert_stops(proc, signal.SIGTERM, group=False, ports=[port], log=log)
    assert git_status(clone) == "", git_status(clone)


def test_reflex_run_dev_mode_from_a_fresh_clone(clone: Path, page: Page, tmp_path: Path) -> None:
    """Plain ``reflex run``: page on DGX_SPARK_PORT, backend on the next port, both on loopback only."""
    port = free_port()
    while not _free(port + 1):
        port = free_port()
    log = tmp_path / "reflex-run-dev.log"
    with started([str(clone / ".venv" / "bin" / "reflex"), "run"], clone, port, log) as proc:
        wait_answering(proc, f"http://127.0.0.1:{port + 1}/api/health", log)
        wait_answering(proc, f"http://127.0.0.1:{port}/", log)
        assert listening(port) == ["127.0.0.1"], listening(port)
        assert listening(port + 1) == ["127.0.0.1"], listening(port + 1)
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#operations-sections")).to_be_visible(timeout=180_000)
        assert_stops(proc, signal.SIGTERM, group=False, ports=[port, port + 1], log=log)
    assert git_status(clone) == "", git_status(clone)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
