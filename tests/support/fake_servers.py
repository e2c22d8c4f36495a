"""Fake Ollama / vLLM / SGLang / llama.cpp / TGI / ComfyUI / Jupyter servers for tests (test code only).

They answer the endpoints the service probes read, in the shapes of each
project's public API docs: Ollama ``GET /api/ps``, the OpenAI-compatible
``GET /v1/models`` and Prometheus ``GET /metrics`` (vLLM names), TGI ``/info``,
ComfyUI ``GET /queue``, Jupyter ``GET /api/kernels`` (403 without the token when
one is required). A ``mode`` makes them misbehave: ``slow`` (the answer waits
until ``release()``), ``broken`` (the connection closes with no answer),
``html`` (a 200 page that is not JSON), ``error`` (HTTP 500).

In-process (a thread)::

    with FakeServer("ollama") as server:
        server.port ...

or as a real process whose command line the dashboard recognises (see
``launcher_script``): ``python <folder>/ollama serve`` with ``FAKE_PORT``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]
MODES = ("ok", "slow", "broken", "html", "error")
GIB = 1024**3


def go_time(moment: dt.datetime) -> str:
    """A time as Go's ``time.Time`` marshals it (Ollama): nanoseconds and a numeric offset."""
    local = moment.astimezone(dt.timezone(dt.timedelta(hours=-7)))
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}123" + local.strftime("%z")[:3] + ":00"


def queue_item(number: int) -> list[Any]:
    """One ComfyUI queue entry: [number, prompt id, prompt, extra data, outputs to execute]."""
    return [number, f"prompt-{number}", {"3": {"class_type": "KSampler", "inputs": {}}}, {"client_id": "c"}, ["9"]]


