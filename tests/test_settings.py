"""Settings: one typed object of sections, read once; bad values name their variable.

And no other module of the app reads ``DGX_SPARK_*`` variables itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dgx_spark.settings import (
    Bounds,
    EventSettings,
    ResourceSettings,
    Settings,
    load_settings,
    parse_number,
)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_numbers_are_checked_and_named() -> None:
    assert parse_number("DGX_SPARK_X", " 4 ", Bounds(0, 10, whole=True)) == 4
    assert parse_number("DGX_SPARK_X", "2.5", Bounds(0, 10)) == 2.5
    with pytest.raises(ValueError, match="DGX_SPARK_X must be a whole number"):
        parse_number("DGX_SPARK_X", "2.5", Bounds(0, 10, whole=True))


@pytest.mark.parametrize("raw", ["abc", "nan", "inf", "-1", "21", "1e999"])
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    with pytest.raises(ValueError, match="DGX_SPARK_X"):
        parse_number("DGX_SPARK_X", raw, Bounds(0, 20))
    monkeypatch.setenv("DGX_SPARK_LOG_BACKUPS", raw)
    with pytest.raises(ValueError, match=r"^DGX_SPARK_LOG_BACKUPS must be"):
        load_settings()


def test_unset_and_blank_give_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DGX_SPARK_DATA_DIR", str(tmp_path))
    for name in ("DGX_SPARK_AUTH", "DGX_SPARK_API_DOCS", "DGX_SPARK_HISTORY_DAYS", "DGX_SPARK_STALL_SECONDS"):
        monkeypatch.setenv(name, "  ")
    for name in ("DGX_SPARK_PORT", "DGX_SPARK_REFRESH_SECONDS", "DGX_SPARK_RULES_FILE", "DGX_SPARK_DB_URL",
                 "DGX_SPARK_TEMPLATES_FILE", "DGX_SPARK_MEMORY_PRESSURE_BYTES", "DGX_SPARK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    loaded = load_settings()
    assert (loaded.port, loaded.server.auth, loaded.server.api_docs) == (3000, "local", True)
    assert loaded.events.history_days == 7.0 and loaded.events.webhook_url is None
    assert loaded.progress.stall_seconds == 600.0 and loaded.resources.memory_pressure_bytes is None
    data = tmp_path.resolve()
    assert loaded.storage.rules_file == data / "rules.toml"
    assert loaded.storage.templates_file == data / "templates.toml"
    assert loaded.db_url == f"sqlite:///{data / 'dgx_spark.db'}"


def test_sections_hold_typed_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "DGX_SPARK_PORT": "3123",
        "DGX_SPARK_REFRESH_SECONDS": "0.5",
        "DGX_SPARK_DATA_DIR": str(tmp_path),
        "DGX_SPARK_ALLOWED_HOSTS": "Spark.Local, ,box",
        "DGX_SPARK_ALLOWED_ORIGINS": "http://Spark.local:3000/, https://box",
        "DGX_SPARK_API_DOCS": "off",
        "DGX_SPARK_TOKEN": " t" * 10,
        "DGX_SPARK_TEMPLATES_FILE": "~/t.toml",
        "DGX_SPARK_STOP_GRACE_SECONDS": "3",
        "DGX_SPARK_LOG_MAX_BYTES": "8192",
        "DGX_SPARK_MEMORY_PRESSURE_BYTES": "1000",
        "DGX_SPARK_CONTROL_BURST": "4",
        "DGX_SPARK_LOG_STREAM_IDLE_SECONDS": "2",
        "DGX_SPARK_SERVICE_PROBE_SECONDS": "0",
        "DGX_SPARK_DOCKER_HOST": "unix:///run/x.sock",
        "DGX_SPARK_HISTORY_DAYS": "2.5",
        "DGX_SPARK_WEBHOOK_URL": " http://127.0.0.1:9/h ",
        "DGX_SPARK_NODE_BACKOFF_MAX_SECONDS": "5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    loaded = load_settings()
    assert isinstance(loaded, Settings)
    assert (loaded.port, loaded.refresh_seconds, loaded.data_dir) == (3123, 0.5, tmp_path.resolve())
    assert loaded.db_url == f"sqlite:///{tmp_path.resolve() / 'dgx_spark.db'}"
    server = loaded.server
    assert server.allowed_hosts == ("spark.local", "box")
    assert server.allowed_origins == ("http://spark.local:3000", "https://box")
    assert server.api_docs is False and server.token == ("t " * 10).strip()
    assert loaded.storage.templates_file == Path("~/t.toml").expanduser()
    assert (loaded.supervisor.stop_grace_seconds, loaded.supervisor.log_max_bytes) == (3.0, 8192)
    assert isinstance(loaded.supervisor.log_max_bytes, int) and loaded.supervisor.log_backups == 2
    assert loaded.resources.pressure_threshold(10**9) == 1000
    assert (loaded.limits.control_burst, loaded.limits.log_stream_idle_seconds) == (4, 2.0)
    assert loaded.sampler.service_probe_seconds == 0.0 and loaded.sampler.docker_host == "unix:///run/x.sock"
    assert loaded.events.retention_seconds == 2.5 * 86400 and loaded.events.webhook_url == "http://127.0.0.1:9/h"
    assert loaded.nodes.backoff_max_seconds == 5.0
    with pytest.raises(ValueError):  # frozen: read once, never changed
        loaded.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("DGX_SPARK_PORT", "70000", "DGX_SPARK_PORT must be between 1 and 65535"),
        ("DGX_SPARK_PORT", "2.5", "DGX_SPARK_PORT must be a whole number"),
        ("DGX_SPARK_AUTH", "sometimes", "DGX_SPARK_AUTH must be one of local, required"),
        ("DGX_SPARK_API_DOCS", "maybe", "DGX_SPARK_API_DOCS must be 0 or 1"),
        ("DGX_SPARK_ALLOWED_ORIGINS", "*", "DGX_SPARK_ALLOWED_ORIGINS must not contain"),
        ("DGX_SPARK_ALLOWED_ORIGINS", "ftp://x/y", "DGX_SPARK_ALLOWED_ORIGINS: 'ftp://x/y' is not an origin"),
        ("DGX_SPARK_HISTORY_DAYS", "0", "DGX_SPARK_HISTORY_DAYS must be between 0 and 3650"),
        ("DGX_SPARK_HISTORY_DAYS", "x", "DGX_SPARK_HISTORY_DAYS must be a number"),
        ("DGX_SPARK_WEBHOOK_URL", "gopher://x", "DGX_SPARK_WEBHOOK_URL: only http"),
        ("DGX_SPARK_LOG_BACKUPS", "21", "DGX_SPARK_LOG_BACKUPS must be between 1 and 20"),
        ("DGX_SPARK_CONTROL_RATE", "0", "DGX_SPARK_CONTROL_RATE must be between"),
        ("DGX_SPARK_MEMORY_PRESSURE_BYTES", "-1", "DGX_SPARK_MEMORY_PRESSURE_BYTES must be between"),
    ],
)
def test_a_bad_value_stops_loading_and_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, message: str
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        load_settings()


def test_sections_can_be_built_by_field_name() -> None:
    """Tests and embedding hosts give a section its values by name; they are checked the same way."""
    assert ResourceSettings(memory_pressure_bytes=5).pressure_threshold(100) == 5
    assert EventSettings(history_days=1).retention_seconds == 86400.0
    with pytest.raises(ValueError, match="DGX_SPARK_IDLE_GPU_SECONDS must be between"):
        ResourceSettings(idle_gpu_seconds=-1)


def test_every_variable_is_in_the_readme_table() -> None:
    """The README's settings table lists every variable a section reads, and nothing else."""
    from dgx_spark import settings as module

    read = {
        str(field.validation_alias)
        for section in vars(module).values()
        if isinstance(section, type) and issubclass(section, module.Section) and section is not module.Section
        for field in section.model_fields.values()
    }
    table = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(DGX_SPARK_[A-Z_]+)`(?: / `(DGX_SPARK_[A-Z_]+)`)?", table, re.M))
    documented = {name for pair in listed for name in pair if name}
    assert read == documented


# Modules that may read DGX_SPARK_* variables themselves, and why.
ENV_READERS_ALLOWED = {
    "dgx_spark/settings.py": "the one reader",
    "dgx_spark/startup.py": "runs before the settings: keeps the user's umask in DGX_SPARK_USER_UMASK",
    "dgx_spark/progress/report.py": "runs inside a launched job: reads the id, URL and token the job was given",
    "dgx_spark/supervisor/supervisor.py": "removes DGX_SPARK_* from a launched job's environment",
}
_ENV_READ = re.compile(r"\bos\.environ\b|\bos\.getenv\b|\bgetenv\(|\benviron\.get\(")


def test_no_other_module_reads_dgx_spark_variables() -> None:
    """Grep: a line that reads the environment must not name a DGX_SPARK_* variable (or a constant for one)."""
    offenders: list[str] = []
    files = [*sorted((ROOT / "dgx_spark").rglob("*.py")), ROOT / "rxconfig.py"]
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel in ENV_READERS_ALLOWED:
            continue
        text = path.read_text(encoding="utf-8")
        constants = set(re.findall(r"^([A-Z_]+) = [\"']DGX_SPARK_", text, re.M))
        names = ("DGX_SPARK_", *constants)
        for number, line in enumerate(text.splitlines(), 1):
            if _ENV_READ.search(line) and any(name in line for name in names):
                offenders.append(f"{rel}:{number}: {line.strip()}")
        # Whole-environment reads (copying os.environ, or **os.environ) outside the allow-list.
        for number, line in enumerate(text.splitlines(), 1):
            if re.search(r"os\.environ\.(items|copy)\(\)|\*\*os\.environ|dict\(os\.environ", line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "read DGX_SPARK_* through dgx_spark.settings instead:\n" + "\n".join(offenders)


def test_the_allowed_readers_still_need_it() -> None:
    """Each allow-listed module really touches DGX_SPARK_* variables (a stale entry would hide a new reader)."""
    for rel in ENV_READERS_ALLOWED:
        text = (ROOT / rel).read_text(encoding="utf-8")
        assert "DGX_SPARK_" in text and "environ" in text, rel
