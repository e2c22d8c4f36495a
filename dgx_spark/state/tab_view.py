"""What the Operations tab shows for a snapshot, computed once for every open tab.

Plain Python (no Reflex). Every tab's live loop asks ``tab_view(snapshot, host,
query)`` each tick; the cards' views are derived once per snapshot and host
(``base_view``), and filtered once per snapshot and distinct filter settings,
however many tabs show them. A result whose content equals the previous one for
the same host and filters keeps its ``version`` (and its objects), so a loop
tells "nothing changed for this tab" by comparing one small fingerprint, without
touching the tab's state (see ``operations.run_tab_loop``).

A tab's cards go to the browser split in two (``card_layout``): each section's
lists of card handles (small integers) in display order, and ``CARD_SHARDS``
small dicts of card data keyed by handle. A card keeps its handle while it is
listed, so one changed card re-sends its shard (one card with 50 listed) and,
only when the order or membership changed, the section's short list of handles.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import OrderedDict
from typing import Any

from dgx_spark import format as fmt
from dgx_spark.collector.model import ENDED_STATUSES, Operation, Snapshot
from dgx_spark.collector.query import OperationQuery, apply_query
from dgx_spark.format import iso_utc
from dgx_spark.state.view import (
    SECTION_OF_TYPE,
    SECTIONS,
    OperationView,
    display_order,
    operation_view,
    query_row,
)

# How many dicts the cards are spread over (``card_layout``); each is one state var.
CARD_SHARDS = 64
# How many (host, filters) results are kept; the oldest unused go first.
MAX_TAB_VIEWS = 256
MAX_HOSTS = 16

_versions = itertools.count(1)
_lock = threading.Lock()


@dataclasses.dataclass(frozen=True, eq=False)
class BaseView:
    """Every card of one snapshot, for one host name (links carry it).

    ``version`` names the content: it stays when a newer snapshot shows the same cards.
    """

    snapshot: Snapshot
    sequence: int
    version: int
    views: tuple[OperationView, ...]
    ops: tuple[Operation, ...]  # the operation of each view, same order
    rows: tuple[dict[str, Any], ...]  # query_row of each view, same order
    counts: tuple[int, int, int]  # live servers, jobs, programs
    ended_count: int  # ended operations of every type
    running_count: int
    changed_at: str  # ISO time of the snapshot that last changed ``views``


@dataclasses.dataclass(frozen=True, eq=False)
class TabView:
    """What one tab shows: each section's cards after its filters, and the counts.

    ``sections`` holds every card that passes the filters; ``live`` and ``ended`` split
    each section into its cards and its "Recently ended" rows.
    """

    sequence: int
    version: int
    base_version: int
    sections: tuple[tuple[OperationView, ...], ...]  # in SECTIONS order
    live: tuple[tuple[OperationView, ...], ...]  # each section's live cards, in SECTIONS order
    ended: tuple[tuple[OperationView, ...], ...]  # each section's ended operations, in SECTIONS order
    counts: tuple[int, int, int]  # every live server / job / program, filters aside
    ended_count: int  # every ended operation, filters aside
    running_count: int
    total: int
    visible_count: int
    changed_at: str

    def section(self, name: str) -> tuple[OperationView, ...]:
        """The cards of section ``name`` that pass the filters."""
        return self.sections[SECTIONS.index(name)]


_bases: OrderedDict[str, BaseView] = OrderedDict()  # host -> latest
_tabs: OrderedDict[tuple[str, OperationQuery], TabView] = OrderedDict()


def _reusable(old: OperationView, op: Operation, now: float) -> bool:
    """Whether ``old`` (derived from an equal operation) is what ``op`` shows at ``now`` too.

    Only the uptime reads ``now``: its template (it changes after a day) and, for an
    ended operation without an end time, its text.
    """
    if op.status in ENDED_STATUSES and op.ended_at_ts is None:
        return False
    return fmt.uptime_template(op.uptime(now)) == old.uptime_format


def _compute_base(snapshot: Snapshot, host: str, previous: BaseView | None) -> BaseView:
    known: dict[str, tuple[OperationView, Operation, dict[str, Any]]] = {}
    if previous is not None:
        known = {view.id: (view, op, row) for view, op, row in zip(previous.views, previous.ops, previous.rows,
                                                                   strict=True)}
    triples = []
    for op in snapshot.operations:
        kept = known.get(op.id)
        # An operation equal to the last snapshot's keeps its view: most do, and deriving 500 is not free.
        if kept is not None and kept[1] == op and _reusable(kept[0], op, snapshot.taken_at):
            triples.append(kept)
            continue
        view = operation_view(op, snapshot.taken_at, host)
        old = kept[0] if kept is not None else None
        # Keep the previous object when nothing changed: later comparisons are identity checks.
        view = old if old == view else view
        triples.append((view, op, query_row(op, view)))
    triples.sort(key=lambda triple: display_order(triple[0]))
    views = tuple(view for view, _, _ in triples)
    ops = tuple(op for _, op, _ in triples)
    rows = tuple(row for _, _, row in triples)
    if previous is not None and views == previous.views:
        return dataclasses.replace(previous, snapshot=snapshot, sequence=snapshot.sequence, ops=ops, rows=rows)
    counts = [0, 0, 0]
    for view in views:
        section = SECTION_OF_TYPE.get(view.type)
        if section is not None and view.live:
            counts[SECTIONS.index(section)] += 1
    return BaseView(
        snapshot=snapshot,
        sequence=snapshot.sequence,
        version=next(_versions),
        views=views,
        ops=ops,
        rows=rows,
        counts=(counts[0], counts[1], counts[2]),
        ended_count=sum(1 for view in views if not view.live),
        running_count=sum(1 for view in views if view.live),
        changed_at=iso_utc(snapshot.taken_at) or "",
    )


def base_view(snapshot: Snapshot, host: str) -> BaseView:
    """Every card of ``snapshot`` (derived once per snapshot and host)."""
    with _lock:
        previous = _bases.get(host)
        # The sampler hands every tab the same Snapshot object for a sequence.
        if previous is not None and previous.snapshot is snapshot:
            return previous
        base = _compute_base(snapshot, host, previous)
        _bases[host] = base
        _bases.move_to_end(host)
        while len(_bases) > MAX_HOSTS:
            _bases.popitem(last=False)
        return base


def _filter(base: BaseView, query: OperationQuery) -> tuple[tuple[OperationView, ...], ...]:
    if query.is_filtering or query.sort:
        pairs = apply_query(zip(base.views, base.rows, strict=True), query, record=lambda pair: pair[1])
        visible = [view for view, _ in pairs]
    else:
        visible = list(base.views)
    return tuple(
        tuple(view for view in visible if SECTION_OF_TYPE.get(view.type) == section) for section in SECTIONS
    )


def _split(
    sections: tuple[tuple[OperationView, ...], ...], *, live: bool, newest_first: bool = False
) -> tuple[tuple[OperationView, ...], ...]:
    """Each section's live cards (``live=True``) or its ended operations (newest end first if asked)."""
    parts = [[view for view in section if view.live is live] for section in sections]
    if newest_first:
        for part in parts:
            part.sort(key=lambda view: view.ended_at, reverse=True)
    return tuple(tuple(part) for part in parts)


