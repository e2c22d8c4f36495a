"""All styling of the DGX Spark UI in one place.

Colours are Radix Themes tokens (``var(--gray-a5)``...), so the light and dark
appearances (following the system, or the top bar's theme menu) and the accent
colour set in rxconfig.py apply everywhere; ``THEME_CSS`` darkens a few Radix
shades where they fall short of WCAG AA contrast. Components import these names;
they hold no literal colours or sizes of their own.
"""

from __future__ import annotations

from typing import Any

Style = dict[str, Any]

# ---- sizes -------------------------------------------------------------
ICON_SM = 14
ICON_MD = 16
ICON_LG = 18
CARD_MIN_WIDTH = "300px"
PHONE_MAX_WIDTH = "640px"
RADIUS = "var(--radius-3)"

# ---- colours -------------------------------------------------------------
BORDER = "1px solid var(--gray-a5)"
BORDER_HOVER = "1px solid var(--accent-a8)"
SURFACE = "var(--gray-a2)"
SURFACE_HOVER = "var(--gray-a3)"
MUTED = "var(--gray-11)"
# Radix step 10 reads at 4.1:1 on the dark background (under WCAG AA's 4.5:1): text uses step 11.
FAINT = "var(--gray-11)"

# Status -> Radix colour scale. Live states pulse.
STATUS_COLORS: dict[str, str] = {
    "running": "green",
    "active": "green",
    "starting": "amber",
    "pending": "amber",
    "failed": "red",
    "stopped": "gray",
}
STATUS_LABELS: dict[str, str] = {
    "running": "Running",
    "active": "Active",
    "starting": "Starting",
    "pending": "Pending",
    "failed": "Failed",
    "stopped": "Stopped",
}
TYPE_ICONS: dict[str, str] = {"server": "server", "job": "brain", "program": "terminal"}
TYPE_COLORS: dict[str, str] = {"server": "blue", "job": "violet", "program": "cyan"}

# ---- theme contrast (both themes; measured by axe-core in tests/test_a11y_browser.py) --------
# Text on solid green (step 9, the same in both themes): near-black reads at 6.6:1, Radix's white
# at 3.2:1. In the light theme, Radix's step 11 of green, orange, amber, blue and cyan is 4.0-4.3:1
# on its own tinted badge background: a shade darker passes 4.5:1 everywhere it is used.
# Radix declares its shades on ".light" (the theme root has that class too): ".radix-themes.light" wins.
# The toasts' coloured text (sonner's light palette) is 3.1-4.4:1 on its own tint: darker here.
THEME_CSS = """
html:root, .radix-themes { --green-contrast: var(--black-a12); }
html.light, .radix-themes.light {
  --green-11: #1a7249; --green-a11: #1a7249;
  --orange-11: #a84200; --orange-a11: #a84200;
  --amber-11: #925500; --amber-a11: #925500;
  --blue-11: #0b6bbf; --blue-a11: #0b6bbf;
  --cyan-11: #0f7390; --cyan-a11: #0f7390;
  --red-11: #b9212a; --red-a11: #b9212a;
}
html [data-sonner-toaster][data-sonner-theme="light"] {
  --success-text: hsl(140, 100%, 22%); --info-text: hsl(210, 92%, 38%);
  --warning-text: hsl(31, 92%, 32%); --error-text: hsl(360, 100%, 38%);
}
"""

# ---- global CSS (keyframes cannot be inline styles) -------------------------
# Shipped inside the tab itself, so an app that embeds the tab needs no stylesheet.
GLOBAL_CSS = THEME_CSS + """
@keyframes dgx-pulse {
  0% { box-shadow: 0 0 0 0 var(--dgx-pulse-color); }
  70% { box-shadow: 0 0 0 6px transparent; }
  100% { box-shadow: 0 0 0 0 transparent; }
}
@media (prefers-reduced-motion: reduce) {
  .dgx-status-dot { animation: none !important; }
}
"""

