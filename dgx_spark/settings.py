"""Every ``DGX_SPARK_*`` setting, typed, read once from the environment at start.

``load_settings()`` builds one :class:`Settings` of sections (``server``, ``storage``,
``sampler``, ``resources``, ``supervisor``, ``progress``, ``limits``, ``events``,
``nodes``); each section is a pydantic-settings class that reads its own variables.
README.md ("Settings") lists them. A bad value stops start-up with a ``ValueError``
naming the variable. No other module of the app reads ``DGX_SPARK_*`` variables
(tests/test_settings.py checks it): they get their values from this object.

This module imports nothing from Reflex so that rxconfig.py, the collector and
the supervisor can all read it cheaply.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

AUTH_MODES = ("local", "required")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The allowed range of a numeric setting (``whole``: integers only)."""

    lo: float
    hi: float
    whole: bool = False


def parse_number(name: str, raw: object, bounds: Bounds) -> float | int:
    """Check one numeric setting; every ``DGX_SPARK_*`` number goes through here.

    Args:
        name: The environment variable (named in the error).
        raw: The value as given (text from the environment, or a number).
        bounds: The range allowed.

    Returns:
        The value (an ``int`` for whole-number settings).

    Raises:
        ValueError: When the value is not a finite number in range, naming the variable.
    """
    text = str(raw).strip()
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {text!r}") from exc
    if not math.isfinite(value) or not bounds.lo <= value <= bounds.hi:
        raise ValueError(f"{name} must be between {bounds.lo:g} and {bounds.hi:g}, got {text!r}")
    if bounds.whole:
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value:g}")
        return int(value)
    return value


class Section(BaseSettings):
    """One group of settings, read from its ``DGX_SPARK_*`` variables (exact, case-sensitive names).

    Each field names its variable as ``validation_alias``; numeric fields carry :class:`Bounds`.
    A blank value counts as unset. Fields can also be given by name (tests, embedding hosts).
    """

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", case_sensitive=True, populate_by_name=True, env_ignore_empty=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _parse(cls, raw: Any, info: ValidationInfo) -> Any:
        """Blank means the default; numbers are checked against their bounds, naming the variable."""
        field = cls.model_fields[info.field_name or ""]
        name = str(field.validation_alias or info.field_name)
        if isinstance(raw, str) and not raw.strip():
            return field.get_default(call_default_factory=True)
        bounds = next((m for m in field.metadata if isinstance(m, Bounds)), None)
        if bounds is None or raw is None:
            return raw.strip() if isinstance(raw, str) else raw
        return parse_number(name, raw, bounds)


def variable(name: str, default: Any = None, **extra: Any) -> Any:
    """A field read from the environment variable ``name``."""
    if "default_factory" in extra:
        return Field(validation_alias=name, **extra)
    return Field(default, validation_alias=name, **extra)


# ----------------------------------------------------------------------------- server


