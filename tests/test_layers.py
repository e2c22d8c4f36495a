"""The package's layers (docs/architecture.md, "Layers"): no import runs back up a layer.

Reads every module of ``dgx_spark/`` with ``ast`` (imports inside functions and under
``TYPE_CHECKING`` count too) and checks each import of the package against ``LAYERS``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dgx_spark"

# Lowest first. A unit (a subpackage, or a module directly under dgx_spark/) may import itself and any
# unit of a LOWER layer; units of one layer do not import each other. Keep in step with docs/architecture.md.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("settings",),
    ("format", "redaction"),
    ("health", "startup"),
    ("collector", "database"),
    ("events", "nodes", "progress", "security"),
    ("supervisor",),
    ("control",),
    ("services",),
    ("state", "styles"),
    ("api", "components"),
    ("pages",),
    ("app", "embed", "devserver", "__init__"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# Web frameworks stay above the plain-Python core (the collector runs in benches and scripts alone).
WEB = ("reflex", "reflex_base", "fastapi", "starlette")
NO_WEB_BELOW = RANK["services"]  # units of a lower rank import none of WEB, except:
WEB_ALLOWED = {"security": ("fastapi", "starlette")}  # the ASGI security layer and its Request checks


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _unit(module: str) -> str:
    """The layer unit of a module name under dgx_spark."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    if parts[1] == "dgx_spark":
        return "app"  # dgx_spark/dgx_spark.py, the Reflex app
    return parts[1]


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()


def _imports(path: Path, text: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in a file (or ``text`` read as that file), relative ones resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    source = path.read_text() if text is None else text
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from dgx_spark import styles`` imports the module dgx_spark.styles
            if _is_package(base):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() or _is_package(sub)
                    yield node.lineno, sub if is_module else base
            else:
                yield node.lineno, base


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer() -> None:
    """A new subpackage or top-level module must be placed in LAYERS (and in the docs)."""
    units = {_unit(_module_name(path)) for path in _files()}
    assert units - RANK.keys() == set(), "add these to LAYERS and docs/architecture.md"


def test_no_import_runs_up_a_layer() -> None:
    """Each import of the package goes to the same unit or to a lower layer."""
    wrong = []
    for path in _files():
        source = _unit(_module_name(path))
        for line, imported in _imports(path):
            if imported != "dgx_spark" and not imported.startswith("dgx_spark."):
                continue
            target = _unit(imported)
            if target != source and RANK.get(target, -1) >= RANK.get(source, -1):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({source}) imports {imported} ({target})")
    assert wrong == []


def test_plain_python_below_services() -> None:
    """Units below services import no web framework (security: only the ASGI/FastAPI types it checks)."""
    wrong = []
    for path in _files():
        source = _unit(_module_name(path))
        if RANK[source] >= NO_WEB_BELOW:
            continue
        allowed = WEB_ALLOWED.get(source, ())
        for line, imported in _imports(path):
            top = imported.split(".")[0]
            if top in WEB and top not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert wrong == []


def _is_reflex_state(base: ast.expr) -> bool:
    """``rx.State`` / ``reflex.State`` / ``State`` as a class base."""
    if isinstance(base, ast.Attribute):
        return base.attr == "State" and isinstance(base.value, ast.Name) and base.value.id in ("rx", "reflex")
    return isinstance(base, ast.Name) and base.id == "State"


def test_every_reflex_state_lives_under_state() -> None:
    """Components and pages render; the Reflex states they read live in dgx_spark/state/."""
    outside = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
        for path in _files()
        if _unit(_module_name(path)) != "state"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and any(_is_reflex_state(base) for base in node.bases)
    ]
    assert outside == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from dgx_spark import styles", "dgx_spark.styles"),
        ("from dgx_spark.collector import logfile as oplogs", "dgx_spark.collector.logfile"),
        ("from dgx_spark.collector.model import Operation", "dgx_spark.collector.model"),
        ("from .model import Operation", "dgx_spark.collector.model"),
        ("from . import model", "dgx_spark.collector.model"),
        ("import dgx_spark.supervisor.models", "dgx_spark.supervisor.models"),
    ],
)
def test_imports_are_resolved(source: str, expected: str) -> None:
    """The reader resolves the import forms the package uses (so the checks above cannot pass vacuously)."""
    as_if_in = PACKAGE / "collector" / "sampler.py"
    assert [imported for _line, imported in _imports(as_if_in, source)] == [expected]


def test_a_violation_is_found() -> None:
    """An upward import is reported: the collector importing the supervisor."""
    as_if_in = PACKAGE / "collector" / "sampler.py"
    imported = [m for _line, m in _imports(as_if_in, "from dgx_spark.supervisor import supervisor")]
    assert [_unit(m) for m in imported] == ["supervisor"]
    assert RANK["supervisor"] > RANK["collector"]