# ---- page ------------------------------------------------------------------
page: Style = {
    "min_height": "100vh",
    "background": "var(--color-background)",
    "color": "var(--gray-12)",
}
page_inner: Style = {
    "width": "100%",
    "max_width": "1600px",
    "margin": "0 auto",
    "padding": ["12px", "16px", "20px 24px"],
}
topbar: Style = {
    "align_items": "center",
    "justify_content": "space-between",
    "gap": "12px",
    "padding_bottom": "12px",
    "flex_wrap": "wrap",
}
brand_mark: Style = {
    "width": "32px",
    "height": "32px",
    "border_radius": RADIUS,
    "background": "var(--accent-9)",
    "color": "var(--accent-contrast)",
    "display": "flex",
    "align_items": "center",
    "justify_content": "center",
    "flex_shrink": "0",
}
tab_trigger: Style = {"gap": "6px", "align_items": "center"}

# ---- tab header --------------------------------------------------------------
tab: Style = {"width": "100%", "padding_top": "16px"}
tab_header: Style = {
    "align_items": ["stretch", "center"],
    "justify_content": "space-between",
    "gap": "12px",
    "flex_direction": ["column", "row"],
    "margin_bottom": "16px",
}
header_actions: Style = {"align_items": "center", "gap": "8px", "flex_wrap": "wrap"}
live_indicator: Style = {
    "align_items": "center",
    "gap": "6px",
    "padding": "4px 10px",
    "border": BORDER,
    "border_radius": "9999px",
    "font_size": "12px",
    "color": MUTED,
    "white_space": "nowrap",
}
stale_content: Style = {"opacity": "0.55", "filter": "saturate(0.4)", "transition": "opacity 0.3s"}
fresh_content: Style = {"opacity": "1", "transition": "opacity 0.3s"}

# ---- sections ------------------------------------------------------------------
section: Style = {"width": "100%", "margin_bottom": "20px"}
section_header: Style = {
    "all": "unset",
    "box_sizing": "border-box",
    "display": "flex",
    "align_items": "center",
    "gap": "10px",
    "width": "100%",
    "padding": "10px 12px",
    "border_radius": RADIUS,
    "cursor": "pointer",
    "color": "var(--gray-12)",
    "transition": "background 0.15s, color 0.15s",
    "_hover": {"background": SURFACE_HOVER, "color": "var(--accent-11)"},
    "_focus_visible": {"outline": "2px solid var(--accent-8)", "outline_offset": "2px"},
}
section_title: Style = {"font_size": "15px", "font_weight": "600", "letter_spacing": "0.01em"}


def chevron(expanded: Any) -> Style:
    """The section chevron: points right when collapsed, down when expanded."""
    from reflex import cond

    return {
        "color": FAINT,
        "transition": "transform 0.2s ease",
        "transform": cond(expanded, "rotate(90deg)", "rotate(0deg)"),
        "flex_shrink": "0",
    }


section_rule: Style = {"flex": "1", "height": "1px", "background": "var(--gray-a4)", "margin_left": "4px"}
grid: Style = {
    "display": "grid",
    "grid_template_columns": f"repeat(auto-fill, minmax(min(100%, {CARD_MIN_WIDTH}), 1fr))",
    "gap": "12px",
    "padding_top": "8px",
    f"@media (max-width: {PHONE_MAX_WIDTH})": {"grid_template_columns": "minmax(0, 1fr)"},
}
empty_state: Style = {
    "align_items": "center",
    "gap": "6px",
    "padding": "28px 16px",
    "margin_top": "8px",
    "border": "1px dashed var(--gray-a6)",
    "border_radius": RADIUS,
    "text_align": "center",
    "color": MUTED,
}
empty_icon: Style = {
    "width": "40px",
    "height": "40px",
    "border_radius": "9999px",
    "background": "var(--gray-a3)",
    "display": "flex",
    "align_items": "center",
    "justify_content": "center",
    "color": FAINT,
    "margin_bottom": "4px",
}
code_hint: Style = {"font_size": "12px"}

