"""One control path: every control route calls the ControlService, and the service does the whole policy.

In-process, with the real supervisor (a container operation stopped through a fake container
engine, so a stop can be held mid-way without timing), the real API routes (FastAPI's test
client) and real audit rows in a SQLite file. The security layer in front of the routes is
tested against a running backend in ``tests/test_security_api.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from dgx_spark.api import control as control_routes
from dgx_spark.api.actor import MUTATING_METHODS, api_routes, control_route_of, describe_control, target_of
from dgx_spark.api.app import create_api
from dgx_spark.api.errors import control_error_response, install_error_handlers
from dgx_spark.collector import containers as ct
from dgx_spark.collector.model import Container, Operation, Snapshot
from dgx_spark.control.service import STATUS_OF_KIND, Actor, ControlService
from dgx_spark.database import make_engine, migrate
from dgx_spark.security.audit import AuditEntry, list_audit, record_audit
from dgx_spark.security.throttle import InFlight, RateLimiter
from dgx_spark.services import get_control
from dgx_spark.supervisor.supervisor import ERROR_KINDS, ControlError, Supervisor, SupervisorConfig
from tests.support.dashboard import reap_launched, wait_until
from tests.support.fake_engine import FakeContainer, FakeEngine, running_engine

CONTAINER_ID = "4981d135c52f9bfeca0071fe5f40f1a660feb3c799e3553d7c955c177ca080d8"
OP_ID = "op-4242-170000000000"
OWNER = Actor(client="127.0.0.1", via="api", authorized=True)
STRANGER = Actor(client="203.0.113.9", via="api", authorized=False)


def container_op() -> Operation:
    """A running discovered container operation ``web``, as the containers probe leaves it."""
    return Operation(
        id=OP_ID, type="server", name="web", status="running", description="localhost/bb:1", pid=4242,
        pids=(4242,), port=18080, ports=(18080,),
        container=Container(id=CONTAINER_ID, name="web", image="localhost/bb:1", engine="docker", control=None),
        port_map=((18080, 8080),),
    )


class Rig:
    """A real supervisor (with one container operation), a fake engine, an audit database, a service."""

    def __init__(self, tmp_path: Path, engine: FakeEngine) -> None:
        """Build everything in ``tmp_path``."""
        self.data_dir = tmp_path / "data"
        self.db: Engine = make_engine(f"sqlite:///{self.data_dir / 'dgx.db'}")
        migrate(self.db)
        self.engine = engine
        snapshot = Snapshot(sequence=1, taken_at=time.time(), operations=(container_op(),))
        self.watcher = ct.ContainerWatcher(engine.socket_path)
        self.watcher.refresh()
        config = SupervisorConfig(data_dir=self.data_dir, base_url="http://127.0.0.1:1", stop_grace=3.0)
        self.supervisor = Supervisor(config, self.db, snapshot=lambda: snapshot, containers=self.watcher)
        self.supervisor.load()
        self.rate = RateLimiter(rate=1000.0, burst=1000)
        self.service = ControlService(
            lambda: self.supervisor, rate=self.rate, in_flight=InFlight(), audit=self.write_audit,
            name_of=lambda op_id: (found.name if (found := self.supervisor.operation(op_id)) else None),
        )

    def write_audit(self, action: str, outcome: str, **fields: Any) -> None:
        """The real audit row, written at once (the app queues it for its writer thread)."""
        record_audit(action, outcome, engine=self.db, **fields)

    def rows(self, **query: Any) -> list[AuditEntry]:
        """Audit rows, newest first."""
        return list_audit(engine=self.db, **query)

    def close(self) -> None:
        """Stop the supervisor and what it launched."""
        self.supervisor.close()
        reap_launched(self.data_dir)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """The service over a real supervisor and a fake engine with the running container ``web``."""
    with running_engine(tmp_path) as engine:
        engine.add(FakeContainer(CONTAINER_ID, "web"))
        built = Rig(tmp_path, engine)
        try:
            yield built
        finally:
            if engine.gate is not None:
                engine.gate.set()
            built.close()


def api_for(rig: Rig, app: FastAPI | None = None, actor: Actor = OWNER) -> TestClient:
    """A test client of ``app`` (the whole API by default) whose routes use ``rig``'s service and ``actor``."""
    app = app or create_api()
    app.dependency_overrides[get_control] = lambda: rig.service
    for route in api_routes(app.router.routes):
        if (control := control_route_of(route)) is not None:
            app.dependency_overrides[control] = lambda: actor
    return TestClient(app)


