"""UI state. ``operations`` holds the Reflex state; ``loops``, ``view`` and ``tab_view`` are plain Python.

Import the state from ``dgx_spark.state.operations``; this package itself
imports nothing, so the REST API can read ``dgx_spark.state.loops`` without Reflex.
"""
