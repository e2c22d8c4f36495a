"""Long-lived responses (log streams) under caps: per client and in all, with a 429 that says so.

A client is its address; requests that carry the token (or the login session) count
as a client of their own, so another local user's streams cannot use up the owner's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from dgx_spark.api.actor import token_or_login
from dgx_spark.api.errors import ApiError
from dgx_spark.security.throttle import StreamSlots
from dgx_spark.services import get_services


class _SlotResponse(StreamingResponse):
    """A streaming response that gives its slot back when it ends, however it ends."""

    def __init__(self, content: AsyncIterator[bytes], release: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def stream_client(request: Request) -> str:
    """The key a stream is counted under: the address, plus "(token)" when authorized."""
    address = request.client.host if request.client else "unknown"
    return f"{address} (token)" if token_or_login(request) else address


def capped_stream(
    request: Request,
    content: AsyncIterator[bytes],
    *,
    media_type: str,
    headers: Mapping[str, str] | None = None,
    slots: StreamSlots | None = None,
) -> StreamingResponse:
    """A streaming response holding one of ``slots`` (the services' log stream caps by default).

    Raises:
        ApiError: 429 (``too_many_streams``) when the client's or the overall cap is full.
    """
    slots = get_services().limits.log_streams if slots is None else slots
    client = stream_client(request)
    full = slots.acquire(client)
    if full == "client":
        raise ApiError(429, f"too many log streams open from this client (at most {slots.per_client}, "
                            "DGX_SPARK_LOG_STREAMS_PER_CLIENT); close one first", code="too_many_streams",
                       limit=slots.per_client)
    if full is not None:
        raise ApiError(429, f"too many log streams open in all (at most {slots.total}, "
                            "DGX_SPARK_LOG_STREAMS_TOTAL); try again later", code="too_many_streams",
                       limit=slots.total)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            slots.release(client)

    try:
        return _SlotResponse(content, release, media_type=media_type, headers=dict(headers or {}))
    except BaseException:
        release()
        raise


# OpenAPI: what the streaming routes answer (not JSON).
EVENT_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'Server-sent events: `data: {"lines": [...], "offset": N}` lines and `:` comments',
        # One server-sent event; ``data`` is JSON text: {"lines": [...], "offset": N}.
        "content": {"text/event-stream": {"schema": {
            "type": "object",
            "properties": {
                "event": {"type": "string"},
                "data": {"type": "string", "contentMediaType": "application/json"},
                "id": {"type": "string"},
                "retry": {"type": "integer"},
            },
        }}},
    },
}
PLAIN_TEXT_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "The whole log as text", "content": {"text/plain": {"schema": {"type": "string"}}}},
}
