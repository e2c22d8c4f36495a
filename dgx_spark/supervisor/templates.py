"""Launch templates as data, and turning a template + params into a checked launch spec.

A template is an argv pattern plus typed parameters. Pattern items are strings
with ``{param}`` placeholders; an item that is exactly ``{param}`` for a list
parameter expands into several arguments; a nested list is a group that is left
out when any parameter it names is empty. Users add templates in
``DGX_SPARK_DATA_DIR/templates.toml`` (see ``USER_FILE_DOC``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import socket
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dgx_spark.security.validation import (
    InvalidArgument,
    validate_env,
    validate_int,
    validate_str_list,
    validate_text,
)

PARAM_KINDS = ("port", "int", "string", "model", "file", "dir", "args", "gpus", "choice")
OPERATION_TYPES = ("server", "job", "program")
MAX_STRING = 4096
MAX_ARGS = 256
MAX_ENV = 64
NAME_MAX = 128
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")

# Environment variables a launch may set. Prefixes cover families of tuning knobs.
ENV_ALLOW_NAMES = frozenset(
    {
        "HF_HOME", "HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_CACHE",
        "TRANSFORMERS_OFFLINE", "TORCH_HOME", "PYTORCH_CUDA_ALLOC_CONF", "OMP_NUM_THREADS",
        "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM", "WANDB_MODE", "WANDB_PROJECT", "WANDB_API_KEY",
        "OLLAMA_MODELS", "OLLAMA_KEEP_ALIVE", "OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS",
        "VLLM_USE_V1", "NCCL_DEBUG", "CUDA_LAUNCH_BLOCKING", "CUDA_DEVICE_ORDER", "TZ", "LANG",
    }
)
ENV_ALLOW_PREFIXES = ("DGX_SPARK_USER_", "NCCL_", "VLLM_", "OLLAMA_", "HF_", "TORCH_", "TRITON_")
# Set by the supervisor itself; a launch may not override them.
ENV_RESERVED = frozenset(
    {"DGX_SPARK_OPERATION_ID", "DGX_SPARK_URL", "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES", "DGX_SPARK_TOKEN"}
)

USER_FILE_DOC = """\
# DGX_SPARK_DATA_DIR/templates.toml: one [templates.<name>] table per template.
[templates.my-server]
title = "My server"                 # shown in the dialog
type = "server"                     # server | job | program
description = "What it runs"
argv = ["my-server", "--port", "{port}", ["--model", "{model}"], "{extra_args}"]
cwd = "{working_dir}"               # optional
env = { MY_SERVER_HOME = "/srv" }   # optional, fixed values (placeholders allowed)

[templates.my-server.params.port]
kind = "port"                       # port|int|string|model|file|dir|args|gpus|choice
default = 9000
[templates.my-server.params.model]
kind = "string"
required = false
"""


class TemplateFileError(Exception):
    """A template in the user's file that cannot be used."""


SpecError = InvalidArgument
"""A launch request that cannot be accepted; ``field`` names the culprit (the one validation error)."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One typed template parameter."""

    name: str
    kind: str
    label: str = ""
    required: bool = True
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()

    def to_api(self) -> dict[str, Any]:
        """JSON description for the API and the dialog."""
        return {
            "name": self.name,
            "kind": self.kind,
            "label": self.label or self.name.replace("_", " "),
            "required": self.required,
            "default": self.default,
            "help": self.help,
            "choices": list(self.choices),
        }


