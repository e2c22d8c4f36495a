"""Whether this browser is logged in: a "Log in" link, or a "Logged in" chip with "Log out".

The session cookie is HttpOnly, so the page cannot read it; the backend tells the
page instead (``dgx_spark/state/login.py``), from the cookie the websocket carried.
Controls can use ``LoginState.logged_in`` to explain why an action needs a login.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark.components.tips import tip
from dgx_spark.state.login import LoginState


def login_status() -> rx.Component:
    """The login chip for the page header."""
    return rx.box(
        rx.cond(
            LoginState.logged_in,
            rx.hstack(
                tip(
                    rx.badge(rx.icon("lock_open", size=12, aria_hidden="true"),
                             rx.el.span("Logged in", display=["none", "inline"]),
                             color_scheme="green", variant="soft", id="login-status", role="status",
                             aria_label="Logged in", custom_attrs={"data-logged-in": "true"}),
                    "Logged in: this browser may launch, stop and start operations",
                ),
                # /login and /logout are served by the backend: a document navigation, not the app's router
                # (which would show its own "404: Page not found" and never reach the server).
                rx.el.a("Log out", href="/logout", id="logout-link", reload_document=True,
                        style={"font_size": "12px", "white_space": "nowrap"}),
                align="center",
                spacing="2",
            ),
            tip(
                rx.el.a(
                    # Labelled on a phone too: it is what turns the disabled controls on.
                    rx.button(rx.icon("log_in", size=14, aria_hidden="true"), "Log in",
                              size="1", variant="soft", white_space="nowrap"),
                    href="/login",
                    reload_document=True,
                    id="login-link",
                    custom_attrs={"data-logged-in": "false"},
                ),
                "Log in to launch, stop and start operations",
            ),
        ),
        on_mount=LoginState.check_login,
    )
