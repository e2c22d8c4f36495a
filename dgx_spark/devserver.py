"""The dev frontend (``reflex run`` in dev mode) listens on ``DGX_SPARK_HOST`` only, loopback by default.

Reflex starts it as ``react-router dev --host``, which means every interface. A
Reflex plugin adds a small Vite plugin to ``.web/vite.config.js`` whose ``config``
hook sets ``server.host`` again; Vite applies it after the command line.
"""

from __future__ import annotations

from typing import Any

from reflex.utils.prerequisites import get_web_dir
from reflex_base import constants
from reflex_base.plugins.base import Plugin

MARKER = "dgxSparkDevHost"
VITE_PLUGIN = """
// DGX Spark Operations: the dev server listens on DGX_SPARK_HOST only (loopback by default),
// not on every interface as `react-router dev --host` asks.
function dgxSparkDevHost() {
  return {
    name: "dgx-spark-dev-host",
    config() {
      return { server: { host: (process.env.DGX_SPARK_HOST || "").trim() || "127.0.0.1" } };
    },
  };
}
"""
_DEFINE_ANCHOR = "export default defineConfig"
_PLUGINS_ANCHOR = "plugins: ["


def add_dev_host_plugin(content: str) -> str:
    """Add the host plugin to a ``vite.config.js`` text (unchanged if it is there already).

    Raises:
        RuntimeError: When the Vite config does not look like Reflex's template.
    """
    if MARKER in content:
        return content
    if _DEFINE_ANCHOR not in content or _PLUGINS_ANCHOR not in content:
        msg = f"cannot limit the dev server's host: {_DEFINE_ANCHOR!r} or {_PLUGINS_ANCHOR!r} not in vite.config.js"
        raise RuntimeError(msg)
    content = content.replace(_DEFINE_ANCHOR, VITE_PLUGIN + "\n" + _DEFINE_ANCHOR, 1)
    return content.replace(_PLUGINS_ANCHOR, f"{_PLUGINS_ANCHOR}\n    {MARKER}(),", 1)


class DevHostPlugin(Plugin):
    """Keeps the dev frontend on ``DGX_SPARK_HOST`` (see the module docstring)."""

    def pre_compile(self, **context: Any) -> None:
        """Patch ``.web/vite.config.js`` when it exists (it does whenever the frontend is compiled)."""
        if (get_web_dir() / constants.ReactRouter.VITE_CONFIG_FILE).exists():
            context["add_modify_task"](constants.ReactRouter.VITE_CONFIG_FILE, add_dev_host_plugin)
