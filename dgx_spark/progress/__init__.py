"""Training progress: output parsers, the tracker, the probe, ``report()`` and callbacks.

Importing this package imports only the standard library (``report`` lives in a
stdlib-only module); the probe, tracker and callbacks are imported by name.
"""

from dgx_spark.progress.report import report

__all__ = ["report"]
