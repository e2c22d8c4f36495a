"""Embedding: add the dashboard's backend to another Reflex app with one call.

``mount(app)`` gives a host app (the bigger DGX Spark app, installed next to this
package with ``pip install``) what ``dgx_spark/dgx_spark.py`` gives ours:

- the API (``/api/dgx/…``, ``/api/health``, ``/api/docs``, ``/api/openapi.json``,
  ``/metrics``), after the host's own ``api_transformer`` s, so the host's routes keep
  answering (ours win on the paths above);
- the services' lifespan: the database migrated (our own migrations, on our own database,
  ``DGX_SPARK_DB_URL`` / the data folder), the supervisor loaded, the sampler and node
  pollers started with the backend and stopped with it;
- the security layer around the whole app (it must hold the websocket the tab's controls
  use): Host check, the login link and ``/login``, and tokens for every mutation.

The page stays the host's: put ``operations_tab(is_connected, connection_id)`` where it wants.
Settings are the same ``DGX_SPARK_*`` variables; ``DGX_SPARK_PORT`` must be the port the host
serves on (the security layer accepts the websocket from that origin only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import reflex as rx
from reflex.config import get_config
from starlette.applications import Starlette

from dgx_spark.api.app import create_api
from dgx_spark.database import migrate
from dgx_spark.security.middleware import security_layer
from dgx_spark.security.token import check_token
from dgx_spark.services import lifespan
from dgx_spark.settings import settings
from dgx_spark.startup import check_sqlite_file, ensure_data_dir, sqlite_path

logger = logging.getLogger(__name__)

# Set on an app that mount() has already been given, so that a second call changes nothing.
_MOUNTED_ATTR = "_dgx_spark_mounted"

Transformer = Callable[[Any], Any] | Starlette

__all__ = ["migrate", "mount", "prepare_host"]


def prepare_host() -> None:
    """What ``rxconfig.py`` does first for our own app, done for a host process.

    The data folder is created (0700) or made private, the SQLite file checked, the token file
    checked. The host's umask is left as it is: our files are private through the folder.

    Raises:
        StartupError: The data folder or the database file cannot be used (one line saying why).
        TokenError: The token file cannot be used.
    """
    fixed = ensure_data_dir(settings.data_dir)
    if fixed:
        logger.warning("data folder %s: took group/other permissions off %d path(s)", settings.data_dir, len(fixed))
    db_file = sqlite_path(settings.db_url)
    if db_file is not None:
        check_sqlite_file(db_file)
    check_token()


def _transformers(existing: Sequence[Transformer] | Transformer | None) -> list[Transformer]:
    """The host's ``api_transformer`` as a list (Reflex takes one, a sequence of them, or None)."""
    if existing is None:
        return []
    if isinstance(existing, Sequence):
        return list(existing)
    return [existing]


def _check_port() -> None:
    """Warn when the host's Reflex config serves on another port than ``DGX_SPARK_PORT``."""
    port = getattr(get_config(), "backend_port", None)
    if port and port != settings.api_port:
        logger.warning(
            "the host app's backend port is %s but DGX_SPARK_PORT says %s: the security layer accepts the "
            "websocket only from the DGX_SPARK_PORT origin; set DGX_SPARK_PORT=%s",
            port, settings.api_port, port,
        )


def mount(app: rx.App) -> rx.App:
    """Add the dashboard's API, services and security layer to a host Reflex app.

    Call it once, where the host creates its app, before the backend starts. The host's own
    ``api_transformer`` (a FastAPI/Starlette app, an ASGI wrapper, or a list of them) is kept and
    runs beneath ours.

    Args:
        app: The host's ``rx.App``.

    Returns:
        The same app.

    Raises:
        StartupError: The data folder or the database file cannot be used.
        TokenError: The token file cannot be used.
    """
    if getattr(app, _MOUNTED_ATTR, False):
        return app
    prepare_host()
    _check_port()
    app.api_transformer = [*_transformers(app.api_transformer), create_api(embedded=True), security_layer]
    app.register_lifespan_task(lifespan)
    setattr(app, _MOUNTED_ATTR, True)
    return app
