"""One ``Services`` object per process (``dgx_spark/services.py``): no other module keeps a service of its own.

Reads every module of ``dgx_spark/`` with ``ast`` and fails on what makes a module-level
singleton or starts work at import:

* a ``global`` statement (a module variable set from a function: a lazily built service, a cache);
* code that runs at import (module or class body, not inside a function) and calls a thread,
  pool, timer or engine constructor, starts something, or builds one of the services' parts;
* a ``get_*`` function memoised with ``functools.cache``/``lru_cache`` (a process-wide getter).

``services.py`` itself is where the one instance of each lives.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dgx_spark"
OWNER = "services.py"

# Calls that start a thread or open a pool or a database when they run at import.
STARTS_WORK = frozenset({
    "Thread", "Timer", "ThreadPoolExecutor", "ProcessPoolExecutor", "create_engine", "make_engine", "start",
})
# The services' parts (built by ``Services`` and handed down): one per process, never at module level.
SERVICE_PARTS = frozenset({
    "AuditLog", "Limits", "RateLimiter", "InFlight", "StreamSlots", "RefusalGate", "SessionStore",
    "OutputHandles", "ExitListener", "ContainerWatcher", "Sampler", "Supervisor", "ProgressTracker",
    "NodeHub", "EventsService", "ControlService", "ServiceWatcher",
})
MEMO_DECORATORS = frozenset({"cache", "lru_cache"})
# Singletons still to move into Services: (module, what). Remove an entry when it goes.
PENDING: frozenset[tuple[str, str]] = frozenset()


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node that runs when the module is imported: module and class bodies, not function bodies."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(node.decorator_list)  # decorators run at import; the body does not
            stack.extend(d for d in node.args.defaults + node.args.kw_defaults if d is not None)
            continue
        if isinstance(node, ast.Lambda):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _memoised(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in MEMO_DECORATORS:
            return True
    return False


def singletons(source: str) -> list[tuple[int, str]]:
    """(line, what) for each module-level singleton or import-time start in ``source``."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found += [(node.lineno, f"global {name}") for name in node.names]
    for node in _import_time_nodes(tree.body):
        if isinstance(node, ast.Call) and (_callee(node) in STARTS_WORK or _callee(node) in SERVICE_PARTS):
            found.append((node.lineno, _callee(node)))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("get_") and _memoised(node):
            found.append((node.lineno, node.name))
    return found


def test_no_module_keeps_a_singleton_or_starts_work_at_import() -> None:
    """Only services.py builds the process's services; the rest receive them."""
    found = [
        f"dgx_spark/{relative}:{line}: {what}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (relative := path.relative_to(PACKAGE).as_posix()) != OWNER
        for line, what in singletons(path.read_text(encoding="utf-8"))
        if (relative, what) not in PENDING
    ]
    assert not found, "module-level singletons (build them in Services and hand them down):\n" + "\n".join(found)


def test_the_check_finds_each_kind() -> None:
    source = '''
import concurrent.futures, functools, threading
pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
threading.Thread(target=print).start()
limits = RateLimiter(5, 10)
_store = None

class Holder:
    engine = create_engine("sqlite://")

def store():
    global _store
    return _store

@functools.cache
def get_watcher():
    return ContainerWatcher()

def fine(rate=RateLimiter):
    worker = threading.Thread(target=print)  # inside a function: runs when called, not at import
    return worker, functools.cache(len)
'''
    assert sorted(singletons(source)) == [
        (3, "ThreadPoolExecutor"), (4, "Thread"), (4, "start"), (5, "RateLimiter"), (9, "create_engine"),
        (12, "global _store"), (16, "get_watcher"),
    ]
