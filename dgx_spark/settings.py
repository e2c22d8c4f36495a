"""Settings read from the environment, documented in README.md ("Settings").

This module imports nothing from Reflex so that rxconfig.py, the collector and
the supervisor can all read it cheaply.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(name: str, default: float, lo: float, hi: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    """All runtime settings of the dashboard."""

    port: int
    host: str
    data_dir: Path
    refresh_seconds: float
    ended_ttl_seconds: float
    db_url: str
    rules_file: Path | None

    @property
    def base_url(self) -> str:
        """The URL the dashboard is served at."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def load_settings() -> Settings:
    """Read the settings from the environment.

    Returns:
        The settings, with defaults for anything unset.
    """
    data_dir = Path(
        os.environ.get("DGX_SPARK_DATA_DIR") or PROJECT_ROOT / ".data"
    ).expanduser().resolve()
    db_url = os.environ.get("DGX_SPARK_DB_URL") or f"sqlite:///{data_dir / 'dgx_spark.db'}"
    rules = os.environ.get("DGX_SPARK_RULES_FILE")
    rules_file = Path(rules).expanduser() if rules else data_dir / "rules.toml"
    return Settings(
        port=_int("DGX_SPARK_PORT", 3000, 1, 65535),
        host=os.environ.get("DGX_SPARK_HOST", "127.0.0.1").strip() or "127.0.0.1",
        data_dir=data_dir,
        refresh_seconds=_float("DGX_SPARK_REFRESH_SECONDS", 2.0, 0.2, 60.0),
        ended_ttl_seconds=_float("DGX_SPARK_ENDED_TTL_SECONDS", 600.0, 0.0, 7 * 86400.0),
        db_url=db_url,
        rules_file=rules_file,
    )


settings = load_settings()
