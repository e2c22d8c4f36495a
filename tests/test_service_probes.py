"""Service probes: what known servers serve, against fake servers on real sockets (no timed assertions)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from dgx_spark import format as fmt
from dgx_spark.collector import service_probes as sp
from dgx_spark.collector.model import Container, Operation, Snapshot
from dgx_spark.collector.sampler import Sampler
from tests.support.dashboard import wait_until
from tests.support.fake_servers import GIB, FakeServer, go_time


def server_op(command: str, port: int | None, name: str = "server", op_id: str = "op-1-1", **extra: object) -> Operation:
    """A live server operation held by this test process (its sockets are ours)."""
    return Operation(
        id=op_id, type="server", name=name, status="running", port=port, ports=(port,) if port else (),
        pid=os.getpid(), pids=(os.getpid(),), command=command, **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def watcher() -> Iterator[sp.ServiceWatcher]:
    """A watcher that probes every half second, stopped afterwards."""
    made = sp.ServiceWatcher(0.5, workers=4)
    yield made
    made.stop()


@pytest.fixture
def quick_watcher() -> Iterator[sp.ServiceWatcher]:
    """A watcher that probes every 0.1 s (for tests that wait out several probes), stopped afterwards."""
    made = sp.ServiceWatcher(0.1, workers=4)
    yield made
    made.stop()


def reading_of(watcher: sp.ServiceWatcher, op: Operation, timeout: float = 20.0) -> sp.Reading:
    """Hand ``op`` to the watcher and wait for its first reading."""
    target = sp.target_of(op)
    assert target is not None
    watcher.update([target])
    return wait_until(lambda: watcher.reading(op.id), timeout, 0.05, message=f"no reading for {op.command}")


# ----------------------------------------------------------------------------------- what it is
@pytest.mark.parametrize(
    ("command", "name", "kind"),
    [
        ("/usr/local/bin/ollama serve", "Ollama", "ollama"),
        ("/usr/local/bin/ollama runner --model /m/blob --port 40000", "Ollama runner · blob", None),
        ("vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000", "vLLM · x", "vllm"),
        ("/usr/bin/python3 -m vllm.entrypoints.openai.api_server --model x", "vLLM · x", "vllm"),
        ("python3 -m sglang.launch_server --model-path x --port 30000", "SGLang · x", "sglang"),
        ("text-generation-launcher --model-id x", "TGI · x", "tgi"),
        ("/opt/llama.cpp/build/bin/llama-server -m /m/q4.gguf --port 8080", "llama.cpp · q4.gguf", "llamacpp"),
        ("python /home/u/ComfyUI/main.py --listen 127.0.0.1", "ComfyUI", "comfyui"),
        ("/home/u/.venv/bin/python /home/u/.venv/bin/jupyter-lab --no-browser", "Jupyter Lab", "jupyter"),
        ("jupyter notebook --port 8889", "Jupyter Notebook", "jupyter"),
        ("python -m jupyterlab", "Jupyter Lab", "jupyter"),
        ("tensorboard --logdir runs/exp1 --port 6006", "tensorboard", "tensorboard"),
        ("bash -c 'vllm serve x'", "vLLM · x", "vllm"),  # wrapped: the rule's name tells
        ("python vllm_benchmark.py", "vllm_benchmark.py", None),  # a name that merely starts alike
        ("python -m http.server 8000", "HTTP server", None),
    ],
)
def test_kind_from_the_command_line(command: str, name: str, kind: str | None) -> None:
    assert sp.service_kind(server_op(command, 8000, name=name)) == kind


def test_a_container_is_asked_on_its_published_host_ports_only() -> None:
    op = server_op("python main.py --listen 0.0.0.0", 8188, name="comfy").replace(
        container=Container(id="c0ffee", name="comfy", image="yanwk/comfyui-boot:cu124-slim"),
        port_map=((9188, 8188), (None, 8189)), ports=(8189, 9188), port=9188)
    target = sp.target_of(op)
    assert target is not None
    assert (target.kind, target.ports, target.published) == ("comfyui", (9188,), True)
    unpublished = op.replace(port_map=((None, 8188),), ports=(8188,), port=8188)
    assert sp.target_of(unpublished) is None  # 8188 is inside the container's namespace only


def test_only_live_servers_with_a_port_are_targets() -> None:
    assert sp.target_of(server_op("ollama serve", None)) is None  # not listening yet
    assert sp.target_of(server_op("ollama serve", 11434).replace(status="stopped")) is None
    assert sp.target_of(server_op("ollama serve", 11434).replace(type="program")) is None
    target = sp.target_of(server_op("ollama serve", 11434).replace(ports=(11434, 40001, 40002, 40003)))
    assert target is not None and target.ports == (11434, 40001, 40002)  # main port first, at most 3
    assert sp.tensorboard_logdir("tensorboard --logdir=runs/exp1") == "runs/exp1"
    assert sp.tensorboard_logdir("python -m tensorboard.main --logdir_spec a:/x,b:/y") == "a:/x,b:/y"


# ------------------------------------------------------------------------------ reading answers
def test_ollama_ps_in_its_documented_shape() -> None:
    now = time.time()
    expires = dt.datetime.fromtimestamp(now, dt.UTC) + dt.timedelta(minutes=4, seconds=30)
    data = {"models": [
        {"name": "llama3.1:70b", "model": "llama3.1:70b", "size": 42 * GIB, "digest": "d",
         "details": {"format": "gguf"}, "expires_at": go_time(expires), "size_vram": 42 * GIB, "context_length": 4096},
        {"name": "gemma3", "model": "gemma3", "size": 8 * GIB, "size_vram": 4 * GIB,
         "expires_at": "2318-01-01T00:00:00.000000000Z"},  # keep_alive -1: stays loaded
    ]}
    service = sp.read_ollama(data, now)
    assert service["summary"] == "llama3.1:70b +1 more · 50 GiB (92% GPU) · unloads in 4m"
    first, second = service["models"]
    assert first == {"name": "llama3.1:70b", "size_bytes": 42 * GIB, "vram_bytes": 42 * GIB,
                     "expires_at": fmt.iso_utc(expires.timestamp()), "context_length": 4096}
    assert second["expires_at"] == "2318-01-01T00:00:00Z" and second["context_length"] is None
    assert sp.read_ollama({"models": []}, now)["summary"] == "no model loaded"
    assert sp.read_ollama({"models": [{"name": "m", "size": 5 * GIB, "size_vram": 5 * GIB}]}, now)["summary"] == (
        "m · 5.0 GiB"
    )
    for bad in ({}, [], {"models": "x"}, None):
        with pytest.raises(sp.ProbeFailed):
            sp.read_ollama(bad, now)


def test_untrusted_text_and_numbers_are_tamed() -> None:
    hostile = {"models": [{"name": "evil\x1b[31m\u202emodel" + "x" * 500, "size": float("inf"), "size_vram": -5,
                           "expires_at": "not a time", "context_length": True}, "junk", {"size": 1}]}
    service = sp.read_ollama(hostile, time.time())
    (model,) = service["models"]
    assert model["name"].startswith("evil[31mmodel") and len(model["name"]) == sp.MAX_TEXT
    assert "\x1b" not in model["name"] and "\u202e" not in model["name"]
    assert model["size_bytes"] is None and model["vram_bytes"] is None
    assert model["expires_at"] is None and model["context_length"] is None


def test_prometheus_text_summed_over_labels() -> None:
    text = (
        "# HELP vllm:num_requests_running Number of requests.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="a b",engine="0"} 2.0\n'
        'vllm:num_requests_running{model_name="a b",engine="1"} 1.0\n'
        'vllm:num_requests_waiting{model_name="x{y}"} 4 1712345678000\n'
        "vllm:generation_tokens_total 1.5e+06\n"
        "vllm:gpu_cache_usage_perc NaN\n"
        "garbage line without value\n"
    )
    wanted = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:generation_tokens_total",
              "vllm:gpu_cache_usage_perc"]
    assert sp.read_prometheus(text, wanted) == {
        "vllm:num_requests_running": 3.0, "vllm:num_requests_waiting": 4.0, "vllm:generation_tokens_total": 1.5e6,
    }


def test_comfyui_and_jupyter_answers() -> None:
    item = [0, "id", {}, {}, []]
    assert sp.read_comfyui({"queue_running": [item, item], "queue_pending": [item] * 5})["summary"] == (
        "queue 2 running · 5 pending"
    )
    assert sp.read_comfyui({"queue_running": [], "queue_pending": []})["summary"] == "queue empty"
    with pytest.raises(sp.ProbeFailed):
        sp.read_comfyui({"queue_running": 3})
    forbidden = sp.Answer(403, {"content-type": "application/json"}, b'{"message": "Forbidden"}')
    assert sp.read_jupyter(forbidden) == {"kind": "jupyter", "summary": "kernels: needs token", "needs_token": True}
    kernels = sp.Answer(200, {}, b'[{"id": "a", "execution_state": "busy"}, {"id": "b", "execution_state": "idle"}]')
    assert sp.read_jupyter(kernels)["summary"] == "2 kernels · 1 busy"
    assert sp.read_jupyter(sp.Answer(200, {}, b"[]"))["summary"] == "no kernels"
    with pytest.raises(sp.ProbeFailed):
        sp.read_jupyter(sp.Answer(200, {"content-type": "text/html"}, b"<html>"))


# ------------------------------------------------------------------------------- loopback only
def test_http_get_refuses_a_non_loopback_address_before_connecting() -> None:
    with pytest.raises(sp.ProbeFailed, match="non-loopback"):
        sp.http_get("192.0.2.1", 80, "/", time.monotonic() + 1)


def _lan_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def test_loopback_address_of_own_listening_sockets() -> None:
    with socket.socket() as wildcard, socket.socket() as loop:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        loop.bind(("127.0.0.2", 0))
        loop.listen()
        own = sp.own_socket_inodes([os.getpid()])
        assert own is not None
        assert sp.loopback_address(wildcard.getsockname()[1], own) == "127.0.0.1"
        assert sp.loopback_address(loop.getsockname()[1], own) == "127.0.0.2"
        # A process whose sockets cannot be read is not asked; a container's published port is.
        assert sp.loopback_address(wildcard.getsockname()[1], None) is None
        assert sp.loopback_address(wildcard.getsockname()[1], None, published=True) == "127.0.0.1"
        # A port none of the operation's sockets listens on (another namespace's number) is not asked.
        assert sp.loopback_address(wildcard.getsockname()[1], {1}) is None
    if socket.has_ipv6:
        try:
            six = socket.socket(socket.AF_INET6)
            six.bind(("::1", 0))
        except OSError:
            return
        with six:
            six.listen()
            assert sp.loopback_address(six.getsockname()[1], sp.own_socket_inodes([os.getpid()])) == "::1"


def test_a_server_bound_to_a_lan_address_is_not_asked_on_loopback() -> None:
    lan = _lan_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with socket.socket() as theirs:
        # Someone else's socket on 127.0.0.1:P and the operation's on LAN:P.
        theirs.bind(("127.0.0.1", 0))
        theirs.listen()
        port = theirs.getsockname()[1]
        with socket.socket() as ours:
            ours.bind((lan, port))
            ours.listen()
            ours_inodes = {os.fstat(ours.fileno()).st_ino}
            assert sp.loopback_address(port, ours_inodes) is None
            assert sp.loopback_address(port, {os.fstat(theirs.fileno()).st_ino}) == "127.0.0.1"


# --------------------------------------------------------------------------- against fake servers
def test_ollama_models_size_and_unload(watcher: sp.ServiceWatcher) -> None:
    with FakeServer("ollama") as server:
        op = server_op("/usr/local/bin/ollama serve", server.port, name="Ollama")
        reading = reading_of(watcher, op)
        assert reading.service["kind"] == "ollama"
        assert reading.service["summary"].startswith("llama3.1:70b · 42 GiB · unloads in 4m")
        assert reading.service["models"][0]["vram_bytes"] == 42 * GIB
        assert reading.source == f"http://127.0.0.1:{server.port}/api/ps"
        assert server.requests == ["/api/ps"]


@pytest.mark.parametrize("kind", ["vllm", "sglang", "llamacpp", "tgi"])
def test_openai_servers_model_requests_and_tokens_per_second(watcher: sp.ServiceWatcher, kind: str) -> None:
    commands = {"vllm": "vllm serve m", "sglang": "python -m sglang.launch_server --model-path m",
                "llamacpp": "llama-server -m m.gguf", "tgi": "text-generation-launcher --model-id m"}
    with FakeServer(kind) as server:
        op = server_op(commands[kind], server.port)
        first = reading_of(watcher, op)
        assert first.service["models"] == ["meta-llama/Llama-3.1-8B-Instruct"]
        assert (first.service["requests_running"], first.service["requests_waiting"]) == (2, 1)
        assert first.service["summary"].startswith("meta-llama/Llama-3.1-8B-Instruct · 2 running · 1 waiting")
        # Tokens per second need two scrapes of the counter.
        later = wait_until(lambda: (r := watcher.reading(op.id)) and r.service["tokens_per_second"] and r, 20, 0.05)
        assert later.service["tokens_per_second"] > 0 and later.service["summary"].endswith("tok/s")
        assert "/metrics" in later.source


def test_comfyui_queue_and_jupyter_kernels(watcher: sp.ServiceWatcher) -> None:
    with FakeServer("comfyui") as comfy, FakeServer("jupyter") as locked, \
            FakeServer("jupyter", token_required=False) as open_:
        ops = [
            server_op("python /x/ComfyUI/main.py", comfy.port, op_id="op-c-1"),
            server_op("jupyter lab --ServerApp.token=secret", locked.port, op_id="op-j-1"),
            server_op("jupyter-lab", open_.port, op_id="op-j-2"),
        ]
        watcher.update([t for op in ops if (t := sp.target_of(op))])
        readings = wait_until(lambda: all(watcher.reading(op.id) for op in ops) and
                              [watcher.reading(op.id) for op in ops], 20, 0.05)
        assert [r.service["summary"] for r in readings] == [
            "queue 2 running · 5 pending", "kernels: needs token", "2 kernels · 1 busy"]
        assert all("token" not in path for path in locked.requests)  # the token seen in argv is never sent


def test_comfyui_without_a_queue_endpoint_says_what_its_prompt_endpoint_tells(watcher: sp.ServiceWatcher) -> None:
    with FakeServer("comfyui") as comfy:
        comfy.missing.add("/queue")
        reading = reading_of(watcher, server_op("python /x/ComfyUI/main.py", comfy.port, op_id="op-c-2"))
        assert reading.service == {"kind": "comfyui", "summary": "queue 7 remaining", "queue_running": None,
                                   "queue_pending": None, "queue_remaining": 7}
        assert reading.source == f"http://127.0.0.1:{comfy.port}/prompt"
        assert comfy.requests[:2] == ["/queue", "/prompt"]
    assert sp.read_comfyui_prompt({"exec_info": {"queue_remaining": 0}})["summary"] == "queue empty"
    for bad in ({}, {"exec_info": {"queue_remaining": -1}}, {"exec_info": {"queue_remaining": "3"}}, [], None):
        with pytest.raises(sp.ProbeFailed):
            sp.read_comfyui_prompt(bad)


def test_tensorboard_logdir_from_its_command_line(watcher: sp.ServiceWatcher) -> None:
    reading = reading_of(watcher, server_op("tensorboard --logdir runs/exp1", 6006, name="tensorboard"))
    assert reading.service == {"kind": "tensorboard", "summary": "logdir runs/exp1", "logdir": "runs/exp1"}
    assert reading.source == "command line"


BROKEN_KINDS = {"ollama": ("ollama serve", "Ollama"), "vllm": ("vllm serve m", "vLLM · m"),
                "comfyui": ("python /x/ComfyUI/main.py", "ComfyUI")}


@pytest.mark.parametrize("mode", ["broken", "html", "error"])
@pytest.mark.parametrize("kind", sorted(BROKEN_KINDS))
def test_broken_answers_give_nothing_and_are_logged_once(
    quick_watcher: sp.ServiceWatcher, kind: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=sp.__name__)
    command, name = BROKEN_KINDS[kind]
    watcher = quick_watcher
    with FakeServer(kind, mode) as server:
        op = server_op(command, server.port, name=name)
        target = sp.target_of(op)
        assert target is not None
        watcher.update([target])
        wait_until(lambda: watcher.probes_done >= 3, 30, 0.05)
        assert watcher.reading(op.id) is None
        assert len(server.requests) >= 3
        logged = [r for r in caplog.records if f"ports {server.port}" in r.getMessage()]
        assert len(logged) == 1, [r.getMessage() for r in logged]
        # It answers again: shown, and the recovery is logged.
        server.mode = "ok"
        wait_until(lambda: watcher.reading(op.id), 20, 0.05)
        assert any("answers again" in r.getMessage() for r in caplog.records)


def test_slow_server_stalls_neither_the_sampler_nor_other_servers() -> None:
    """Structural: while a fake server holds its answer, refreshes complete and the others are read.

    The slow server holds every answer until the test releases it, and the client
    would wait for it (10 minutes), so a refresh that waited on it could not
    return before the release; the quick server is read meanwhile, by the watcher's threads.
    """
    watcher = sp.ServiceWatcher(0.5, workers=2, request_timeout=600, deadline=600)
    done = threading.Event()
    try:
        with FakeServer("ollama", "slow") as slow, FakeServer("comfyui") as quick:
            ops = [server_op("ollama serve", slow.port, name="Ollama", op_id="op-slow-1"),
                   server_op("python /x/ComfyUI/main.py", quick.port, op_id="op-quick-1")]
            sampler = Sampler(lambda now: list(ops), probes=[sp.ServiceProbe(watcher)], interval=60)
            snapshots: list[Snapshot] = []

            def refreshes() -> None:
                snapshots.append(sampler.sample_once())  # hands both servers to the watcher
                assert slow.request_seen.wait(60), "the slow server was never asked"
                while quick.requests == [] or len(snapshots) < 3 or not snapshots[-1].find("op-quick-1").service:  # type: ignore[union-attr]
                    snapshots.append(sampler.sample_once())
                done.set()

            worker = threading.Thread(target=refreshes, daemon=True)
            worker.start()
            # Generous, not a timing claim: were a refresh waiting on the slow answer, it never comes.
            assert done.wait(120), "refreshes did not complete while the slow server held its answer"
            assert not slow.released.is_set()  # still held when the refreshes completed
            assert all(s.errors == () for s in snapshots)
            assert all(s.find("op-slow-1").service is None for s in snapshots)  # type: ignore[union-attr]
            assert snapshots[-1].find("op-quick-1").service["summary"] == "queue 2 running · 5 pending"  # type: ignore[union-attr,index]
            assert threading.current_thread().name not in watcher.probe_threads
            assert worker.name not in watcher.probe_threads
            assert watcher.probe_threads and all(n.startswith("dgx-spark-service") for n in watcher.probe_threads)
            slow.release()
            shown = wait_until(lambda: sampler.sample_once().find("op-slow-1").service, 60, 0.1)  # type: ignore[union-attr]
            assert shown["kind"] == "ollama"
    finally:
        watcher.stop()


def test_service_fields_in_the_api_shape() -> None:
    op = server_op("ollama serve", 11434, name="Ollama").replace(
        service={"kind": "ollama", "summary": "m · 5.0 GiB", "models": []},
        service_source="http://127.0.0.1:11434/api/ps", service_checked_at_ts=1_700_000_000.4)
    api = op.to_api(1_700_000_001)
    assert api["service"] == {"kind": "ollama", "summary": "m · 5.0 GiB", "models": []}
    assert api["service_source"] == "http://127.0.0.1:11434/api/ps"
    assert api["service_checked_at"] == "2023-11-14T22:13:20Z"
    bare = server_op("python -m http.server", 8000).to_api(0)
    assert (bare["service"], bare["service_source"], bare["service_checked_at"], bare["type_source"]) == (
        None, None, None, None)


def test_the_card_line_and_its_tooltip() -> None:
    from dgx_spark.state.view import operation_view

    op = server_op("ollama serve", 11434, name="Ollama").replace(
        service={"kind": "ollama", "summary": "llama3.1:70b · 42 GiB · unloads in 4m"},
        service_source="http://127.0.0.1:11434/api/ps", service_checked_at_ts=1_700_000_000)
    view = operation_view(op, 1_700_000_001)
    assert view.service_text == "llama3.1:70b · 42 GiB · unloads in 4m"
    assert view.service_title == "Read from http://127.0.0.1:11434/api/ps at 2023-11-14T22:13:20Z"
    ended = operation_view(op.replace(status="stopped"), 1_700_000_001)
    assert (ended.service_text, ended.service_title) == ("", "")
    assert operation_view(server_op("ollama serve", 11434), 0).service_text == ""


def test_a_servers_answer_with_text_that_is_not_utf8_is_cleaned() -> None:
    """A model name with a lone surrogate (JSON's "\\ud800") is read with U+FFFD: it is shown and stored."""
    answer = sp.Answer(200, {"content-type": "application/json"}, b'{"data": [{"id": "llama\\ud800"}]}')
    assert answer.json() == {"data": [{"id": "llama\ufffd"}]}