@dataclasses.dataclass(frozen=True)
class Template:
    """A launch template: argv pattern, typed params and the operation type it produces."""

    name: str
    title: str
    type: str
    argv: tuple[Any, ...]
    params: tuple[Param, ...]
    description: str = ""
    cwd: str | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    source: str = "builtin"
    engine: str | None = None
    """``docker`` or ``podman`` for a container template (``{gpu_flags}``, ``{volume_flags}``,
    ``{env_flags}`` are filled from ``gpu``/``gpus``, ``volumes`` and ``env``; see ``container_flags``)."""

    def param(self, name: str) -> Param | None:
        """The parameter called ``name``."""
        return next((p for p in self.params if p.name == name), None)

    def to_api(self) -> dict[str, Any]:
        """JSON description for the API and the dialog."""
        return {
            "name": self.name,
            "title": self.title,
            "type": self.type,
            "description": self.description,
            "argv": [list(a) if isinstance(a, (list, tuple)) else a for a in self.argv],
            "params": [p.to_api() for p in self.params],
            "source": self.source,
            "engine": self.engine,
        }


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start (and start again) one operation."""

    template: str
    name: str
    type: str
    argv: tuple[str, ...]
    cwd: str | None
    env: Mapping[str, str]
    port: int | None
    params: Mapping[str, Any]

    @property
    def display(self) -> str:
        """The argv as a shell-quoted line (for display only; never executed by a shell)."""
        return shlex.join(self.argv)


# Parameters every template gets.
COMMON = (
    Param("gpus", "gpus", "GPUs", required=False, help="GPU indices -> CUDA_VISIBLE_DEVICES; empty: all"),
    Param("env", "env", "Environment", required=False, help="Extra variables (allow-listed names)"),
)
_PY = Param("python", "string", "Python", required=False, default="python3", help="Interpreter")


def _t(name: str, title: str, type_: str, argv: list[Any], params: list[Param], **kw: Any) -> Template:
    return Template(name, title, type_, tuple(argv), tuple(params) + COMMON, **kw)


def _container_template(engine: str, title: str) -> Template:
    """``docker run`` / ``podman run`` in the foreground: the container lives as long as the launch."""
    return _t(
        f"{engine}-run", title, "server",
        [engine, "run", "--rm", "--init", "--name", "{container_name}", "{gpu_flags}",
         "-p", "127.0.0.1:{port}:{container_port}", "{volume_flags}", "{env_flags}", "{image}", "{args}"],
        [Param("image", "string", "Image", help="e.g. nvcr.io/nvidia/pytorch:25.01-py3"),
         Param("container_name", "string", "Container name", required=False,
               help="Default: dgx-spark- and the operation's name"),
         Param("port", "port", "Host port", default=8000, help="Published on 127.0.0.1 only"),
         Param("container_port", "port", "Container port", default=8000),
         Param("gpu", "choice", "GPU access", default="all", choices=("all", "none"),
               help="all: every GPU, or only the GPUs below when set"),
         Param("volumes", "args", "Volumes", required=False, help="host_dir:container_dir[:ro], one per argument"),
         Param("args", "args", "Command", required=False, help="Arguments after the image")],
        description=f"A container ({engine} run) with GPUs, a published port and volumes", engine=engine,
    )


BUILTIN_TEMPLATES: tuple[Template, ...] = (
    _t(
        "comfyui", "ComfyUI", "server",
        ["{python}", "main.py", "--listen", "127.0.0.1", "--port", "{port}", "{extra_args}"],
        [Param("comfyui_dir", "dir", "ComfyUI folder", help="Folder holding ComfyUI's main.py"),
         Param("port", "port", "Port", default=8188), _PY,
         Param("extra_args", "args", "Extra arguments", required=False)],
        description="ComfyUI web UI", cwd="{comfyui_dir}",
    ),
    _t(
        "ollama", "Ollama", "server", ["ollama", "serve"],
        [Param("port", "port", "Port", default=11434)],
        description="Ollama model server", env={"OLLAMA_HOST": "127.0.0.1:{port}"},
    ),
    _t(
        "vllm", "vLLM", "server",
        ["vllm", "serve", "{model}", "--host", "127.0.0.1", "--port", "{port}", "{extra_args}"],
        [Param("model", "model", "Model", help="Hugging Face id or local path"),
         Param("port", "port", "Port", default=8000),
         Param("extra_args", "args", "Extra arguments", required=False)],
        description="vLLM OpenAI-compatible server",
    ),
    _t(
        "jupyterlab", "JupyterLab", "server",
        ["jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", "--port", "{port}", "{extra_args}"],
        [Param("port", "port", "Port", default=8888),
         Param("working_dir", "dir", "Notebook folder", required=False),
         Param("extra_args", "args", "Extra arguments", required=False)],
        description="JupyterLab", cwd="{working_dir}",
    ),
    _t(
        "llama-server", "llama.cpp server", "server",
        ["llama-server", "-m", "{model}", "--host", "127.0.0.1", "--port", "{port}", "{extra_args}"],
        [Param("model", "file", "Model file (.gguf)"),
         Param("port", "port", "Port", default=8080),
         Param("extra_args", "args", "Extra arguments", required=False)],
        description="llama.cpp HTTP server",
    ),
    _t(
        "training", "Training script", "job",
        ["{python}", "{script}", "{args}"],
        [Param("script", "file", "Script", help="Path of the Python script"),
         Param("args", "args", "Arguments", required=False), _PY,
         Param("working_dir", "dir", "Working directory", required=False)],
        description="A Python training script", cwd="{working_dir}",
    ),
    _t(
        "http-server", "Python HTTP server", "server",
        ["{python}", "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
        [Param("port", "port", "Port", default=8000), _PY,
         Param("working_dir", "dir", "Folder to serve", required=False)],
        description="Serve a folder over HTTP (python -m http.server)", cwd="{working_dir}",
    ),
    _container_template("docker", "Docker container"),
    _container_template("podman", "Podman container"),
)
CUSTOM = "custom"


def _check_text(
    field: str, value: Any, *, limit: int = MAX_STRING, allow_empty: bool = False, single_line: bool = False,
) -> str:
    """A string within ``limit`` (``validate_text``): NUL is refused (exec cannot carry it).

    Other control characters pass (an argument may hold a tab) unless ``single_line``
    (a name, a choice), where none does.
    """
    return validate_text(value, field, max_length=limit, allow_empty=allow_empty, allow_control=not single_line)


def _check_int(field: str, value: Any, lo: int, hi: int) -> int:
    """An integer in ``lo..hi`` (``validate_int``); the dialog's digits (``"8000"``) count as one."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 12:
        value = int(value)
    return validate_int(value, field, lo, hi)


