"""A collapsible section of cards: Servers, Training Jobs, Programs & Scripts.

Each section reads its own list vars (``OperationsState.servers`` / ``jobs`` /
``programs``: the live cards that pass the filters, and ``servers_ended``...: the
ended ones). They hold references; each card's data is looked up in the state's
card shards (``card_of``), so a change to one card re-sends its shard, not the list.
Live operations are cards; ended ones are one line each in the section's
"Recently ended" strip (``ended_strip``). A type filter hides the other sections.
"""

from __future__ import annotations

import dataclasses

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.operation_card import ended_row, operation_card
from dgx_spark.components.operations_table import operations_table
from dgx_spark.state.layout import LayoutState
from dgx_spark.state.operations import OperationsState, card_of, keyed
from dgx_spark.state.view import OperationView


# Cards and ended lines are memoised React components fed their card's data: when
# one card changes, React renders that card (its shard's object is new), not all of them.
@rx.memo
def live_card(op: rx.Var[OperationView]) -> rx.Component:
    """A live operation's card, rendered again only when its data changes."""
    return operation_card(op)


@rx.memo
def ended_line(op: rx.Var[OperationView]) -> rx.Component:
    """An ended operation's line, rendered again only when its data changes."""
    return ended_row(op)


@dataclasses.dataclass(frozen=True)
class SectionSpec:
    """What a section shows and how it reads its operations from the state."""

    key: str
    type: str
    title: str
    icon: str
    items: rx.Var  # references to the live cards that pass the filters
    count: rx.Var
    ended: rx.Var  # references to the ended operations that pass the filters
    ended_count: rx.Var
    empty_title: str
    empty_hint: str
    example: str
    filtered_title: str = ""


def sections() -> list[SectionSpec]:
    """The three sections, in page order."""
    return [
        SectionSpec(
            key="servers",
            type="server",
            title="Servers",
            icon="server",
            items=OperationsState.servers,
            count=OperationsState.servers.length(),
            ended=OperationsState.servers_ended,
            ended_count=OperationsState.servers_ended.length(),
            empty_title="No servers running",
            filtered_title="No servers match the filters",
            empty_hint="Start a service that listens on a port (ComfyUI, Ollama, vLLM, Jupyter…) "
            "and it appears here within seconds, with an Open link.",
            example="python -m http.server 8000",
        ),
        SectionSpec(
            key="jobs",
            type="job",
            title="Training Jobs",
            icon="brain",
            items=OperationsState.jobs,
            count=OperationsState.jobs.length(),
            ended=OperationsState.jobs_ended,
            ended_count=OperationsState.jobs_ended.length(),
            empty_title="No training jobs",
            filtered_title="No training jobs match the filters",
            empty_hint="Run a training script; its progress, epoch and loss show here "
            "when it prints them or reports them to the dashboard.",
            example="python train.py --epochs 10",
        ),
        SectionSpec(
            key="programs",
            type="program",
            title="Programs & Scripts",
            icon="terminal",
            items=OperationsState.programs,
            count=OperationsState.programs.length(),
            ended=OperationsState.programs_ended,
            ended_count=OperationsState.programs_ended.length(),
            empty_title="No programs or scripts",
            filtered_title="No programs or scripts match the filters",
            empty_hint="Long-running scripts and background processes you start show up here.",
            example="nohup ./my_script.sh &",
        ),
    ]


def section_header(spec: SectionSpec, expanded: rx.Var[bool]) -> rx.Component:
    """The section's toggle: chevron, icon, title, the live count and how many recently ended."""
    return rx.el.button(
        rx.icon("chevron_right", size=styles.ICON_MD, style=styles.chevron(expanded)),
        rx.icon(spec.icon, size=styles.ICON_MD),
        rx.text(spec.title, as_="span", style=styles.section_title),
        rx.badge(
            spec.count,
            variant="soft",
            radius="full",
            size="1",
            id=f"section-{spec.key}-count",
            title="running now",
            aria_label=f"{spec.title}: " + spec.count.to_string() + " running",
        ),
        # "3 running · 1 ended": the badge counts live ones; ended ones are listed below the cards.
        rx.text(
            "running",
            rx.cond(spec.ended_count > 0, " · " + spec.ended_count.to_string() + " ended", ""),
            as_="span",
            style=styles.section_counts_text,
            id=f"section-{spec.key}-ended-count",
            custom_attrs={"data-ended": spec.ended_count.to_string()},
        ),
        rx.box(style=styles.section_rule),
        type="button",
        on_click=OperationsState.toggle_section(spec.key),
        id=f"section-{spec.key}-toggle",
        style=styles.section_header,
        custom_attrs={
            "aria-expanded": rx.cond(expanded, "true", "false"),
            "aria-controls": f"section-{spec.key}-body",
        },
    )


