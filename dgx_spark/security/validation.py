"""The one library of argument checks: event handlers, launch requests, anything a client can send.

Every public Reflex event handler can be called by any client, by name, with
arguments of any JSON type. Privileged handlers call these before acting, and
launch templates check their parameters with them; each check raises
:class:`InvalidArgument` (a ``ValueError``) whose message names the field, and
returns the value with its proper type.

Plain Python (no Reflex, no FastAPI).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from dgx_spark.collector.ancestry import ancestor_pids

DEFAULT_PID_MAX = 4_194_304  # Linux's upper limit for /proc/sys/kernel/pid_max.
MAX_TEXT = 256
_OPERATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidArgument(ValueError):
    """An argument was refused; ``field`` names it and the message says why."""

    def __init__(self, field: str, message: str) -> None:
        """Create the error for ``field``."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message

    @property
    def message(self) -> str:
        """Why, without the field's name."""
        return self.reason


def _type_name(value: Any) -> str:
    return type(value).__name__


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (it cannot be written as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def surrogate_path(value: Any, where: str = "body", depth: int = 0) -> str | None:
    """Where in a decoded JSON value (keys included) text is not valid UTF-8, else None.

    The path names the field as the API reports it: ``name``, ``command[2]``, ``env.<key>``.
    """
    if isinstance(value, str):
        return where if has_surrogate(value) else None
    if depth > 64:
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            key_text = str(key)
            if has_surrogate(key_text):
                return f"{'' if where == 'body' else where + '.'}{key_text.encode('utf-8', 'backslashreplace').decode()}"
            found = surrogate_path(item, key_text if where == "body" else f"{where}.{key_text}", depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = surrogate_path(item, f"{where}[{i}]", depth + 1)
            if found is not None:
                return found
    return None


@functools.cache
def pid_max() -> int:
    """The kernel's largest PID (``/proc/sys/kernel/pid_max``)."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_PID_MAX


def protected_pids() -> frozenset[int]:
    """PIDs no control action may touch: this process and every ancestor up to init."""
    return frozenset({0, 1, os.getppid(), *ancestor_pids()})


def validate_int(value: Any, field: str, lo: int, hi: int) -> int:
    """An ``int`` (not a bool, a float or a string) with ``lo <= value <= hi``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, f"must be an integer, got {_type_name(value)}")
    if not lo <= value <= hi:
        raise InvalidArgument(field, f"must be between {lo} and {hi}, got {value}")
    return value


def validate_pid(value: Any, field: str = "pid") -> int:
    """A PID that may be signalled: an int in 2..pid_max, not the dashboard or its ancestors."""
    pid = validate_int(value, field, 2, pid_max())
    if pid in protected_pids():
        raise InvalidArgument(field, f"{pid} is the dashboard itself or one of its parents")
    return pid


def validate_port(value: Any, field: str = "port") -> int:
    """A TCP port number, 1..65535."""
    return validate_int(value, field, 1, 65535)


def validate_bool(value: Any, field: str) -> bool:
    """A real boolean (not 0/1, not "true")."""
    if not isinstance(value, bool):
        raise InvalidArgument(field, f"must be true or false, got {_type_name(value)}")
    return value


def validate_text(
    value: Any,
    field: str,
    *,
    max_length: int = MAX_TEXT,
    allow_empty: bool = False,
    multiline: bool = False,
    allow_control: bool = False,
) -> str:
    """A string without NUL or control characters (newlines only if ``multiline``), within a length cap.

    ``allow_control`` lets every control character but NUL through (an argument for ``exec``
    may hold a tab or an escape; NUL cannot be passed at all).
    """
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, got {_type_name(value)}")
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters, got {len(value)}")
    if not allow_empty and not value.strip():
        raise InvalidArgument(field, "must not be empty")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    if has_surrogate(value):
        raise InvalidArgument(field, "must be valid UTF-8 text (no lone surrogates)")
    if allow_control:
        return value
    bad = _CONTROL.findall(value.replace("\n", "").replace("\t", "") if multiline else value)
    if bad:
        raise InvalidArgument(field, "must not contain newlines or control characters")
    return value


def validate_operation_id(value: Any, field: str = "operation_id") -> str:
    """An operation id: 1-64 characters of letters, digits and ``_.:-``."""
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, got {_type_name(value)}")
    if not _OPERATION_ID.fullmatch(value):
        raise InvalidArgument(field, "is not a valid operation id")
    return value


def validate_choice(value: Any, field: str, choices: Collection[str]) -> str:
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgument(field, f"must be one of {', '.join(sorted(choices))}")
    return value


def validate_str_list(
    value: Any,
    field: str,
    *,
    max_items: int = 256,
    max_length: int = 4096,
    allow_empty_items: bool = True,
    allow_control: bool = False,
) -> list[str]:
    """A list of strings (an argv, say): no NUL or newlines in any item, bounded sizes.

    ``allow_control`` as for ``validate_text``: every control character but NUL.
    """
    if not isinstance(value, list | tuple):
        raise InvalidArgument(field, f"must be a list of strings, got {_type_name(value)}")
    if len(value) > max_items:
        raise InvalidArgument(field, f"must have at most {max_items} items, got {len(value)}")
    return [
        validate_text(
            item, f"{field}[{i}]", max_length=max_length, allow_empty=allow_empty_items, allow_control=allow_control
        )
        for i, item in enumerate(value)
    ]


def validate_env(
    value: Any,
    field: str = "env",
    *,
    allowed: Iterable[str] | None = None,
    allowed_prefixes: tuple[str, ...] = (),
    reserved: Collection[str] = (),
    max_items: int = 64,
    max_length: int = 4096,
    names: re.Pattern[str] = _ENV_NAME,
) -> dict[str, str]:
    """An environment mapping: variable names, string values, optionally from an allow-list.

    Args:
        value: The mapping a client sent.
        field: Its name in error messages.
        allowed: Names allowed (None: any valid name), together with ``allowed_prefixes``.
        allowed_prefixes: Name prefixes allowed as well (``HF_``...).
        reserved: Names the dashboard sets itself, never taken from a client.
        max_items: How many variables at most.
        max_length: The longest value.
        names: What a variable name looks like.
    """
    if not isinstance(value, Mapping):
        raise InvalidArgument(field, f"must be an object of strings, got {_type_name(value)}")
    if len(value) > max_items:
        raise InvalidArgument(field, f"at most {max_items} variables")
    allow = None if allowed is None else frozenset(allowed)
    out: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not names.fullmatch(name):
            raise InvalidArgument(f"{field}.{str(name)[:40]}", "is not a valid variable name (A-Z, 0-9, _)")
        if name in reserved:
            raise InvalidArgument(f"{field}.{name}", "is set by the dashboard and cannot be overridden")
        if allow is not None and name not in allow and not name.startswith(allowed_prefixes):
            raise InvalidArgument(f"{field}.{name}", "is not in the environment allow-list")
        out[name] = validate_text(item, f"{field}.{name}", max_length=max_length, allow_empty=True,
                                  allow_control=True)
    return out
