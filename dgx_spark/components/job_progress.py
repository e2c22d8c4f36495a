"""A training job's progress block on its card.

Bar with percent, ``epoch 25/100``, train loss with a small sparkline, throughput,
ETA, and where the numbers came from (the ``stalled`` badge sits beside the
status, in ``operation_card.card_badges``). Reads ``OperationView`` fields only;
they are filled in ``dgx_spark/state/view.py`` from ``dgx_spark/progress/display.py``.

Stable hooks for tests (``data-field``): ``job-progress``, ``progress-bar`` (with
``data-value``, the whole percent), ``progress``, ``epoch``, ``train-loss``,
``loss-sparkline``, ``throughput``, ``eta``, ``progress-source``.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark import styles
from dgx_spark.progress.display import SPARKLINE_HEIGHT, SPARKLINE_WIDTH
from dgx_spark.state.view import OperationView

_muted: dict[str, str] = {"font_size": "11px", "color": styles.MUTED}


def loss_sparkline(points: rx.Var[str]) -> rx.Component:
    """The recent train losses as a tiny line (nothing until two values exist)."""
    return rx.cond(
        points != "",
        rx.el.svg(
            rx.el.svg.polyline(
                points=points,
                fill="none",
                stroke="var(--accent-9)",
                stroke_width="1.5",
                vector_effect="non-scaling-stroke",
            ),
            view_box=f"0 0 {SPARKLINE_WIDTH} {SPARKLINE_HEIGHT}",
            preserve_aspect_ratio="none",
            width=f"{SPARKLINE_WIDTH // 2}px",
            height=f"{SPARKLINE_HEIGHT // 2 + 4}px",
            role="img",
            aria_label="train loss, recent values",
            custom_attrs={"data-field": "loss-sparkline"},
        ),
    )


def job_progress_block(op: rx.Var[OperationView]) -> rx.Component:
    """The progress block of a job's card; nothing for servers and programs."""
    percent = op.progress_percent
    return rx.cond(
        op.type == "job",
        rx.vstack(
            rx.cond(
                percent.is_not_none(),
                rx.progress(
                    value=percent.to(int),
                    max=100,
                    size="2",
                    color_scheme=rx.cond(op.stalled, "amber", "green"),
                    aria_label="Progress of " + op.name,
                    data_field="progress-bar",
                    custom_attrs={"data-value": percent.to(str)},
                ),
                # Unknown: an empty grey track (an animated bar would read as a real percent).
                rx.progress(value=0, max=100, size="2", color_scheme="gray", data_field="progress-bar-unknown",
                            aria_label="Progress of " + op.name + ": unknown"),
            ),
            rx.hstack(
                rx.text(
                    rx.cond(percent.is_not_none(), percent.to_string() + " %", "progress unknown"),
                    data_field="progress",
                    weight="medium",
                ),
                rx.hstack(
                    rx.cond(op.epoch_text != "", rx.text("epoch " + op.epoch_text, data_field="epoch")),
                    rx.cond(
                        op.train_loss_text != "",
                        rx.hstack(
                            rx.text("loss " + op.train_loss_text, data_field="train-loss"),
                            loss_sparkline(op.loss_sparkline),
                            spacing="1",
                            align="center",
                        ),
                    ),
                    spacing="3",
                    align="center",
                ),
                style=styles.progress_meta,
                align="center",
            ),
            rx.cond(
                (op.eta_text != "") | (op.throughput_text != "") | (op.progress_source_text != ""),
                rx.hstack(
                    rx.text(op.progress_source_text, data_field="progress-source", style=_muted),
                    rx.hstack(
                        rx.cond(op.throughput_text != "", rx.text(op.throughput_text, data_field="throughput")),
                        rx.cond(op.eta_text != "", rx.text("ETA " + op.eta_text, data_field="eta")),
                        spacing="3",
                    ),
                    style=styles.progress_meta,
                ),
            ),
            style=styles.progress_block,
            data_field="job-progress",
        ),
    )
