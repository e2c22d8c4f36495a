"""The control routes' side of ``ControlService``: who asks (an ``Actor``), and which action a route is.

Every state-changing route declares ``actor: Annotated[Actor, Depends(ControlRoute("stop"))]`` (the
action's name) and ``control: Control`` (the service), and calls ``control.stop(actor, ...)``.
The security layer names a request it refuses before routing (no token, another origin) with
:func:`describe_control`, which asks these same routes: a route renamed or mounted elsewhere keeps
its action and its audit rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match

from dgx_spark.api.errors import ApiError
from dgx_spark.control.service import Actor, ControlService, node_target
from dgx_spark.security.auth import request_client, request_is_authorized
from dgx_spark.services import get_control, get_services

# The methods that change something: each route with one of them must be a control route.
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The control service, as a route parameter (``control: Control``); tests may override ``get_control``.
Control = Annotated[ControlService, Depends(get_control)]


def token_or_login(request: Request) -> bool:
    """Whether an API request carries the token, or a login from our own origin (the services' credentials)."""
    return request_is_authorized(request, get_services().credentials)


def request_actor(request: Request) -> Actor:
    """The caller of an API request: its address, and whether it holds the token (or a login)."""
    return Actor(client=request_client(request), via="api", authorized=token_or_login(request))


def require_token(request: Request) -> None:
    """FastAPI dependency of the routes only a token holder may read (audit log, raw logs).

    Raises:
        ApiError: 401 in the envelope when it does not.
    """
    if not token_or_login(request):
        raise ApiError(401, "this action needs the token: send Authorization: Bearer <token>", code="unauthorized")


class ControlRoute:
    """The dependency of a control route: gives the caller as an :class:`Actor`; ``action`` names the route."""

    def __init__(self, action: str) -> None:
        """Name the action (``launch``, ``stop``, ``node_add``...) as the audit log writes it."""
        self.action = action

    def __call__(self, request: Request) -> Actor:
        """The caller (FastAPI calls this for every request to the route)."""
        return request_actor(request)

    def __repr__(self) -> str:
        """For FastAPI's and pytest's messages."""
        return f"ControlRoute({self.action!r})"

    # Equal by action: FastAPI evaluates a string annotation anew for each dependant it builds, so
    # one route may hold several instances; ``dependency_overrides`` finds any of them.
    def __eq__(self, other: object) -> bool:
        """Whether ``other`` is the dependency of the same action."""
        return isinstance(other, ControlRoute) and other.action == self.action

    def __hash__(self) -> int:
        """Hash by action (see ``__eq__``)."""
        return hash((ControlRoute, self.action))


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every ``APIRoute`` of an app, those of included routers too (FastAPI keeps them per router)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's included router (no prefix here)
        if included is not None:
            yield from api_routes(included.routes)


def control_route_of(route: BaseRoute) -> ControlRoute | None:
    """The ``ControlRoute`` dependency a route declares, if it is a control route."""
    if not isinstance(route, APIRoute):
        return None
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, ControlRoute):
            return dependant.call
        pending.extend(dependant.dependencies)
    return None


def target_of(params: Mapping[str, Any]) -> str | None:
    """What a control request acts on, from its path parameters (as the service names it)."""
    op_id = params.get("op_id")
    node = params.get("node")
    op = str(op_id) if op_id is not None else None
    if node is not None:
        return node_target(str(node), op)
    return op


def describe_control(routes: Iterable[BaseRoute]) -> Callable[[dict[str, Any]], tuple[str, str | None] | None]:
    """A function that names a request's control action and target from the routes that would serve it.

    It answers None when no control route matches (then it is some other mutation).
    """
    table: list[tuple[APIRoute, ControlRoute]] = []

    def describe(scope: dict[str, Any]) -> tuple[str, str | None] | None:
        if scope.get("type") != "http":
            return None
        if not table:  # built on first use: every route is there by then
            table.extend((route, found) for route in api_routes(routes) if (found := control_route_of(route)))
        for route, control in table:
            match, child = route.matches(scope)
            if match == Match.FULL:
                return control.action, target_of(child.get("path_params", {}))
        return None

    return describe