def port_in_use(port: int) -> bool:
    """Whether something already listens on ``port`` (IPv4 loopback or any address)."""
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return True
    return False


def _check_path(field: str, value: Any, kind: str, base: str | None) -> str:
    text = _check_text(field, value)
    path = Path(text).expanduser()
    if not path.is_absolute() and base:
        path = Path(base) / path
    if kind == "file" and not path.is_file():
        raise SpecError(field, f"no such file: {text}")
    if kind == "dir" and not path.is_dir():
        raise SpecError(field, f"no such directory: {text}")
    return str(path.resolve())


def check_env(field: str, value: Any) -> dict[str, str]:
    """Validate an environment mapping against the allow-list (``validate_env``)."""
    if value is None:
        return {}
    return validate_env(value, field, allowed=ENV_ALLOW_NAMES, allowed_prefixes=ENV_ALLOW_PREFIXES,
                        reserved=ENV_RESERVED, max_items=MAX_ENV, max_length=MAX_STRING, names=_ENV_NAME)


def check_args(field: str, value: Any) -> list[str]:
    """Validate a list of arguments (a string is split like a shell would, never run by one)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        _check_text(field, value)
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise SpecError(field, f"cannot be split into arguments: {exc}") from exc
    if not isinstance(value, list):
        raise SpecError(field, f"must be a list of strings, got {type(value).__name__}")
    return validate_str_list(value, field, max_items=MAX_ARGS, max_length=MAX_STRING, allow_control=True)


def check_gpus(field: str, value: Any) -> list[int]:
    """GPU indices as a list of ints (a "0,1" string is accepted)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        _check_text(field, value)
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or len(value) > 64:
        raise SpecError(field, "must be a list of GPU indices")
    gpus = [_check_int(f"{field}[{i}]", item, 0, 63) for i, item in enumerate(value)]
    if len(set(gpus)) != len(gpus):
        raise SpecError(field, "lists a GPU twice")
    return gpus


