"""The FastAPI app that serves /api/dgx/* next to the Reflex UI."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route

from dgx_spark.api import audit, control, events, metrics, nodes, operations, progress, system
from dgx_spark.api.actor import api_routes, describe_control
from dgx_spark.api.errors import ERROR_RESPONSES, install_error_handlers
from dgx_spark.api.guard import API_PREFIX, ApiGuard
from dgx_spark.services import get_services

logger = logging.getLogger(__name__)

DOCS_URL = "/api/docs"
DOCS_ASSETS = "/api/docs/assets"
OPENAPI_URL = "/api/openapi.json"
# What the API's checks cover inside a host app: the host's own /api/* routes are the host's.
EMBEDDED_PREFIX = "/api/dgx/"


def swagger_assets() -> Path | None:
    """The folder of Swagger UI's files shipped in the ``fastapi-offline`` package, if installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def docs_enabled() -> bool:
    """``DGX_SPARK_API_DOCS``: ``1`` (default) serves Swagger UI at /api/docs, ``0`` turns it off."""
    from dgx_spark.settings import settings

    return settings.server.api_docs


def _add_docs(api: FastAPI) -> None:
    """Serve Swagger UI from files of an installed package (never a CDN), or nothing."""
    if not docs_enabled():
        return
    folder = swagger_assets()
    if folder is None:
        logger.warning("API docs: the fastapi-offline package is missing; %s is off", DOCS_URL)
        return
    api.mount(DOCS_ASSETS, StaticFiles(directory=folder), name="docs-assets")

    @api.get(DOCS_URL, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title="DGX Spark Operations API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )


# The addresses FastAPI apps usually serve their docs at, and where ours are.
DOC_REDIRECTS: dict[str, str] = {"/openapi.json": OPENAPI_URL, "/docs": DOCS_URL}


def _add_doc_redirects(api: FastAPI) -> None:
    """``/openapi.json`` and ``/docs`` redirect (308) to ``/api/openapi.json`` and ``/api/docs``."""
    for path, target in DOC_REDIRECTS.items():
        api.add_api_route(path, _redirect_to(target), methods=["GET", "HEAD"], include_in_schema=False)


def _redirect_to(target: str) -> Callable[[], RedirectResponse]:
    """An endpoint with no parameters (nothing from the request) that redirects to ``target``."""

    def redirect() -> RedirectResponse:
        return RedirectResponse(target, status_code=308)

    return redirect


def audit_soon(**fields: Any) -> None:
    """Queue a row in the services' audit log (what the security layer refuses, logins); never raises."""
    get_services().audit.record_soon(**fields)


def create_api(*, embedded: bool = False) -> FastAPI:
    """Build the API app; Reflex mounts itself beneath it.

    Args:
        embedded: For a host app (``dgx_spark.mount``): the API's own checks (404/405, body size)
            cover ``/api/dgx/`` only, and ``/docs`` and ``/openapi.json`` stay the host's.
    """
    api = FastAPI(
        title="DGX Spark Operations",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL,
        responses=ERROR_RESPONSES,
    )
    install_error_handlers(api)
    api.include_router(operations.router, tags=["operations"])
    api.include_router(control.router, tags=["control"])
    api.include_router(progress.router, tags=["progress"])
    api.include_router(system.router, tags=["system"])
    api.include_router(events.router, tags=["events"])
    api.include_router(audit.router, tags=["audit"])
    api.include_router(nodes.router, tags=["nodes"])
    api.include_router(metrics.router, tags=["metrics"])
    _add_docs(api)
    if not embedded:
        _add_doc_redirects(api)
    # How the security layer names a control request it refuses before routing (the routes' own actions).
    api.state.describe_control = describe_control(api.router.routes)
    # Where the security layer writes its audit rows and finds the token and sessions (the services'),
    # called when the layer is built, not at import.
    api.state.audit_soon = audit_soon
    api.state.credentials = lambda: get_services().credentials
    # 404/405/HEAD, body size and UTF-8 checks for /api/* (embedded: /api/dgx/*) and our other routes (/metrics;
    # embedded: /api/health, /api/docs, /api/openapi.json too), before any route and Reflex.
    # A state-changing request refused there is audited like the control service's invalid input.
    prefix = EMBEDDED_PREFIX if embedded else API_PREFIX
    routes = [*api.router.routes, *api_routes(api.router.routes)]
    own = tuple({r.path for r in routes if isinstance(r, Route) and not r.path.startswith(prefix)})
    # The list without a query, the API's most asked-for answer, skips routing (same bytes and headers).
    api.add_middleware(ApiGuard, routes=api.router.routes, prefix=prefix,
                       describe=api.state.describe_control, audit=audit_soon, paths=own,
                       plain={"/api/dgx/operations": operations.send_plain_list})
    return api
