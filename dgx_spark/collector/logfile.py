"""Launched operations' log files: capped writes with rotation, tails, follow reads, ANSI stripping.

The supervisor's runner writes them (``LogWriter``); ``collector/output.py`` reads them
beside the other kinds of output.

Lines read for showing (tails, follow reads) have secrets hidden
(``redact_lines``: a Jupyter server prints its token); ``iter_whole`` gives the
raw file for the token-protected download.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from dgx_spark.redaction import redact_lines

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_BACKUPS = 2
MAX_LINE_CHARS = 4000
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences and other control characters (tabs stay)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


class LogWriter:
    """Appends to a log file; when it passes ``max_bytes`` it becomes ``.1`` (``.2``...)."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        """Open ``path`` for appending."""
        self.path = path
        self.max_bytes = max(1024, max_bytes)
        self.backups = max(1, backups)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        """Append bytes, rotating first when the file would pass the cap."""
        if not data:
            return
        if self._size and self._size + len(data) > self.max_bytes:
            self.rotate()
        os.write(self._fd, data)
        self._size += len(data)

    def rotate(self) -> None:
        """Shift ``log`` -> ``log.1`` -> ``log.2``... and start an empty file."""
        os.close(self._fd)
        for index in range(self.backups, 0, -1):
            older = backup_path(self.path, index)
            newer = self.path if index == 1 else backup_path(self.path, index - 1)
            if newer.exists():
                os.replace(newer, older)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o640)
        self._size = 0

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def backup_path(path: Path, index: int) -> Path:
    """The ``index``-th rotated file of ``path``."""
    return path.with_name(f"{path.name}.{index}")


def _decode(raw: bytes) -> list[str]:
    text = raw.decode("utf-8", errors="replace")
    # Redact with some slack before the final cut, so a cut rarely splits a secret.
    lines = redact_lines(strip_ansi(line)[: 2 * MAX_LINE_CHARS] for line in text.splitlines())
    return [line[:MAX_LINE_CHARS] for line in lines]


def read_tail(path: Path, lines: int = 1000, chunk: int = 64 * 1024) -> tuple[list[str], int, bool]:
    """The last ``lines`` lines of a log.

    Returns:
        (lines, offset, truncated): ``offset`` is the file size read up to (pass it
        to :func:`read_from` to follow); ``truncated`` says earlier output exists.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            position, data = size, b""
            while position > 0 and data.count(b"\n") <= lines:
                step = min(chunk, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return [], 0, False
    decoded = _decode(data)
    truncated = position > 0 or len(decoded) > lines or backup_path(path, 1).exists()
    return decoded[-lines:] if lines else [], size, truncated


def read_from(path: Path, offset: int, limit: int = 1024 * 1024) -> tuple[list[str], int]:
    """Complete lines written after ``offset`` (restarting at 0 after a rotation).

    Returns:
        (lines, new offset).
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if offset > size:
                offset = 0
            handle.seek(offset)
            data = handle.read(limit)
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n")
    if end < 0:
        # Keep waiting for the end of the line unless the buffer is full.
        return ([], offset) if len(data) < limit else (_decode(data), offset + len(data))
    return _decode(data[: end + 1]), offset + end + 1


def iter_whole(path: Path, backups: int = DEFAULT_BACKUPS, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """The raw bytes of the whole log, oldest rotated file first."""
    for candidate in [backup_path(path, i) for i in range(backups, 0, -1)] + [path]:
        try:
            with open(candidate, "rb") as handle:
                while block := handle.read(chunk):
                    yield block
        except FileNotFoundError:
            continue