# ----------------------------------------------------------------------------- every route uses it


def test_every_state_changing_route_is_a_control_route() -> None:
    """Walk the API: each POST/PUT/PATCH/DELETE route declares its action and takes the service."""
    app = create_api()
    mutating = [route for route in api_routes(app.router.routes) if route.methods & MUTATING_METHODS]
    assert len(mutating) >= 14, [route.path for route in mutating]  # the scan sees the routes
    missing = [f"{sorted(route.methods)} {route.path}" for route in mutating if control_route_of(route) is None]
    assert not missing, f"routes that change things without declaring ControlRoute(action): {missing}"

    def takes_the_service(route: Any) -> bool:
        pending = list(route.dependant.dependencies)
        while pending:
            dependant = pending.pop()
            if dependant.call is get_control:
                return True
            pending.extend(dependant.dependencies)
        return False

    without = [route.path for route in mutating if not takes_the_service(route)]
    assert not without, f"control routes that do not receive the control service: {without}"


def _concrete(path: str) -> str:
    return path.replace("{op_id}", "op-1-2").replace("{node}", "n1")


def test_every_control_route_calls_the_service(rig: Rig) -> None:
    """Each control route, called by someone without the token, is refused by the service itself.

    No other part answers 401 behind the security layer: the refusal and its audit row (named by
    the route's action and target) prove that the route handed the request to the service.
    """
    app = create_api()
    client = api_for(rig, app, actor=STRANGER)
    routes = [(route, control_route_of(route)) for route in api_routes(app.router.routes)]
    controls = [(route, control) for route, control in routes if control is not None]
    assert controls
    for route, control in controls:
        for method in sorted(route.methods):
            path = _concrete(route.path)
            response = client.request(method, path, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            target = target_of({"op_id": "op-1-2" if "{op_id}" in route.path else None,
                                "node": "n1" if "{node}" in route.path else None})
            rows = [r for r in rig.rows(action=control.action, outcome="refused") if r.target == target]
            assert rows and rows[0].status == 401 and rows[0].client == STRANGER.client, (method, path)


def test_a_control_route_mounted_elsewhere_keeps_its_audit(rig: Rig) -> None:
    """Renaming a route cannot lose its audit: the stop route, served at another path, still writes its row."""
    app = FastAPI()
    install_error_handlers(app)
    app.add_api_route("/elsewhere/{op_id}/halt", control_routes.stop, methods=["POST"])
    client = api_for(rig, app)
    response = client.post(f"/elsewhere/{OP_ID}/halt", json={"signal": "term"})
    assert response.status_code == 200, response.text
    wait_until(lambda: ("POST", f"/containers/{CONTAINER_ID}/stop?t=3") in rig.engine.requests, 30.0,
               message="the engine was not asked to stop the container")
    (row,) = rig.rows(action="stop")
    assert (row.outcome, row.target, row.target_name, row.status, row.via, row.client) == (
        "allowed", OP_ID, "web", 200, "api", OWNER.client)
    # And a refusal in front of the route (the security layer's) is named by the same route.
    describe = describe_control(app.router.routes)
    assert describe({"type": "http", "method": "POST", "path": "/elsewhere/op-1-2/halt", "root_path": ""}) == (
        "stop", "op-1-2")


# ----------------------------------------------------------------------------- the policy


def test_one_action_per_operation_at_a_time_api_and_ui_alike(rig: Rig) -> None:
    """While a stop is under way (the engine has not answered), a second action on it is refused: 409 / busy."""
    rig.engine.gate = threading.Event()
    client = api_for(rig)
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(client.post(f"/api/dgx/operations/{OP_ID}/stop")))
    first.start()
    try:
        wait_until(lambda: ("GET", f"/containers/{CONTAINER_ID}/json") in rig.engine.requests, 30.0,
                   message="the first stop never reached the engine")
        second = client.post(f"/api/dgx/operations/{OP_ID}/restart")
        assert second.status_code == 409, second.text
        assert second.json()["error"]["code"] == "conflict"
        assert OP_ID in second.json()["error"]["message"]
        with pytest.raises(ControlError) as busy:
            rig.service.stop(Actor(client="127.0.0.1", via="ui", authorized=True), OP_ID)
        assert busy.value.kind == "busy"
        # Another operation is not held meanwhile (this one does not exist: 404, not 409).
        other = client.post("/api/dgx/operations/op-4243-1/stop")
        assert other.status_code == 404, other.text
    finally:
        rig.engine.gate.set()
        first.join(60)
    assert answers and answers[0].status_code == 200, answers
    refused = rig.rows(outcome="refused")
    assert {(r.action, r.via, r.status) for r in refused} == {("restart", "api", 409), ("stop", "ui", 409)}
    assert all(r.target == OP_ID and r.detail == "another action on this operation is in progress" for r in refused)
    # Once the first is done, the operation is free again.
    rig.engine.containers[CONTAINER_ID].running = True
    assert rig.service.stop(OWNER, OP_ID).id == OP_ID


