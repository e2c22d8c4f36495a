"""Registry of the browser tabs' live loops (plain Python, no Reflex).

Each browser tab (client token) may run at most one live loop. A loop claims a
generation when it starts; a newer claim for the same token (a reload, a
remount) supersedes it, and the old loop ends at its next check. The REST API
reads ``count()`` for ``/api/health`` without importing any Reflex state.
"""

from __future__ import annotations

import itertools
import threading

_lock = threading.Lock()
_generations = itertools.count(1)
_current: dict[str, int] = {}  # token -> generation allowed to run
_running: dict[int, str] = {}  # generation -> token, for every loop still alive


def claim(token: str) -> int:
    """Start a loop for ``token``: returns its generation and supersedes older ones."""
    with _lock:
        generation = next(_generations)
        _current[token] = generation
        _running[generation] = token
        return generation


def is_current(token: str, generation: int) -> bool:
    """Whether the loop ``generation`` is still the one ``token`` should run."""
    with _lock:
        return _current.get(token) == generation


def stop(token: str) -> None:
    """Ask any loop of ``token`` to end (the tab went away or hid the view)."""
    with _lock:
        _current.pop(token, None)


def release(token: str, generation: int) -> None:
    """Record that loop ``generation`` has ended."""
    with _lock:
        _running.pop(generation, None)
        if _current.get(token) == generation:
            del _current[token]


def count() -> int:
    """How many live loops are running now in this process."""
    with _lock:
        return len(_running)
