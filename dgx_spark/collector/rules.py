"""The classification rule table: which processes are operations, of what type, named how.

Rules are data: an ordered table of ``Rule`` records, first match wins. A user
TOML file (``settings.rules_file``) adds rules in front of the built-in ones, or
replaces a built-in rule by reusing its ``id``. The classifier works on plain
``ProcessFacts`` records, so it is tested without live processes.

A rule matches when every criterion it sets matches (criteria it leaves empty
are ignored); a list criterion matches when any of its patterns matches.
Globs are case-insensitive (``fnmatch``); ``args`` are regular expressions
searched in the command line joined by spaces.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import logging
import os
import re
import shlex
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

RuleType = Literal["server", "job", "program", "ignore"]
RULE_TYPES: tuple[str, ...] = ("server", "job", "program", "ignore")
RUNS: tuple[str, ...] = ("nothing", "script", "module", "code")

PYTHONS = ("python", "python[0-9]*", "pypy", "pypy[0-9]*")
SHELLS = ("bash", "sh", "dash", "zsh", "ksh", "mksh", "fish", "tcsh", "csh", "ash", "busybox")
INTERPRETERS = (
    *PYTHONS,
    *SHELLS,
    "node",
    "nodejs",
    "deno",
    "bun",
    "perl",
    "perl5*",
    "ruby",
    "Rscript",
    "julia",
    "lua",
    "lua5*",
    "luajit",
    "php",
    "php[0-9]*",
    "tclsh",
    "osascript",
)
# Options that take a value, per interpreter family (the value is not the script).
_PY_VALUE_OPTS = frozenset({"-W", "-X", "-Q", "--check-hash-based-pycs"})
_SH_VALUE_OPTS = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"})
_NODE_VALUE_OPTS = frozenset(
    {"-r", "--require", "--import", "--loader", "--experimental-loader", "--env-file", "-C", "--conditions", "--title"}
)
_GENERIC_VALUE_OPTS = frozenset({"-I", "-r", "-C", "-x"})
_CODE_OPTS = frozenset({"-c", "-e", "--eval", "-p", "--print", "-E"})
_MODEL_OPTS = (
    "--model",
    "--model-path",
    "--model_path",
    "--model-id",
    "--model_id",
    "--model-name",
    "--model_name",
    "--model_name_or_path",
    "--model-name-or-path",
    "--served-model-name",
    "-m",
)
_SCRIPT_EXTS = (".py", ".sh", ".bash", ".js", ".mjs", ".ts", ".pl", ".rb", ".R", ".jl", ".lua", ".php", ".ipynb")
_CONFIG_EXTS = (".yaml", ".yml", ".json", ".toml", ".cfg", ".ini", ".gguf")


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessFacts:
    """What the classifier knows about one process (plain data, no live handle).

    Attributes:
        pid: Process id.
        argv: The command line, split (``/proc/<pid>/cmdline``); empty when unreadable.
        comm: The kernel's short name of the process (``/proc/<pid>/comm``, 15 chars).
        exe: The executable's path, when readable.
        cwd: The working directory, when readable (resolves relative script paths).
        user: The owner's user name.
        tty: Whether it has a controlling terminal.
        listening: Whether it (or, for a tree, any process in it) listens on TCP.
        ppid: The parent's pid.
    """

    pid: int
    argv: tuple[str, ...]
    comm: str = ""
    exe: str | None = None
    cwd: str | None = None
    user: str | None = None
    tty: bool = False
    listening: bool = False
    ppid: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class CommandShape:
    """A command line taken apart: what runs, and with which arguments."""

    program: str
    """Base name of the executable (``python3``, ``ollama``); login shells lose their ``-``."""
    names: tuple[str, ...]
    """Every name the process goes by: program, comm, the script's base name."""
    runs: str
    """What an interpreter runs: ``nothing``, ``script``, ``module`` or ``code`` (``-c``)."""
    script: str | None
    """Base name of the script an interpreter runs (console scripts such as torchrun too)."""
    script_path: str | None
    """The script's absolute path (relative ones resolved against the working directory)."""
    module: str | None
    """The module of ``python -m module``."""
    args: tuple[str, ...]
    """Arguments after the program, script or module."""
    interpreter: bool

    @property
    def entry(self) -> str:
        """The most telling name: the script, else the module, else the program."""
        return self.script or self.module or self.program

    @property
    def positionals(self) -> tuple[str, ...]:
        """Arguments that do not start with ``-``."""
        return tuple(arg for arg in self.args if arg and not arg.startswith("-"))

    @property
    def subcommand(self) -> str | None:
        """The first positional argument (``serve`` in ``vllm serve``)."""
        positionals = self.positionals
        return positionals[0] if positionals else None


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _is_interpreter(program: str) -> bool:
    return _glob_any(program, INTERPRETERS)


