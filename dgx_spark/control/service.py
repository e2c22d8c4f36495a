"""One path for every control action: authorise → throttle → one at a time → act → audit.

Every entry point calls a method of :class:`ControlService` with an :class:`Actor` (who
asks, by which channel, logged in or not): the REST routes (``dgx_spark/api``) and the
Reflex handlers (``dgx_spark/state``) alike. So a renamed route, or a new button, cannot
skip the login check, the throttle or the audit row. Each action:

1. **authorise**: an actor that did not log in (no token, no session) is refused;
2. **throttle**: a few actions per second per client (``DGX_SPARK_CONTROL_RATE`` / ``_BURST``);
3. **one at a time**: a second action on an operation (or node) while one is under way is refused;
4. **act**: the supervisor (this machine), or the node hub / the node itself (remote nodes);
5. **audit**: one row, allowed or failed or refused, naming the target's id and name.

Refusals and failures are :class:`ControlError` with a kind (``unauthorized``, ``throttled``,
``busy``, ``not_found``...); the API maps kinds to HTTP statuses (``dgx_spark/api/errors.py``),
the UI to messages (``dgx_spark/state/control.py``). Progress reports are quiet: not throttled,
not held, audited only when they fail. Plain Python: no Reflex, no FastAPI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from dgx_spark.security.audit import ALLOWED, FAILED, REFUSED
from dgx_spark.security.throttle import Busy, InFlight, RateLimiter
from dgx_spark.supervisor.supervisor import ControlError, ErrorKind

if TYPE_CHECKING:
    from dgx_spark.collector.model import Operation
    from dgx_spark.nodes.client import NodeAnswer
    from dgx_spark.nodes.hub import NodeHub
    from dgx_spark.nodes.poller import NodeState
    from dgx_spark.nodes.store import Node
    from dgx_spark.supervisor.supervisor import Supervisor

logger = logging.getLogger(__name__)

T = TypeVar("T")
Via = Literal["api", "ui"]

# The status each kind is audited with; the API answers with the same (``dgx_spark/api/errors.py``).
STATUS_OF_KIND: dict[ErrorKind, int] = {
    "invalid": 422,
    "not_found": 404,
    "conflict": 409,
    "busy": 409,
    "forbidden": 403,
    "unauthorized": 401,
    "throttled": 429,
    "unavailable": 503,
    "upstream": 502,
    "internal": 500,
}
# Kinds that are refusals (the action was not tried); the others are failures.
REFUSED_KINDS: frozenset[str] = frozenset({"unauthorized", "throttled", "busy"})
# The launch body's fields (the REST API's and the launch dialog's).
LAUNCH_FIELDS = frozenset({"template", "name", "params", "type", "command", "cwd", "env", "port", "gpus", "restart"})
MAX_ID = 64
# A forwarded stop may take a while on the node (it answers once the signal is sent).
REMOTE_TIMEOUT_SECONDS = 30.0
RemoteAction = Literal["stop", "restart", "start", "remove"]
# Each remote action's request on the node: (method, path after /api/dgx/operations/<id>).
REMOTE_ROUTES: dict[str, tuple[str, str]] = {
    "stop": ("POST", "/stop"),
    "restart": ("POST", "/restart"),
    "start": ("POST", "/start"),
    "remove": ("DELETE", ""),
}


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who asks for a control action: the client's address, the channel, and whether it logged in.

    ``authorized`` is True for the bearer token (or a launched job's own operation token on
    its progress route) and for a live login session; the entry point decides it.
    """

    client: str
    via: Via
    authorized: bool


@dataclasses.dataclass(frozen=True)
class RemoteDone:
    """What a node did: its id and name, the operation's id and name, and the node's ``data``."""

    node: str
    node_name: str
    id: str
    name: str | None
    data: Mapping[str, Any]


class AuditWriter(Protocol):
    """Writes one audit row (``AuditLog.record_soon`` of ``dgx_spark.security.audit``)."""

    def __call__(self, action: str, outcome: str, **fields: Any) -> None:
        """Queue the row; never raises."""


def kind_of_status(status: int) -> ErrorKind:
    """The kind of an HTTP-like status another component answered with (a node, the node store)."""
    for kind, code in STATUS_OF_KIND.items():
        if code == status and kind not in ("busy", "unauthorized", "throttled"):
            return kind
    return "invalid" if 400 <= status < 500 else "upstream"