# ---- cards -------------------------------------------------------------------------
card: Style = {
    "display": "flex",
    "flex_direction": "column",
    "gap": "12px",
    "min_width": "0",
    "padding": "14px 16px",
    "background": SURFACE,
    "border": BORDER,
    "border_radius": RADIUS,
    "transition": "border-color 0.15s, background 0.15s, transform 0.15s",
    "_hover": {"border": BORDER_HOVER, "background": SURFACE_HOVER},
}
ENDED_OPACITY = "0.72"
card_head: Style = {"align_items": "flex-start", "gap": "12px", "min_width": "0", "width": "100%"}


def type_icon_box(type_color: str) -> Style:
    """The square behind a card's type icon."""
    return {
        "width": "36px",
        "height": "36px",
        "border_radius": RADIUS,
        "display": "flex",
        "align_items": "center",
        "justify_content": "center",
        "flex_shrink": "0",
        "background": f"var(--{type_color}-a3)",
        "color": f"var(--{type_color}-11)",
    }


card_titles: Style = {"min_width": "0", "flex": "1", "gap": "2px"}
card_name: Style = {
    "font_weight": "600",
    "font_size": "14px",
    "overflow": "hidden",
    "text_overflow": "ellipsis",
    "white_space": "nowrap",
    "max_width": "100%",
}
ellipsis: Style = {
    "overflow": "hidden",
    "text_overflow": "ellipsis",
    "white_space": "nowrap",
    "max_width": "100%",
    "display": "block",
    "color": MUTED,
    "font_size": "12px",
}
details: Style = {
    "display": "grid",
    "grid_template_columns": "repeat(2, minmax(0, 1fr))",
    "gap": "8px 16px",
    "font_size": "12px",
}
detail_label: Style = {
    "color": FAINT,
    "font_size": "11px",
    "text_transform": "uppercase",
    "letter_spacing": "0.06em",
}
detail_value: Style = {
    "font_size": "13px",
    "font_variant_numeric": "tabular-nums",
    "color": "var(--gray-12)",
    "white_space": "nowrap",
    "overflow": "hidden",
    "text_overflow": "ellipsis",
}
detail_sub: Style = {"font_size": "11px", "color": FAINT, "display": "block"}
open_link: Style = {
    "display": "inline-flex",
    "align_items": "center",
    "gap": "3px",
    "font_size": "12px",
    "font_weight": "500",
}
progress_block: Style = {"gap": "6px", "width": "100%"}
progress_meta: Style = {
    "justify_content": "space-between",
    "font_size": "12px",
    "color": MUTED,
    "font_variant_numeric": "tabular-nums",
    "gap": "8px",
}
chips: Style = {"gap": "6px", "flex_wrap": "wrap"}
card_footer: Style = {
    "margin_top": "auto",  # buttons line up at the bottom of a row of cards
    "gap": "6px",
    "padding_top": "10px",
    "border_top": "1px solid var(--gray-a4)",
    "justify_content": "flex-end",
    "flex_wrap": "wrap",
}

# ---- status -------------------------------------------------------------------------


def status_dot(color: Any, live: Any) -> Style:
    """The coloured dot; live states pulse in their own colour."""
    from reflex import cond

    return {
        "width": "8px",
        "height": "8px",
        "border_radius": "9999px",
        "flex_shrink": "0",
        "background": f"var(--{color}-9)",
        "--dgx-pulse-color": f"var(--{color}-a8)",
        "animation": cond(live, "dgx-pulse 1.8s ease-out infinite", "none"),
    }


status_pill: Style = {
    "align_items": "center",
    "gap": "6px",
    "font_size": "12px",
    "font_weight": "500",
    "white_space": "nowrap",
    "flex_shrink": "0",
}
banner: Style = {"margin_bottom": "12px"}
not_connected: Style = {
    "align_items": "center",
    "gap": "10px",
    "padding": "48px 16px",
    "border": "1px dashed var(--gray-a6)",
    "border_radius": RADIUS,
    "text_align": "center",
}
skeleton_card: Style = {"height": "148px", "border_radius": RADIUS}