def empty_state(spec: SectionSpec) -> rx.Component:
    """What an empty section shows: a hint of how to get something there, or, while
    a search or filter is on, that nothing here matches it."""
    filtered_title = spec.filtered_title or f"No {spec.title.lower()} match the filters"
    return rx.vstack(
        rx.box(rx.icon(spec.icon, size=20), style=styles.empty_icon, class_name="dgx-empty-icon"),
        rx.text(
            rx.cond(OperationsState.filtering, filtered_title, spec.empty_title),
            weight="medium",
            color="var(--gray-12)",
            size="2",
            data_field="empty-title",
        ),
        rx.cond(
            OperationsState.filtering,
            rx.text("Change or clear the search and filters to see them.", size="1", max_width="440px"),
            rx.fragment(
                rx.text(spec.empty_hint, size="1", max_width="440px"),
                rx.code(spec.example, variant="soft", color_scheme="gray", style=styles.code_hint),
            ),
        ),
        id=f"section-{spec.key}-empty",
        style=styles.empty_state,
        class_name="dgx-empty-state",
        custom_attrs={"data-filtered": rx.cond(OperationsState.filtering, "true", "false")},
    )


def nothing_running(spec: SectionSpec) -> rx.Component:
    """One line when nothing of this kind runs (or matches) but some ended recently."""
    return rx.text(
        rx.cond(OperationsState.filtering, spec.filtered_title, spec.empty_title),
        " now.",
        id=f"section-{spec.key}-none-live",
        style=styles.section_note,
    )


def filtered_empty(spec: SectionSpec) -> rx.Component:
    """One line (not a big box) when the search or filters hide everything in this section."""
    return rx.text(
        spec.filtered_title or f"No {spec.title.lower()} match the filters",
        ".",
        id=f"section-{spec.key}-empty",
        style=styles.section_note,
        custom_attrs={"data-filtered": "true"},
    )


def ended_strip(spec: SectionSpec) -> rx.Component:
    """"Recently ended": one line per ended operation (outcome dot, name, why, when, Logs, Remove)."""
    return rx.cond(
        spec.ended_count > 0,
        rx.box(
            rx.text("Recently ended", as_="div", style=styles.ended_strip_title),
            rx.box(
                rx.foreach(spec.ended, lambda ref: keyed(ended_line(op=card_of(ref)), ref)),
                role="list",
                style=styles.ended_list,
            ),
            id=f"section-{spec.key}-ended",
            style=styles.ended_strip,
            custom_attrs={"aria-label": f"{spec.title}: recently ended"},
        ),
    )


def section_body(spec: SectionSpec) -> rx.Component:
    """The grid of live cards (or a line or the empty state), then the recently ended strip."""
    return rx.fragment(
        rx.cond(
            spec.count > 0,
            rx.box(
                rx.foreach(spec.items, lambda ref: keyed(live_card(op=card_of(ref)), ref)),
                id=f"section-{spec.key}-grid",
                style=styles.grid,
            ),
            rx.cond(
                spec.ended_count > 0,
                nothing_running(spec),
                rx.cond(OperationsState.filtering, filtered_empty(spec), empty_state(spec)),
            ),
        ),
        ended_strip(spec),
    )


def section_content(spec: SectionSpec) -> rx.Component:
    """The table of live then ended rows in the table view (when there are any), else the cards."""
    return rx.cond(
        LayoutState.table_view & ((spec.count + spec.ended_count) > 0),
        operations_table(spec.key, spec.title, spec.items, spec.ended),
        section_body(spec),
    )


def operation_section(spec: SectionSpec) -> rx.Component:
    """A collapsible section; its collapsed state lives in the browser's localStorage.

    While the type filter is on and leaves this type out, the section is not shown at all.
    """
    expanded = ~OperationsState.collapsed_sections.contains(spec.key)
    hidden = (OperationsState.selected_types.length() > 0) & ~OperationsState.selected_types.contains(spec.type)
    return rx.cond(
        hidden,
        rx.fragment(),
        rx.el.section(
            section_header(spec, expanded),
            rx.cond(expanded, rx.box(section_content(spec), id=f"section-{spec.key}-body")),
            id=f"section-{spec.key}",
            style=styles.section,
            custom_attrs={"data-expanded": rx.cond(expanded, "true", "false"), "aria-label": spec.title},
        ),
    )
