"""The Operations tab's state: the sampler's latest snapshot, per browser tab.

A live loop (a background event started when the tab mounts) shows
``get_sampler().latest`` in this state. It never scans /proc itself. What a tab
shows is computed once per snapshot for all tabs (``state.tab_view``, keyed by
the tab's host and filters); each tick the loop compares that view's small
fingerprint with the one the tab last showed (kept in ``state.loops``) and, when
equal, does not touch the tab's state at all: no lock, no load, no delta. When it
differs, only the vars that changed are assigned. Cards are sent as each
section's list of references plus ``CARD_SHARDS`` small dicts of card data
(``tab_view.card_layout``, computed once per view for every tab with the same
settings), so one changed card re-sends its shard, and its section's reference
list only when the section's order or membership changed. One loop per
browser tab, shared by the tab's live views (the system header rides on it as
the ``"system"`` feed): see ``run_tab_loop`` and ``dgx_spark.state.loops``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import reflex as rx
from reflex.event import EventSpec
from reflex.state import FIELD_MARKER
from reflex.utils.format import format_state_name
from reflex.vars.base import VarData

from dgx_spark.collector.model import Snapshot
from dgx_spark.collector.query import OperationQuery
from dgx_spark.events.churn import churn_note
from dgx_spark.health import database_banner
from dgx_spark.services import get_sampler, short_lived_ended
from dgx_spark.state import loops
from dgx_spark.state.filters import FilterMixin
from dgx_spark.state.node_view import node_choice, node_url_script, tab_view_for
from dgx_spark.state.tab_view import CARD_SHARDS, CardLayout, CardRef, TabView, card_layout
from dgx_spark.state.view import SECTIONS, OperationView, snapshot_errors

logger = logging.getLogger(__name__)

# A loop wakes when a new snapshot is published (``next_snapshot``), and at least this
# often without one, to notice a closed tab or a stalled sampler.
POLL_SECONDS = 1.0
# A manual refresh does not sample again when the latest snapshot is this fresh.
REFRESH_MIN_AGE_SECONDS = 0.5
# A tab whose websocket is gone for this long has closed: its loop ends.
DISCONNECT_GRACE_SECONDS = 3.0


def _no_snapshot() -> Snapshot:
    return Snapshot(sequence=0, taken_at=0.0, operations=())


@dataclasses.dataclass
class _Shared:
    """What every tab of this backend process shares (the one instance is ``_shared``)."""

    # The app's event namespace, kept once found (``_token_to_sid``).
    namespace: Any = None
    # The newest snapshot any tab showed (a filter change refilters it without a new sample).
    newest_applied: Snapshot = dataclasses.field(default_factory=_no_snapshot)


_shared = _Shared()

# Per event loop: the task that waits on the sampler for every tab loop, and the event
# it sets when a new snapshot is published (replaced by a fresh one each time).
_signals: dict[asyncio.AbstractEventLoop, tuple[asyncio.Task[None], asyncio.Event]] = {}
# How long the waiting thread blocks at a time (bounds how long shutdown waits for it).
SIGNAL_WAIT_SECONDS = 1.0
# The watcher ends when no loop has waited for this long (no tab open); the next wait restarts it.
SIGNAL_IDLE_SECONDS = 10.0
_last_wait: dict[asyncio.AbstractEventLoop, float] = {}


async def _watch_snapshots(loop: asyncio.AbstractEventLoop) -> None:
    """Wake every tab loop of ``loop`` once per new snapshot: one thread waits on the sampler for all."""
    sampler = get_sampler()
    sequence = sampler.latest.sequence
    while time.monotonic() - _last_wait.get(loop, 0.0) < SIGNAL_IDLE_SECONDS:
        snapshot = await asyncio.to_thread(sampler.wait_for, sequence, SIGNAL_WAIT_SECONDS)
        if snapshot.sequence != sequence:
            sequence = snapshot.sequence
            task, arrived = _signals[loop]
            _signals[loop] = (task, asyncio.Event())
            arrived.set()


def _arrival() -> asyncio.Event:
    """The event the next snapshot sets (starting this event loop's watcher if needed)."""
    loop = asyncio.get_running_loop()
    _last_wait[loop] = time.monotonic()
    known = _signals.get(loop)
    if known is None or known[0].done():
        for other in [other for other in _signals if other.is_closed()]:
            del _signals[other]
            _last_wait.pop(other, None)
        event = asyncio.Event()
        _signals[loop] = (loop.create_task(_watch_snapshots(loop)), event)
        return event
    return known[1]


async def next_snapshot(after: int, timeout: float) -> None:
    """Return when the sampler has a snapshot newer than ``after``, or after ``timeout`` seconds."""
    arrived = _arrival()
    if get_sampler().latest.sequence > after:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(arrived.wait(), timeout)


def _token_to_sid() -> Mapping[str, Any] | None:
    """The app's live websocket map (client token -> its socket), if available.

    The app's event namespace is looked up once and kept: ``get_and_validate_app``
    prepends the working directory to ``sys.path`` on every call. The token
    manager's own dict is read where it has one: ``token_to_sid`` copies every
    tab's entry on each call, which every tab's loop would pay each tick.
    """
    if _shared.namespace is None:
        with contextlib.suppress(Exception):
            from reflex.utils.prerequisites import get_and_validate_app

            _shared.namespace = get_and_validate_app().app.event_namespace
    if _shared.namespace is None:
        return None
    sockets = getattr(getattr(_shared.namespace, "_token_manager", None), "token_to_socket", None)
    return sockets if isinstance(sockets, Mapping) else _shared.namespace.token_to_sid


def client_connected(token: str) -> bool:
    """Whether the browser tab with ``token`` still has a websocket to this backend.

    Per-tab background loops call this to end when their tab has gone.
    """
    mapping = _token_to_sid()
    return True if mapping is None else token in mapping




# The state vars of each section's references: SECTIONS' live lists, then their ended lists.
LIST_VARS: tuple[str, ...] = (*SECTIONS, *(name + "_ended" for name in SECTIONS))
# The state vars of the card shards (``cards_0`` ... ``cards_63``), added to the state below.
SHARD_VARS: tuple[str, ...] = tuple(f"cards_{index}" for index in range(CARD_SHARDS))
# The latest card layout per (host, filters, node): tabs with the same settings share it.
MAX_LAYOUTS = 256
_layouts: OrderedDict[tuple[Any, ...], CardLayout] = OrderedDict()
_layouts_lock = threading.Lock()


def shared_layout(settings: tuple[Any, ...], view: TabView) -> CardLayout:
    """``view``'s card layout, made once for every tab with ``settings`` (shards stay put)."""
    with _layouts_lock:
        previous = _layouts.get(settings)
        if previous is not None and previous.version == view.version:
            _layouts.move_to_end(settings)
            return previous
    layout = card_layout(view, previous)
    with _layouts_lock:
        _layouts[settings] = layout
        _layouts.move_to_end(settings)
        while len(_layouts) > MAX_LAYOUTS:
            _layouts.popitem(last=False)
    return layout


def fingerprint(
    view: TabView, error: str, stale: bool, running: bool, short_lived: str = "", database: str = ""
) -> tuple[Any, ...]:
    """What a tab shows, in a few small values: equal fingerprints, nothing to send."""
    return (view.version, error, stale, running, short_lived, database)


def short_lived_line() -> str:
    """The line under the sections: how many quiet short-lived commands ended recently ("" when none)."""
    churn = short_lived_ended()
    return churn_note(*churn) if churn else ""


def _is_stale(snapshot: Snapshot, interval: float, running: bool, now: float) -> bool:
    """Whether the snapshot is too old to trust (sampler stopped or stuck)."""
    if snapshot.sequence == 0:
        return False
    return not running or now - snapshot.taken_at > max(3 * interval, 5.0)


class OperationsState(FilterMixin, rx.State):
    """Each section's cards after the tab's filters, the counts, and loading / error / staleness.

    Only what the page renders is public, and each section's list is assigned only
    when that section changed: one changed program re-sends the programs list,
    nothing else. The whole list lives in the shared ``tab_view`` cache, not here.
    """

    # Each section's live cards that pass the search and filters, in display order, as handles:
    # the card's data is ``cards_<handle % 64>[str(handle)]`` (see ``card_of``).
    servers: list[CardRef] = []  # noqa: RUF012 - a Reflex state var
    jobs: list[CardRef] = []  # noqa: RUF012 - a Reflex state var
    programs: list[CardRef] = []  # noqa: RUF012 - a Reflex state var
    # Each section's ended operations that pass them (the "Recently ended" strip), newest end first.
    servers_ended: list[CardRef] = []  # noqa: RUF012 - a Reflex state var
    jobs_ended: list[CardRef] = []  # noqa: RUF012 - a Reflex state var
    programs_ended: list[CardRef] = []  # noqa: RUF012 - a Reflex state var
    # cards_0 ... cards_63 (dict[str, OperationView]) are added after the class (``SHARD_VARS``).
    # Every server / job / program / operation not ended, filters aside; and every ended one.
    server_count: int = 0
    job_count: int = 0
    program_count: int = 0
    running_count: int = 0
    ended_count: int = 0
    # Every card, and those that pass the filters.
    total_count: int = 0
    visible_count: int = 0
    loading: bool = True
    # Probe failures reported by the sampler ("probe: message"), joined for the banner.
    error: str = ""
    # The database is busy, read-only or away: what failed and what it means ("" when fine).
    database_error: str = ""
    # ISO UTC time of the snapshot that last changed what is shown.
    last_updated: str = ""
    # "N short-lived commands ended in the last 10 min (not listed)" ("" when none).
    short_lived: str = ""
    stale: bool = False
    sampler_running: bool = False
    live: bool = False
    # Sections the user collapsed, comma-separated; kept in the browser.
    collapsed: str = rx.LocalStorage("", name="dgx_spark_collapsed", sync=True)

    # The fingerprint of what the browser shows now, and its card layout (backend only).
    _shown: tuple = ()
    _layout: CardLayout | None = None
    _host: str = "127.0.0.1"
    # Which machine the tab shows: "local", a node's id, or "all" (dgx_spark/nodes; ?node= in the URL).
    node: str = "local"

    # ---- computed vars (small) -------------------------------------------
    @rx.var
    def no_matches(self) -> bool:
        """Filters are on, there are operations, and none passes."""
        return self.filtering and self.total_count > 0 and self.visible_count == 0

    @rx.var
    def collapsed_sections(self) -> list[str]:
        """The collapsed section keys."""
        return [name for name in self.collapsed.split(",") if name in SECTIONS]

    # ---- applying snapshots -------------------------------------------
    def _token(self) -> str:
        with contextlib.suppress(Exception):
            return self.router.session.client_token or ""
        return ""

    def _settings(self) -> tuple[str, OperationQuery, str]:
        """What this tab's view depends on besides the snapshot (kept in the loops registry too)."""
        return (self._host, self._query(), self.node)

    def _load_filters_from_url(self) -> None:
        """The filters and the node (``?node=``) from the URL."""
        FilterMixin._load_filters_from_url(self)
        self.node = node_choice(self.router.url.query_parameters.get("node", ""))

    @rx.event
    def choose_node(self, value: Any) -> EventSpec | None:
        """The node switcher: this machine (``local``), a node's id, or ``all``; kept in the URL."""
        if not isinstance(value, str) or node_choice(value) != value:
            return None
        self.node = value
        self._filters_changed()
        return rx.call_script(node_url_script(value))

    def _filters_changed(self) -> None:
        """Refilter the latest snapshot now (a chip or the search changed)."""
        loops.remember(self._token(), FEED, self._settings())
        if self._shown:
            sampler = get_sampler()
            snapshot = max(sampler.latest, _shared.newest_applied, key=lambda snap: snap.sequence)
            self._apply(snapshot, sampler.running, sampler.interval, time.time())

    def _apply(self, snapshot: Snapshot, running: bool, interval: float, now: float) -> None:
        """Show ``snapshot``, assigning only the vars whose value changed."""
        if snapshot.sequence == 0:
            return
        if snapshot.sequence > _shared.newest_applied.sequence:
            _shared.newest_applied = snapshot
        settings = self._settings()
        view = tab_view_for(snapshot, *settings)
        error = "; ".join(snapshot_errors(snapshot))
        stale = _is_stale(snapshot, interval, running, now)
        short_lived = short_lived_line()
        database = database_banner(now)
        shown = fingerprint(view, error, stale, running, short_lived, database)
        token = self._token()
        loops.remember(token, FEED, settings)
        loops.mark_shown(token, FEED, shown)
        if shown == self._shown and not self.loading:
            return
        if not self._shown or self._shown[0] != view.version or self.loading:
            self._show_view(view)
        for name, value in (
            ("error", error),
            ("database_error", database),
            ("short_lived", short_lived),
            ("stale", stale),
            ("sampler_running", running),
            ("loading", False),
        ):
            self._assign(name, value)
        self._shown = shown

    def _assign(self, name: str, value: Any) -> None:
        """Set a var only when its value changes (an unchanged assignment would still be sent)."""
        if getattr(self, name) != value:
            setattr(self, name, value)

    def _show_view(self, view: TabView) -> None:
        """Assign the sections' card references, the changed card shards and the counts of a new tab view."""
        # Unchanged lists and shards are the same objects as in the layout shown
        # last: only the changed ones are assigned (and sent).
        layout = shared_layout(self._settings(), view)
        before = self._layout
        for index, var in enumerate(LIST_VARS):
            if before is None or layout.lists[index] is not before.lists[index]:
                setattr(self, var, list(layout.lists[index]))
        for index, var in enumerate(SHARD_VARS):
            shard = layout.shards[index]
            if (before is None or shard is not before.shards[index]) and (shard or getattr(self, var)):
                setattr(self, var, shard)
        self._layout = layout
        for name, value in (
            ("server_count", view.counts[0]),
            ("job_count", view.counts[1]),
            ("program_count", view.counts[2]),
            ("running_count", view.running_count),
            ("ended_count", view.ended_count),
            ("total_count", view.total),
            ("visible_count", view.visible_count),
            ("last_updated", view.changed_at),
        ):
            self._assign(name, value)

    def _host_from_router(self) -> str:
        """The host name the browser used to reach the dashboard."""
        with contextlib.suppress(Exception):
            hostname = self.router.url.hostname
            if hostname:
                return hostname
        return "127.0.0.1"

    # ---- events ---------------------------------------------------------
    @rx.event
    async def refresh(self) -> None:
        """Take a sample now and show it (the manual refresh button).

        A snapshot younger than ``REFRESH_MIN_AGE_SECONDS`` is shown as it is, so
        clicking (or scripting) refresh cannot keep the sampler scanning non-stop.
        """
        sampler = get_sampler()
        snapshot = sampler.latest
        if sampler.running and time.time() - snapshot.taken_at >= REFRESH_MIN_AGE_SECONDS:
            sampler.request_sample()
            snapshot = await asyncio.to_thread(sampler.wait_for, snapshot.sequence, 5.0)
        self._host = self._host_from_router()
        self._apply(snapshot, sampler.running, sampler.interval, time.time())

    @rx.event
    def toggle_section(self, section: str) -> None:
        """Collapse or expand one section; unknown names are ignored."""
        if not isinstance(section, str) or section not in SECTIONS:
            return
        names = set(self.collapsed_sections)
        names.symmetric_difference_update({section})
        self.collapsed = ",".join(name for name in SECTIONS if name in names)

    @rx.event
    def stop_live(self) -> None:
        """This tab no longer shows the operations (the tab's view unmounted)."""
        loops.leave(self.router.session.client_token, FEED)

    @rx.event(background=True)
    async def start_live(self) -> None:
        """Show the sampler's snapshots in this tab until it goes away (its shared loop)."""
        token = self.router.session.client_token
        if not token:
            return
        sampler = get_sampler()
        async with self:
            self._host = self._host_from_router()
            self.live = True
            self._apply(sampler.latest, sampler.running, sampler.interval, time.time())
        await run_tab_loop(self, token, FEED)


for _var in SHARD_VARS:
    OperationsState.add_var(_var, dict[str, OperationView], {})


def card_of(ref: rx.Var) -> rx.Var:
    """The card a section's handle points at: ``cards_<handle % 64>[handle]`` of ``OperationsState``.

    Args:
        ref: A ``CardRef`` var (an item of ``OperationsState.servers`` and the other lists).

    Returns:
        An ``OperationView`` var (``undefined`` in the browser if the handle is not in its shard).
    """
    holder = format_state_name(OperationsState.get_full_name())
    return rx.Var(
        _js_expr=f"{holder}[`cards_${{({ref!s}) % {CARD_SHARDS}}}{FIELD_MARKER}`]?.[{ref!s}]",
        _var_type=OperationView,
        _var_data=VarData.merge(
            getattr(OperationsState, SHARD_VARS[0])._get_all_var_data(),
            ref._get_all_var_data(),
        ),
    ).to(OperationView)


def keyed(card: rx.Component, ref: rx.Var) -> rx.Component:
    """``card`` keyed by its handle in a list, not by its position.

    When one card leaves a list of 500, React then drops that one card's DOM
    instead of rewriting every card after it with its neighbour's data.
    """
    card.key = ref
    return card


def section_cards(state: OperationsState, var: str) -> list[OperationView]:
    """The cards a section's list var shows, resolved through the shards (tests, debugging)."""
    return [getattr(state, f"cards_{handle % CARD_SHARDS}")[str(handle)] for handle in getattr(state, var)]


async def _apply_operations(state: Any, snapshot: Snapshot, now: float) -> None:
    """The operations feed: copy the snapshot into ``OperationsState``."""
    operations = await state.get_state(OperationsState)
    sampler = get_sampler()
    operations._apply(snapshot, sampler.running, sampler.interval, now)


def _operations_fingerprint(token: str, snapshot: Snapshot, now: float) -> Any:
    """What the tab would show for ``snapshot``, from the shared cache (no state touched)."""
    settings = loops.setting(token, FEED)
    if settings is None or snapshot.sequence == 0:
        return None
    sampler = get_sampler()
    running = sampler.running
    view = tab_view_for(snapshot, *settings)
    error = "; ".join(snapshot_errors(snapshot)) if snapshot.errors else ""
    stale = _is_stale(snapshot, sampler.interval, running, now)
    return fingerprint(view, error, stale, running, short_lived_line(), database_banner(now))


FEED = "operations"
FeedApplier = Callable[[Any, Snapshot, float], Awaitable[None]]
FeedFingerprint = Callable[[str, Snapshot, float], Any]
# What each feed does with a new snapshot, inside the loop's state lock.
_appliers: dict[str, FeedApplier] = {FEED: _apply_operations}
# What each feed would show, computed outside the lock (None: unknown, apply).
_fingerprints: dict[str, FeedFingerprint] = {FEED: _operations_fingerprint}


def register_feed(name: str, apply: FeedApplier, fingerprint: FeedFingerprint | None = None) -> None:
    """Let another view of the tab ride on its loop.

    Args:
        name: The feed's name (``loops.join`` / ``loops.leave`` use it).
        apply: ``await apply(state, snapshot, now)`` inside ``async with state``;
            it reaches its own state with ``await state.get_state(...)``.
        fingerprint: ``fingerprint(token, snapshot, now)``: a small value equal to
            ``loops.shown(token, name)`` when the tab already shows what ``snapshot``
            would show (then the loop skips the state entirely), or None when
            unknown. Without it the feed is applied once per new snapshot.
    """
    _appliers[name] = apply
    if fingerprint is not None:
        _fingerprints[name] = fingerprint


def due_feeds(token: str, wanted: Iterable[str], snapshot: Snapshot, now: float) -> list[tuple[str, Any]]:
    """The feeds whose view of ``snapshot`` differs from what ``token``'s tab shows.

    Computed from shared, per-snapshot caches, without touching the tab's state.

    Returns:
        ``(feed, fingerprint)`` pairs; the fingerprint is None when unknown.
    """
    due: list[tuple[str, Any]] = []
    for name in sorted(wanted):
        if name not in _appliers:
            continue
        compute = _fingerprints.get(name)
        shown = compute(token, snapshot, now) if compute is not None else ("sequence", snapshot.sequence)
        if shown is None or shown != loops.shown(token, name):
            due.append((name, shown))
    return due


async def run_tab_loop(state: Any, token: str, feed: str) -> None:
    """Serve ``feed`` from the tab's one live loop, starting it if none runs.

    Called at the end of a background handler with its state proxy. Returns at
    once when the tab's loop already runs; otherwise runs the loop until no feed
    is left, the tab's websocket is gone for ``DISCONNECT_GRACE_SECONDS``, or a
    newer loop supersedes it.
    """
    generation = loops.join(token, feed)
    if generation is None:
        return
    sampler = get_sampler()
    missing_since: float | None = None
    try:
        while wanted := loops.feeds(token, generation):
            now = time.time()
            if client_connected(token):
                missing_since = None
            elif missing_since is None:
                missing_since = now
            elif now - missing_since > DISCONNECT_GRACE_SECONDS:
                break
            snapshot = sampler.latest
            # None due: no state lock, no state load, no delta.
            due = due_feeds(token, wanted, snapshot, now)
            if due:
                async with state:
                    if not loops.is_current(token, generation):
                        break
                    for name, _ in due:
                        await _appliers[name](state, snapshot, now)
                for name, shown in due:
                    if shown is not None:
                        loops.mark_shown(token, name, shown)
            await next_snapshot(snapshot.sequence, POLL_SECONDS)
    finally:
        loops.release(token, generation)
        logger.debug("live loop %s for %s ended", generation, token[:8])