def _value_opts(program: str) -> frozenset[str]:
    if _glob_any(program, PYTHONS):
        return _PY_VALUE_OPTS
    if program in SHELLS:
        return _SH_VALUE_OPTS
    if program in ("node", "nodejs", "deno", "bun"):
        return _NODE_VALUE_OPTS
    return _GENERIC_VALUE_OPTS


def shape_of(facts: ProcessFacts) -> CommandShape:
    """Take a command line apart (pure function of the facts)."""
    argv = list(facts.argv)
    if len(argv) == 1 and " " in argv[0] and not argv[0].startswith("/proc"):
        # Processes that rewrite their title (nginx, sshd, postgres) show one spaced string.
        argv = argv[0].split()
    if not argv:
        argv = [facts.comm] if facts.comm else [""]
    first = argv[0].rstrip(":")
    program = _basename(first).lstrip("-") or facts.comm
    names = {program}
    if facts.comm:
        names.add(facts.comm)
    if facts.exe:
        names.add(_basename(facts.exe).removesuffix(" (deleted)"))
    interpreter = _is_interpreter(program)
    runs, script_path, module, rest = "nothing", None, None, argv[1:]
    if interpreter:
        runs, script_path, module, rest = _interpreter_target(program, argv)
    script, script_path = _script(script_path, facts.cwd)
    if script is not None:
        names.add(script)
    names.discard("")
    return CommandShape(
        program=program,
        names=tuple(sorted(names)),
        runs=runs,
        script=script,
        script_path=script_path,
        module=module,
        args=tuple(rest),
        interpreter=interpreter,
    )


def _interpreter_target(program: str, argv: list[str]) -> tuple[str, str | None, str | None, list[str]]:
    """What an interpreter's argv runs: ``(runs, script path, module, the arguments after it)``.

    ``runs`` is ``code`` (``-c``), ``module`` (``-m``), ``script`` or ``nothing``.
    """
    is_python = _glob_any(program, PYTHONS)
    value_opts = _value_opts(program)
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg in _CODE_OPTS or (arg.startswith("-") and not arg.startswith("--") and arg[-1:] == "c" and program in SHELLS):
            return "code", None, None, argv[index + 1 :]
        if arg == "-m" and is_python:
            return "module", None, argv[index + 1] if index + 1 < len(argv) else None, argv[index + 2 :]
        if arg.startswith("-m") and len(arg) > 2 and is_python:
            return "module", None, arg[2:], argv[index + 1 :]
        if arg == "--":
            index += 1
        elif arg.startswith(("-", "+")) and len(arg) > 1:
            index += 2 if arg in value_opts else 1
        else:
            return "script", arg, None, argv[index + 1 :]
    return "nothing", None, None, []


def _script(script_path: str | None, cwd: str | None) -> tuple[str | None, str | None]:
    """A script's name and its path (made absolute against ``cwd``); None for a piped script."""
    if script_path is None or script_path.startswith(("/dev/fd/", "/proc/self/fd/", "/dev/stdin")):
        return None, None  # a script fed through a pipe has no telling name
    script = _basename(script_path)
    if not script_path.startswith("/") and cwd:
        script_path = os.path.normpath(os.path.join(cwd, script_path))
    return script, script_path