def _check_param(param: Param, value: Any, base: str | None) -> Any:
    field = f"params.{param.name}"
    if param.kind == "port":
        return _check_int(field, value, 1, 65535)
    if param.kind == "int":
        return _check_int(field, value, -(2**31), 2**31 - 1)
    if param.kind in ("string", "model"):
        return _check_text(field, value)
    if param.kind == "choice":
        text = _check_text(field, value, single_line=True)
        if text not in param.choices:
            raise SpecError(field, f"must be one of {', '.join(param.choices)}")
        return text
    if param.kind in ("file", "dir"):
        return _check_path(field, value, param.kind, base)
    if param.kind == "args":
        return check_args(field, value)
    if param.kind == "gpus":
        return check_gpus(field, value)
    if param.kind == "env":
        return check_env(field, value)
    raise SpecError(field, f"unknown parameter kind {param.kind!r}")


def _is_empty(value: Any) -> bool:
    return value is None or value in ("", [], {})


def _expand(item: Any, values: Mapping[str, Any], template: Template) -> list[str] | None:
    """One pattern item -> arguments; None when an optional parameter it names is empty."""
    if isinstance(item, (list, tuple)):
        parts: list[str] = []
        for sub in item:
            expanded = _expand(sub, values, template)
            if expanded is None:
                return []
            parts.extend(expanded)
        return parts
    whole = _PLACEHOLDER.fullmatch(item)
    if whole and isinstance(values.get(whole.group(1)), list):
        return [str(v) for v in values[whole.group(1)]]
    names = _PLACEHOLDER.findall(item)
    if any(_is_empty(values.get(n)) for n in names):
        return None
    return [_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), item)]


def _expand_argv(template: Template, values: Mapping[str, Any]) -> list[str]:
    argv: list[str] = []
    for index, item in enumerate(template.argv):
        expanded = _expand(item, values, template)
        if expanded is None:
            if index == 0:
                raise SpecError("template", "the command is empty")
            continue
        argv.extend(expanded)
    return argv


def resolve_executable(argv: list[str], cwd: str | None, field: str) -> list[str]:
    """Check that argv[0] can be run: an existing path or a name found on PATH."""
    program = argv[0]
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() or not cwd else Path(cwd) / program
        if not path.is_file() or not os.access(path, os.X_OK):
            raise SpecError(field, f"{program!r} is not an executable file")
        return argv
    if shutil.which(program) is None:
        raise SpecError(field, f"{program!r} was not found on PATH")
    return argv


def build_spec(
    template: Template,
    name: str | None,
    params: Mapping[str, Any] | None,
    *,
    check_port: bool = True,
) -> LaunchSpec:
    """Validate ``params`` against ``template`` and build the launch spec.

    Raises:
        SpecError: Naming the bad field; nothing is started.
    """
    values = _param_values(template, params)
    if template.engine:
        values.update(container_flags(template.engine, values, name or template.title))
    argv = _expand_argv(template, values)
    cwd = None
    if template.cwd:
        expanded = _expand(template.cwd, values, template)
        cwd = expanded[0] if expanded else None
    resolve_executable(argv, cwd, "template" if template.name != CUSTOM else "command")
    env = _template_env(template, values)
    port = values.get("port")
    if check_port and port is not None and port_in_use(port):
        raise SpecError("params.port", f"port {port} is already in use")
    display_name = _check_name(name, template.title)
    kept = {k: v for k, v in values.items() if not _is_empty(v) and k not in _DERIVED}
    return LaunchSpec(template.name, display_name, template.type, tuple(argv), cwd, env, port, kept)


def _param_values(template: Template, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every parameter's checked value (its default when not given; empty when optional)."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise SpecError("params", "must be an object")
    unknown = [k for k in params if template.param(str(k)) is None]
    if unknown:
        raise SpecError(f"params.{str(unknown[0])[:40]}", f"is not a parameter of {template.name}")
    values: dict[str, Any] = {}
    # Directories first so relative files resolve against the working directory.
    ordered = sorted(template.params, key=lambda p: p.kind != "dir")
    base: str | None = None
    for param in ordered:
        raw = params.get(param.name)
        if _is_empty(raw):
            raw = param.default
        if _is_empty(raw):
            if param.required:
                raise SpecError(f"params.{param.name}", "is required")
            values[param.name] = [] if param.kind in ("args", "gpus") else ({} if param.kind == "env" else None)
            continue
        values[param.name] = _check_param(param, raw, base)
        if param.kind == "dir" and base is None:
            base = values[param.name]
    return values


def _template_env(template: Template, values: Mapping[str, Any]) -> dict[str, str]:
    """The template's fixed variables, the user's, and the chosen GPUs (not for a container)."""
    env: dict[str, str] = {}
    for key, pattern in template.env.items():
        expanded = _expand(pattern, values, template)
        if expanded:
            env[key] = expanded[0]
    env.update(values.get("env") or {})
    if values.get("gpus") and not template.engine:  # a container gets its GPUs through its flags
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in values["gpus"])
    return env


