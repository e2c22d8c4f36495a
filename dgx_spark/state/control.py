"""Control from the UI: the launch dialog, Stop / Restart / Start again / Remove, and the logs view.

Every handler validates its arguments first (any client can call any public
handler by name). Handlers that change something (launch, stop, restart, start,
remove) call the control service with the client (``ui_actor``): it checks the
login, throttles, holds the operation and writes the audit row; the handler turns
a refusal into words (``state/actor.py``). None of them is named ``set_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections.abc import Callable
from typing import Any

import reflex as rx

from dgx_spark.collector import output
from dgx_spark.collector.containers import ContainerOutput
from dgx_spark.collector.output import ProcessOutput
from dgx_spark.control.service import Actor, RemoteAction, remote_name
from dgx_spark.nodes import client as node_client
from dgx_spark.nodes.protocol import LOCAL_NODE, NODE_ID_PATTERN
from dgx_spark.nodes.store import Node
from dgx_spark.security.validation import (
    InvalidArgument,
    surrogate_path,
    validate_operation_id,
    validate_text,
)
from dgx_spark.services import get_control, get_hub, get_services, get_supervisor
from dgx_spark.state import log_search
from dgx_spark.state.actor import failure_text, is_refusal, logged_in, ui_actor
from dgx_spark.state.operations import OperationsState
from dgx_spark.supervisor import templates as tpl
from dgx_spark.supervisor.supervisor import ControlError

LOG_LINES = 1000
FOLLOW_SECONDS = 1.0
MAX_INPUT = 4096
# A remote node's log stream that broke is opened again after this (doubling up to the max).
REMOTE_RETRY_SECONDS = 2.0
REMOTE_RETRY_MAX_SECONDS = 30.0
_NODE_ID = re.compile(NODE_ID_PATTERN)


def remote_node(node: Any) -> Node | None:
    """The remote node a handler's ``node`` argument names; None for this machine ("" or ``local``).

    Raises:
        InvalidArgument: Not a node id, or no node has it (removed meanwhile).
    """
    if node in ("", None, LOCAL_NODE):
        return None
    if not isinstance(node, str) or not _NODE_ID.match(node):
        raise InvalidArgument("node", "not a node id")
    found = get_hub().node(node)
    if found is None:
        raise InvalidArgument("node", f"no node {node!r} (removed meanwhile?)")
    return found


def busy_key(node: str, op_id: str) -> str:
    """How ``busy_ids`` names an operation: its id here, ``<node>/<id>`` on a remote node."""
    return f"{node}/{op_id}" if node not in ("", LOCAL_NODE) else op_id

# The custom command as dialog fields (its API body has no "params").
CUSTOM_PARAMS: list[dict[str, str]] = [
    {"name": "command", "label": "Command", "kind": "args", "help": "argv, split like a shell would (no shell runs it)",
     "default": ""},
    {"name": "type", "label": "Type", "kind": "choice", "help": "server, job or program", "default": "program"},
    {"name": "port", "label": "Port", "kind": "port", "help": "optional; a server's port", "default": ""},
    {"name": "cwd", "label": "Working directory", "kind": "dir", "help": "optional", "default": ""},
    {"name": "gpus", "label": "GPUs", "kind": "gpus", "help": "e.g. 0,1 -> CUDA_VISIBLE_DEVICES", "default": ""},
    {"name": "env", "label": "Environment", "kind": "env", "help": "NAME=value pairs (allow-listed names)",
     "default": ""},
]


def _param_rows(template: tpl.Template) -> list[dict[str, str]]:
    return [
        {
            "name": p.name,
            "label": p.label or p.name.replace("_", " "),
            "kind": p.kind,
            "help": p.help + ("" if p.required else (" (optional)" if p.help else "optional")),
            "default": "" if p.default is None else str(p.default),
        }
        for p in template.params
    ]


def _env_from_text(text: str, field: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in shlex.split(text):
        if "=" not in item:
            raise tpl.SpecError(field, f"{item[:40]!r} is not NAME=value")
        key, value = item.split("=", 1)
        env[key] = value
    return env


# The restart policy fields of the dialog, and their defaults (see dgx_spark/supervisor/restart.py).
RESTART_DEFAULTS: dict[str, str] = {"policy": "no", "max_restarts": "5", "backoff_seconds": "1"}
# The stop signals offered in the confirmation: interrupt lets a training script checkpoint.
STOP_CHOICES = ("int", "term")


def _number_text(text: str, field: str) -> int | float:
    try:
        number = float(text.strip())
    except ValueError:
        raise tpl.SpecError(field, "must be a number") from None
    return int(number) if number.is_integer() else number


def restart_body(fields: dict[str, str]) -> dict[str, Any] | None:
    """The launch body's ``restart`` object from the dialog's fields (None: policy "no").

    Raises:
        tpl.SpecError: A number that cannot be read.
    """
    policy = fields.get("policy", "no")
    if policy == "no":
        return None
    return {
        "policy": policy,
        "max_restarts": _number_text(fields.get("max_restarts") or RESTART_DEFAULTS["max_restarts"],
                                     "restart.max_restarts"),
        "backoff_seconds": _number_text(fields.get("backoff_seconds") or RESTART_DEFAULTS["backoff_seconds"],
                                        "restart.backoff_seconds"),
    }


def request_body(
    template: str, name: str, values: dict[str, str], restart: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The launch request the dialog's fields describe (the same body the REST API takes).

    Raises:
        tpl.SpecError: A field that cannot even be parsed.
    """
    body = _request_body(template, name, values)
    policy = restart_body(restart or {})
    if policy is not None:
        body["restart"] = policy
    return body


