"""Play another, unprivileged local user for real: every step runs as uid 65534 in a child.

The test process runs as root (it owns the dashboard, as the GPU owner would); an
attacker step is a small Python program run through ``setpriv --reuid=65534
--regid=65534 --clear-groups`` with an empty environment, so it has exactly the
rights any other account on the machine has: it reads what the file modes allow and
talks to the dashboard over 127.0.0.1 like any local program.

    reason = unavailable_reason()          # None where another user can be played
    hits = files_containing([ROOT], [b"secret"])
    reply = http_as_other_user(port, "GET", "/api/dgx/operations")
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

OTHER_UID = 65534
OTHER_GID = 65534
# The attacker runs the same interpreter as the tests (readable by everyone), isolated (-I).
PYTHON = sys.executable
# Nothing of the test process's environment (tokens, settings) reaches the other user.
OTHER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
# Folders not worth reading: the virtualenv, git objects and JavaScript packages.
SKIP_DIRS = frozenset({".venv", ".git", "node_modules", "__pycache__", ".ruff_cache", ".pytest_cache"})


def as_other_user(argv: Sequence[str]) -> list[str]:
    """``argv`` run as uid/gid 65534 with no supplementary groups."""
    return [
        shutil.which("setpriv") or "setpriv",
        f"--reuid={OTHER_UID}",
        f"--regid={OTHER_GID}",
        "--clear-groups",
        *argv,
    ]


@functools.cache
def unavailable_reason() -> str | None:
    """Why another local user cannot be played here, or None when it can."""
    if os.geteuid() != 0:
        return "the tests do not run as root, so they cannot switch to another uid"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    try:
        pwd.getpwuid(OTHER_UID)
    except KeyError:
        return f"this machine has no user with uid {OTHER_UID}"
    try:
        done = subprocess.run(
            as_other_user([PYTHON, "-I", "-c", "import os; print(os.getuid(), os.getgid(), os.getgroups())"]),
            capture_output=True,
            text=True,
            timeout=60,
            env=OTHER_ENV,
            cwd="/",
            check=False,
        )
    except OSError as exc:
        return f"setpriv failed: {exc}"
    if done.returncode != 0 or done.stdout.split()[:2] != [str(OTHER_UID), str(OTHER_GID)]:
        return f"setpriv did not switch to uid {OTHER_UID}: {done.stdout.strip()} {done.stderr.strip()[-300:]}"
    return None


def run_as_other_user(
    code: str, *args: str, stdin: str | None = None, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` (with ``sys.argv[1:] == args``) as the other user; raise if it fails."""
    done = subprocess.run(
        as_other_user([PYTHON, "-I", "-c", code, *args]),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=OTHER_ENV,
        cwd="/",
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the other user's step failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def run_json_as_other_user(code: str, request: Any, timeout: float = 300.0) -> Any:
    """Run ``code`` as the other user with ``request`` as JSON on stdin; its stdout parsed as JSON."""
    return json.loads(run_as_other_user(code, stdin=json.dumps(request), timeout=timeout).stdout)


# ----------------------------------------------------------------------------- files

_FILES_CONTAINING = r"""
import json, os, sys
req = json.load(sys.stdin)
needles = [n.encode() for n in req["needles"]]
skip = set(req["skip"])
hits, readable = [], 0
def look(path):
    global readable
    try:
        with open(path, "rb") as handle:
            data = handle.read(req["max_bytes"])
    except OSError:
        return
    readable += 1
    for needle in needles:
        if needle in data:
            hits.append(path)
            return
for root in req["roots"]:
    if os.path.isfile(root):
        look(root)
        continue
    for folder, dirs, files in os.walk(root, onerror=lambda err: None):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            look(os.path.join(folder, name))
print(json.dumps({"hits": hits, "readable": readable}))
"""


def files_containing(
    roots: Sequence[Path], needles: Sequence[str], *, max_bytes: int = 64 * 1024 * 1024
) -> tuple[list[str], int]:
    """As the other user, read every file under ``roots`` it can; (files holding a needle, files read)."""
    reply = run_json_as_other_user(
        _FILES_CONTAINING,
        {"roots": [str(r) for r in roots], "needles": list(needles), "skip": sorted(SKIP_DIRS), "max_bytes": max_bytes},
    )
    return reply["hits"], reply["readable"]


_OPENABLE = r"""
import json, os, sys
opened = []
for path in json.load(sys.stdin):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            os.close(os.open(path, os.O_RDONLY))
    except OSError:
        continue
    opened.append(path)
print(json.dumps(opened))
"""


def openable_by_other_user(paths: Sequence[Path]) -> list[str]:
    """The paths the other user can open for reading (folders: list)."""
    return run_json_as_other_user(_OPENABLE, [str(p) for p in paths])


def make_folder_as_other_user(path: Path, mode: int = 0o700) -> Path:
    """Create a folder owned by the other user (its parent must let it)."""
    run_as_other_user("import os, sys; os.mkdir(sys.argv[1], int(sys.argv[2], 8))", str(path), oct(mode)[2:])
    return path


# ----------------------------------------------------------------------------- HTTP


@dataclasses.dataclass
class Reply:
    """One HTTP answer the other user got."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        """The body parsed as JSON (None when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", "replace")


_HTTP = r"""
import base64, http.client, json, sys
req = json.load(sys.stdin)
out = []
conn = None
for one in req["requests"]:
    body = base64.b64decode(one["body"]) if one.get("body") is not None else None
    for attempt in range(2):
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", req["port"], timeout=60)
        try:
            conn.putrequest(one["method"], one["path"], skip_host=True, skip_accept_encoding=True)
            headers = {"Host": "127.0.0.1:%d" % req["port"], **one.get("headers", {})}
            if body is not None:
                headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            out.append({"status": resp.status, "headers": resp.getheaders(),
                        "body": base64.b64encode(data[: req["keep"]]).decode()})
            if resp.will_close:
                conn.close()
                conn = None
            break
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            conn = None
            if attempt:
                out.append({"status": 0, "headers": [], "body": base64.b64encode(repr(exc).encode()).decode()})
print(json.dumps(out))
"""


def _request_spec(
    method: str, path: str, headers: dict[str, str] | None, body: bytes | str | None
) -> dict[str, Any]:
    raw = body.encode() if isinstance(body, str) else body
    return {
        "method": method,
        "path": path,
        "headers": dict(headers or {}),
        "body": None if raw is None else base64.b64encode(raw).decode(),
    }


def http_many_as_other_user(
    port: int,
    requests: Sequence[tuple[str, str, dict[str, str] | None, bytes | str | None]],
    *,
    keep: int = 64 * 1024,
) -> list[Reply]:
    """Send ``(method, path, headers, body)`` requests in order over one keep-alive connection.

    Redirects are not followed; each body is kept up to ``keep`` bytes; a request the
    server dropped twice gives status 0.
    """
    reply = run_json_as_other_user(
        _HTTP, {"port": port, "keep": keep, "requests": [_request_spec(*r) for r in requests]}, timeout=600
    )
    return [
        Reply(r["status"], [(k, v) for k, v in r["headers"]], base64.b64decode(r["body"])) for r in reply
    ]


def http_as_other_user(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
) -> Reply:
    """One HTTP request to the dashboard made by the other user."""
    return http_many_as_other_user(port, [(method, path, headers, body)])[0]


_STREAMS = r"""
import json, socket, sys
req = json.load(sys.stdin.readline() and __import__("io").StringIO(sys.argv[1]))
"""

_STREAMS = r"""
import json, socket, sys
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
held, statuses, bodies = [], [], []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n"
                  "Connection: close\r\n\r\n" % (path, port)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    try:
        status = int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    statuses.append(status)
    if status == 200:
        held.append(sock)
    else:
        # A refusal's body: Content-Length bytes, or up to the close.
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 65536)
        sock.settimeout(10)
        try:
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        except OSError:
            pass
        bodies.append(body.decode("utf-8", "replace"))
        sock.close()
print(json.dumps({"statuses": statuses, "refusals": bodies[:3]}), flush=True)
sys.stdin.read()  # hold the open streams until the test closes our stdin
for sock in held:
    sock.close()
"""


@contextlib.contextmanager
def streams_held_by_other_user(port: int, path: str, count: int) -> Iterator[dict[str, Any]]:
    """Open ``count`` idle streams of ``path`` as the other user and hold them for the ``with`` block.

    Yields ``{"statuses": [...], "refusals": [first refusal bodies]}``.
    """
    process = subprocess.Popen(
        as_other_user([PYTHON, "-I", "-c", _STREAMS, str(port), path, str(count)]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=OTHER_ENV,
        cwd="/",
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the other user's streams failed: {process.stderr.read() if process.stderr else ''}")
        yield json.loads(line)
    finally:
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


# ----------------------------------------------------------------------------- processes


@contextlib.contextmanager
def other_user_program(script: Path, stdout_file: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python3 script`` as the other user, stdout and stderr into ``stdout_file`` (its own, 0600).

    The shell ``exec``s the interpreter, so the yielded process is the script itself.
    Its whole process group is killed on exit.
    """
    command = 'umask 077; exec "$0" -u "$1" > "$2" 2>&1'
    process = subprocess.Popen(
        as_other_user(["/bin/sh", "-c", command, "python3", str(script), str(stdout_file)]),
        cwd=cwd,
        env=OTHER_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