def tab_view(snapshot: Snapshot, host: str, query: OperationQuery) -> TabView:
    """What a tab reached at ``host`` with filters ``query`` shows for ``snapshot``.

    Computed once per snapshot, host and filters; tabs that share them share the result.
    """
    base = base_view(snapshot, host)
    key = (host, query)
    with _lock:
        previous = _tabs.get(key)
        if previous is not None and previous.base_version == base.version:
            if previous.sequence != base.sequence:
                previous = dataclasses.replace(previous, sequence=base.sequence)
                _tabs[key] = previous
            _tabs.move_to_end(key)
            return previous
    sections = _filter(base, query)
    visible_count = sum(len(section) for section in sections)
    same = (
        previous is not None
        and previous.sections == sections
        and previous.counts == base.counts
        and previous.ended_count == base.ended_count
        and previous.running_count == base.running_count
        and previous.changed_at == base.changed_at
    )
    if same and previous is not None:
        sections = previous.sections
    result = TabView(
        sequence=base.sequence,
        version=previous.version if same and previous is not None else next(_versions),
        base_version=base.version,
        sections=sections,
        live=previous.live if same and previous is not None else _split(sections, live=True),
        ended=previous.ended if same and previous is not None else _split(
            sections, live=False, newest_first=not query.sort
        ),
        counts=base.counts,
        ended_count=base.ended_count,
        running_count=base.running_count,
        total=len(base.views),
        visible_count=visible_count,
        changed_at=base.changed_at,
    )
    with _lock:
        _tabs[key] = result
        _tabs.move_to_end(key)
        while len(_tabs) > MAX_TAB_VIEWS:
            _tabs.popitem(last=False)
    return result


