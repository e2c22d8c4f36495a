import reflex as rx
from fastapi import FastAPI

import dgx_spark

api = FastAPI()


@api.get("/api/host/hello")
def hello() -> dict[str, str]:
    return {"hello": "from the host app"}


class HostState(rx.State):
    connected: bool = True
    # Which DGX the tab shows: "local" (this machine), or a node's id or name as added under Nodes.
    connection_id: str = "local"


def index() -> rx.Component:
    return rx.container(
        rx.heading("My DGX Spark app", id="host-heading"),
        dgx_spark.operations_tab(is_connected=HostState.connected, connection_id=HostState.connection_id),
    )


app = rx.App(api_transformer=api)
app.add_page(index)
dgx_spark.mount(app)
