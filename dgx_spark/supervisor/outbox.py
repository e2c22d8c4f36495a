"""The outbox: supervisor writes the database could not take, kept on disk until it can.

A stop that was carried out (the signal was sent) must never be forgotten because
the database was locked, read-only or down at that moment. Such writes are
appended here, one JSON object per line, in ``$DATA_DIR/outbox.jsonl`` (mode
0600, fsynced), and replayed in order when the database takes writes again and
at start. Until then :meth:`Outbox.overlay` applies them to what the database
returned, so a restart still sees the stop.

Plain Python and SQLModel; no Reflex.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlmodel import Session

from dgx_spark.supervisor.models import LaunchedOperation

logger = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.jsonl"


def upsert_entry(row: dict[str, Any]) -> dict[str, Any]:
    """The entry that saves a launched operation's columns (``LaunchedOperation.saved()``)."""
    return {"op": "upsert", "row": row}


def delete_entry(op_id: str) -> dict[str, Any]:
    """The entry that removes an operation's row."""
    return {"op": "delete", "id": op_id}


def apply_entry(session: Session, entry: dict[str, Any]) -> None:
    """Apply one entry to a session (the caller commits).

    A ``transition`` key (written by versions that kept a transition table) is ignored.
    """
    kind = entry.get("op")
    if kind == "upsert":
        session.merge(LaunchedOperation.from_saved(entry["row"]))
    elif kind == "delete":
        row = session.get(LaunchedOperation, entry["id"])
        if row is not None:
            session.delete(row)
    else:
        logger.warning("outbox: skipping an entry of unknown kind %r", kind)


class Outbox:
    """An append-only JSON-lines file of pending writes (thread-safe)."""

    def __init__(self, path: Path) -> None:
        """Use ``path``; it is created (0600) on the first append."""
        self.path = path
        self._lock = threading.Lock()
        self._count = len(self._read())

    @property
    def pending(self) -> int:
        """How many writes are waiting (never blocks: safe from the sampler thread)."""
        return self._count

    def append(self, entry: dict[str, Any]) -> None:
        """Add one write at the end, durably (fsync) before returning.

        Raises:
            OSError: The data folder cannot be written either.
        """
        line = (json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._count += 1

    def entries(self) -> list[dict[str, Any]]:
        """Every waiting write, oldest first (a torn last line is skipped)."""
        with self._lock:
            return self._read()

    def _read(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.warning("outbox: cannot read %s: %s", self.path, exc)
            return []
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                logger.warning("outbox: line %d of %s is not JSON; skipped", number, self.path)
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def _rewrite(self, entries: Iterable[dict[str, Any]]) -> None:
        """Replace the file's content atomically (lock held)."""
        entries = list(entries)
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._count = 0
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            for entry in entries:
                os.write(fd, (json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._count = len(entries)

    def replay(self, apply: Callable[[list[dict[str, Any]]], None]) -> int:
        """Hand every waiting write to ``apply`` (one transaction); on success empty the outbox.

        Args:
            apply: Writes the entries, in order, all or nothing; raises when it cannot.

        Returns:
            How many entries were written (0 when there were none).
        """
        with self._lock:
            entries = self._read()
            if not entries:
                self._count = 0
                return 0
            apply(entries)
            # Entries appended meanwhile are impossible: append takes the same lock.
            self._rewrite([])
        logger.info("outbox: %d pending write(s) saved to the database", len(entries))
        return len(entries)

    def overlay(self, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """``rows`` (saved columns by id, as read from the database) with the waiting writes applied on top."""
        merged = dict(rows)
        for entry in self.entries():
            row = entry.get("row")
            if entry.get("op") == "upsert" and isinstance(row, dict) and isinstance(row.get("id"), str):
                merged[row["id"]] = row
            elif entry.get("op") == "delete":
                merged.pop(str(entry.get("id")), None)
        return merged
