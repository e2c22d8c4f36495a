"""DGX Spark Operations: a real-time dashboard of every operation on an NVIDIA DGX machine.

For a host Reflex app (see README, "Embedding")::

    import dgx_spark
    dgx_spark.mount(app)                                  # API, services, security layer
    dgx_spark.operations_tab(is_connected, connection_id)  # the tab, on the host's page

The names load on first use, so that importing a small module of the package (``rxconfig.py``
imports ``dgx_spark.startup`` first thing) does not import Reflex.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_LAZY = {
    "mount": "dgx_spark.embed",
    "migrate": "dgx_spark.embed",
    "operations_tab": "dgx_spark.components.operations_tab",
}

__all__ = ["migrate", "mount", "operations_tab"]


def __getattr__(name: str) -> Any:
    """Load ``mount``, ``migrate`` and ``operations_tab`` when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dgx_spark' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
