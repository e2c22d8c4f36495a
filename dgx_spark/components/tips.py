"""Visible tooltips for the top bar's compact controls (icon-only on a phone).

``tip(control, text)`` shows ``text`` in a Radix tooltip on hover and on keyboard focus. The tooltip's
trigger is an inline wrapper, not the control itself: the controls are already a popover's, a dialog's
or a menu's trigger, and two triggers on one element fight over its ``data-state``. Focus events bubble
to the wrapper, so tabbing to the control shows the tooltip too. The control keeps its own accessible
name (``aria-label``); the tooltip repeats it for sighted users and says a little more.

Stable hooks for tests: the wrapper has ``data-tip`` (the text). A test's hover is one pointer move, which
Radix ignores while another tooltip's pointer is "in transit" (its hoverable grace area): tests move away and
retry (``hover_for_tooltip``); the content stays hoverable (WCAG 1.4.13), so that grace area is kept.
"""

from __future__ import annotations

from typing import Any

import reflex as rx

# Shown a little sooner than Radix's default (700 ms): these are the page's main controls.
TIP_DELAY_MS = 300


def tip(control: rx.Component, text: str | rx.Var[str], **props: Any) -> rx.Component:
    """``control`` with ``text`` as a visible tooltip (hover and focus)."""
    return rx.tooltip(
        rx.box(control, display="inline-flex", align_items="center", custom_attrs={"data-tip": text}, **props),
        content=text,
        delay_duration=TIP_DELAY_MS,
    )
