"""Whether this browser tab is logged in (``LoginState.logged_in``).

The session cookie is HttpOnly, so the page cannot read it; the backend tells the
page instead, from the cookie the websocket carried. Controls use
``LoginState.logged_in`` to explain why an action needs a login.
"""

from __future__ import annotations

import reflex as rx

from dgx_spark.state.actor import logged_in


class LoginState(rx.State):
    """The login status of this browser tab."""

    logged_in: bool = False

    @rx.event
    def check_login(self) -> None:
        """Read the login from the websocket's cookie."""
        self.logged_in = logged_in(self)