@functools.lru_cache(maxsize=4096)
def _glob_re(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()))


def _glob_any(value: str | None, patterns: Iterable[str]) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    return any(_glob_re(pattern).match(lowered) for pattern in patterns)


def _option_value(args: Sequence[str], names: Sequence[str]) -> str | None:
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                return args[index + 1]
            if arg.startswith(name + "=") and name.startswith("--"):
                return arg[len(name) + 1 :]
    return None


def _model(shape: CommandShape) -> str | None:
    value = _option_value(shape.args, _MODEL_OPTS)
    if value is None and shape.subcommand in ("serve", "run", "launch") and len(shape.positionals) > 1:
        value = shape.positionals[1]
    if not value:
        return None
    if value.startswith(("/", ".", "~")):
        return _basename(value) or None
    return value


def _target(shape: CommandShape) -> str | None:
    for arg in shape.args:
        if not arg.startswith("-") and arg.endswith(_SCRIPT_EXTS):
            return _basename(arg)
    module = _option_value(shape.args, ("-m", "--module"))
    if module:
        return module
    for arg in shape.args:
        if not arg.startswith("-") and arg.endswith(_CONFIG_EXTS):
            return _basename(arg)
    return None


def placeholders(facts: ProcessFacts, shape: CommandShape) -> dict[str, str | None]:
    """Values a rule's name template may use, ``None`` when unknown.

    ``{program}``, ``{script}``, ``{module}``, ``{entry}`` (script, else module,
    else program), ``{subcommand}``, ``{arg1}``/``{arg2}`` (positional arguments),
    ``{model}`` (``--model``-like option or the argument after ``serve``),
    ``{target}`` (first script or config file argument, or ``-m`` module), ``{app}``
    (a ``module:app`` argument), ``{cwd}`` (base name of the working directory).
    """
    positionals = shape.positionals
    return {
        "program": shape.program or None,
        "script": shape.script,
        "module": shape.module,
        "entry": shape.entry or None,
        "subcommand": shape.subcommand,
        "arg1": positionals[0] if positionals else None,
        "arg2": positionals[1] if len(positionals) > 1 else None,
        "model": _model(shape),
        "target": _target(shape),
        "app": next((arg for arg in shape.args if _APP.match(arg)), None),
        "cwd": _basename(facts.cwd) if facts.cwd else None,
    }


_APP = re.compile(r"^[\w.]+:[\w.()]+$")
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")


def render_name(templates: Sequence[str], values: dict[str, str | None]) -> str | None:
    """The first template whose placeholders are all known, filled in."""
    for template in templates:
        missing = False

        def fill(match: re.Match[str]) -> str:
            nonlocal missing
            value = values.get(match.group(1))
            if not value:
                missing = True
                return ""
            return value

        text = _PLACEHOLDER.sub(fill, template)
        if not missing and text.strip():
            return text.strip()
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table. Empty criteria are ignored; set ones must all match."""

    id: str
    type: RuleType
    name: tuple[str, ...] = ()
    """Name templates, first fully known one wins (see ``placeholders``)."""
    program: tuple[str, ...] = ()
    """Globs on any name of the process: executable, comm, or the script it runs."""
    script: tuple[str, ...] = ()
    """Globs on the base name of the script an interpreter runs."""
    path: tuple[str, ...] = ()
    """Globs on the script's absolute path."""
    module: tuple[str, ...] = ()
    """Globs on the module of ``python -m``."""
    subcommand: tuple[str, ...] = ()
    """Globs on the first positional argument."""
    args: tuple[str, ...] = ()
    """Regular expressions searched in the whole command line."""
    runs: tuple[str, ...] = ()
    """What an interpreter runs: nothing, script, module, code."""
    tty: bool | None = None
    """Whether the process must (True) or must not (False) have a terminal."""
    listening: bool | None = None
    """Whether the process must (True) or must not (False) listen on TCP."""
    port: int | None = None
    """The server's usual port: the main port when it is among the listening ones."""
    generic: bool = False
    """A catch-all rule (listening, interpreter, terminal): a folded tree prefers a specific one."""

    def __post_init__(self) -> None:
        if self.type not in RULE_TYPES:
            raise ValueError(f"type must be one of {', '.join(RULE_TYPES)}, got {self.type!r}")
        for runs in self.runs:
            if runs not in RUNS:
                raise ValueError(f"runs must be among {', '.join(RUNS)}, got {runs!r}")
        for pattern in self.args:
            _args_re(pattern)  # raises re.error early

    def matches(self, facts: ProcessFacts, shape: CommandShape, command_line: str) -> bool:
        """Whether every criterion this rule sets holds for the process."""
        if self.tty is not None and facts.tty != self.tty:
            return False
        if self.listening is not None and facts.listening != self.listening:
            return False
        if self.runs and shape.runs not in self.runs:
            return False
        if self.program and not any(_glob_any(name, self.program) for name in shape.names):
            return False
        if self.script and not _glob_any(shape.script, self.script):
            return False
        if self.path and not _glob_any(shape.script_path, self.path):
            return False
        if self.module and not _glob_any(shape.module, self.module):
            return False
        if self.subcommand and not _glob_any(shape.subcommand, self.subcommand):
            return False
        return not self.args or any(_args_re(pattern).search(command_line) for pattern in self.args)


