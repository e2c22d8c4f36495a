"""The REST API's envelope, filters, 404/422 and Host refusal, against the real backend."""

from __future__ import annotations

from tests.support.dashboard import Dashboard, wait_until


def test_list_has_seed_envelope(backend: Dashboard) -> None:
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
    first = backend.request("GET", "/api/dgx/operations")[1]
    again = backend.request("GET", "/api/dgx/operations")[1]
    assert [op["id"] for op in first["data"]] == [op["id"] for op in again["data"]]
    sequence = backend.get_json("/api/health")["data"]["sequence"]
    wait_until(lambda: backend.get_json("/api/health")["data"]["sequence"] > sequence + 1, 30)
    later = backend.request("GET", "/api/dgx/operations")[1]
    uptimes = {op["id"]: op["uptime"] for op in first["data"] if op["status"] in ("running", "active")}
    moved = [op for op in later["data"] if op["id"] in uptimes and op["uptime"] > uptimes[op["id"]]]
    assert moved or not uptimes


def test_openapi_is_served(backend: Dashboard) -> None:
    status, body = backend.request("GET", "/api/openapi.json")
    assert status == 200
    assert "/api/dgx/operations" in body["paths"]