# ---- table view (components/operations_table.py) ----------------------------------------
# Rows are 28 px (a size-1 button plus 2 px), so 30+ rows fit a 900 px high screen.
TABLE_ROW_HEIGHT = "28px"
table_scroll: Style = {"width": "100%", "overflow_x": "auto", "margin_top": "8px"}
table: Style = {
    "width": "100%",
    "min_width": "1160px",  # the name column keeps 200+ px; narrower screens scroll sideways
    "table_layout": "fixed",
    "border_collapse": "collapse",
    "font_size": "12px",
    "font_variant_numeric": "tabular-nums",
}
table_head: Style = {"position": "sticky", "top": "0", "z_index": "1", "background": "var(--color-background)"}
table_th: Style = {
    "text_align": "left",
    "font_weight": "500",
    "font_size": "11px",
    "color": MUTED,
    "padding": "4px 8px",
    "border_bottom": BORDER,
    "white_space": "nowrap",
    "overflow": "hidden",
    "text_overflow": "ellipsis",
}
table_th_numeric: Style = {**table_th, "text_align": "right"}
table_sort_button: Style = {
    "all": "unset",
    "box_sizing": "border-box",
    "display": "inline-flex",
    "align_items": "center",
    "gap": "2px",
    "cursor": "pointer",
    "border_radius": "var(--radius-1)",
    "_hover": {"color": "var(--gray-12)"},
    "_focus_visible": {"outline": "2px solid var(--accent-8)", "outline_offset": "1px"},
}
table_sort_idle: Style = {"opacity": "0.6"}
table_row: Style = {
    "height": TABLE_ROW_HEIGHT,
    "border_bottom": "1px solid var(--gray-a3)",
    "_hover": {"background": SURFACE_HOVER},
    "_focus_visible": {"outline": "2px solid var(--accent-8)", "outline_offset": "-2px", "background": SURFACE_HOVER},
}
table_td: Style = {
    "padding": "1px 8px",
    "height": TABLE_ROW_HEIGHT,
    "vertical_align": "middle",
    "white_space": "nowrap",
    "overflow": "hidden",
    "text_overflow": "ellipsis",
    "color": "var(--gray-12)",
}
table_td_numeric: Style = {**table_td, "text_align": "right"}


def table_type_icon(type_color: str) -> Style:
    """The small square behind a row's type icon."""
    return {**type_icon_box(type_color), "width": "22px", "height": "22px", "border_radius": "var(--radius-2)"}


table_name_line: Style = {"align_items": "center", "gap": "8px", "min_width": "0", "flex_wrap": "nowrap"}
table_name: Style = {"font_weight": "600", "flex_shrink": "0", "max_width": "60%", "overflow": "hidden",
                     "text_overflow": "ellipsis", "white_space": "nowrap"}
table_sub: Style = {"color": MUTED, "overflow": "hidden", "text_overflow": "ellipsis", "white_space": "nowrap",
                    "min_width": "0"}
table_inline: Style = {"align_items": "center", "gap": "6px", "flex_wrap": "nowrap"}
table_actions: Style = {"gap": "4px", "flex_wrap": "nowrap", "justify_content": "flex-end"}