@functools.lru_cache(maxsize=1024)
def _args_re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What the table says about one process."""

    rule: Rule
    name: str

    @property
    def type(self) -> RuleType:
        """server, job, program or ignore."""
        return self.rule.type

    @property
    def is_operation(self) -> bool:
        """Whether the process is an operation on its own."""
        return self.rule.type != "ignore"


def command_args(command: str | None) -> list[str]:
    """An operation's command line as a list of arguments (split like a shell, else on spaces)."""
    if not command:
        return []
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()

def _rule(id: str, type: RuleType, name: Sequence[str] | str = (), **criteria: Any) -> Rule:
    names = (name,) if isinstance(name, str) else tuple(name)
    fields: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list | tuple) else value for key, value in criteria.items()
    }
    return Rule(id=id, type=type, name=names, **fields)


# fmt: off
SYSTEM_DAEMONS = (
    "systemd", "systemd-*", "(sd-pam)", "init", "sshd", "sshd-session", "sshd-auth", "sshd:*",
    "dbus-daemon", "dbus-broker", "dbus-broker-lau*", "cron", "crond", "anacron", "atd",
    "containerd", "containerd-shim*", "dockerd", "docker-proxy", "runc", "buildkitd", "kubelet",
    "conmon", "crun", "catatonit", "slirp4netns", "rootlessport*", "aardvark-dns", "netavark", "pasta", "crio",
    "nvidia-persistenced", "nvidia-fabricmanager", "nv-fabricmanager", "nv-hostengine", "nvidia-powerd",
    "gnome-*", "gdm", "gdm-*", "gdm3", "gsd-*", "Xorg", "Xwayland", "X", "xdg-*", "at-spi*", "ibus-*",
    "gvfs*", "evolution-*", "tracker-miner*", "dconf-service", "mutter*", "goa-*",
    "pulseaudio", "pipewire*", "wireplumber", "polkitd", "polkit-*", "rsyslogd", "syslog-ng",
    "udisksd", "upowerd", "NetworkManager", "wpa_supplicant", "avahi-daemon", "cupsd", "cups-browsed",
    "snapd", "agetty", "login", "accounts-daemon", "ModemManager", "colord", "rtkit-daemon",
    "thermald", "irqbalance", "multipathd", "chronyd", "ntpd", "unattended-upgr*", "packagekitd",
    "fwupd", "networkd-dispatcher", "networkd-dispat*", "tailscaled", "ssh-agent", "gpg-agent", "keyboxd",
    "dirmngr", "lxd", "libvirtd", "virtlogd", "qemu-ga", "acpid", "smartd", "rpcbind", "rpc.*",
    "iscsid", "nscd", "sssd", "sssd_*", "whoopsie", "kerneloops", "apport*", "bluetoothd",
    "power-profiles-*", "switcheroo-cont*", "boltd", "lightdm", "sddm", "plasmashell", "kwin*",
    "kded*", "xfce4-*", "update-notifier", "supervisord", "process_api", "haveged", "mdadm",
    "nvsm*", "dcgm*", "lvmetad", "udevd", "auditd", "firewalld", "ufw", "rngd", "uuidd",
)
MULTIPLEXERS = ("tmux", "tmux:*", "screen", "SCREEN", "byobu*", "zellij", "mosh-server", "dtach", "abduco")
TRAINING_SCRIPTS = (
    "train*", "*_train*", "*-train*", "*.train*", "*finetun*", "*fine_tun*", "*fine-tun*",
    "pretrain*", "*_pretrain*", "*-pretrain*", "sft*", "*_sft*", "*-sft*",
)