_DERIVED = frozenset({"gpu_flags", "volume_flags", "env_flags"})
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


def container_flags(engine: str, values: Mapping[str, Any], display_name: str) -> dict[str, Any]:
    """The flags of a container template: GPUs, volumes, environment; and a checked container name.

    GPUs: docker ``--gpus all`` / ``--gpus "device=0,1"``; podman (CDI) ``--device nvidia.com/gpu=all``
    / one ``--device nvidia.com/gpu=N`` per GPU. Volumes: ``-v host:container[:ro|rw]`` with an
    existing absolute host path. Environment: ``-e NAME`` (allow-listed names): the value passes
    through the client's environment, never its command line (which other users can read).

    Raises:
        SpecError: Naming the bad field.
    """
    name = values.get("container_name")
    if _is_empty(name):
        slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", display_name).strip("-.").lower()[:60] or "container"
        name = f"dgx-spark-{slug}"
    if not _CONTAINER_NAME.match(str(name)):
        raise SpecError("params.container_name", "letters, digits, _ . - only, starting with a letter or digit")
    gpus: list[int] = list(values.get("gpus") or [])
    gpu_flags: list[str] = []
    if values.get("gpu", "all") == "all":
        if engine == "docker":
            gpu_flags = ["--gpus", f'"device={",".join(map(str, gpus))}"' if gpus else "all"]
        else:
            for device in [str(g) for g in gpus] or ["all"]:
                gpu_flags += ["--device", f"nvidia.com/gpu={device}"]
    elif gpus:
        raise SpecError("params.gpus", "GPUs are chosen but GPU access is none")
    volume_flags: list[str] = []
    for index, volume in enumerate(values.get("volumes") or []):
        field = f"params.volumes[{index}]"
        parts = str(volume).split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise SpecError(field, "must be host_dir:container_dir or host_dir:container_dir:ro")
        if not parts[0].startswith("/") or not os.path.exists(parts[0]):
            raise SpecError(field, f"host path {parts[0]!r} must be an existing absolute path")
        if not parts[1].startswith("/"):
            raise SpecError(field, "the container path must be absolute")
        volume_flags += ["-v", str(volume)]
    env_flags: list[str] = []
    for key in values.get("env") or {}:
        env_flags += ["-e", key]
    return {"container_name": str(name), "gpu_flags": gpu_flags, "volume_flags": volume_flags, "env_flags": env_flags}


def _check_name(name: Any, fallback: str) -> str:
    if name is None or name == "":
        return fallback
    return _check_text("name", name, limit=NAME_MAX, single_line=True).strip()


def build_custom_spec(
    name: Any, type_: Any, command: Any, cwd: Any, env: Any, port: Any = None, gpus: Any = None,
    *, check_port: bool = True,
) -> LaunchSpec:
    """Validate a custom command launch.

    Raises:
        SpecError: Naming the bad field; nothing is started.
    """
    if type_ is None:
        type_ = "program"
    if type_ not in OPERATION_TYPES:
        raise SpecError("type", f"must be one of {', '.join(OPERATION_TYPES)}")
    if not isinstance(command, list) or not command:
        raise SpecError("command", "must be a non-empty list of strings (argv)")
    argv = check_args("command", command)
    _check_text("command[0]", argv[0])
    work_dir = None if cwd in (None, "") else _check_path("cwd", cwd, "dir", None)
    resolve_executable(argv, work_dir, "command")
    environment = check_env("env", env)
    gpu_list = check_gpus("gpus", gpus)
    if gpu_list:
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_list)
    port_value = None if port in (None, "") else _check_int("port", port, 1, 65535)
    if check_port and port_value is not None and port_in_use(port_value):
        raise SpecError("port", f"port {port_value} is already in use")
    params: dict[str, Any] = {"command": argv}
    if work_dir:
        params["cwd"] = work_dir
    if gpu_list:
        params["gpus"] = gpu_list
    if port_value is not None:
        params["port"] = port_value
    return LaunchSpec(
        CUSTOM, _check_name(name, Path(argv[0]).name), type_, tuple(argv), work_dir,
        environment, port_value, params,
    )


