"""The DGX Spark page's own state: which machine it shows, and the phone's folded system header."""

from __future__ import annotations

import socket

import reflex as rx


class SparkPageState(rx.State):
    """The page's connection: this machine, connected while its sampler runs."""

    connection_id: str = socket.gethostname()
    # On a phone the system header is folded away until asked for, so the cards start on the first screen.
    system_open: bool = False

    @rx.event
    def toggle_system(self) -> None:
        """Show or fold the system header (the button shows on phones only)."""
        self.system_open = not self.system_open