def test_login_then_throttle_then_the_action_each_audited(rig: Rig) -> None:
    ui = Actor(client="10.0.0.7", via="ui", authorized=False)
    with pytest.raises(ControlError) as refused:
        rig.service.start_again(ui, OP_ID)
    assert refused.value.kind == "unauthorized"
    rig.rate.rate, rig.rate.burst = 0.0001, 1.0
    with pytest.raises(ControlError) as unknown:
        rig.service.stop(OWNER, "op-9-9")
    assert unknown.value.kind == "not_found"
    with pytest.raises(ControlError) as throttled:
        rig.service.stop(OWNER, "op-9-9")
    assert throttled.value.kind == "throttled"
    rows = [(r.action, r.outcome, r.status, r.via, r.detail) for r in reversed(rig.rows())]
    assert rows == [
        ("start", "refused", 401, "ui", "not logged in"),
        ("stop", "failed", 404, "api", "no operation with id 'op-9-9'"),
        ("stop", "refused", 429, "api", "throttled"),
    ]


def test_bad_ids_and_bodies_fail_in_the_service_and_are_audited(rig: Rig) -> None:
    for bad in ("../../etc/passwd", "x" * 65, "a b"):
        with pytest.raises(ControlError) as caught:
            rig.service.remove(OWNER, bad)
        assert (caught.value.kind, caught.value.field) == ("not_found", "id")
    with pytest.raises(ControlError) as body:
        rig.service.launch(OWNER, ["not", "an", "object"])
    assert (body.value.kind, body.value.field) == ("invalid", "body")
    with pytest.raises(ControlError) as unknown:
        rig.service.launch(OWNER, {"template": "custom", "shell": True})
    assert (unknown.value.kind, unknown.value.field) == ("invalid", "shell")
    assert [r.outcome for r in rig.rows()] == ["failed"] * 5


def test_launch_and_remove_name_their_operation_in_the_audit(rig: Rig) -> None:
    body = {"template": "custom", "name": "audit-named", "type": "program", "command": ["sleep", "60"]}
    op = rig.service.launch(OWNER, body)
    (row,) = rig.rows(action="launch")
    assert (row.outcome, row.target, row.target_name, row.status) == ("allowed", op.id, "audit-named", 201)
    rig.service.stop(OWNER, op.id, force=True)
    wait_until(lambda: (found := rig.supervisor.operation(op.id)) is not None and not found.is_live, 60.0,
               message="the launched operation never ended")
    rig.service.remove(OWNER, op.id)
    (removed,) = rig.rows(action="remove")
    assert (removed.outcome, removed.target, removed.target_name, removed.status) == (
        "allowed", op.id, "audit-named", 200)


# ----------------------------------------------------------------------------- kinds, not statuses


def test_every_kind_has_one_status_and_the_api_answers_it() -> None:
    assert set(STATUS_OF_KIND) == set(ERROR_KINDS)
    expected = {"busy": (409, "conflict"), "throttled": (429, "too_many_requests"),
                "unauthorized": (401, "unauthorized"), "not_found": (404, "not_found"),
                "invalid": (422, "validation_error"), "upstream": (502, "bad_gateway")}
    for kind, (status, code) in expected.items():
        response = control_error_response(ControlError(kind, "why", "field"))  # type: ignore[arg-type]
        assert response.status_code == status
        assert response.body and code.encode() in response.body and b'"field":"field"' in response.body
    assert control_error_response(ControlError("unauthorized", "x")).headers["www-authenticate"]
    with pytest.raises(ValueError, match="unknown control error kind"):
        ControlError(404, "an HTTP status is not a kind")  # type: ignore[arg-type]
