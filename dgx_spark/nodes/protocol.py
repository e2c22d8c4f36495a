"""What makes two copies of the app compatible nodes (plain Python).

The operation list (``GET /api/dgx/operations``) answers with two headers:
``X-DGX-Spark-Node-Api`` (the node protocol, ``NODE_API``) and
``X-DGX-Spark-Version`` (the app's version). A node whose list lacks the first
header, or names another protocol, is ``incompatible``.
"""

from __future__ import annotations

import functools
import tomllib

from dgx_spark.settings import PROJECT_ROOT

# Bump when the list's shape or the forwarded routes change in a way older nodes cannot follow.
NODE_API = "1"
NODE_API_HEADER = "X-DGX-Spark-Node-Api"
VERSION_HEADER = "X-DGX-Spark-Version"
LOCAL_NODE = "local"
ALL_NODES = "all"
# Node ids: lower-case letters, digits and dashes (also the ``node`` query value).
NODE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"


@functools.cache
def app_version() -> str:
    """This app's version (from the installed package, else pyproject.toml)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("dgx-spark-operations")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with (PROJECT_ROOT / "pyproject.toml").open("rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def node_headers() -> dict[str, str]:
    """The headers the operation list carries so that other nodes can tell what answers."""
    return {NODE_API_HEADER: NODE_API, VERSION_HEADER: app_version()}