BUILTIN_RULES: tuple[Rule, ...] = (
    # --- not operations -------------------------------------------------------------
    _rule("system-daemon", "ignore", program=SYSTEM_DAEMONS),
    _rule("multiplexer", "ignore", program=MULTIPLEXERS),
    _rule("interactive-shell", "ignore", program=SHELLS, runs=["nothing"]),
    _rule("editor-server", "ignore", args=[r"/\.(vscode|cursor|windsurf)-server/", r"/\.vscode/extensions/"]),
    # --- known servers --------------------------------------------------------------
    _rule("comfyui", "server", "ComfyUI", path=["*/comfyui*/main.py"], port=8188),
    _rule("ollama", "server", "Ollama", program=["ollama"], subcommand=["serve"], port=11434),
    _rule("ollama-runner", "server", ["Ollama runner · {model}", "Ollama runner"],
          program=["ollama", "ollama_llama_server"], subcommand=["runner"]),
    _rule("vllm", "server", ["vLLM · {model}", "vLLM"], program=["vllm"], subcommand=["serve"], port=8000),
    _rule("vllm-entrypoint", "server", ["vLLM · {model}", "vLLM"], module=["vllm.entrypoints*"], port=8000),
    _rule("jupyter-lab", "server", "Jupyter Lab", program=["jupyter-lab"], port=8888),
    _rule("jupyter-lab-cmd", "server", "Jupyter Lab", program=["jupyter"], subcommand=["lab"], port=8888),
    _rule("jupyter-lab-module", "server", "Jupyter Lab", module=["jupyterlab*"], port=8888),
    _rule("jupyter-notebook", "server", "Jupyter Notebook", program=["jupyter-notebook"], port=8888),
    _rule("jupyter-notebook-cmd", "server", "Jupyter Notebook", program=["jupyter"],
          subcommand=["notebook"], port=8888),
    _rule("jupyter-notebook-module", "server", "Jupyter Notebook", module=["notebook*"], port=8888),
    _rule("jupyter-server", "server", "Jupyter Server", program=["jupyter-server"], port=8888),
    _rule("llama-server", "server", ["llama.cpp · {model}", "llama.cpp server"], program=["llama-server"],
          port=8080),
    _rule("sglang", "server", ["SGLang · {model}", "SGLang"], module=["sglang.launch_server*"], port=30000),
    _rule("sglang-cmd", "server", ["SGLang · {model}", "SGLang"], program=["sglang"], subcommand=["serve"],
          port=30000),
    _rule("text-generation-inference", "server", ["TGI · {model}", "Text Generation Inference"],
          program=["text-generation-launcher", "text-generation", "text-generation-server"], port=3000),
    _rule("triton", "server", "Triton Inference Server", program=["tritonserver"], port=8000),
    _rule("open-webui", "server", "Open WebUI", program=["open-webui"], port=8080),
    _rule("open-webui-app", "server", "Open WebUI", args=[r"\bopen_webui\.main\b"], port=8080),
    _rule("uvicorn", "server", ["Uvicorn · {app}", "Uvicorn"], program=["uvicorn"], port=8000),
    _rule("uvicorn-module", "server", ["Uvicorn · {app}", "Uvicorn"], module=["uvicorn"], port=8000),
    _rule("gunicorn", "server", ["Gunicorn · {app}", "Gunicorn"], program=["gunicorn"], port=8000),
    _rule("granian", "server", ["Granian · {app}", "Granian"], program=["granian"], port=8000),
    _rule("streamlit", "server", ["Streamlit · {arg2}", "Streamlit"], program=["streamlit"],
          subcommand=["run"], port=8501),
    _rule("streamlit-module", "server", ["Streamlit · {arg2}", "Streamlit"], module=["streamlit"], port=8501),
    _rule("gradio", "server", ["Gradio · {arg1}", "Gradio"], program=["gradio"], port=7860),
    _rule("http-server", "server", "HTTP server", module=["http.server", "SimpleHTTPServer"], port=8000),
    _rule("node-server", "server", ["{script}"], program=["node", "nodejs", "bun", "deno"],
          script=["*server*", "next", "next-server", "vite", "nuxt", "nuxi", "http-server", "serve",
                  "live-server", "nodemon", "app.js", "index.js", "main.js"]),
    _rule("nginx", "server", "nginx", program=["nginx"], port=80),
    _rule("caddy", "server", "Caddy", program=["caddy"], port=443),
    _rule("apache", "server", "Apache httpd", program=["apache2", "httpd"], port=80),
    # --- training jobs --------------------------------------------------------------
    _rule("torchrun", "job", ["{target}", "torchrun"], program=["torchrun"]),
    _rule("torch-distributed", "job", ["{target}", "torchrun"],
          module=["torch.distributed.run", "torch.distributed.launch"]),
    _rule("accelerate", "job", ["{target}", "accelerate launch"], program=["accelerate"],
          subcommand=["launch"]),
    _rule("accelerate-module", "job", ["{target}", "accelerate launch"],
          module=["accelerate.commands.launch"]),
    _rule("deepspeed", "job", ["{target}", "DeepSpeed"], program=["deepspeed"]),
    _rule("axolotl", "job", ["Axolotl · {target}", "Axolotl"], program=["axolotl"]),
    _rule("axolotl-module", "job", ["Axolotl · {target}", "Axolotl"], module=["axolotl*"]),
    _rule("llamafactory", "job", ["LLaMA-Factory · {target}", "LLaMA-Factory"],
          program=["llamafactory-cli", "llamafactory", "lmf"]),
    _rule("nemo", "job", ["NeMo · {target}", "NeMo · {arg2}", "NeMo"], program=["nemo"]),
    _rule("nemo-module", "job", ["{script}", "NeMo · {module}"], module=["nemo*"]),
    _rule("lightning", "job", ["{target}", "Lightning"], program=["lightning"],
          subcommand=["run", "fit"]),
    _rule("training-script", "job", "{script}", script=TRAINING_SCRIPTS),
    _rule("training-args", "job", ["{entry}"],
          args=[r"(^|\s)--(epochs|num[_-]epochs|num[_-]train[_-]epochs|max[_-]epochs|n[_-]epochs|do[_-]train)\b"]),
    # --- catch-alls -----------------------------------------------------------------
    _rule("listening", "server", ["{script}", "{module}", "{program}"], listening=True, generic=True),
    _rule("interpreter-script", "program", ["{script}", "{module}", "{program}"], program=INTERPRETERS,
          runs=["script", "module", "code"], generic=True),
    _rule("terminal", "program", ["{script}", "{module}", "{program}"], tty=True, generic=True),
)
# fmt: on


