"""The Reflex app: pages, the API and the services' lifespan."""

import reflex as rx

from dgx_spark.api.app import create_api
from dgx_spark.security.middleware import security_layer
from dgx_spark.services import lifespan


def index() -> rx.Component:
    """Placeholder page until the Operations tab lands."""
    return rx.text("DGX Spark Operations", id="title")


app = rx.App(api_transformer=[create_api(), security_layer])
app.register_lifespan_task(lifespan)
app.add_page(index, title="DGX Spark Operations")
