"""The API's contract without a running backend: the OpenAPI's enums and error answers, the 500 and 503 envelopes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from dgx_spark.api.app import create_api
from dgx_spark.collector.query import ORDERS, SORT_KEYS
from dgx_spark.health import health

# What every route's OpenAPI entry declares besides its success: the envelope's answers.
ERROR_STATUSES = ("400", "401", "403", "404", "405", "409", "413", "422", "429", "500", "503")
# Query parameters with a fixed set of values: an enum (one value) or a pattern (a comma-separated list).
ENUM_PARAMS = {"sort": set(SORT_KEYS), "order": set(ORDERS)}
PATTERN_PARAMS = ("type", "status", "kind")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_api().openapi()


def _schemas(param: dict[str, Any]) -> list[dict[str, Any]]:
    schema = param["schema"]
    return [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_route_declares_the_error_envelope(spec: dict[str, Any]) -> None:
    operations = list(_operations(spec))
    assert len(operations) >= 25, [f"{m} {p}" for p, m, _ in operations]
    for path, method, operation in operations:
        missing = [s for s in ERROR_STATUSES if s not in operation["responses"]]
        assert not missing, f"{method.upper()} {path} does not declare {missing}"
        for status in ERROR_STATUSES:
            content = operation["responses"][status]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/ErrorEnvelope"}, (path, method, status)
    envelope = spec["components"]["schemas"]["ErrorEnvelope"]
    assert set(envelope["required"]) == {"success", "error"}
    assert set(spec["components"]["schemas"]["ErrorDetail"]["required"]) == {"code", "message"}


def test_fixed_value_parameters_are_enums_or_patterns(spec: dict[str, Any]) -> None:
    seen: dict[str, int] = {}
    for path, method, operation in _operations(spec):
        for param in operation.get("parameters", []):
            name = param["name"]
            if param["in"] != "query" or (name not in ENUM_PARAMS and name not in PATTERN_PARAMS):
                continue
            seen[name] = seen.get(name, 0) + 1
            [schema] = _schemas(param)
            where = f"{method.upper()} {path} ?{name}"
            if name in ENUM_PARAMS:
                assert set(schema.get("enum", ())) == ENUM_PARAMS[name], where
            else:
                assert schema.get("enum") or schema.get("pattern", "").startswith("^"), f"{where} is a free string"
    # The operations list and the history take sort/order/type/status; the events take kind.
    assert seen.get("sort", 0) >= 2 and seen.get("order", 0) >= 2 and seen.get("type", 0) >= 2, seen
    assert seen.get("status", 0) >= 2 and seen.get("kind", 0) >= 1, seen


def _with_broken_routes() -> FastAPI:
    api = create_api()

    @api.get("/api/dgx/test-broken")
    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug with a secret: hunter2")

    @api.get("/api/dgx/test-database-away")
    def database_away() -> dict[str, Any]:
        raise sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked"))

    return api


def test_a_bug_is_a_500_in_the_envelope_without_its_details() -> None:
    client = TestClient(_with_broken_routes(), raise_server_exceptions=False)
    for method in ("GET", "HEAD"):
        reply = client.request(method, "/api/dgx/test-broken")
        assert reply.status_code == 500, method
        assert reply.headers["content-type"].startswith("application/json"), method
    reply = client.get("/api/dgx/test-broken")
    body = reply.json()
    assert body["success"] is False and body["error"]["code"] == "internal_error", body
    assert "RuntimeError" in body["error"]["message"] and "hunter2" not in reply.text
    assert "Traceback" not in reply.text


def test_a_database_error_in_any_route_is_a_503_with_retry_after() -> None:
    client = TestClient(_with_broken_routes(), raise_server_exceptions=False)
    reply = client.get("/api/dgx/test-database-away")
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "5"
    body = reply.json()
    assert body["success"] is False and body["error"]["code"] == "database_unavailable", body
    assert "locked" in body["error"]["message"] and "SELECT" not in body["error"]["message"]
    state = health.state("database")
    assert state.degraded and "locked" in (state.last_error or "")
    health.report_ok("database")


def test_one_operation_that_cannot_be_encoded_never_breaks_the_list(caplog: pytest.LogCaptureFixture) -> None:
    """Each operation is encoded on its own: a lone surrogate or a failing to_api gives a marked record, logged once."""
    import json
    import time

    from dgx_spark.api.operations import encode_list, encode_operation, operation_dict
    from dgx_spark.collector.model import Operation

    now = time.time()
    good = Operation(id="op-1-1", type="server", name="web", status="running", started_at_ts=now - 5)
    odd = good.replace(id="op-2-2", name="web\ud800", command="serve \udfff")

    class Broken(Operation):
        def to_api(self, now: float) -> dict[str, Any]:
            raise ZeroDivisionError("a bug")

    broken = Broken(id="op-3-3", type="job", name="train", status="running")
    with caplog.at_level("WARNING", logger="dgx_spark.api.operations"):
        items = [operation_dict(op, now) for op in (good, odd, broken)]
        for _ in range(3):  # listed again and again, logged once each
            body = json.loads(encode_list(items).decode("utf-8"))
    assert body["success"] is True and [op["id"] for op in body["data"]] == ["op-1-1", "op-2-2", "op-3-3"]
    first, second, third = body["data"]
    assert "encoding_error" not in first and first["name"] == "web"
    assert second["name"] == "web\ufffd" and second["command"] == "serve \ufffd" and second["encoding_error"]
    assert third["name"] == "train" and "ZeroDivisionError" in third["encoding_error"]
    assert json.loads(encode_operation(items[1]))["encoding_error"]
    logged = [r.getMessage() for r in caplog.records if "cannot be encoded" in r.getMessage()]
    assert len(logged) == 2, logged


def test_embedded_our_routes_outside_api_dgx_answer_head_and_405_too() -> None:
    """In a host app the checks cover /api/dgx/ and our own other routes (/api/docs, /api/openapi.json, ...)."""
    client = TestClient(create_api(embedded=True), raise_server_exceptions=False)
    for path in ("/api/docs", "/api/openapi.json"):
        reply = client.head(path)
        assert (reply.status_code, reply.content) == (200, b""), path
        reply = client.put(path)
        assert reply.status_code == 405 and reply.headers["allow"] == "GET, HEAD", path
        assert reply.json()["error"]["code"] == "method_not_allowed", path
