"""The Reflex app: pages, the API and the services' lifespan."""

from typing import Any

import reflex as rx

from dgx_spark.api.app import create_api
from dgx_spark.api.guard import refuse_unroutable_paths
from dgx_spark.pages.history import history_page
from dgx_spark.pages.spark import index
from dgx_spark.security.middleware import security_layer
from dgx_spark.services import lifespan


class App(rx.App):
    """The Reflex app, with paths Reflex's own router cannot match answered by us (404)."""

    def __call__(self) -> Any:
        """The ASGI app the server runs."""
        return refuse_unroutable_paths(super().__call__())


app = App(api_transformer=[create_api(), security_layer])
app.register_lifespan_task(lifespan)
app.add_page(index, title="DGX Spark Operations")
app.add_page(history_page, route="/history", title="History · DGX Spark Operations")