def _request_body(template: str, name: str, values: dict[str, str]) -> dict[str, Any]:
    filled = {k: v for k, v in values.items() if isinstance(v, str) and v.strip() != ""}
    if template == tpl.CUSTOM:
        try:
            command = shlex.split(filled.get("command", ""))
        except ValueError as exc:
            raise tpl.SpecError("command", f"cannot be split: {exc}") from exc
        body: dict[str, Any] = {"template": tpl.CUSTOM, "name": name or None, "command": command,
                                "type": filled.get("type", "program")}
        for key in ("port", "cwd", "gpus"):
            if key in filled:
                body[key] = filled[key]
        if "env" in filled:
            body["env"] = _env_from_text(filled["env"], "env")
        return body
    params: dict[str, Any] = dict(filled)
    if "env" in params:
        params["env"] = _env_from_text(params["env"], "params.env")
    return {"template": template, "name": name or None, "params": params}


def field_key(field: str | None) -> str:
    """The dialog input a server-side field name belongs to (``params.args[0]`` -> ``args``)."""
    if not field:
        return "_form"
    if field.startswith("restart"):
        return "restart"
    key = field.removeprefix("params.")
    return key.split(".")[0].split("[")[0]


class ControlState(rx.State):
    """The launch dialog, the per-card actions and the logs view."""

    # Launch dialog.
    dialog_open: bool = False
    templates: list[dict[str, str]] = []  # noqa: RUF012 - a Reflex state var
    template: str = ""
    op_name: str = ""
    params: list[dict[str, str]] = []  # noqa: RUF012
    values: dict[str, str] = {}  # noqa: RUF012
    errors: dict[str, str] = {}  # noqa: RUF012
    preview: str = ""
    launching: bool = False
    restart_fields: dict[str, str] = dict(RESTART_DEFAULTS)  # noqa: RUF012 - policy, max_restarts, backoff_seconds
    # Where to launch: "local" or a remote node's id; the remote nodes offered ({"id", "name", "status"}).
    launch_node: str = LOCAL_NODE
    launch_nodes: list[dict[str, str]] = []  # noqa: RUF012
    # Card actions.
    busy_ids: list[str] = []  # noqa: RUF012
    confirm_open: bool = False
    confirm_id: str = ""
    confirm_name: str = ""
    confirm_source: str = ""
    confirm_action: str = "stop"  # or "restart"
    confirm_node: str = ""  # the operation's remote node ("": this machine)
    confirm_node_name: str = ""
    stop_signal: str = "term"  # the confirmation's choice: int or term ("Kill now" is its own button)
    # Logs view.
    logs_open: bool = False
    logs_id: str = ""
    logs_name: str = ""
    logs_node: str = ""  # the operation's remote node ("": this machine); its log is read by this backend
    logs_node_name: str = ""
    log_lines: list[str] = []  # noqa: RUF012
    logs_available: bool = True
    logs_truncated: bool = False
    logs_reason: str = ""  # why there is no log (where the output goes instead)
    log_filter: str = ""  # search within the log
    following: bool = True
    _log_offset: int = 0
    _log_path: str = ""

    # ---- launch dialog -------------------------------------------------------------------
    @rx.event
    async def open_launch_dialog(self) -> None:
        """Open the "New Operation" dialog with the first template chosen.

        When there are remote nodes it offers them too, starting with the node the tab shows.
        """
        templates = get_supervisor().templates()
        self.templates = [{"name": t.name, "title": t.title, "type": t.type} for t in templates.values()] + [
            {"name": tpl.CUSTOM, "title": "Custom command", "type": "program"}
        ]
        self.launch_nodes = [{"id": node.id, "name": node.name, "status": state.status}
                             for node, state in get_hub().states()]
        shown = (await self.get_state(OperationsState)).node
        self.launch_node = shown if any(row["id"] == shown for row in self.launch_nodes) else LOCAL_NODE
        self.dialog_open = True
        self._choose(self.template or "training")

    @rx.event
    def choose_launch_node(self, value: str) -> None:
        """Where to launch: this machine (``local``) or one of the remote nodes offered."""
        if value == LOCAL_NODE or (isinstance(value, str) and any(row["id"] == value for row in self.launch_nodes)):
            self.launch_node = value
            self._validate(check_port=False)

    @rx.event
    def close_launch_dialog(self, open_: bool = False) -> None:
        """Close (or keep open) the dialog; ``open_`` comes from the dialog's own toggle."""
        self.dialog_open = bool(open_) if isinstance(open_, bool) else False

    @rx.event
    def choose_template(self, name: str) -> None:
        """Pick a template; its fields start at their defaults."""
        if isinstance(name, str) and len(name) <= 64:
            self._choose(name)

    def _choose(self, name: str) -> None:
        templates = get_supervisor().templates()
        if name == tpl.CUSTOM:
            self.params = [dict(p) for p in CUSTOM_PARAMS]
        elif name in templates:
            self.params = _param_rows(templates[name])
        else:
            return
        self.template = name
        self.values = {p["name"]: p["default"] for p in self.params}
        if name == "training":
            self.values["python"] = self.values.get("python") or "python3"
        self.errors = {}
        self._validate(check_port=False)

    @rx.event
    def edit_restart(self, key: str, value: str) -> None:
        """One restart policy field: ``policy`` (no, on-failure, always), ``max_restarts``, ``backoff_seconds``."""
        if not isinstance(key, str) or key not in RESTART_DEFAULTS or not isinstance(value, str) or len(value) > 32:
            return
        self.restart_fields = {**self.restart_fields, key: value}
        self._validate(check_port=False)

    @rx.event
    def edit_name(self, value: str) -> None:
        """The operation's display name."""
        if not isinstance(value, str) or len(value) > MAX_INPUT:
            self.errors = {**self.errors, "name": "must be a string of at most 4096 characters"}
            return
        self.op_name = value
        self._validate(check_port=False)

    @rx.event
    def edit_param(self, name: str, value: str) -> None:
        """One typed field of the chosen template; validated at once, shown inline."""
        if not isinstance(name, str) or name not in {p["name"] for p in self.params}:
            return
        if not isinstance(value, str) or len(value) > MAX_INPUT:
            self.errors = {**self.errors, name: "must be a string of at most 4096 characters"}
            return
        self.values = {**self.values, name: value}
        self._validate(check_port=True)

    def _validate(self, *, check_port: bool) -> bool:
        """Check the form like the API will; fill ``errors`` and the argv ``preview``.

        For a remote node the node checks it when launching (its files, ports and templates are
        its own): here the argv is previewed when this machine can build it, and nothing is refused.
        """
        body = request_body(self.template, self.op_name, self.values, self.restart_fields)
        bad = surrogate_path(body)
        if bad is not None:  # the API's guard refuses the same before any route runs
            self.errors, self.preview = {field_key(bad): "must be valid UTF-8 text"}, ""
            return False
        remote = self.launch_node != LOCAL_NODE
        try:
            spec = get_supervisor().build_spec(body, check_port=check_port and not remote)
        except (tpl.SpecError, ControlError) as exc:
            if remote:
                self.errors, self.preview = {}, ""
                return True
            if isinstance(exc, tpl.SpecError):
                self.errors, self.preview = {field_key(exc.field): exc.message}, ""
                return False
            message = exc.message.split(": ", 1)[-1] if exc.field else exc.message
            self.errors, self.preview = {field_key(exc.field): message}, ""
            return False
        self.errors = {}
        self.preview = spec.display
        return True

    @rx.event(background=True)
    async def launch_operation(self) -> Any:
        """Launch what the dialog describes (through the control service); the card appears at once."""
        async with self:
            if self.launching:
                return None
            if not self._validate(check_port=True):
                return rx.toast.error("Fix the highlighted field first.")
            body = request_body(self.template, self.op_name, self.values, self.restart_fields)
            actor = ui_actor(self)
            node = self.launch_node
            self.launching = True
        try:
            if node != LOCAL_NODE:
                return await self._launch_remote(actor, node, body)
            op = await asyncio.to_thread(get_control().launch, actor, body)
        except ControlError as exc:
            async with self:
                self.launching = False
                if not is_refusal(exc):
                    self.errors = {field_key(exc.field): exc.message}
            return rx.toast.error(failure_text(exc, "Launch"))
        async with self:
            self.launching = False
            self.dialog_open = False
        return [OperationsState.refresh, rx.toast.success(f"Launched {op.name} ({op.status})")]

    async def _launch_remote(self, actor: Actor, node: str, body: dict[str, Any]) -> Any:
        """Launch on a remote node (it checks the body); the tab then shows that node if it showed this machine.

        Raises:
            ControlError: Refused, or the node's refusal (its field and message).
        """
        control = get_control()
        done = await asyncio.to_thread(control.launch_remote, actor, node, body)
        async with self:
            self.launching = False
            self.dialog_open = False
            shown = (await self.get_state(OperationsState)).node
        toast = rx.toast.success(f"Launched {done.name} on {done.node_name} ({done.data.get('status', 'sent')})")
        if shown == LOCAL_NODE:
            return [OperationsState.choose_node(done.node), toast]  # type: ignore[operator] # rx.event: a namespace to mypy
        return [OperationsState.refresh, toast]

    # ---- card actions ----------------------------------------------------------------------
    @rx.event
    def ask_stop(self, op_id: str, name: str, source: str, node: str = "") -> Any:
        """Open the confirmation for stopping an operation (``node``: its remote node, "" for this machine)."""
        try:
            self.confirm_id = validate_operation_id(op_id)
            self.confirm_name = validate_text(name, "name", max_length=256, allow_empty=True)
            self.confirm_source = validate_text(source, "source", max_length=16, allow_empty=True)
            found = remote_node(node)
        except InvalidArgument as exc:
            return rx.toast.error(str(exc))
        self.confirm_node, self.confirm_node_name = (found.id, found.name) if found is not None else ("", "")
        self.confirm_action, self.stop_signal = "stop", "term"
        self.confirm_open = True
        return None

    @rx.event
    def ask_restart(self, op_id: str, name: str, node: str = "") -> Any:
        """Open the confirmation for restarting a launched operation (stop, then a new run)."""
        try:
            self.confirm_id = validate_operation_id(op_id)
            self.confirm_name = validate_text(name, "name", max_length=256, allow_empty=True)
            found = remote_node(node)
        except InvalidArgument as exc:
            return rx.toast.error(str(exc))
        self.confirm_node, self.confirm_node_name = (found.id, found.name) if found is not None else ("", "")
        self.confirm_source, self.confirm_action, self.stop_signal = "launched", "restart", "term"
        self.confirm_open = True
        return None

    @rx.event
    def choose_stop_signal(self, value: str) -> None:
        """The signal the confirmed stop or restart sends: ``int`` (SIGINT) or ``term`` (SIGTERM)."""
        if value in STOP_CHOICES:
            self.stop_signal = value

    @rx.event
    def cancel_stop(self, open_: bool = False) -> None:
        """Close the stop confirmation."""
        self.confirm_open = bool(open_) if isinstance(open_, bool) else False

    @rx.event(background=True)
    async def confirm_stop(self, force: bool = False) -> Any:
        """Stop (or restart) the confirmed operation with the chosen signal; SIGKILL at once if ``force``."""
        async with self:
            op_id = self.confirm_id
            action = self.confirm_action
            node = self.confirm_node
            name = "kill" if force is True else (self.stop_signal if self.stop_signal in STOP_CHOICES else "term")
            self.confirm_open = False
        control = get_control()
        if action == "restart":
            return await self._act(op_id, lambda actor, op: control.restart(actor, op, signal_name=name), "Restart",
                                   "Restarting", node, "restart", name)
        return await self._act(op_id, lambda actor, op: control.stop(actor, op, signal_name=name), "Stop", "Stopping",
                               node, "stop", name)

    @rx.event(background=True)
    async def start_again(self, op_id: str, node: str = "") -> Any:
        """Start an ended launched operation again (on its remote node when ``node`` names one)."""
        return await self._act(op_id, get_control().start_again, "Start", "Started again", node, "start")

    @rx.event(background=True)
    async def remove_operation(self, op_id: str, node: str = "") -> Any:
        """Forget an ended launched operation and its logs (on its remote node when ``node`` names one)."""
        return await self._act(op_id, get_control().remove, "Remove", "Removed", node, "remove")

    async def _act(self, op_id: Any, call: Callable[[Actor, str], Any], verb: str, done: str, node: Any = "",
                   remote: RemoteAction = "stop", signal_name: str = "term") -> Any:
        """Run one card action through the control service; a toast names the operation.

        ``call`` acts on this machine; on a remote node (``node``) the service sends the ``remote``
        action to it instead, with its token.
        """
        try:
            op_id = validate_operation_id(op_id)
            target = remote_node(node)
        except InvalidArgument as exc:
            return rx.toast.error(str(exc))
        key = busy_key(target.id if target is not None else "", op_id)
        async with self:
            if key in self.busy_ids:
                return None
            self.busy_ids = [*self.busy_ids, key]
            actor = ui_actor(self)
        try:
            if target is None:
                # Toasts name the operation; looked up before the action (Remove forgets it).
                name = await asyncio.to_thread(get_services().names.name, op_id) if actor.authorized else op_id
                await asyncio.to_thread(call, actor, op_id)
            else:
                name = f"{remote_name(get_hub(), target.id, op_id) or op_id} on {target.name}"
                await asyncio.to_thread(get_control().act_remote, actor, remote, target.id, op_id,
                                        signal_name=signal_name)
        except ControlError as exc:
            outcome: Any = rx.toast.error(failure_text(exc, f"{verb} {name}"))
        else:
            outcome = rx.toast.success(f"{done}: {name}")
        finally:
            async with self:
                self.busy_ids = [i for i in self.busy_ids if i != key]
        return [OperationsState.refresh, outcome]

    # ---- logs ------------------------------------------------------------------------------
    @rx.event
    def open_logs(self, op_id: str, name: str, node: str = "") -> Any:
        """Show the last lines of an operation's log and follow it (``node``: its remote node, "" here)."""
        try:
            op_id = validate_operation_id(op_id)
            name = validate_text(name, "name", max_length=256, allow_empty=True)
            target = remote_node(node)
        except InvalidArgument as exc:
            return rx.toast.error(str(exc))
        if target is not None:
            return self._open_remote_logs(target, op_id, name)
        self.logs_node, self.logs_node_name = "", ""
        try:
            path = get_supervisor().find_log(op_id)
        except ControlError as exc:
            return rx.toast.error(exc.message)
        if output.needs_token(path) and not logged_in(self):
            return rx.toast.error("This process runs as another user: log in to see its output.")
        self.logs_id, self.logs_name, self.logs_open, self.following = op_id, name, True, True
        self.log_filter, self.logs_reason = "", ""
        self._log_path = (path.key if isinstance(path, ProcessOutput | ContainerOutput) else str(path)) if path else ""
        if path is None:
            self.log_lines, self.logs_available, self.logs_truncated, self._log_offset = [], False, False, 0
            self.logs_reason = log_search.unavailable_reason(None)
            return None
        read = output.read_tail(path, LOG_LINES)
        if read is None:  # not a file (a terminal, a pipe...), or the process ended meanwhile
            self.log_lines, self.logs_available, self.logs_truncated, self._log_offset = [], False, False, 0
            self.logs_reason = log_search.unavailable_reason(path)
            return None
        lines, offset, truncated = read
        self.log_lines, self.logs_available, self.logs_truncated, self._log_offset = lines, True, truncated, offset
        return ControlState.follow_logs

    def _open_remote_logs(self, node: Node, op_id: str, name: str) -> Any:
        """Open the logs view of a remote node's operation; this backend reads it with the node's token."""
        if not logged_in(self):
            return rx.toast.error("Log in to see the logs of another node's operations (read with its token).")
        self.logs_id, self.logs_name, self.logs_open, self.following = op_id, name, True, True
        self.logs_node, self.logs_node_name = node.id, node.name
        self.log_filter, self.logs_reason, self._log_path, self._log_offset = "", "", "", 0
        self.log_lines, self.logs_available, self.logs_truncated = [], True, False
        return ControlState.follow_remote_logs

    def _showing_remote(self, node_id: str, op_id: str) -> bool:
        return self.logs_open and self.logs_id == op_id and self.logs_node == node_id

    @rx.event(background=True)
    async def follow_remote_logs(self) -> None:
        """A remote operation's log: its last lines, then the node's log stream while the view is open.

        This backend asks the node (its ``/logs`` and ``/logs/stream``) with the node's token; the
        browser only sees the lines.
        """
        async with self:
            op_id, node_id = self.logs_id, self.logs_node
        node = get_hub().node(node_id) if node_id else None
        if node is None:
            return
        try:
            answer = await asyncio.to_thread(node_client.call, node, "GET", node_client.operation_path(op_id, "/logs"),
                                             params={"tail": LOG_LINES}, timeout=10.0)
        except node_client.NodeUnreachable as exc:
            answer = node_client.NodeAnswer(502, message=f"node {node.name} is unreachable ({exc})")
        data = answer.data if answer.ok and isinstance(answer.data, dict) else {}
        found_lines, found_offset = data.get("lines"), data.get("offset")
        lines = found_lines if isinstance(found_lines, list) else []
        offset = found_offset if isinstance(found_offset, int) else 0
        available = data.get("available") is True
        async with self:
            if not self._showing_remote(node_id, op_id):
                return
            self.log_lines = [str(line) for line in lines][-LOG_LINES:]
            self.logs_truncated = data.get("truncated") is True
            self.logs_available = available
            if not available:
                self.logs_reason = (f"{node.name}: {answer.message}" if not answer.ok else
                                    f"{node.name} keeps no readable log for this operation (its output goes "
                                    "elsewhere).")
        if available:
            await self._follow_remote(node, op_id, offset)

    async def _follow_remote(self, node: Node, op_id: str, offset: int) -> None:
        """Append what the node's log stream sends while the view shows this log (paused: kept for later)."""
        queue: asyncio.Queue[list[str]] = asyncio.Queue()
        reader = asyncio.create_task(_read_remote_log(node, op_id, offset, queue))
        pending: list[str] = []
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    pending += await asyncio.wait_for(queue.get(), FOLLOW_SECONDS)
                async with self:
                    if not self._showing_remote(node.id, op_id):
                        return
                    if self.following and pending:
                        merged = self.log_lines + pending
                        self.logs_truncated = self.logs_truncated or len(merged) > LOG_LINES
                        self.log_lines = merged[-LOG_LINES:]
                        pending = []
                pending = pending[-LOG_LINES:]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    @rx.event
    def close_logs(self, open_: bool = False) -> None:
        """Close the logs view (its follow loop ends)."""
        self.logs_open = bool(open_) if isinstance(open_, bool) else False

    @rx.event
    def filter_logs(self, text: str) -> None:
        """Search within the log: show only the lines containing ``text`` (case-insensitive)."""
        self.log_filter = text[: log_search.MAX_QUERY] if isinstance(text, str) else ""

    @rx.var
    def log_matches(self) -> list[list[str]]:
        """The lines matching the search, split into plain/match segments (empty without a search)."""
        return log_search.highlight(self.log_lines, self.log_filter)

    @rx.var
    def log_written(self) -> bool:
        """Whether the log holds the operation's own output (not only the runner's notes)."""
        return log_search.has_output(self.log_lines)

    @rx.event
    def toggle_follow(self) -> None:
        """Pause or resume following new lines."""
        self.following = not self.following

    @rx.event(background=True)
    async def follow_logs(self) -> None:
        """Append new lines while the logs view is open and following (keeps the last 1000)."""
        async with self:
            op_id = self.logs_id
        while True:
            await asyncio.sleep(FOLLOW_SECONDS)
            async with self:
                if not self.logs_open or self.logs_id != op_id or not self._log_path:
                    return
                if not self.following:
                    continue
                path, before = output.log_source(self._log_path, get_services().containers), self._log_offset
            lines, offset = await asyncio.to_thread(output.read_from, path, before)
            if not lines and offset == before:
                continue
            async with self:
                if self.logs_id != op_id:
                    return
                self._log_offset = offset
                if lines:
                    merged = self.log_lines + lines
                    self.logs_truncated = self.logs_truncated or len(merged) > LOG_LINES
                    self.log_lines = merged[-LOG_LINES:]


async def _read_remote_log(node: Node, op_id: str, offset: int, queue: asyncio.Queue[list[str]]) -> None:
    """Follow a node's log stream into ``queue`` until cancelled.

    A stream the node ended (its log was quiet) is opened again from the last offset; one that
    broke, or that the node refused for now (429, 5xx), after a wait doubling up to 30 s. Any
    other refusal (the operation is gone) ends the reading.
    """
    wait = REMOTE_RETRY_SECONDS
    while True:
        try:
            async for item in node_client.follow_log(node, op_id, offset):
                if isinstance(item, node_client.NodeAnswer):
                    if item.status != 429 and item.status < 500:
                        return
                    raise node_client.NodeUnreachable(item.message)
                lines, offset = item
                wait = REMOTE_RETRY_SECONDS
                if lines:
                    await queue.put(lines)
            await asyncio.sleep(FOLLOW_SECONDS)
        except node_client.NodeUnreachable:
            await asyncio.sleep(wait)
            wait = min(wait * 2, REMOTE_RETRY_MAX_SECONDS)