class FakeServer:
    """One fake server on 127.0.0.1 (or ``host``), served by a thread."""

    def __init__(self, kind: str, mode: str = "ok", *, host: str = "127.0.0.1", port: int = 0,
                 token_required: bool = True) -> None:
        """Bind ``host:port`` (0: a free port)."""
        assert mode in MODES, mode
        self.kind = kind
        self.mode = mode
        self.token_required = token_required
        self.requests: list[str] = []
        self.request_seen = threading.Event()
        self.released = threading.Event()
        self.generated_tokens = 1000.0
        self.started = time.monotonic()
        # What the server "serves" (tests may change these).
        self.models: list[dict[str, Any]] = [
            {
                "name": "llama3.1:70b",
                "model": "llama3.1:70b",
                "size": 42 * GIB,
                "digest": "a2af6cc3eb7fa8be8504abaf9b04e88f17a119ec3f04a3addf55f92841195f5a",
                "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                            "parameter_size": "70.6B", "quantization_level": "Q4_K_M"},
                "expires_at": go_time(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4, seconds=30)),
                "size_vram": 42 * GIB,
                "context_length": 8192,
            }
        ]
        self.served_model = "meta-llama/Llama-3.1-8B-Instruct"
        self.running, self.waiting = 2, 1
        self.queue_running, self.queue_pending = 2, 5
        self.missing: set[str] = set()
        """Paths answered 404 as if this version had no such endpoint (tests may add some)."""
        self.kernels = [
            {"id": "k1", "name": "python3", "last_activity": "2025-01-01T00:00:00.000000Z",
             "execution_state": "busy", "connections": 1},
            {"id": "k2", "name": "python3", "last_activity": "2025-01-01T00:00:00.000000Z",
             "execution_state": "idle", "connections": 0},
        ]
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --------------------------------------------------------------------------------- answers
    def answer(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for ``GET path``."""
        if self.mode == "html":
            return 200, "text/html", b"<!doctype html><html><body>It works</body></html>"
        if self.mode == "error":
            return 500, "application/json", b'{"error":"internal"}'
        data: Any
        if path in self.missing:
            return 404, "application/json", b'{"detail":"Not Found"}'
        if self.kind == "ollama" and path == "/api/ps":
            data = {"models": self.models}
        elif self.kind in ("vllm", "sglang", "llamacpp") and path == "/v1/models":
            data = {"object": "list", "data": [{
                "id": self.served_model, "object": "model", "created": 1735689600, "owned_by": self.kind,
                "root": self.served_model, "parent": None, "max_model_len": 8192,
            }]}
        elif self.kind == "tgi" and path == "/info":
            data = {"model_id": self.served_model, "model_dtype": "torch.float16", "max_concurrent_requests": 128,
                    "version": "2.4.0"}
        elif path == "/metrics" and self.kind in ("vllm", "sglang", "llamacpp", "tgi"):
            self.generated_tokens += 31.0 * 5  # grows by a known amount per scrape
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics().encode()
        elif self.kind == "comfyui" and path == "/queue":
            data = {"queue_running": [queue_item(i) for i in range(self.queue_running)],
                    "queue_pending": [queue_item(100 + i) for i in range(self.queue_pending)]}
        elif self.kind == "comfyui" and path == "/prompt":
            data = {"exec_info": {"queue_remaining": self.queue_running + self.queue_pending}}
        elif self.kind == "jupyter" and path == "/api/kernels":
            if self.token_required:
                return 403, "application/json", b'{"message": "Forbidden", "reason": null}'
            data = self.kernels
        else:
            return 404, "application/json", b'{"detail":"Not Found"}'
        return 200, "application/json", json.dumps(data).encode()

    def metrics(self) -> str:
        """A Prometheus text exposition with this kind's metric names."""
        label = f'{{model_name="{self.served_model}"}}'
        if self.kind == "vllm":
            lines = [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{label} {self.running}.0",
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting{label} {self.waiting}.0",
                "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.",
                "# TYPE vllm:gpu_cache_usage_perc gauge",
                f"vllm:gpu_cache_usage_perc{label} NaN",
                "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
                "# TYPE vllm:generation_tokens_total counter",
                f"vllm:generation_tokens_total{label} {self.generated_tokens:e}",
                f'vllm:e2e_request_latency_seconds_bucket{{le="+Inf",model_name="{self.served_model}"}} 3.0',
            ]
        elif self.kind == "sglang":
            lines = [
                f"sglang:num_running_reqs{label} {self.running}.0",
                f"sglang:num_queue_reqs{label} {self.waiting}.0",
                f"sglang:generation_tokens_total{label} {self.generated_tokens:e}",
            ]
        elif self.kind == "llamacpp":
            lines = [
                "# TYPE llamacpp:requests_processing gauge",
                f"llamacpp:requests_processing {self.running}",
                f"llamacpp:requests_deferred {self.waiting}",
                f"llamacpp:tokens_predicted_total {int(self.generated_tokens)}",
            ]
        else:
            lines = [
                f"tgi_batch_current_size {self.running}",
                f"tgi_queue_size {self.waiting}",
                f"tgi_request_generated_tokens_sum {self.generated_tokens}",
            ]
        return "\n".join(lines) + "\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                fake.request_seen.set()
                if fake.mode == "slow":
                    fake.released.wait(60)
                if fake.mode == "broken":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, content_type, body = fake.answer(self.path.split("?")[0])
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

    # ------------------------------------------------------------------------------- lifecycle
    def release(self) -> None:
        """Let ``slow`` requests answer (and every later one at once)."""
        self.released.set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def launcher_script(folder: Path, program: str) -> Path:
    """A script named ``program`` (``ollama``, ``vllm``, ``jupyter-lab``...) that runs a fake server.

    Run it as ``[python, path, "serve", ...]`` with ``FAKE_KIND``, ``FAKE_PORT`` and
    optionally ``FAKE_MODE`` in the environment; the dashboard's rule table sees
    the script's name, as it would see the real program's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / program
    path.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.support.fake_servers import main
        main()
    """).lstrip())
    return path


def main() -> None:
    """Serve ``FAKE_KIND`` on ``FAKE_PORT`` (127.0.0.1) until killed; touch ``WORKLOAD_READY`` once up."""
    kind = os.environ["FAKE_KIND"]
    server = FakeServer(kind, os.environ.get("FAKE_MODE", "ok"), port=int(os.environ["FAKE_PORT"]),
                        token_required=os.environ.get("FAKE_TOKEN_REQUIRED", "1") == "1")
    ready = os.environ.get("WORKLOAD_READY")
    if ready:
        Path(ready).touch()
    print(f"fake {kind} serving on 127.0.0.1:{server.port}", file=sys.stderr, flush=True)
    server.server.serve_forever()
