"""Every Reflex event handler that changes something checks the login first, and none is named set_*.

A static check over the app's state and component modules: it fails when someone
adds a handler that launches, stops, starts, removes or re-points the webhook
without calling ``authorize_event`` (directly or through a helper of its class).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dgx_spark"
MODULES = sorted([*PACKAGE.glob("state/*.py"), *PACKAGE.glob("components/*.py"), *PACKAGE.glob("pages/*.py")])
# What a privileged handler does: a supervisor mutation or a new webhook target.
PRIVILEGED = re.compile(
    r"(get_supervisor\(\)|\bsup\b|\bsupervisor\b)\s*\.\s*(launch|stop|start_again|forget|kill)\b|set_webhook_url"
)
GUARD = "authorize_event("


def _is_event(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for deco in func.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Attribute) and target.attr == "event":
            return True
    return False


def _self_calls(func: ast.AST) -> set[str]:
    return {
        node.func.attr
        for node in ast.walk(func)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
    }


def _handlers() -> list[tuple[str, str, bool, bool]]:
    """(module:class, handler, privileged, guarded) for every event handler."""
    found: list[tuple[str, str, bool, bool]] = []
    for path in MODULES:
        source = path.read_text()
        tree = ast.parse(source)
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            methods = {
                m.name: m for m in cls.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            text = {name: ast.get_source_segment(source, m) or "" for name, m in methods.items()}
            calls = {name: _self_calls(m) & methods.keys() for name, m in methods.items()}
            privileged = {name for name in methods if PRIVILEGED.search(text[name])}
            guarded = {name for name in methods if GUARD in text[name]}
            changed = True
            while changed:  # through helpers of the same class (e.g. self._act)
                changed = False
                for name in methods:
                    if name not in privileged and calls[name] & privileged:
                        privileged.add(name)
                        changed = True
                    if name not in guarded and calls[name] & guarded:
                        guarded.add(name)
                        changed = True
            for name, method in methods.items():
                if _is_event(method):
                    found.append((f"{path.stem}:{cls.name}", name, name in privileged, name in guarded))
    return found


def test_the_scan_sees_the_handlers() -> None:
    handlers = _handlers()
    assert handlers, "no event handlers found: the scan is broken"


def test_privileged_handlers_check_the_login() -> None:
    unguarded = [f"{where}.{name}" for where, name, privileged, guarded in _handlers() if privileged and not guarded]
    assert not unguarded, f"handlers that change things without authorize_event(): {unguarded}"


def test_privileged_handlers_are_not_setters() -> None:
    setters = [f"{where}.{name}" for where, name, privileged, _ in _handlers() if privileged and name.startswith("set_")]
    assert not setters, f"privileged handlers reachable through setvar: {setters}"


def test_the_check_catches_an_unguarded_handler(tmp_path: Path) -> None:
    """The scan itself: a handler that stops without the guard is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import reflex as rx\n"
        "class S(rx.State):\n"
        "    @rx.event\n"
        "    def kill_it(self, op_id: str):\n"
        "        get_supervisor().stop(op_id)\n"
        "    @rx.event\n"
        "    def set_thing(self, op_id: str):\n"
        "        self._helper(op_id)\n"
        "    def _helper(self, op_id):\n"
        "        sup = get_supervisor(); sup.forget(op_id)\n"
    )
    global MODULES
    saved = MODULES
    MODULES = [bad]
    try:
        handlers = {name: (p, g) for _, name, p, g in _handlers()}
    finally:
        MODULES = saved
    assert handlers == {"kill_it": (True, False), "set_thing": (True, False)}
