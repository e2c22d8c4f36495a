"""The top bar's theme menu: follow the system (default), light or dark.

The choice is Reflex's colour mode, kept by the browser (localStorage ``theme``);
"System" follows ``prefers-color-scheme`` and changes with it. Radix Themes' tokens
switch with it (the app theme's appearance is ``inherit``), so every style in
``dgx_spark/styles.py`` works in both. Nothing reaches the backend.

Stable hooks for tests: the button ``#theme-menu`` (``data-mode``: system / light /
dark, ``data-resolved``: light / dark) and items ``#theme-system`` / ``#theme-light`` /
``#theme-dark``.
"""

from __future__ import annotations

from typing import ClassVar

import reflex as rx
from reflex_base.style import color_mode, resolved_color_mode, set_color_mode
from reflex_components_radix.themes.components.dropdown_menu import DropdownMenuTrigger

from dgx_spark import styles
from dgx_spark.components.keyboard import install_keyboard
from dgx_spark.components.tips import tip

MODES: tuple[tuple[str, str, str], ...] = (
    ("system", "System", "monitor"),
    ("light", "Light", "sun"),
    ("dark", "Dark", "moon"),
)


class _TippedMenuTrigger(DropdownMenuTrigger):
    """The menu's trigger inside its tooltip's wrapper (Radix needs it under the Root, not as the Root's child)."""

    _valid_parents: ClassVar[list[str]] = []


def _item(mode: str, label: str, icon: str) -> rx.Component:
    """One choice; the current one is checked."""
    chosen = color_mode == mode
    return rx.menu.item(
        rx.hstack(
            rx.icon(icon, size=styles.ICON_SM, aria_hidden="true"),
            rx.text(label, as_="span"),
            rx.box(rx.cond(chosen, rx.icon("check", size=styles.ICON_SM, aria_hidden="true")),
                   margin_left="auto", padding_left="16px"),
            align="center",
            spacing="2",
            width="100%",
        ),
        on_click=set_color_mode(mode),
        id=f"theme-{mode}",
        custom_attrs={"role": "menuitemradio", "aria-checked": rx.cond(chosen, "true", "false")},
    )


def theme_menu() -> rx.Component:
    """An icon button (sun or moon, as shown now) opening System / Light / Dark."""
    label = rx.match(color_mode, ("light", "Theme: light"), ("dark", "Theme: dark"), "Theme: system")
    return rx.menu.root(
        tip(
            _TippedMenuTrigger.create(
                rx.icon_button(
                    rx.cond(
                        resolved_color_mode == "light",
                        rx.icon("sun", size=styles.ICON_MD, aria_hidden="true"),
                        rx.icon("moon", size=styles.ICON_MD, aria_hidden="true"),
                    ),
                    variant="ghost",
                    color_scheme="gray",
                    size="2",
                    id="theme-menu",
                    aria_label=label,
                    custom_attrs={"data-mode": color_mode, "data-resolved": resolved_color_mode},
                ),
            ),
            label,
        ),
        rx.menu.content(*[_item(*mode) for mode in MODES], size="1", aria_label="Theme"),
        # Every page has the menu: it also installs the page's keyboard help (focus back after dialogs).
        on_mount=install_keyboard(),
    )
