"""Every Reflex event handler that changes something goes through the control service, and none is named set_*.

A static check over the app's state, component and page modules: it fails when someone
adds a handler that launches, stops, restarts, starts, removes, adds or removes a node,
or re-points the webhook without calling ``get_control()`` (directly or through a helper
of its class), or that redoes the service's work by hand (its own login check, throttle,
hold or audit row). The service itself is tested in ``tests/test_control_service.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dgx_spark"
MODULES = sorted([*PACKAGE.glob("state/*.py"), *PACKAGE.glob("components/*.py"), *PACKAGE.glob("pages/*.py")])
# What a privileged handler does: a control action, on this machine or a node, or a setting that acts.
PRIVILEGED = re.compile(
    r"(get_supervisor\(\)|\bsup\b|\bsupervisor\b)\s*\.\s*(launch|stop|restart|start_again|forget|kill)\b"
    r"|(get_hub\(\)|\bhub\b)\s*\.\s*(add|remove)\b"
    r"|get_control\(\)|set_webhook_url|set_notify_kinds|httpx\.\w+\(|\.post\("
)
GUARD = "get_control()"
# The service's own steps: a handler doing one of them by hand keeps a second copy of the policy.
BY_HAND = re.compile(r"\b(authorize_event|record_audit_soon|record_audit|control_rate|in_flight|operations_in_flight)\b")


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


def _handlers(modules: list[Path] | None = None) -> list[tuple[str, str, bool, bool]]:
    """(module:class, handler, privileged, through the service) for every event handler."""
    found: list[tuple[str, str, bool, bool]] = []
    for path in MODULES if modules is None else modules:
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
    names = {name for _, name, privileged, _ in handlers if privileged}
    # The known control handlers are seen as privileged (the pattern still matches what they do).
    assert {"launch_operation", "confirm_stop", "start_again", "remove_operation", "add_node", "remove_node",
            "save_webhook", "set_notify_kind"} <= names, names


def test_privileged_handlers_go_through_the_control_service() -> None:
    bypass = [f"{where}.{name}" for where, name, privileged, guarded in _handlers() if privileged and not guarded]
    assert not bypass, f"handlers that change things without the control service (get_control()): {bypass}"


def test_no_handler_module_redoes_the_service_by_hand() -> None:
    """Login check, throttle, hold and audit are the service's: no UI module keeps its own copy."""
    found = {
        path.relative_to(PACKAGE).as_posix(): sorted(set(BY_HAND.findall(path.read_text())))
        for path in MODULES
        if BY_HAND.search(path.read_text())
    }
    assert not found, f"UI modules doing the control service's work by hand: {found}"


def test_privileged_handlers_are_not_setters() -> None:
    # set_notify_kind is not a var setter (there is no var notify_kind) and goes through the service.
    setters = [f"{where}.{name}" for where, name, privileged, _ in _handlers()
               if privileged and name.startswith("set_") and name != "set_notify_kind"]
    assert not setters, f"privileged handlers reachable through setvar: {setters}"


def test_the_check_catches_a_handler_that_bypasses_the_service(tmp_path: Path) -> None:
    """The scan itself: handlers that stop or add a node without the service are reported."""
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
        "    @rx.event\n"
        "    def add(self, url: str):\n"
        "        get_hub().add('n', url, 't')\n"
        "    @rx.event\n"
        "    def fine(self, op_id: str):\n"
        "        get_control().stop(ui_actor(self), op_id)\n"
    )
    handlers = {name: (p, g) for _, name, p, g in _handlers([bad])}
    assert handlers == {"kill_it": (True, False), "set_thing": (True, False), "add": (True, False),
                        "fine": (True, True)}
