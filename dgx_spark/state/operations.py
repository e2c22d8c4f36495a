"""The Operations tab's state: the sampler's latest snapshot, per browser tab.

A live loop (a background event started when the tab mounts) copies
``get_sampler().latest`` into this state. It never scans /proc itself, and it
assigns state only when what the cards show changed, so an idle tick sends
nothing to the browser. One loop per browser tab, shared by the tab's live views
(the system header rides on it as the ``"system"`` feed): see ``run_tab_loop``
and ``dgx_spark.state.loops``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import reflex as rx

from dgx_spark.collector.model import Snapshot
from dgx_spark.format import iso_timestamp
from dgx_spark.services import get_sampler
from dgx_spark.state import loops
from dgx_spark.state.view import (
    SECTIONS,
    OperationView,
    operation_views,
    snapshot_errors,
)

logger = logging.getLogger(__name__)

# How often the loop looks at the sampler (cheap: a sequence number compare).
POLL_SECONDS = 0.5
# A manual refresh does not sample again when the latest snapshot is this fresh.
REFRESH_MIN_AGE_SECONDS = 0.5
# A tab whose websocket is gone for this long has closed: its loop ends.
DISCONNECT_GRACE_SECONDS = 3.0


_namespace: Any = None


def _token_to_sid() -> Mapping[str, str] | None:
    """The app's live websocket map (client token -> socket id), if available.

    The app's event namespace is looked up once and kept: ``get_and_validate_app``
    prepends the working directory to ``sys.path`` on every call.
    """
    global _namespace
    if _namespace is None:
        with contextlib.suppress(Exception):
            from reflex.utils.prerequisites import get_and_validate_app

            _namespace = get_and_validate_app().app.event_namespace
    return None if _namespace is None else _namespace.token_to_sid


def client_connected(token: str) -> bool:
    """Whether the browser tab with ``token`` still has a websocket to this backend.

    Per-tab background loops call this to end when their tab has gone.
    """
    mapping = _token_to_sid()
    return True if mapping is None else token in mapping




def _is_stale(snapshot: Snapshot, interval: float, running: bool, now: float) -> bool:
    """Whether the snapshot is too old to trust (sampler stopped or stuck)."""
    if snapshot.sequence == 0:
        return False
    return not running or now - snapshot.taken_at > max(3 * interval, 5.0)


class OperationsState(rx.State):
    """Operations grouped by section, plus loading / error / staleness."""

    operations: list[OperationView] = []  # noqa: RUF012 - a Reflex state var
    loading: bool = True
    # Probe failures reported by the sampler ("probe: message"), joined for the banner.
    error: str = ""
    # ISO UTC time of the snapshot that last changed what is shown.
    last_updated: str = ""
    stale: bool = False
    sampler_running: bool = False
    live: bool = False
    # Sections the user collapsed, comma-separated; kept in the browser.
    collapsed: str = rx.LocalStorage("", name="dgx_spark_collapsed", sync=True)

    # What the browser shows now, to compare before assigning (backend only).
    _shown: tuple = ()
    _host: str = "127.0.0.1"

    # ---- computed vars -------------------------------------------------
    @rx.var
    def servers(self) -> list[OperationView]:
        """Servers, in display order."""
        return [op for op in self.operations if op.type == "server"]

    @rx.var
    def jobs(self) -> list[OperationView]:
        """Training jobs, in display order."""
        return [op for op in self.operations if op.type == "job"]

    @rx.var
    def programs(self) -> list[OperationView]:
        """Programs and scripts, in display order."""
        return [op for op in self.operations if op.type == "program"]

    @rx.var
    def server_count(self) -> int:
        """How many servers are shown."""
        return sum(1 for op in self.operations if op.type == "server")

    @rx.var
    def job_count(self) -> int:
        """How many jobs are shown."""
        return sum(1 for op in self.operations if op.type == "job")

    @rx.var
    def program_count(self) -> int:
        """How many programs are shown."""
        return sum(1 for op in self.operations if op.type == "program")

    @rx.var
    def running_count(self) -> int:
        """How many operations have not ended."""
        return sum(1 for op in self.operations if op.live)

    @rx.var
    def collapsed_sections(self) -> list[str]:
        """The collapsed section keys."""
        return [name for name in self.collapsed.split(",") if name in SECTIONS]

    # ---- applying snapshots -------------------------------------------
    def _apply(self, snapshot: Snapshot, running: bool, interval: float, now: float) -> None:
        """Copy ``snapshot`` into the state, touching only what changed."""
        if snapshot.sequence == 0:
            return
        views = operation_views(snapshot.operations, snapshot.taken_at, self._host)
        error = "; ".join(snapshot_errors(snapshot))
        stale = _is_stale(snapshot, interval, running, now)
        shown = (tuple(views), error, stale, running)
        if shown == self._shown and not self.loading:
            return
        if self.loading or tuple(self.operations) != shown[0]:
            self.operations = views
            self.last_updated = iso_timestamp(snapshot.taken_at)
        if self.error != error:
            self.error = error
        if self.stale != stale:
            self.stale = stale
        if self.sampler_running != running:
            self.sampler_running = running
        if self.loading:
            self.loading = False
        self._shown = shown

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


async def _apply_operations(state: Any, snapshot: Snapshot, now: float) -> None:
    """The operations feed: copy the snapshot into ``OperationsState``."""
    operations = await state.get_state(OperationsState)
    sampler = get_sampler()
    operations._apply(snapshot, sampler.running, sampler.interval, now)


FEED = "operations"
FeedApplier = Callable[[Any, Snapshot, float], Awaitable[None]]
# What each feed does with a new snapshot, inside the loop's state lock.
_appliers: dict[str, FeedApplier] = {FEED: _apply_operations}


def register_feed(name: str, apply: FeedApplier) -> None:
    """Let another view of the tab ride on its loop.

    Args:
        name: The feed's name (``loops.join`` / ``loops.leave`` use it).
        apply: ``await apply(state, snapshot, now)`` inside ``async with state``;
            it reaches its own state with ``await state.get_state(...)``.
    """
    _appliers[name] = apply


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
    seen = -1
    shown_stale: bool | None = None
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
            stale = _is_stale(snapshot, sampler.interval, sampler.running, now)
            # Nothing new and staleness unchanged: nothing to do, nothing sent.
            if snapshot.sequence != seen or stale != shown_stale:
                async with state:
                    if not loops.is_current(token, generation):
                        break
                    for name in wanted:
                        if name in _appliers:
                            await _appliers[name](state, snapshot, now)
                seen, shown_stale = snapshot.sequence, stale
            await asyncio.sleep(POLL_SECONDS)
    finally:
        loops.release(token, generation)
        logger.debug("live loop %s for %s ended", generation, token[:8])
