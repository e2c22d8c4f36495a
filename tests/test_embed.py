"""Another Reflex app can import the Operations tab and its state and compile.

The test writes a minimal host app into tmp_path (its own rxconfig.py and app
module) that imports ``operations_tab`` and ``OperationsState``, and compiles
it with Reflex's own compiler in a subprocess (no frontend build).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RXCONFIG = """
import reflex as rx

config = rx.Config(
    app_name="host_app",
    telemetry_enabled=False,
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(appearance="dark"))],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
"""

HOST_APP = """
import reflex as rx

from dgx_spark.components.operations_tab import operations_tab
from dgx_spark.state.operations import OperationsState


class HostState(rx.State):
    connected: bool = True


def index() -> rx.Component:
    return rx.container(
        rx.heading("A host app", id="host-heading"),
        rx.text("Operations: ", OperationsState.running_count),
        operations_tab(is_connected=HostState.connected, connection_id="spark-embedded"),
    )


app = rx.App()
app.add_page(index)
"""

COMPILE = """
from reflex.utils import prerequisites

prerequisites.get_compiled_app()
print("COMPILED")
"""


def test_a_host_app_embeds_and_compiles_the_operations_tab(tmp_path: Path) -> None:
    (tmp_path / "rxconfig.py").write_text(textwrap.dedent(RXCONFIG))
    package = tmp_path / "host_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "host_app.py").write_text(textwrap.dedent(HOST_APP))
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "REFLEX_USE_NPM": "1",
        "REFLEX_TELEMETRY_ENABLED": "false",
    }
    result = subprocess.run(
        [sys.executable, "-c", COMPILE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "COMPILED" in result.stdout, output

    page = (tmp_path / ".web" / "app" / "routes" / "_index.jsx").read_text()
    assert "host-heading" in page and "spark-embedded" in page
    assert "section-servers" in page and "section-jobs" in page and "section-programs" in page
    assert "operations-not-connected" in page  # shown when the host says it is not connected
    # The tab's state is part of the host's state tree, and the tab starts its own live loop.
    web = tmp_path / ".web"
    compiled = "\n".join(p.read_text() for d in ("app", "app_components", "utils") for p in (web / d).rglob("*.js*"))
    assert "operations_state" in compiled
    assert "start_live" in compiled
