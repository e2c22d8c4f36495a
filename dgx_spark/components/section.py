"""A collapsible section of cards: Servers, Training Jobs, Programs & Scripts.

Each section reads its own list var (``OperationsState.servers`` / ``jobs`` /
``programs``: the cards that pass the filters), so a change in one section
re-sends only that section's list.
"""

from __future__ import annotations

import dataclasses

import reflex as rx

from dgx_spark import styles
from dgx_spark.components.operation_card import operation_card
from dgx_spark.state.operations import OperationsState


@dataclasses.dataclass(frozen=True)
class SectionSpec:
    """What a section shows and how it reads its operations from the state."""

    key: str
    title: str
    icon: str
    items: rx.Var
    count: rx.Var
    empty_title: str
    empty_hint: str
    example: str
    filtered_title: str = ""


def sections() -> list[SectionSpec]:
    """The three sections, in page order."""
    return [
        SectionSpec(
            key="servers",
            title="Servers",
            icon="server",
            items=OperationsState.servers,
            count=OperationsState.servers.length(),
            empty_title="No servers running",
            filtered_title="No servers match the filters",
            empty_hint="Start a service that listens on a port (ComfyUI, Ollama, vLLM, Jupyter…) "
            "and it appears here within seconds, with an Open link.",
            example="python -m http.server 8000",
        ),
        SectionSpec(
            key="jobs",
            title="Training Jobs",
            icon="brain",
            items=OperationsState.jobs,
            count=OperationsState.jobs.length(),
            empty_title="No training jobs",
            filtered_title="No training jobs match the filters",
            empty_hint="Run a training script; its progress, epoch and loss show here "
            "when it prints them or reports them to the dashboard.",
            example="python train.py --epochs 10",
        ),
        SectionSpec(
            key="programs",
            title="Programs & Scripts",
            icon="terminal",
            items=OperationsState.programs,
            count=OperationsState.programs.length(),
            empty_title="No programs or scripts",
            filtered_title="No programs or scripts match the filters",
            empty_hint="Long-running scripts and background processes you start show up here.",
            example="nohup ./my_script.sh &",
        ),
    ]


def section_header(spec: SectionSpec, expanded: rx.Var[bool]) -> rx.Component:
    """The section's toggle: chevron, icon, title and count badge."""
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
            aria_label=f"{spec.title}: " + spec.count.to_string(),
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
        rx.box(rx.icon(spec.icon, size=20), style=styles.empty_icon),
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
        custom_attrs={"data-filtered": rx.cond(OperationsState.filtering, "true", "false")},
    )


def section_body(spec: SectionSpec) -> rx.Component:
    """The grid of cards, or the empty state."""
    return rx.cond(
        spec.count > 0,
        rx.box(rx.foreach(spec.items, operation_card), id=f"section-{spec.key}-grid", style=styles.grid),
        empty_state(spec),
    )


def operation_section(spec: SectionSpec) -> rx.Component:
    """A collapsible section; its collapsed state lives in the browser's localStorage."""
    expanded = ~OperationsState.collapsed_sections.contains(spec.key)
    return rx.el.section(
        section_header(spec, expanded),
        rx.cond(expanded, rx.box(section_body(spec), id=f"section-{spec.key}-body")),
        id=f"section-{spec.key}",
        style=styles.section,
        custom_attrs={"data-expanded": rx.cond(expanded, "true", "false"), "aria-label": spec.title},
    )
