"""The REST API's envelope, filters, 404/422 and Host refusal, against the real backend."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.support import workloads
from tests.support.dashboard import Dashboard, wait_until


def test_list_has_the_success_envelope(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/dgx/operations")
    assert status == 200
    assert body["success"] is True
    assert isinstance(body["data"], list)


def test_unknown_type_is_422_in_envelope(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/dgx/operations?type=daemon")
    assert status == 422
    assert body["success"] is False
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["field"] == "type"


def test_unknown_id_is_404(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/dgx/operations/op-1-2")
    assert status == 404
    assert body == {
        "success": False,
        "error": {"code": "not_found", "message": "no operation with id 'op-1-2'", "field": "id"},
    }


def test_foreign_host_is_refused(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/dgx/operations", headers={"Host": "evil.example:80"})
    assert status == 400
    assert body["error"]["code"] == "bad_host"


def test_health_reports_sampler(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/health")
    assert status == 200
    assert body["data"]["sampler_running"] is True
    assert body["data"]["sequence"] >= 1
    assert body["data"]["cpu_ms"] >= 0
    assert body["data"]["sampler_cpu_seconds"] >= 0


def test_list_follows_new_snapshots(backend: Dashboard) -> None:
    """Encoded lists are reused within a snapshot only: a new snapshot gives a new body."""
    # An operation of its own, so the uptime below is never vacuous.
    status, body = backend.authed("POST", "/api/dgx/operations", {
        "template": "custom", "name": "uptime-ticks", "type": "program",
        "command": [sys.executable, "-c", "import time; time.sleep(600)"],
    })
    assert status == 201, body
    op_id = body["data"]["id"]
    try:
        def listed_running() -> dict[str, Any] | None:
            listed = backend.request("GET", "/api/dgx/operations")[1]
            mine = [op for op in listed["data"] if op["id"] == op_id and op["status"] == "running"]
            return listed if mine and mine[0]["uptime"] is not None else None

        first = wait_until(listed_running, 30, message="the launched operation was not listed running")
        again = backend.request("GET", "/api/dgx/operations")[1]
        assert [op["id"] for op in first["data"]] == [op["id"] for op in again["data"]]
        before = next(op["uptime"] for op in first["data"] if op["id"] == op_id)
        # Uptime is whole seconds: wait for snapshots until more than a second has passed.
        wait_until(lambda: next(op["uptime"] for op in backend.operations() if op["id"] == op_id) > before, 30,
                   message="the list did not follow new snapshots (uptime stood still)")
    finally:
        backend.authed("POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})


def test_openapi_is_served(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/openapi.json")
    assert status == 200
    assert "/api/dgx/operations" in body["paths"]


def _raw_list(backend: Dashboard, accept_encoding: str | None, query: str = "") -> tuple[dict[str, str], bytes]:
    """``GET /api/dgx/operations`` as raw bytes and headers (urllib does not decompress)."""
    import urllib.request

    req = urllib.request.Request(backend.url + "/api/dgx/operations" + query)
    req.add_header("Host", f"127.0.0.1:{backend.port}")
    if accept_encoding is not None:
        req.add_header("Accept-Encoding", accept_encoding)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def test_the_list_is_gzipped_for_clients_that_accept_it(backend: Dashboard, tmp_path: Path) -> None:
    """The same list, compressed once per snapshot for clients that send ``Accept-Encoding: gzip``."""
    with workloads.bash_loop(tmp_path / "a", name="gzip_a.sh"), workloads.bash_loop(tmp_path / "b", name="gzip_b.sh"):
        wait_until(lambda: b"gzip_b.sh" in _raw_list(backend, None)[1], 60, 0.5)
        _check_encodings(backend)


def _check_encodings(backend: Dashboard) -> None:
    """Compressed for gzip, plain otherwise (and both say that the answer varies by it)."""
    import gzip
    import json

    assert len(_raw_list(backend, None)[1]) >= 1024
    for accept in ("gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.5"):
        headers, raw = _raw_list(backend, accept)
        assert headers.get("content-encoding") == "gzip", accept
        assert "accept-encoding" in headers.get("vary", "").lower()
        listed = json.loads(gzip.decompress(raw))
        assert listed["success"] is True and isinstance(listed["data"], list)
    for plain in (None, "identity", "gzip;q=0", "deflate"):
        headers, raw = _raw_list(backend, plain)
        assert "content-encoding" not in headers, plain
        assert json.loads(raw)["success"] is True


def test_the_list_without_a_query_is_the_routes_own_answer(backend: Dashboard, tmp_path: Path) -> None:
    """Sent before routing (the API's most asked-for answer), it is what the route answers: bytes and headers."""
    import gzip

    def both(accept: str | None) -> tuple[tuple[dict[str, str], bytes], tuple[dict[str, str], bytes]] | None:
        """The plain list and the routed one (an explicit default order), from one snapshot."""
        sequence = backend.request("GET", "/api/health")[1]["data"]["sequence"]
        plain, routed = _raw_list(backend, accept), _raw_list(backend, accept, "?order=asc")
        same = backend.request("GET", "/api/health")[1]["data"]["sequence"] == sequence
        return (plain, routed) if same else None

    with workloads.bash_loop(tmp_path / "a", name="plain_a.sh"), workloads.bash_loop(tmp_path / "b", name="plain_b.sh"):
        wait_until(lambda: b"plain_b.sh" in _raw_list(backend, None)[1], 60, 0.5)
        for accept in (None, "gzip, deflate"):
            (plain_headers, plain), (routed_headers, routed) = wait_until(lambda accept=accept: both(accept), 30, 0.1)
            if accept is not None:
                assert plain_headers.get("content-encoding") == "gzip"
                plain, routed = gzip.decompress(plain), gzip.decompress(routed)
            assert b"plain_b.sh" in plain
            assert plain == routed
            for headers in (plain_headers, routed_headers):
                headers.pop("date", None)
                headers.pop("content-length")
            assert plain_headers == routed_headers
            assert plain_headers["content-type"] == "application/json"
            assert plain_headers["x-content-type-options"] == "nosniff"
