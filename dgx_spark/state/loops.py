"""Registry of the browser tabs' live loops (plain Python, no Reflex).

Each browser tab (client token) may run at most one live loop. A loop claims a
generation when it starts; a newer claim for the same token supersedes it, and
the old loop ends at its next check. The REST API reads ``count()`` for
``/api/health`` without importing any Reflex state.

Several views of one tab share its loop through *feeds* (``"operations"``,
``"system"``): a view ``join``s when it mounts (starting the loop only when none
runs) and ``leave``s when it unmounts; the loop ends when no feed is left, so a
tab costs one loop however many live views it shows.

Per tab and feed the registry also keeps what the tab's state last showed (a
small *fingerprint*, ``shown`` / ``mark_shown``) and the settings the feed needs
to compute it (``setting`` / ``remember``: e.g. the host name and filters), so a
loop can tell a quiet tick without loading or locking the tab's state.

A tab may also run side loops of other *kinds* (``claim(token, kind="events")``:
the notifications bell's), kept by the same registry under their own key: a newer
claim supersedes the older loop of that kind only, and ``stop`` ends it. ``count()``
counts the tabs' feed loops (``/api/health``'s ``ui_loops``); ``count(kind)`` the others.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

# The kind of the tab's one feed loop (operations, system header); side loops name their own.
TAB = "tab"

_lock = threading.Lock()
_generations = itertools.count(1)
_current: dict[str, int] = {}  # key -> generation allowed to run
_running: dict[int, tuple[str, str]] = {}  # generation -> (key, kind), for every loop still alive
_feeds: dict[str, set[str]] = {}  # token -> the views its loop serves
_shown: dict[str, dict[str, Any]] = {}  # token -> feed -> fingerprint of what the tab shows
_settings: dict[str, dict[str, Any]] = {}  # token -> feed -> what the feed needs to compute it


def _key(token: str, kind: str) -> str:
    """The registry key of ``token``'s loop of ``kind`` (the feed loop keeps the bare token)."""
    return token if kind == TAB else f"{kind}\x00{token}"


def claim(token: str, kind: str = TAB) -> int:
    """Start a loop of ``kind`` for ``token``: returns its generation and supersedes older ones."""
    key = _key(token, kind)
    with _lock:
        generation = next(_generations)
        _current[key] = generation
        _running[generation] = (key, kind)
        return generation


def is_current(token: str, generation: int, kind: str = TAB) -> bool:
    """Whether the loop ``generation`` is still the one ``token`` should run for ``kind``."""
    with _lock:
        return _current.get(_key(token, kind)) == generation


def stop(token: str, kind: str = TAB) -> None:
    """Ask ``token``'s loop of ``kind`` to end (the tab went away or hid the view)."""
    key = _key(token, kind)
    with _lock:
        _current.pop(key, None)
        if kind == TAB:
            _feeds.pop(token, None)
            _shown.pop(token, None)
            _settings.pop(token, None)


def join(token: str, feed: str) -> int | None:
    """Have ``token``'s loop serve ``feed``.

    Returns:
        The generation of a new loop the caller must run, or None when a loop
        of ``token`` already runs (it serves ``feed`` from its next tick).
    """
    with _lock:
        _feeds.setdefault(token, set()).add(feed)
        if token in _current:
            return None
        generation = next(_generations)
        _current[token] = generation
        _running[generation] = (token, TAB)
        return generation


def leave(token: str, feed: str) -> None:
    """``token``'s loop no longer serves ``feed`` (that view unmounted)."""
    with _lock:
        feeds = _feeds.get(token)
        if feeds is not None:
            feeds.discard(feed)


def feeds(token: str, generation: int) -> frozenset[str]:
    """The feeds loop ``generation`` serves now; empty once it should end."""
    with _lock:
        if _current.get(token) != generation:
            return frozenset()
        return frozenset(_feeds.get(token, ()))


def release(token: str, generation: int, kind: str = TAB) -> None:
    """Record that loop ``generation`` (of ``kind``) has ended."""
    key = _key(token, kind)
    with _lock:
        _running.pop(generation, None)
        if _current.get(key) == generation:
            del _current[key]
            if kind == TAB:
                _feeds.pop(token, None)
                _shown.pop(token, None)
                _settings.pop(token, None)


def count(kind: str = TAB) -> int:
    """How many live loops of ``kind`` are running now in this process."""
    with _lock:
        return sum(1 for _, loop_kind in _running.values() if loop_kind == kind)


def shown(token: str, feed: str) -> Any:
    """The fingerprint of what ``token``'s tab shows for ``feed`` (None: unknown)."""
    with _lock:
        return _shown.get(token, {}).get(feed)


def mark_shown(token: str, feed: str, fingerprint: Any) -> None:
    """Record what ``token``'s tab now shows for ``feed`` (called by the state that assigned it)."""
    if not token:
        return
    with _lock:
        _shown.setdefault(token, {})[feed] = fingerprint


def setting(token: str, feed: str) -> Any:
    """What ``feed`` needs to compute ``token``'s fingerprint (None: not known yet)."""
    with _lock:
        return _settings.get(token, {}).get(feed)


def remember(token: str, feed: str, value: Any) -> None:
    """Keep ``value`` as ``token``'s settings for ``feed`` (the state calls it when they change)."""
    if not token:
        return
    with _lock:
        _settings.setdefault(token, {})[feed] = value