def check_operation_id(op_id: Any) -> str:
    """An operation id as every route takes it: short ASCII letters, digits and dashes.

    Raises:
        ControlError: not_found (field ``id``) for anything else.
    """
    if (not isinstance(op_id, str) or not op_id or len(op_id) > MAX_ID or not op_id.isascii()
            or not op_id.replace("-", "").isalnum()):
        shown = op_id[:MAX_ID] if isinstance(op_id, str) else type(op_id).__name__
        raise ControlError("not_found", f"no operation with id {shown!r}", "id")
    return op_id


def node_target(node: str, op_id: str | None = None) -> str:
    """How the audit log and the one-at-a-time hold name a node (``node:<id>``) or its operation (``<node>/<id>``)."""
    return f"{node}/{op_id}" if op_id else f"node:{node}"


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, ControlError):
        return STATUS_OF_KIND[exc.kind]
    status = getattr(exc, "status", None)  # an API error raised by a forwarding call
    return status if isinstance(status, int) else 500


def _message_of(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return str(message if isinstance(message, str) else exc) or type(exc).__name__


class ControlService:
    """Every control action, for every entry point (see the module's docstring)."""

    def __init__(
        self,
        supervisor: Callable[[], Supervisor],
        hub: Callable[[], NodeHub] | None = None,
        *,
        rate: RateLimiter,
        in_flight: InFlight,
        audit: AuditWriter,
        name_of: Callable[[str], str | None] | None = None,
    ) -> None:
        """Create the service.

        Args:
            supervisor: Gives this machine's supervisor (launched operations, signals, containers).
            hub: Gives the node hub (remote nodes); None: node actions are unavailable.
            rate: The per-client throttle of control actions.
            in_flight: The operations (and nodes) with an action under way.
            audit: Writes an audit row.
            name_of: An operation's name for its id (for the audit row), when the action's result has none.
        """
        self._supervisor = supervisor
        self._hub = hub
        self._rate = rate
        self._in_flight = in_flight
        self._audit_row = audit
        self._name_of = name_of

    # ---- the one path ------------------------------------------------------------------------
    def _audit(self, actor: Actor, action: str, outcome: str, target: str | None, *, status: int,
               name: str | None = None, detail: str | None = None) -> None:
        self._audit_row(action, outcome, target=target, target_name=name, client=actor.client, status=status,
                        via=actor.via, detail=detail)

    def _refuse(self, actor: Actor, action: str, target: str | None, kind: ErrorKind, message: str,
                detail: str) -> ControlError:
        self._audit(actor, action, REFUSED, target, status=STATUS_OF_KIND[kind], detail=detail)
        return ControlError(kind, message)

    def _admit(self, actor: Actor, action: str, target: str | None, *, throttle: bool) -> None:
        """Authorise, then throttle.

        Raises:
            ControlError: unauthorized or throttled (audited as refused).
        """
        if not actor.authorized:
            if actor.via == "ui":
                raise self._refuse(actor, action, target, "unauthorized", "log in first", "not logged in")
            raise self._refuse(actor, action, target, "unauthorized",
                               "this action needs the token: send Authorization: Bearer <token>", "no valid token")
        if throttle and not self._rate.allow(actor.client):
            raise self._refuse(actor, action, target, "throttled", "too many control actions; slow down",
                               "throttled")

    @contextlib.contextmanager
    def _hold(self, actor: Actor, action: str, target: str | None, key: str | None) -> Iterator[None]:
        """Hold ``key`` for the action (nothing when None).

        Raises:
            ControlError: busy (audited as refused) when another action holds it.
        """
        with contextlib.ExitStack() as stack:
            if key is not None:
                try:
                    stack.enter_context(self._in_flight.hold(key))
                except Busy as exc:
                    raise self._refuse(actor, action, target, "busy", str(exc),
                                       "another action on this operation is in progress") from None
            yield

    def _failed(self, actor: Actor, action: str, target: str | None, exc: BaseException, name: str | None) -> None:
        if isinstance(exc, ControlError) and exc.kind in REFUSED_KINDS:
            outcome = REFUSED
        else:
            outcome = FAILED
        self._audit(actor, action, outcome, target, status=_status_of(exc), name=name, detail=_message_of(exc))

    def _finish(self, actor: Actor, action: str, target: str | None, status: int, *, quiet: bool,
                name: str | None, detail: str | None = None) -> None:
        if status >= 400:
            self._audit(actor, action, FAILED, target, status=status, name=name, detail=detail)
        elif not quiet:
            self._audit(actor, action, ALLOWED, target, status=status, name=name, detail=detail)

    def perform(
        self,
        actor: Actor,
        action: str,
        target: str | None,
        call: Callable[[], T],
        *,
        key: str | None = None,
        quiet: bool = False,
        created: bool = False,
        described: Callable[[T], tuple[str | None, str | None]] | None = None,
        name: str | None = None,
        detail_of: Callable[[T], str | None] | None = None,
    ) -> T:
        """Run one control action on the one path (the typed methods below use it).

        Args:
            actor: Who asks.
            action: The audit's action name (``stop``, ``webhook``...).
            target: What it acts on, for the audit row.
            call: Does it; a ControlError (or any error) it raises is audited as failed and raised on.
            key: Held for the call: another action with the same key is refused meanwhile.
            quiet: Not throttled, audited only when it fails (progress reports).
            created: Audited with 201 instead of 200.
            described: (target, name) for the audit row from the call's result (a launch's new id).
            name: The target's name for the audit row, known before the call.
            detail_of: A note for the audit row from the call's result (what a setting became).

        Raises:
            ControlError: Refused (unauthorized, throttled, busy) or failed.
        """
        self._admit(actor, action, target, throttle=not quiet)
        with self._hold(actor, action, target, None if quiet else key):
            try:
                result = call()
            except Exception as exc:
                self._failed(actor, action, target, exc, name)
                raise
        if described is not None:
            target, name = described(result)
        detail = detail_of(result) if detail_of is not None else None
        self._finish(actor, action, target, 201 if created else 200, quiet=quiet, name=name, detail=detail)
        return result

    async def perform_async(
        self,
        actor: Actor,
        action: str,
        target: str | None,
        call: Callable[[], Awaitable[T]],
        *,
        key: str | None = None,
        quiet: bool = False,
        answered: Callable[[T], int] | None = None,
    ) -> T:
        """:meth:`perform` for a coroutine (a request forwarded to a node); ``answered`` gives its status.

        Raises:
            ControlError: Refused (unauthorized, throttled, busy).
        """
        self._admit(actor, action, target, throttle=not quiet)
        with self._hold(actor, action, target, None if quiet else key):
            try:
                result = await call()
            except Exception as exc:
                self._failed(actor, action, target, exc, None)
                raise
        self._finish(actor, action, target, answered(result) if answered else 200, quiet=quiet, name=None)
        return result

    def _name(self, op_id: str) -> str | None:
        if self._name_of is None:
            return None
        try:
            found = self._name_of(op_id)
        except Exception:  # a name is a nicety; the action goes on
            logger.debug("no name for %s", op_id, exc_info=True)
            return None
        return found if found and found != op_id else None

    # ---- this machine's operations -------------------------------------------------------------
    def launch(self, actor: Actor, body: Any) -> Operation:
        """Launch from a template or a custom argv (the REST API's body); audited as the new operation.

        Raises:
            ControlError: Refused, or invalid naming the field.
        """
        template = body.get("template") if isinstance(body, Mapping) else None
        target = template[:64] if isinstance(template, str) else None

        def launch() -> Operation:
            if not isinstance(body, Mapping):
                raise ControlError("invalid", "body: must be a JSON object", "body")
            unknown = [str(key)[:40] for key in body if key not in LAUNCH_FIELDS]
            if unknown:
                raise ControlError("invalid", f"{unknown[0]}: unknown field", unknown[0])
            return self._supervisor().launch(dict(body))

        return self.perform(actor, "launch", target, launch, created=True,
                            described=lambda op: (op.id, op.name or None))

    def _act(self, actor: Actor, action: str, op_id: Any, call: Callable[[Supervisor, str], T], *,
             name_first: bool = False) -> T:
        """One action on one of this machine's operations, held by its id."""
        target = op_id[: MAX_ID * 2] if isinstance(op_id, str) else None
        name: str | None = None

        def act() -> T:
            nonlocal name
            checked = check_operation_id(op_id)
            if name_first:  # e.g. Remove: afterwards the name is gone
                name = self._name(checked)
            return call(self._supervisor(), checked)

        def described(result: T) -> tuple[str | None, str | None]:
            return target, getattr(result, "name", None) or name

        return self.perform(actor, action, target, act, key=target, described=described)

    def stop(self, actor: Actor, op_id: Any, *, force: bool = False, signal_name: str = "term") -> Operation:
        """Stop an operation (``signal_name``: int, term or kill; ``force``: kill).

        Raises:
            ControlError: Refused, or not_found, conflict, forbidden, invalid (signal), unavailable.
        """
        return self._act(actor, "stop", op_id,
                         lambda sup, op: sup.stop(op, force=force, signal_name=signal_name))

    def restart(self, actor: Actor, op_id: Any, *, signal_name: str = "term") -> Operation:
        """Stop a launched operation's run with ``signal_name``, then start a new run.

        Raises:
            ControlError: Refused, or not_found, conflict, forbidden, invalid, unavailable.
        """
        return self._act(actor, "restart", op_id, lambda sup, op: sup.restart(op, signal_name=signal_name))

    def start_again(self, actor: Actor, op_id: Any) -> Operation:
        """Start an ended launched operation again (same id, its saved spec).

        Raises:
            ControlError: Refused, or not_found, conflict, invalid, unavailable.
        """
        return self._act(actor, "start", op_id, lambda sup, op: sup.start_again(op))

    def remove(self, actor: Actor, op_id: Any) -> None:
        """Forget an ended launched operation, its run files and logs.

        Raises:
            ControlError: Refused, or not_found, conflict, unavailable.
        """
        self._act(actor, "remove", op_id, lambda sup, op: sup.forget(op), name_first=True)

    def report_progress(self, actor: Actor, op_id: str | None, call: Callable[[], T]) -> T:
        """Store a progress report (``call`` checks and stores it): quiet, audited only when it fails.

        Raises:
            ControlError: unauthorized; whatever ``call`` raises, raised on.
        """
        return self.perform(actor, "progress", op_id, call, quiet=True)

    # ---- settings that act on the outside world --------------------------------------------------
    def configure(self, actor: Actor, action: str, target: str, call: Callable[[], T],
                  detail_of: Callable[[T], str | None] | None = None) -> T:
        """A change of a setting that acts (the webhook's URL, what notifies): logged in, throttled, audited.

        Raises:
            ControlError: Refused; whatever ``call`` raises, raised on.
        """
        return self.perform(actor, action, target, call, detail_of=detail_of)

    # ---- remote nodes --------------------------------------------------------------------------
    def _nodes(self) -> NodeHub:
        if self._hub is None:
            raise ControlError("unavailable", "nodes are not available in this process")
        return self._hub()

    def add_node(self, actor: Actor, name: Any, url: Any, token: Any) -> tuple[Node, NodeState]:
        """Add a node (its token is kept 0600, never shown); answers after its first poll.

        Raises:
            ControlError: Refused, invalid naming the field, conflict, unavailable (the nodes file).
        """
        def add() -> tuple[Node, NodeState]:
            return self._node_call(lambda hub: hub.add(name, url, token))

        return self.perform(actor, "node_add", None, add, created=True,
                            described=lambda found: (node_target(found[0].id), found[0].name))

    def remove_node(self, actor: Actor, node_id: str) -> Node:
        """Forget a node and its token; its poller stops.

        Raises:
            ControlError: Refused, not_found, unavailable (the nodes file).
        """
        target = node_target(str(node_id)[:40])
        return self.perform(actor, "node_remove", target,
                            lambda: self._node_call(lambda hub: hub.remove(str(node_id))),
                            key=target, described=lambda node: (target, node.name))

    def _node_call(self, call: Callable[[NodeHub], T]) -> T:
        from dgx_spark.nodes.store import NodeError

        try:
            return call(self._nodes())
        except NodeError as exc:
            raise ControlError(kind_of_status(exc.status), exc.message, exc.field or None, exc.code) from exc
        except OSError as exc:
            raise ControlError("unavailable", f"the nodes file cannot be written ({type(exc).__name__})",
                               code="storage_unavailable") from exc

    async def forward(
        self, actor: Actor, action: str, node: str, op_id: str | None, call: Callable[[], Awaitable[T]],
        answered: Callable[[T], int],
    ) -> T:
        """Send a control request on to a node (``call`` does it); audited with the node's answer.

        Raises:
            ControlError: Refused; whatever ``call`` raises, raised on.
        """
        target = node_target(node, op_id)
        return await self.perform_async(actor, action, target, call, key=target if op_id else None,
                                        quiet=action == "progress", answered=answered)

    def _remote_node(self, node_id: Any) -> tuple[NodeHub, Node]:
        hub = self._nodes()
        node = hub.node(node_id) if isinstance(node_id, str) else None
        if node is None:
            raise ControlError("not_found", f"no node with id {str(node_id)[:40]!r}", "node")
        return hub, node

    def _remote_call(self, hub: NodeHub, node: Node, method: str, path: str, body: Any = None) -> NodeAnswer:
        """One request to a node; its refusal raised as a ControlError; its list polled at once after a change.

        Raises:
            ControlError: upstream ``node_unreachable`` (no answer) or ``node_unauthorized`` (it refused
                this machine's token); the node's own kind, message and field otherwise.
        """
        from dgx_spark.nodes.client import NodeUnreachable, call

        try:
            answer = call(node, method, path, body, timeout=REMOTE_TIMEOUT_SECONDS)
        except NodeUnreachable as exc:
            raise ControlError("upstream", f"node {node.name} is unreachable: {exc}", code="node_unreachable") from exc
        if answer.ok:
            hub.wake(node.id)
        elif answer.status in (401, 403):
            raise ControlError("upstream", f"node {node.name} refused this machine's token for it (HTTP "
                                           f"{answer.status}): {answer.message}", code="node_unauthorized")
        else:
            raise ControlError(kind_of_status(answer.status), answer.message or f"HTTP {answer.status}",
                               answer.field, answer.code)
        return answer

    def act_remote(self, actor: Actor, action: RemoteAction, node_id: Any, op_id: Any, *,
                   signal_name: str = "term") -> RemoteDone:
        """Stop, restart, start again or remove an operation on a remote node, with that node's token.

        ``signal_name`` (int, term or kill) is the stop's or restart's signal. Audited here with the
        target ``<node>/<op id>`` and the node's answer; held like a local action on that target.

        Raises:
            ControlError: Refused; not_found (no such node, or the node has no such operation);
                upstream (``node_unreachable``, ``node_unauthorized``); the node's refusal otherwise.
        """
        if action not in REMOTE_ROUTES:
            raise ControlError("invalid", f"action: {str(action)[:20]!r} is not a remote action", "action")
        target = node_target(str(node_id)[:40], str(op_id)[:MAX_ID])
        method, tail = REMOTE_ROUTES[action]
        body = {"signal": signal_name} if action in ("stop", "restart") else None
        name: str | None = None

        def act() -> RemoteDone:
            nonlocal name
            hub, node = self._remote_node(node_id)
            remote_id = check_operation_id(op_id)
            name = remote_name(hub, node.id, remote_id)  # before: Remove forgets it
            from dgx_spark.nodes.client import operation_path

            answer = self._remote_call(hub, node, method, operation_path(remote_id, tail), body)
            data = answer.data if isinstance(answer.data, dict) else {}
            found = data.get("name")
            return RemoteDone(node.id, node.name, remote_id, found if isinstance(found, str) and found else name,
                              data)

        return self.perform(actor, action, target, act, key=target,
                            described=lambda done: (target, done.name))

    def stop_remote(self, actor: Actor, node_id: Any, op_id: Any, *, signal_name: str = "term") -> RemoteDone:
        """Stop an operation on a remote node (``signal_name``: int, term or kill); see :meth:`act_remote`.

        Raises:
            ControlError: As :meth:`act_remote`.
        """
        return self.act_remote(actor, "stop", node_id, op_id, signal_name=signal_name)

    def launch_remote(self, actor: Actor, node_id: Any, body: Any) -> RemoteDone:
        """Launch on a remote node (the REST API's launch body, checked by the node), with its token.

        Raises:
            ControlError: Refused; not_found (no such node); invalid naming the field (the node's check);
                upstream (``node_unreachable``, ``node_unauthorized``).
        """
        template = body.get("template") if isinstance(body, Mapping) else None
        target = node_target(str(node_id)[:40])

        def launch() -> RemoteDone:
            if not isinstance(body, Mapping):
                raise ControlError("invalid", "body: must be a JSON object", "body")
            unknown = [str(key)[:40] for key in body if key not in LAUNCH_FIELDS]
            if unknown:
                raise ControlError("invalid", f"{unknown[0]}: unknown field", unknown[0])
            hub, node = self._remote_node(node_id)
            from dgx_spark.nodes.client import OPERATIONS_PATH

            answer = self._remote_call(hub, node, "POST", OPERATIONS_PATH, dict(body))
            data = answer.data if isinstance(answer.data, dict) else {}
            op_id, name = data.get("id"), data.get("name")
            return RemoteDone(node.id, node.name, str(op_id or ""), str(name or op_id or template or ""), data)

        return self.perform(actor, "launch", target, launch, created=True,
                            described=lambda done: (node_target(done.node, done.id or None), done.name or None))


def remote_name(hub: NodeHub, node_id: str, op_id: str) -> str | None:
    """An operation's name in a node's last list (None when it is not there)."""
    poller = hub.poller(node_id)
    for item in poller.state.operations if poller is not None else ():
        if item.get("id") == op_id:
            name = item.get("name")
            return name if isinstance(name, str) and name else None
    return None