# ---- system header and resources strip ----------------------------------------------
header_tile: Style = {
    "border": BORDER,
    "border_radius": RADIUS,
    "background": SURFACE,
    "padding": "8px 12px",
    "min_width": "0",
    "gap": "2px",
}
header_label: Style = {
    "font_size": "11px",
    "color": MUTED,
    "text_transform": "uppercase",
    "letter_spacing": "0.04em",
}
header_value: Style = {"font_size": "15px", "font_weight": "600", "white_space": "nowrap"}
header_sub: Style = {
    "font_size": "12px",
    "color": MUTED,
    "white_space": "nowrap",
    "overflow": "hidden",
    "text_overflow": "ellipsis",
}
# The strip: a grid on wide screens; one row that scrolls sideways on a phone (keeps the cards near the top).
resources_strip: Style = {
    "display": "grid",
    "grid_template_columns": "repeat(auto-fit, minmax(220px, 1fr))",
    "gap": "8px",
    "margin_bottom": "12px",
    "width": "100%",
    f"@media (max-width: {PHONE_MAX_WIDTH})": {
        "grid_template_columns": "none",
        "grid_auto_flow": "column",
        "grid_auto_columns": "minmax(220px, 80%)",
        "overflow_x": "auto",
        "scroll_snap_type": "x mandatory",
    },
}
# Per-core mini-bars: a track per core, filled from the bottom.
core_bars: Style = {"display": "flex", "align_items": "flex-end", "gap": "2px", "height": "28px", "width": "100%"}
core_track: Style = {
    "flex": "1 1 0",
    "min_width": "2px",
    "height": "100%",
    "background": "var(--gray-a4)",
    "border_radius": "2px",
    "display": "flex",
    "align_items": "flex-end",
    "overflow": "hidden",
}
# Disk use bar.
usage_track: Style = {
    "height": "6px",
    "width": "100%",
    "background": "var(--gray-a4)",
    "border_radius": "3px",
    "overflow": "hidden",
}
# A warning level's colour (Radix scale) for temperatures and disks.
LEVEL_COLORS: dict[str, str] = {"ok": "gray", "warning": "amber", "critical": "red"}

# ---- recently ended strip, login-gated controls (H11) -------------------------------
section_counts_text: Style = {"font_size": "12px", "color": MUTED, "white_space": "nowrap"}
section_note: Style = {"font_size": "13px", "color": MUTED, "padding": "8px 12px"}
ended_strip: Style = {"margin_top": "10px", "padding": "0 2px"}
ended_strip_title: Style = {
    "font_size": "11px",
    "text_transform": "uppercase",
    "letter_spacing": "0.06em",
    "color": MUTED,
    "padding": "0 10px 4px",
}
ended_list: Style = {"border": BORDER, "border_radius": RADIUS, "overflow": "hidden"}
ended_row: Style = {
    "display": "grid",
    "grid_template_columns": "8px minmax(8rem, 16rem) minmax(0, 1fr) auto auto",
    "align_items": "center",
    "gap": "10px",
    "padding": "6px 10px",
    "font_size": "13px",
    "border_top": "1px solid var(--gray-a3)",
    "_first": {"border_top": "none"},
    "_hover": {"background": SURFACE_HOVER},
    f"@media (max-width: {PHONE_MAX_WIDTH})": {
        "grid_template_columns": "8px minmax(0, 1fr) auto",
        "row_gap": "4px",
    },
}
ended_name: Style = {
    "font_weight": "600",
    "overflow": "hidden",
    "text_overflow": "ellipsis",
    "white_space": "nowrap",
    "min_width": "0",
}
ended_reason: Style = {
    "overflow": "hidden",
    "text_overflow": "ellipsis",
    "white_space": "nowrap",
    "min_width": "0",
    "font_size": "12px",
    f"@media (max-width: {PHONE_MAX_WIDTH})": {"grid_column": "2 / 4", "grid_row": "2"},
}
ended_time: Style = {
    "font_size": "12px",
    "color": MUTED,
    "white_space": "nowrap",
    f"@media (max-width: {PHONE_MAX_WIDTH})": {"display": "none"},
}
ended_actions: Style = {
    "gap": "6px",
    "justify_content": "flex-end",
    "flex_wrap": "nowrap",
    "& .rt-variant-ghost": {"margin": "0"},  # Radix pulls ghost buttons out by their padding: keep the line even
}
# A control this browser may not use until it logs in: greyed, its link takes the pointer.
gated_button: Style = {"pointer_events": "none"}
gated_link: Style = {"display": "inline-flex", "text_decoration": "none", "cursor": "pointer"}
# "Log in to ..." above settings a viewer may not change (the bell's settings).
login_note: Style = {
    "display": "inline-flex",
    "align_items": "center",
    "gap": "4px",
    "font_size": "12px",
    "color": "var(--accent-11)",
    "text_decoration": "underline",
    "width": "fit-content",
}
# Read by screen readers, not shown.
visually_hidden: Style = {
    "position": "absolute",
    "width": "1px",
    "height": "1px",
    "padding": "0",
    "margin": "-1px",
    "overflow": "hidden",
    "clip": "rect(0, 0, 0, 0)",
    "white_space": "nowrap",
    "border": "0",
}
# Text on the solid accent (green 9, the same in both themes): near-black reads at 6.6:1, white only 3.2:1.
ON_ACCENT = "var(--black-a12)"
accent_button: Style = {"color": ON_ACCENT}

