"""Settings read from the environment, documented in README.md ("Settings").

This module imports nothing from Reflex so that rxconfig.py, the collector and
the supervisor can all read it cheaply.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def env_number(name: str, default: float | None, lo: float, hi: float) -> float | None:
    """Read a numeric setting; every ``DGX_SPARK_*`` number goes through here.

    Args:
        name: The environment variable.
        default: The value when it is unset or empty.
        lo: The smallest value allowed.
        hi: The largest value allowed.

    Returns:
        The value, or ``default``.

    Raises:
        ValueError: When the value is not a finite number in ``[lo, hi]``, naming the variable.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {raw!r}")
    return value


def env_int(name: str, default: int, lo: int, hi: int) -> int:
    """Read a whole-number setting (see ``env_number``)."""
    value = env_number(name, default, lo, hi)
    assert value is not None
    if value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value:g}")
    return int(value)


def env_float(name: str, default: float, lo: float, hi: float) -> float:
    """Read a numeric setting that has a default (see ``env_number``)."""
    value = env_number(name, default, lo, hi)
    assert value is not None
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
    # "local": viewing from loopback needs no token; "required": everything needs it.
    auth: str = "local"
    # Where the backend (API, websocket, login) listens when it is not ``port``: ``reflex run`` in dev mode.
    backend_port: int | None = None

    @property
    def api_port(self) -> int:
        """The port of the backend: ``port``, or ``port + 1`` in Reflex's dev mode."""
        return self.backend_port or self.port

    @property
    def auth_required(self) -> bool:
        """Whether every request, viewing included, needs the token."""
        return self.auth == "required"

    @property
    def base_url(self) -> str:
        """The URL the backend (API, login) is served at; the page too, except in dev mode."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.api_port}"


AUTH_MODES = ("local", "required")


def is_loopback_host(host: str) -> bool:
    """Whether a bind address or host name is loopback only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reflex_dev_mode(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> bool:
    """Whether this process belongs to ``reflex run`` in dev mode (frontend and backend on two ports).

    The ``reflex run`` command is read from its arguments (dev unless ``--env prod|preview``);
    the processes it starts get ``REFLEX_ENV_MODE`` from it. Anything else is not dev mode.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    if argv and (Path(argv[0]).name == "reflex" or argv[0].endswith("reflex/__main__.py")):
        words = [a for a in argv[1:] if not a.startswith("-")]
        if words[:1] == ["run"]:
            env = "dev"
            for i, arg in enumerate(argv):
                if arg == "--env" and i + 1 < len(argv):
                    env = argv[i + 1]
                elif arg.startswith("--env="):
                    env = arg.split("=", 1)[1]
            return env.strip().lower() == "dev"
    return str(environ.get("REFLEX_ENV_MODE", "")).strip().lower() == "dev"


def default_data_dir() -> Path:
    """``.data`` in a source checkout; ``$XDG_DATA_HOME/dgx-spark`` (``~/.local/share/dgx-spark``) when installed.

    An installed wheel (an embedding host app) has no project folder: its package lies in site-packages.
    """
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT / ".data"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "dgx-spark"


def load_settings() -> Settings:
    """Read the settings from the environment.

    Returns:
        The settings, with defaults for anything unset.
    """
    data_dir = Path(os.environ.get("DGX_SPARK_DATA_DIR") or default_data_dir()).expanduser().resolve()
    db_url = os.environ.get("DGX_SPARK_DB_URL") or f"sqlite:///{data_dir / 'dgx_spark.db'}"
    rules = os.environ.get("DGX_SPARK_RULES_FILE")
    rules_file = Path(rules).expanduser() if rules else data_dir / "rules.toml"
    host = os.environ.get("DGX_SPARK_HOST", "127.0.0.1").strip() or "127.0.0.1"
    auth = os.environ.get("DGX_SPARK_AUTH", "").strip().lower() or "local"
    if auth not in AUTH_MODES:
        raise ValueError(f"DGX_SPARK_AUTH must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
    if not is_loopback_host(host) and auth != "required":
        raise ValueError(
            f"refusing to listen on DGX_SPARK_HOST={host!r}: it is reachable from other machines. "
            "Set DGX_SPARK_AUTH=required as well, so that every request needs the access token."
        )
    port = env_int("DGX_SPARK_PORT", 3000, 1, 65535)
    backend_port = None
    if reflex_dev_mode():
        if port == 65535:
            raise ValueError("DGX_SPARK_PORT must be below 65535 in dev mode: the backend takes the next port")
        backend_port = port + 1
    return Settings(
        port=port,
        backend_port=backend_port,
        host=host,
        data_dir=data_dir,
        refresh_seconds=env_float("DGX_SPARK_REFRESH_SECONDS", 2.0, 0.2, 60.0),
        ended_ttl_seconds=env_float("DGX_SPARK_ENDED_TTL_SECONDS", 600.0, 0.0, 7 * 86400.0),
        db_url=db_url,
        rules_file=rules_file,
        auth=auth,
    )


settings = load_settings()
