"""Packaging (metadata in pyproject.toml): which folders go into the wheel, and under which names.

The migrations stay in ``alembic/`` (where ``reflex db`` expects them) and the static files in
``assets/``; the wheel carries them inside the package as ``dgx_spark/migrations`` and
``dgx_spark/assets``, where ``dgx_spark.database`` and an embedding host find them.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["dgx_spark", "dgx_spark.*"]),
        "dgx_spark.migrations",
        "dgx_spark.migrations.versions",
        "dgx_spark.assets",
    ],
    package_dir={"dgx_spark.migrations": "alembic", "dgx_spark.assets": "assets"},
    package_data={"dgx_spark.migrations": ["script.py.mako", "README"], "dgx_spark.assets": ["*"]},
)
