"""Operation names for ids, so toasts and the audit log say ``train-llama`` instead of ``launch-60879ab10f8b``.

Plain Python (no Reflex). A name is looked up where it is known: the sampler's
latest snapshot (every listed operation), the supervisor's records (launched
ones, ended or not), then the recorded events (anything seen starting or ending,
for as long as events are kept). An id found nowhere has no name.
``Services.names`` is the one instance; the control service names audit targets with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dgx_spark.collector.sampler import Sampler
from dgx_spark.events.store import EventRow
from dgx_spark.supervisor.supervisor import Supervisor

logger = logging.getLogger(__name__)

# At most this many ids are looked up in the database at once.
MAX_LOOKUP = 500


class OperationNames:
    """Looks up operation names in the snapshot, the supervisor's records and the events."""

    def __init__(self, sampler: Callable[[], Sampler], supervisor: Callable[[], Supervisor], engine: Engine) -> None:
        """Where to look: the sampler and supervisor (given late: they are built after this), the database."""
        self._sampler = sampler
        self._supervisor = supervisor
        self._engine = engine

    def _from_memory(self, ids: set[str]) -> dict[str, str]:
        """Names the snapshot and the supervisor know."""
        names: dict[str, str] = {}
        for op in self._sampler().latest.operations:
            if op.id in ids and op.name:
                names[op.id] = op.name
        supervisor = self._supervisor()
        for op_id in ids - names.keys():
            found = supervisor.operation(op_id)
            if found is not None and found.name:
                names[op_id] = found.name
        return names

    def _from_events(self, ids: list[str]) -> dict[str, str]:
        """Names from the newest recorded event of each id."""
        names: dict[str, str] = {}
        with Session(self._engine) as session:
            stmt = (
                select(EventRow.operation_id, EventRow.name)
                .where(col(EventRow.operation_id).in_(ids[:MAX_LOOKUP]))
                .order_by(col(EventRow.id))
            )
            for op_id, name in session.exec(stmt).all():
                if name:
                    names[op_id] = name  # the newest wins
        return names

    def names(self, ids: Iterable[str | None], *, events: bool = True) -> dict[str, str]:
        """The names of the operations ``ids`` name (ids without a known name are left out).

        Args:
            ids: Operation ids (others, such as a template name, simply find nothing).
            events: Also look in the recorded events (a database read; off for a quick lookup).

        Returns:
            ``{id: name}``.
        """
        wanted = {i for i in ids if isinstance(i, str) and i}
        if not wanted:
            return {}
        try:
            names = self._from_memory(wanted)
        except Exception:  # a name is a nicety: never fail the caller over it
            logger.debug("operation names from memory failed", exc_info=True)
            names = {}
        missing = sorted(wanted - names.keys())
        if events and missing:
            try:
                names.update({k: v for k, v in self._from_events(missing).items() if k not in names})
            except Exception:  # the database may be busy or away; ids are shown then
                logger.debug("operation names from events failed", exc_info=True)
        return names

    def name(self, op_id: str) -> str:
        """The name of one operation, or its id when no name is known (snapshot and supervisor only)."""
        return self.names([op_id], events=False).get(op_id, op_id)