def is_loopback_host(host: str) -> bool:
    """Whether a bind address or host name is loopback only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# One origin: scheme://host[:port], nothing else (no path, no wildcard).
_ORIGIN = re.compile(r"^https?://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?$")


def parse_origins(raw: str) -> tuple[str, ...]:
    """The origins listed in a ``DGX_SPARK_ALLOWED_ORIGINS`` value (comma-separated).

    Raises:
        ValueError: For ``*`` or anything that is not one ``scheme://host[:port]`` origin.
    """
    origins: list[str] = []
    for item in raw.split(","):
        origin = item.strip().rstrip("/").lower()
        if not origin:
            continue
        if "*" in origin:
            raise ValueError(
                "DGX_SPARK_ALLOWED_ORIGINS must not contain '*': it would let every web site use the "
                "dashboard with your login. List the origins, e.g. http://my-host:3000"
            )
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"DGX_SPARK_ALLOWED_ORIGINS: {origin[:100]!r} is not an origin (expected scheme://host[:port])"
            )
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


class ServerSettings(Section):
    """Where and how the dashboard listens, and who may use it."""

    port: Annotated[int, Bounds(1, 65535, whole=True)] = variable("DGX_SPARK_PORT", 3000)
    host: str = variable("DGX_SPARK_HOST", "127.0.0.1")
    # "local": viewing from loopback needs no token; "required": everything needs it.
    auth: Literal["local", "required"] = variable("DGX_SPARK_AUTH", "local")
    # Overrides the stored token (security/token.py checks it); None: the stored one.
    token: str | None = variable("DGX_SPARK_TOKEN", None)
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = variable("DGX_SPARK_ALLOWED_HOSTS", ())
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = variable("DGX_SPARK_ALLOWED_ORIGINS", ())
    api_docs: Annotated[bool, NoDecode] = variable("DGX_SPARK_API_DOCS", True)

    @field_validator("auth", mode="before")
    @classmethod
    def _auth(cls, raw: Any) -> Any:
        auth = str(raw).strip().lower() or "local"  # blank: the default
        if auth not in AUTH_MODES:
            raise ValueError(f"DGX_SPARK_AUTH must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
        return auth

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return tuple(h.strip().lower() for h in raw.split(",") if h.strip())
        return raw

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, raw: Any) -> Any:
        return parse_origins(raw) if isinstance(raw, str) else raw

    @field_validator("api_docs", mode="before")
    @classmethod
    def _docs(cls, raw: Any) -> Any:
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower() or "1"  # blank: the default
        if word not in _TRUE_WORDS + _FALSE_WORDS:
            raise ValueError(f"DGX_SPARK_API_DOCS must be 0 or 1, got {word[:20]!r}")
        return word in _TRUE_WORDS

    @model_validator(mode="after")
    def _exposed_needs_auth(self) -> ServerSettings:
        if not is_loopback_host(self.host) and self.auth != "required":
            raise ValueError(
                f"refusing to listen on DGX_SPARK_HOST={self.host!r}: it is reachable from other machines. "
                "Set DGX_SPARK_AUTH=required as well, so that every request needs the access token."
            )
        return self


# ----------------------------------------------------------------------------- storage


def default_data_dir() -> Path:
    """``.data`` in a source checkout; ``$XDG_DATA_HOME/dgx-spark`` (``~/.local/share/dgx-spark``) when installed.

    An installed wheel (an embedding host app) has no project folder: its package lies in site-packages.
    """
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT / ".data"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "dgx-spark"


class StorageSettings(Section):
    """The data folder and what lives in it (each file can be moved elsewhere)."""

    data_dir: Path = variable("DGX_SPARK_DATA_DIR", default_factory=default_data_dir)
    # Empty: the SQLite file in the data folder.
    db_url: str = variable("DGX_SPARK_DB_URL", "", validate_default=True)
    rules_file: Path = variable("DGX_SPARK_RULES_FILE", Path(), validate_default=True)
    templates_file: Path = variable("DGX_SPARK_TEMPLATES_FILE", Path(), validate_default=True)

    _FILES: ClassVar[dict[str, str]] = {"rules_file": "rules.toml", "templates_file": "templates.toml"}

    @field_validator("data_dir")
    @classmethod
    def _resolve(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("db_url")
    @classmethod
    def _db(cls, value: str, info: ValidationInfo) -> str:
        data_dir = info.data.get("data_dir")
        return value or f"sqlite:///{Path(data_dir or default_data_dir()) / 'dgx_spark.db'}"

    @field_validator("rules_file", "templates_file")
    @classmethod
    def _file(cls, value: Path, info: ValidationInfo) -> Path:
        if value != Path():
            return value.expanduser()
        return Path(info.data.get("data_dir") or default_data_dir()) / cls._FILES[info.field_name or ""]


# ----------------------------------------------------------------------------- collector


class SamplerSettings(Section):
    """How often things are looked at, and how long ended ones stay listed."""

    refresh_seconds: Annotated[float, Bounds(0.2, 60.0)] = variable("DGX_SPARK_REFRESH_SECONDS", 2.0)
    ended_ttl_seconds: Annotated[float, Bounds(0.0, 7 * 86400.0)] = variable("DGX_SPARK_ENDED_TTL_SECONDS", 600.0)
    # 0 turns service probes off; anything else is at least 0.5 s (collector/service_probes.py).
    service_probe_seconds: Annotated[float, Bounds(0.0, 3600.0)] = variable("DGX_SPARK_SERVICE_PROBE_SECONDS", 5.0)
    # The container engine's socket as given (checked by collector/containers.py, which reports a bad one).
    docker_host: str | None = variable("DGX_SPARK_DOCKER_HOST", None)


class ResourceSettings(Section):
    """Thresholds of the resource warnings and the NVML deadline."""

    idle_gpu_seconds: Annotated[float, Bounds(0.0, 30 * 86400.0)] = variable("DGX_SPARK_IDLE_GPU_SECONDS", 600.0)
    memory_pressure_percent: Annotated[float, Bounds(0.0, 100.0)] = variable(
        "DGX_SPARK_MEMORY_PRESSURE_PERCENT", 10.0
    )
    memory_pressure_bytes: Annotated[int | None, Bounds(0, 2**62, whole=True)] = variable(
        "DGX_SPARK_MEMORY_PRESSURE_BYTES", None
    )
    nvml_timeout_seconds: Annotated[float, Bounds(0.05, 60.0)] = variable("DGX_SPARK_NVML_TIMEOUT_SECONDS", 2.0)

    def pressure_threshold(self, total: int) -> int:
        """Available bytes below which memory is under pressure."""
        if self.memory_pressure_bytes is not None:
            return self.memory_pressure_bytes
        return int(total * self.memory_pressure_percent / 100.0)


# ----------------------------------------------------------------------------- supervisor, progress


class SupervisorSettings(Section):
    """Stopping launched operations and rotating their logs."""

    stop_grace_seconds: Annotated[float, Bounds(0.0, 3600.0)] = variable("DGX_SPARK_STOP_GRACE_SECONDS", 10.0)
    # The defaults are collector/logfile.py's DEFAULT_MAX_BYTES and DEFAULT_BACKUPS.
    log_max_bytes: Annotated[int, Bounds(4096, 2**40, whole=True)] = variable(
        "DGX_SPARK_LOG_MAX_BYTES", 20 * 1024 * 1024
    )
    log_backups: Annotated[int, Bounds(1, 20, whole=True)] = variable("DGX_SPARK_LOG_BACKUPS", 2)


class ProgressSettings(Section):
    """Training progress."""

    stall_seconds: Annotated[float, Bounds(1.0, 7 * 86400.0)] = variable("DGX_SPARK_STALL_SECONDS", 600.0)


# ----------------------------------------------------------------------------- limits, events, nodes


class LimitSettings(Section):
    """Caps on control actions and log streams per client."""

    control_rate: Annotated[float, Bounds(0.0001, 100_000.0)] = variable("DGX_SPARK_CONTROL_RATE", 5.0)
    control_burst: Annotated[int, Bounds(1, 100_000, whole=True)] = variable("DGX_SPARK_CONTROL_BURST", 10)
    log_streams_per_client: Annotated[int, Bounds(1, 10_000, whole=True)] = variable(
        "DGX_SPARK_LOG_STREAMS_PER_CLIENT", 8
    )
    log_streams_total: Annotated[int, Bounds(1, 100_000, whole=True)] = variable("DGX_SPARK_LOG_STREAMS_TOTAL", 64)
    log_stream_idle_seconds: Annotated[float, Bounds(1.0, 86_400.0)] = variable(
        "DGX_SPARK_LOG_STREAM_IDLE_SECONDS", 300.0
    )


MAX_URL_LENGTH = 2000


class InvalidWebhookUrl(ValueError):
    """A webhook URL that is not an absolute http(s) URL."""


def validate_webhook_url(raw: str) -> str | None:
    """Check a webhook URL.

    Args:
        raw: The URL as typed; surrounding whitespace is ignored.

    Returns:
        The cleaned URL, or None for an empty value (webhook off).

    Raises:
        InvalidWebhookUrl: When the URL is not an absolute http(s) URL.
    """
    url = (raw or "").strip()
    if not url:
        return None
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidWebhookUrl("the URL must not contain spaces or control characters")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in url):
        raise InvalidWebhookUrl("the URL must be valid UTF-8 text (no lone surrogates)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"the URL is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("only http:// and https:// URLs are allowed")
    if not parts.hostname:
        raise InvalidWebhookUrl("the URL has no host")
    return url


class EventSettings(Section):
    """How long events, history and audit entries are kept, and where events are sent."""

    history_days: Annotated[float, Bounds(0.0, 3650.0)] = variable("DGX_SPARK_HISTORY_DAYS", 7.0)
    webhook_url: str | None = variable("DGX_SPARK_WEBHOOK_URL", None)

    @field_validator("history_days")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"DGX_SPARK_HISTORY_DAYS must be between 0 and 3650, got {value:g}")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        try:
            return validate_webhook_url(value or "")
        except InvalidWebhookUrl as exc:
            raise ValueError(f"DGX_SPARK_WEBHOOK_URL: {exc}") from exc

    @property
    def retention_seconds(self) -> float:
        """How long rows are kept, in seconds."""
        return self.history_days * 86400.0


class NodeSettings(Section):
    """Polling other DGX machines."""

    backoff_max_seconds: Annotated[float, Bounds(1.0, 3600.0)] = variable("DGX_SPARK_NODE_BACKOFF_MAX_SECONDS", 30.0)


# ----------------------------------------------------------------------------- all of them


@dataclasses.dataclass(frozen=True)
class Settings:
    """All runtime settings of the dashboard, by section."""

    server: ServerSettings
    storage: StorageSettings
    sampler: SamplerSettings = dataclasses.field(default_factory=SamplerSettings)
    resources: ResourceSettings = dataclasses.field(default_factory=ResourceSettings)
    supervisor: SupervisorSettings = dataclasses.field(default_factory=SupervisorSettings)
    progress: ProgressSettings = dataclasses.field(default_factory=ProgressSettings)
    limits: LimitSettings = dataclasses.field(default_factory=LimitSettings)
    events: EventSettings = dataclasses.field(default_factory=EventSettings)
    nodes: NodeSettings = dataclasses.field(default_factory=NodeSettings)
    # Where the backend (API, websocket, login) listens when it is not ``port``: ``reflex run`` in dev mode.
    backend_port: int | None = None

    # The settings most modules need, by their short names.
    @property
    def port(self) -> int:
        """``DGX_SPARK_PORT``: the port of the page (and of everything, except in dev mode)."""
        return self.server.port

    @property
    def host(self) -> str:
        """``DGX_SPARK_HOST``: the interface to listen on."""
        return self.server.host

    @property
    def auth(self) -> str:
        """``DGX_SPARK_AUTH``: ``local`` or ``required``."""
        return self.server.auth

    @property
    def data_dir(self) -> Path:
        """``DGX_SPARK_DATA_DIR``, resolved."""
        return self.storage.data_dir

    @property
    def db_url(self) -> str:
        """``DGX_SPARK_DB_URL``, or the SQLite file in the data folder."""
        return self.storage.db_url

    @property
    def rules_file(self) -> Path:
        """``DGX_SPARK_RULES_FILE``, or ``rules.toml`` in the data folder."""
        return self.storage.rules_file

    @property
    def refresh_seconds(self) -> float:
        """``DGX_SPARK_REFRESH_SECONDS``."""
        return self.sampler.refresh_seconds

    @property
    def ended_ttl_seconds(self) -> float:
        """``DGX_SPARK_ENDED_TTL_SECONDS``."""
        return self.sampler.ended_ttl_seconds

    @property
    def api_port(self) -> int:
        """The port of the backend: ``port``, or ``port + 1`` in Reflex's dev mode."""
        return self.backend_port or self.port

    @property
    def auth_required(self) -> bool:
        """Whether every request, viewing included, needs the token."""
        return self.server.auth == "required"

    @property
    def base_url(self) -> str:
        """The URL the backend (API, login) is served at; the page too, except in dev mode."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.api_port}"


def reflex_dev_mode(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process belongs to ``reflex run`` in dev mode (frontend and backend on two ports).

    The ``reflex run`` command is read from its arguments (dev unless ``--env prod|preview``);
    the processes it starts get ``REFLEX_ENV_MODE`` from it. Anything else is not dev mode.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
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


def _message(error: Any) -> str:
    """One line of a pydantic error, naming the variable."""
    ctx = error.get("ctx") or {}
    if isinstance(ctx.get("error"), ValueError):
        return str(ctx["error"])
    where = ".".join(str(part) for part in error.get("loc") or ()) or "settings"
    return f"{where}: {error.get('msg')}"


def load_settings() -> Settings:
    """Read every setting from the environment (once, at start).

    Returns:
        The settings, with defaults for anything unset.

    Raises:
        ValueError: A variable holds a bad value; the message names it.
    """
    try:
        server = ServerSettings()
        loaded = Settings(
            server=server,
            storage=StorageSettings(),
            sampler=SamplerSettings(),
            resources=ResourceSettings(),
            supervisor=SupervisorSettings(),
            progress=ProgressSettings(),
            limits=LimitSettings(),
            events=EventSettings(),
            nodes=NodeSettings(),
        )
    except ValidationError as exc:
        raise ValueError("; ".join(_message(e) for e in exc.errors())) from None
    if reflex_dev_mode():
        if server.port == 65535:
            raise ValueError("DGX_SPARK_PORT must be below 65535 in dev mode: the backend takes the next port")
        loaded = dataclasses.replace(loaded, backend_port=server.port + 1)
    return loaded


settings = load_settings()