class RuleTable:
    """An ordered table of rules; ``classify`` returns the first match."""

    def __init__(self, rules: Sequence[Rule], problems: Sequence[str] = ()) -> None:
        """Build a table; ``problems`` are messages about user rules that were skipped."""
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.problems: tuple[str, ...] = tuple(problems)

    def classify(self, facts: ProcessFacts, shape: CommandShape | None = None) -> Verdict | None:
        """The verdict of the first matching rule; ``None``: no rule (not an operation on its own)."""
        shape = shape or shape_of(facts)
        command_line = " ".join(facts.argv) if facts.argv else facts.comm
        for rule in self.rules:
            if rule.matches(facts, shape, command_line):
                values = placeholders(facts, shape)
                name = render_name(rule.name, values) or shape.entry or facts.comm or str(facts.pid)
                return Verdict(rule=rule, name=name)
        return None

    def find(self, rule_id: str) -> Rule | None:
        """The rule with this id."""
        return next((rule for rule in self.rules if rule.id == rule_id), None)


_RULE_KEYS = {field.name for field in dataclasses.fields(Rule)}
_LIST_KEYS = ("name", "program", "script", "path", "module", "subcommand", "args", "runs")


def _list_fields(entry: dict[str, Any], where: str) -> dict[str, tuple[str, ...]]:
    """The rule's list fields present in ``entry`` (a lone string is a list of one)."""
    fields: dict[str, tuple[str, ...]] = {}
    for key in _LIST_KEYS:
        if key not in entry:
            continue
        value = entry[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{where}: '{key}' must be a string or a list of strings")
        fields[key] = tuple(value)
    return fields


def _flag_fields(entry: dict[str, Any], where: str) -> dict[str, bool]:
    """The rule's true/false fields present in ``entry``."""
    fields: dict[str, bool] = {}
    for key in ("tty", "listening", "generic"):
        if key in entry:
            if not isinstance(entry[key], bool):
                raise ValueError(f"{where}: '{key}' must be true or false")
            fields[key] = entry[key]
    return fields


def rule_from_toml(entry: Any, index: int) -> Rule:
    """One user rule from a TOML table; raises ``ValueError`` naming the bad field."""
    where = f"rule #{index + 1}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a table")  # one error type for callers
    unknown = set(entry) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise ValueError(f"{where}: 'id' must be a non-empty string")
    where = f"rule {rule_id!r}"
    fields: dict[str, Any] = {"id": rule_id}
    rule_type = entry.get("type")
    if rule_type not in RULE_TYPES:
        raise ValueError(f"{where}: 'type' must be one of {', '.join(RULE_TYPES)}")
    fields["type"] = rule_type
    fields.update(_list_fields(entry, where))
    fields.update(_flag_fields(entry, where))
    if "port" in entry:
        port = entry["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"{where}: 'port' must be an integer between 1 and 65535")
        fields["port"] = port
    criteria = ("program", "script", "path", "module", "subcommand", "args", "runs", "tty", "listening")
    if not any(fields.get(key) not in (None, ()) for key in criteria):
        raise ValueError(f"{where}: needs at least one criterion ({', '.join(criteria)})")
    try:
        return Rule(**fields)
    except re.error as exc:
        raise ValueError(f"{where}: 'args' has an invalid regular expression: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def load_user_rules(path: Path | None) -> tuple[list[Rule], list[str]]:
    """Rules from the user's TOML file, and messages about what was skipped.

    A missing file is no rules; an unreadable or invalid file is logged and
    skipped (the built-in table still works); one bad rule skips only itself.
    """
    if path is None or not path.exists():
        return [], []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        message = f"{path}: cannot read rules: {exc}"
        logger.warning(message)
        return [], [message]
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        message = f"{path}: 'rule' must be an array of tables ([[rule]])"
        logger.warning(message)
        return [], [message]
    rules: list[Rule] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        try:
            rules.append(rule_from_toml(entry, index))
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
            logger.warning("%s: skipped: %s", path, exc)
    return rules, problems


def build_table(user_rules: Sequence[Rule] = (), problems: Sequence[str] = ()) -> RuleTable:
    """User rules first (a user rule with a built-in id replaces it), then the built-ins."""
    user_ids = {rule.id for rule in user_rules}
    builtin = [rule for rule in BUILTIN_RULES if rule.id not in user_ids]
    return RuleTable([*user_rules, *builtin], problems)


def load_table(path: Path | None) -> RuleTable:
    """The rule table with the user's file (if any) applied."""
    user_rules, problems = load_user_rules(path)
    return build_table(user_rules, problems)