def _param_from_toml(name: str, raw: Any, where: str) -> Param:
    if not isinstance(raw, Mapping):
        raise TemplateFileError(f"{where}: parameter {name} must be a table")
    kind = raw.get("kind", "string")
    if kind not in PARAM_KINDS:
        raise TemplateFileError(f"{where}: parameter {name}: kind must be one of {', '.join(PARAM_KINDS)}")
    return Param(
        name=name,
        kind=kind,
        label=str(raw.get("label", "")),
        required=bool(raw.get("required", raw.get("default") is None)),
        default=raw.get("default"),
        help=str(raw.get("help", "")),
        choices=tuple(str(c) for c in raw.get("choices", ())),
    )


def _argv_item(item: Any, where: str) -> Any:
    if isinstance(item, str):
        return item
    if isinstance(item, list) and all(isinstance(s, str) for s in item):
        return tuple(item)
    raise TemplateFileError(f"{where}: argv items must be strings or lists of strings")


def load_user_templates(path: Path) -> tuple[list[Template], list[str]]:
    """Templates from the user's TOML file.

    Returns:
        (templates, problems): a bad template is skipped and described in ``problems``.
    """
    if not path.is_file():
        return [], []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return [], [f"{path}: {exc}"]
    templates: list[Template] = []
    problems: list[str] = []
    section = data.get("templates", {})
    if not isinstance(section, Mapping):
        return [], [f"{path}: [templates] must be a table"]
    for name, raw in section.items():
        where = f"{path.name}: templates.{name}"
        try:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name) or name == CUSTOM:
                raise TemplateFileError(f"{where}: bad template name")
            if not isinstance(raw, Mapping):
                raise TemplateFileError(f"{where}: must be a table")
            type_ = raw.get("type", "program")
            if type_ not in OPERATION_TYPES:
                raise TemplateFileError(f"{where}: type must be one of {', '.join(OPERATION_TYPES)}")
            argv = raw.get("argv")
            if not isinstance(argv, list) or not argv:
                raise TemplateFileError(f"{where}: argv must be a non-empty list")
            params_raw = raw.get("params", {})
            if not isinstance(params_raw, Mapping):
                raise TemplateFileError(f"{where}: params must be a table")
            params = [_param_from_toml(n, p, where) for n, p in params_raw.items()]
            env = raw.get("env", {})
            if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
                raise TemplateFileError(f"{where}: env must be a table of strings")
            cwd = raw.get("cwd")
            templates.append(
                Template(
                    name=name,
                    title=str(raw.get("title", name)),
                    type=type_,
                    argv=tuple(_argv_item(a, where) for a in argv),
                    params=tuple(params) + tuple(c for c in COMMON if c.name not in params_raw),
                    description=str(raw.get("description", "")),
                    cwd=str(cwd) if cwd else None,
                    env=dict(env),
                    source=str(path),
                )
            )
        except TemplateFileError as exc:
            problems.append(str(exc))
    return templates, problems


def all_templates(user_file: Path | None) -> dict[str, Template]:
    """Built-in templates, overridden/extended by the user's file."""
    result = {t.name: t for t in BUILTIN_TEMPLATES}
    if user_file is not None:
        for template in load_user_templates(user_file)[0]:
            result[template.name] = template
    return result


def custom_template_api() -> dict[str, Any]:
    """The custom command "template" as the API and dialog describe it."""
    return {
        "name": CUSTOM,
        "title": "Custom command",
        "type": "program",
        "description": "Any command as an argv list (no shell)",
        "argv": [],
        "params": [],
        "source": "builtin",
    }


def env_allow_list() -> Sequence[str]:
    """The allowed environment names and prefixes (for documentation and the UI)."""
    return sorted(ENV_ALLOW_NAMES) + [p + "*" for p in ENV_ALLOW_PREFIXES]