# History on a phone: each table row becomes a card, each cell a "label  value" line (labels from data-label).
HISTORY_PHONE_CSS = f"""
@media (max-width: {PHONE_MAX_WIDTH}) {{
  #history-table thead {{ display: none; }}
  #history-table table, #history-table tbody, #history-table tr.dgx-history-row,
  #history-table td {{ display: block; width: 100%; }}
  #history-table table {{ table-layout: auto; min-width: 0 !important; }}
  #history-table .rt-ScrollAreaRoot, #history-table .rt-ScrollAreaViewport, #history-table table,
  #history-table .rt-ScrollAreaViewport > div {{
    display: block !important; height: auto !important; overflow: visible !important;
  }}
  #history-table tr.dgx-history-row {{
    border: 1px solid var(--gray-a5); border-radius: var(--radius-3); margin-bottom: 10px; padding: 8px 12px;
    box-sizing: border-box; max-width: 100%;
  }}
  #history-table td {{
    display: flex; justify-content: space-between; align-items: center; gap: 12px;
    padding: 3px 0 !important; box-shadow: none !important; min-height: 0; text-align: right;
    box-sizing: border-box; overflow-wrap: anywhere; word-break: break-word;
  }}
  #history-table td::before {{
    content: attr(data-label); color: var(--gray-11); font-size: 12px; flex-shrink: 0; text-align: left;
  }}
  #history-table td[data-label="Operation"] {{ display: block; text-align: left; padding-bottom: 6px !important; }}
  #history-table td[data-label="Operation"]::before {{ content: none; }}
  #history-table td > * {{ min-width: 0; }}
  /* Radix sizes the scroll area's content to fit-content: a long command (max-width 360px) widened the page. */
  #history-table .rt-ScrollAreaViewport > div {{ width: 100% !important; }}
  #history-table td * {{ max-width: 100% !important; }}
}}
"""

# A phone (up to PHONE_MAX_WIDTH): the brand's subtitle goes, the system header folds behind a button.
PHONE_COMPACT_CSS = f"""
#system-toggle {{ display: none; }}
@media (max-width: {PHONE_MAX_WIDTH}) {{
  #system-toggle {{ display: inline-flex; margin-bottom: 8px; }}
  #system-wrap[data-open="false"] #system-body {{ display: none; }}
  .dgx-brand-sub {{ display: none; }}
  /* The first card on the first screen: "Live" without the time (its title keeps it on larger screens), */
  .dgx-live-updated {{ display: none !important; }}
  /* section headers a little tighter, */
  #operations-sections [id^="section-"][id$="-toggle"] {{ padding-top: 6px !important; padding-bottom: 6px !important; }}
  /* and an empty section is one short line. */
  .dgx-empty-state {{ flex-direction: row !important; padding: 8px 12px !important; gap: 10px !important; }}
  .dgx-empty-state > :not(.dgx-empty-icon):not([data-field="empty-title"]) {{ display: none !important; }}
  .dgx-empty-state .dgx-empty-icon {{ width: 28px !important; height: 28px !important; margin: 0 !important; }}
}}
/* Read out but not shown on a phone (the top bar's connection chip says "connected" by colour there). */
@media (max-width: 29.99em) {{
  .dgx-phone-sr-only {{
    position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
    overflow: hidden; clip: rect(0, 0, 0, 0); white-space: nowrap; border: 0;
  }}
}}
"""