CardRef = int
"""A card in a section's list: its handle. The card is ``cards_<handle % CARD_SHARDS>[str(handle)]``."""


def card_key(view: OperationView) -> str:
    """What tells cards apart: the operation id, with the node when the tab shows other nodes."""
    return f"{view.id}@{view.node}" if view.node else view.id


@dataclasses.dataclass(frozen=True, eq=False)
class CardLayout:
    """A ``TabView``'s cards as the browser gets them: lists of handles plus sharded card data.

    Unchanged lists and shards are the previous layout's own objects, so a tab
    tells what to re-send by identity.
    """

    version: int  # the TabView's version it was made from
    # Each section's live then ended handles, in display order: SECTIONS live, then SECTIONS ended.
    lists: tuple[tuple[CardRef, ...], ...]
    shards: tuple[dict[str, OperationView], ...]  # CARD_SHARDS dicts: str(handle) -> card
    handle_of: dict[str, int]  # card key -> handle


def card_layout(view: TabView, previous: CardLayout | None = None) -> CardLayout:
    """Lay ``view``'s cards out into lists of small integer handles and shards of card data.

    A card listed in ``previous`` keeps its handle (so its shard); a new one goes to
    the least filled shard, in its lowest free slot: shards stay small, so one card's
    change re-sends few others, and handles stay short in the lists.
    """
    old_of = previous.handle_of if previous is not None else {}
    listed = [*view.live, *view.ended]
    keys = [[card_key(card) for card in cards] for cards in listed]
    handle_of: dict[str, int] = {}
    slots: list[set[int]] = [set() for _ in range(CARD_SHARDS)]
    for part in keys:
        for key in part:
            handle = old_of.get(key)
            if handle is not None and key not in handle_of:
                handle_of[key] = handle
                slots[handle % CARD_SHARDS].add(handle // CARD_SHARDS)
    for part in keys:
        for key in part:
            if key not in handle_of:
                shard = min(range(CARD_SHARDS), key=lambda index: len(slots[index]))
                slot = next(slot for slot in itertools.count() if slot not in slots[shard])
                slots[shard].add(slot)
                handle_of[key] = slot * CARD_SHARDS + shard
    contents: list[dict[str, OperationView]] = [{} for _ in range(CARD_SHARDS)]
    for cards, part in zip(listed, keys, strict=True):
        for card, key in zip(cards, part, strict=True):
            handle = handle_of[key]
            contents[handle % CARD_SHARDS][str(handle)] = card
    lists = tuple(tuple(handle_of[key] for key in part) for part in keys)
    if previous is not None:
        lists = tuple(old if old == new else new for old, new in zip(previous.lists, lists, strict=True))
        shards = tuple(old if old == new else new for old, new in zip(previous.shards, contents, strict=True))
    else:
        shards = tuple(contents)
    return CardLayout(version=view.version, lists=lists, shards=shards, handle_of=handle_of)
