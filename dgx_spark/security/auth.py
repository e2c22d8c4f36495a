"""Token authentication (placeholder until the security work lands)."""

from __future__ import annotations

from fastapi import Request


def require_token(request: Request) -> None:
    """FastAPI dependency for every mutating route: the caller must hold the token."""
    return None
