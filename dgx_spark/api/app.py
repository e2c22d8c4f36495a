"""The FastAPI app that serves /api/dgx/* next to the Reflex UI."""

from __future__ import annotations

from fastapi import FastAPI

from dgx_spark.api import audit, control, events, operations, progress, system
from dgx_spark.api.errors import install_error_handlers


def create_api() -> FastAPI:
    """Build the API app; Reflex mounts itself beneath it."""
    api = FastAPI(
        title="DGX Spark Operations",
        version="0.1.0",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    install_error_handlers(api)
    api.include_router(operations.router, tags=["operations"])
    api.include_router(control.router, tags=["control"])
    api.include_router(progress.router, tags=["progress"])
    api.include_router(system.router, tags=["system"])
    api.include_router(events.router, tags=["events"])
    api.include_router(audit.router, tags=["audit"])
    return api
