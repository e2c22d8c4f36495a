"""What the audit log dialog shows: the newest control actions, for a logged-in browser only."""

from __future__ import annotations

import asyncio
from typing import Any

import reflex as rx

from dgx_spark.security.validation import InvalidArgument, validate_bool
from dgx_spark.services import get_services
from dgx_spark.state.actor import logged_in

AUDIT_ROWS = 200


class AuditState(rx.State):
    """What the audit dialog shows."""

    audit_open: bool = False
    audit_rows: list[dict[str, str]] = []  # noqa: RUF012 - a Reflex state var
    audit_error: str = ""

    @rx.event
    async def load_audit(self) -> None:
        """Read the newest entries (only for a logged-in browser)."""
        await self._load()

    async def _load(self) -> None:
        if not logged_in(self):
            self.audit_rows = []
            self.audit_error = "Log in to see the audit log (open /login)."
            return
        try:
            entries = await asyncio.to_thread(get_services().audit.entries, limit=AUDIT_ROWS)
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            self.audit_rows = []
            self.audit_error = f"The audit log cannot be read ({type(exc).__name__})."
            return
        self.audit_error = ""
        rows = [
            {key: "" if value is None else str(value) for key, value in entry.to_api().items()}
            for entry in entries
        ]
        # Show each target by its name (the id on hover): from the snapshot, the supervisor or the events,
        # else the name the row was written with (an operation removed since), else the id.
        names = await asyncio.to_thread(get_services().names.names, [row["target"] for row in rows])
        for row in rows:
            row["target_name"] = names.get(row["target"]) or row["target_name"] or row["target"]
        self.audit_rows = rows

    @rx.event
    async def audit_open_change(self, value: Any) -> None:
        """The dialog opened or closed; load the entries when it opens."""
        try:
            self.audit_open = validate_bool(value, "open")
        except InvalidArgument:
            self.audit_open = False
            return
        if self.audit_open:
            await self._load()
