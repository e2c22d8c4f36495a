"""Measurement 3: GET /api/dgx/operations latency with many concurrent clients.

Each client is a keep-alive HTTP/1.1 connection to 127.0.0.1 driven by one
asyncio task (a tiny client, so the load generator itself stays light on a
small machine). Two shapes: ``closed`` (every client sends its next request
as soon as the last answered: the worst case) and ``polling`` (every client
asks once per ``poll_interval`` seconds, like dashboards and scripts do).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

PATH = "/api/dgx/operations"


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _client(
    port: int,
    requests: int,
    poll_interval: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Accept-Encoding as requests, httpx and browsers send it (curl asks for the plain body).
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n"
        "Accept-Encoding: gzip, deflate\r\n\r\n"
    ).encode()
    try:
        if poll_interval > 0:
            await asyncio.sleep(random.uniform(0, poll_interval))  # clients are not in lockstep
        for _ in range(requests):
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            latencies.append((time.perf_counter() - started) * 1000.0)
            if status != 200:
                errors.append(f"HTTP {status}")
            if poll_interval > 0:
                await asyncio.sleep(max(0.0, poll_interval - (time.perf_counter() - started)))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def _run(port: int, clients: int, requests: int, poll_interval: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(port, requests, poll_interval, latencies, errors) for _ in range(clients))
    )
    elapsed = time.perf_counter() - started
    if not latencies:
        return {"clients": clients, "requests": 0, "errors": errors[:5], "error_count": len(errors)}
    return {
        "clients": clients,
        "requests": len(latencies),
        "poll_interval_s": poll_interval,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "error_count": len(errors),
        "errors": errors[:5],
    }


def measure_api(
    port: int,
    *,
    clients: int = 50,
    requests_per_client: int = 40,
    poll_interval: float = 1.0,
    poll_requests: int = 10,
) -> dict[str, Any]:
    """Both shapes against a running dashboard on ``port`` (127.0.0.1 only)."""
    warm = asyncio.run(_run(port, 2, 10, 0.0))  # connections and caches warm
    closed = asyncio.run(_run(port, clients, requests_per_client, 0.0))
    polling = asyncio.run(_run(port, clients, poll_requests, poll_interval))
    return {"warmup_errors": warm.get("error_count", 0), "closed": closed, "polling": polling}
