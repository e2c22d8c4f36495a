"""The other local user, played for real.

The dashboard runs as root (the owner of the GPUs' jobs); every attacker step runs as
uid 65534 through ``setpriv`` (``tests/support/other_user.py``): it reads what file
modes allow and talks to the dashboard over 127.0.0.1 like any program on the machine.
One test per attack of the issue, each asserting that the attack fails *and* that the
owner's normal use still works (positive control).

The dashboard's data folder sits in a world-traversable folder (as ``./.data`` does in
a project folder), pre-created 0755 by the test harness like a folder left by an older
version; the app has to tighten it. The page-framing test needs the built UI and uses
the shared ``full_dashboard``; everything else uses one backend for the module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import other_user
from tests.support.dashboard import ROOT, TEST_TOKEN, Dashboard, reap_launched, wait_until
from tests.support.reflex_socket import ReflexSocket
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.skipif(
    other_user.unavailable_reason() is not None,
    reason=f"no other local user to play: {other_user.unavailable_reason()}",
)

SESSION_COOKIE = "dgx_spark_session"
HYDRATE = "reflex___state____state.hydrate"
EVIL_ORIGIN = "http://evil.example"
# A body far over any sensible limit for a launch or a progress report.
HUGE_BODY_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass
class Stage:
    """The owner's dashboard and the folders around it."""

    dashboard: Dashboard
    base: Path
    """World-traversable (0755), like a project folder."""
    data: Path
    """The dashboard's data folder."""
    shared: Path
    """A 1777 folder (like /tmp) where the other user makes its own folder."""
    private: Path
    """The owner's 0700 folder: the server log, root-only secrets."""
    webhook: WebhookReceiver

    @property
    def port(self) -> int:
        """The dashboard's port."""
        return self.dashboard.port

    @property
    def origin(self) -> str:
        """The app's own origin (what its pages send)."""
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def stage() -> Iterator[Stage]:
    """The owner's backend with a webhook receiver, data in a world-traversable folder."""
    base = Path(tempfile.mkdtemp(prefix="dgx-local-user-"))
    base.chmod(0o755)
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    private = base / "owner"
    private.mkdir(mode=0o700)
    data = base / "data"
    with WebhookReceiver() as receiver:
        dashboard = Dashboard(
            data,
            log_path=private / "dashboard.log",
            env={
                "DGX_SPARK_WEBHOOK_URL": receiver.url,
                "DGX_SPARK_ENDED_TTL_SECONDS": "60",
                # Were Reflex to keep tab states on disk, it would write them at once, not 2 s later.
                "REFLEX_STATE_MANAGER_DISK_DEBOUNCE": "0",
            },
        )
        dashboard.start()
        try:
            yield Stage(dashboard, base, data, shared, private, receiver)
        finally:
            dashboard.stop()
            reap_launched(data)
            log_text = dashboard.log_tail(50_000_000)
            artifacts = ROOT / "test-artifacts"
            if artifacts.exists():
                shutil.copy(dashboard.log_path, artifacts / "dashboard-local-user.log")
            shutil.rmtree(base, ignore_errors=True)
        if unexpected := unexpected_tracebacks(log_text):
            pytest.fail(f"the dashboard logged {unexpected} traceback(s) besides the provoked one:\n{log_text[-6000:]}")


# The event test 1 makes fail on purpose: Reflex logs its traceback, which is fine.
PROVOKED_ERROR = "unexpected_argument"


def unexpected_tracebacks(log_text: str) -> int:
    """How many tracebacks in the log are not the one test 1 provokes."""
    blocks = log_text.split("Traceback (most recent call last)")[1:]
    return sum(1 for block in blocks if PROVOKED_ERROR not in block[:20_000])


# ----------------------------------------------------------------------------- owner helpers


def owner_request(
    stage: Stage, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | str | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request by the owner (the test process), redirects not followed: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", stage.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{stage.port}", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def browser_headers(stage: Stage, cookie: str | None = None) -> dict[str, str]:
    """What the app's own page sends with a same-origin request."""
    headers = {"Origin": stage.origin, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    if cookie:
        headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    return headers


def cookie_from(headers: http.client.HTTPMessage) -> str | None:
    """The session cookie's value set by a response, or None."""
    for value in headers.get_all("set-cookie") or []:
        name, _, rest = value.partition("=")
        if name.strip() == SESSION_COOKIE:
            return rest.split(";", 1)[0].strip()
    return None


def login_form(stage: Stage, token: str = TEST_TOKEN, query: str = "", next_path: str | None = None
               ) -> tuple[int, http.client.HTTPMessage, bytes]:
    """POST the login form as the browser does (same origin, form-encoded)."""
    fields = {"token": token}
    if next_path is not None:
        fields["next"] = next_path
    headers = {
        **browser_headers(stage),
        "Sec-Fetch-Mode": "navigate",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return owner_request(stage, "POST", "/login" + query, headers, urllib.parse.urlencode(fields))


def owner_login(stage: Stage) -> str:
    """Log the owner in with the token; the session cookie's value."""
    status, headers, body = login_form(stage)
    assert status == 303, (status, body[:500])
    cookie = cookie_from(headers)
    assert cookie, headers.items()
    return cookie


def authed_json(stage: Stage, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A JSON request with the bearer token."""
    return stage.dashboard.authed(method, path, body)


def launch(stage: Stage, name: str, command: list[str], env: dict[str, str] | None = None) -> str:
    """Launch a custom program with the token; its id, once it runs."""
    body: dict[str, Any] = {"template": "custom", "name": name, "type": "program", "command": command}
    if env:
        body["env"] = env
    status, reply = authed_json(stage, "POST", "/api/dgx/operations", body)
    assert status == 201, reply
    op_id = reply["data"]["id"]
    wait_until(
        lambda: stage.dashboard.get_json(f"/api/dgx/operations/{op_id}").get("data", {}).get("status")
        in ("running", "active"),
        timeout=60,
        message=f"{name} never ran",
    )
    return op_id


def stop(stage: Stage, op_id: str) -> None:
    """Stop a launched operation with the token."""
    status, reply = authed_json(stage, "POST", f"/api/dgx/operations/{op_id}/stop", {"force": True})
    assert status == 200, reply


def sampler_ticks(stage: Stage, count: int = 2) -> None:
    """Wait until the sampler has taken ``count`` more snapshots."""
    start = stage.dashboard.get_json("/api/health")["data"]["sequence"]
    wait_until(
        lambda: stage.dashboard.get_json("/api/health")["data"]["sequence"] >= start + count,
        timeout=60,
        message="the sampler stopped taking snapshots",
    )


def find_by_pid(stage: Stage, pid: int) -> dict[str, Any] | None:
    """The listed operation whose root process is ``pid``."""
    return next((op for op in stage.dashboard.operations() if op.get("pid") == pid), None)


def first_stream_event(stage: Stage, path: str) -> str:
    """What a log stream followed with the token sends first: its head and first ``data:`` event."""
    with socket.create_connection(("127.0.0.1", stage.port), timeout=20) as sock:
        sock.sendall(
            (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{stage.port}\r\n"
             f"Authorization: Bearer {TEST_TOKEN}\r\nAccept: text/event-stream\r\n\r\n").encode()
        )
        received = b""
        with contextlib.suppress(TimeoutError):  # a stream with nothing to send: what came so far
            while not re.search(rb"\ndata:[^\n]*\n", received):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    return received.decode("utf-8", "replace")


def write_attacker_script(folder: Path, name: str, body: str) -> Path:
    """Write a script into the other user's folder, as the other user."""
    path = folder / name
    other_user.run_as_other_user(
        "import sys; open(sys.argv[1], 'w').write(sys.stdin.read())", str(path), stdin=body
    )
    return path


# The other user's script: prints a line every 0.2 s; fails (traceback, exit 1) once
# ``fail-now`` appears next to it, so its end is news (a quiet short-lived end is not kept).
LOOP_SCRIPT = """
import itertools, os, sys, time
trigger = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "fail-now")
for i in itertools.count():
    print(f"attacker line {i}", flush=True)
    if os.path.exists(trigger):
        raise RuntimeError("the script failed on purpose")
    time.sleep(0.2)
"""


def fail_attacker_script(folder: Path, process: Any) -> None:
    """Make the other user's script fail (as the other user) and wait until it has exited."""
    other_user.run_as_other_user("import sys; open(sys.argv[1], 'w').close()", str(folder / "fail-now"))
    process.wait(60)


# ----------------------------------------------------------------------------- 1. the session cookie


def test_session_cookie_is_in_no_file_another_user_can_read(stage: Stage) -> None:
    """Attack 1: the owner logs in and uses the UI; the other user searches every file it can read."""
    cookie = owner_login(stage)
    status, _, _ = owner_request(stage, "GET", "/api/dgx/audit", browser_headers(stage, cookie))
    assert status == 200, "positive control: the fresh session cookie opens the audit log"

    # The browser's websocket carries the cookie: Reflex keeps the handshake's headers in the state.
    with ReflexSocket(stage.port, cookie=f"{SESSION_COOKIE}={cookie}") as sock:
        sock.emit(HYDRATE, {})
        assert "delta" in sock.next_update(60), "positive control: the logged-in tab hydrates"
        # An event that fails in the backend: Reflex logs the error (it must not log the headers).
        sock.emit(HYDRATE, {PROVOKED_ERROR: 1})
        assert "An error occurred" in json.dumps(sock.next_update(60))
    # Reflex's disk state manager (if the app uses it) writes at once here: no debounce (see ``stage``).

    log_text = stage.dashboard.log_tail(10_000_000)
    assert cookie not in log_text, "the session cookie was written to the server log"
    assert TEST_TOKEN not in log_text, "the access token was written to the server log"
    roots = [ROOT, stage.data, stage.base]
    hits, readable = other_user.files_containing(roots, [cookie])
    assert readable > 0, "positive control: the other user can read the project's public files"
    assert hits == [], f"the other user found the session cookie in {hits}"
    secrets_hits, _ = other_user.files_containing([stage.data, ROOT / ".states", ROOT / ".web"], [TEST_TOKEN])
    assert secrets_hits == [], f"the other user found the access token in {secrets_hits}"



def test_old_cookie_is_refused_after_logout(stage: Stage) -> None:
    """Attack 1, second half: a cookie copied before Log out is worth nothing after it."""
    cookie = owner_login(stage)
    status, _, _ = owner_request(stage, "GET", "/api/dgx/audit", browser_headers(stage, cookie))
    assert status == 200, "positive control: the cookie works while logged in"
    stolen = other_user.http_as_other_user(stage.port, "GET", "/api/dgx/audit", browser_headers(stage, cookie))
    assert stolen.status == 200, "positive control: a copied live cookie is a credential (hence attack 1)"

    status, _, body = owner_request(stage, "POST", "/logout", browser_headers(stage, cookie))
    assert status in (200, 303), (status, body[:300])

    replay = other_user.http_many_as_other_user(
        stage.port,
        [
            ("GET", "/api/dgx/audit", browser_headers(stage, cookie), None),
            (
                "POST",
                "/api/dgx/operations",
                {**browser_headers(stage, cookie), "Content-Type": "application/json"},
                json.dumps({"template": "custom", "name": "after-logout", "type": "program", "command": ["id"]}),
            ),
        ],
    )
    assert replay[0].status == 401, f"the old cookie still reads the audit log: {replay[0].status}"
    assert replay[1].status in (401, 403), f"the old cookie still launches: {replay[1].status}"
    assert not any(op["name"] == "after-logout" for op in stage.dashboard.operations())
    # The owner logs in again as usual.
    again = owner_login(stage)
    status, _, _ = owner_request(stage, "GET", "/api/dgx/audit", browser_headers(stage, again))
    assert status == 200


# ----------------------------------------------------------------------------- 2. a log file swapped for a symlink


def test_symlink_swap_on_a_discovered_log_never_reads_the_target(stage: Stage) -> None:
    """Attack 2: the other user's script is listed, then its stdout file becomes a symlink to a root-only file."""
    marker = f"ROOT-ONLY-SECRET-{uuid.uuid4().hex}"
    secret = stage.private / "root-only.txt"
    secret.write_text(f"{marker}\n{marker}\n{marker}\n")
    secret.chmod(0o600)
    folder = other_user.make_folder_as_other_user(stage.shared / f"attacker-{uuid.uuid4().hex[:8]}")
    script = write_attacker_script(folder, "nightly_report.py", LOOP_SCRIPT)
    out = folder / "nightly_report.out"

    with other_user.other_user_program(script, out, folder) as process:
        op = wait_until(lambda: find_by_pid(stage, process.pid), timeout=60, message="the script was never listed")
        op_id = op["id"]
        logs = f"/api/dgx/operations/{op_id}/logs?tail=3"

        # Positive control: the owner (token) reads the other user's log.
        wait_until(
            lambda: "attacker line" in json.dumps(authed_json(stage, "GET", logs)[1]),
            timeout=60,
            message="the owner never saw the script's output",
        )
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        # Another user's 0600 stdout file is not shown without the token.
        anonymous = other_user.http_as_other_user(stage.port, "GET", logs)
        assert "attacker line" not in anonymous.text, "another user's 0600 log was shown without the token"
        stream = f"/api/dgx/operations/{op_id}/logs/stream?offset=0"
        with other_user.streams_held_by_other_user(stage.port, stream, 1) as held:
            assert held["statuses"] != [200], "another user's 0600 log can be followed without the token"

        # The swap, as the other user: the file becomes a symlink to the root-only file.
        other_user.run_as_other_user(
            "import os, sys; os.symlink(sys.argv[2], sys.argv[1] + '.new'); os.replace(sys.argv[1] + '.new', sys.argv[1])",
            str(out),
            str(secret),
        )
        assert out.is_symlink()
        sampler_ticks(stage, 2)

        answers = [
            json.dumps(authed_json(stage, "GET", logs)),
            json.dumps(authed_json(stage, "GET", f"/api/dgx/operations/{op_id}/logs?offset=0")),
            json.dumps(authed_json(stage, "GET", f"/api/dgx/operations/{op_id}/logs/download")),
        ]
        tries = other_user.http_many_as_other_user(
            stage.port,
            [
                ("GET", logs, None, None),
                ("GET", f"/api/dgx/operations/{op_id}/logs?offset=0", None, None),
                ("GET", f"/api/dgx/operations/{op_id}/logs/download", None, None),
            ],
        )
        answers += [t.text for t in tries]
        answers.append(first_stream_event(stage, stream))
        leaked = [i for i, text in enumerate(answers) if marker in text]
        assert leaked == [], f"the root-only file came back through the log routes (answers {leaked})"
        fail_attacker_script(folder, process)

    # The script ends: its last lines go to events, history and the webhook.
    def ended() -> bool:
        _, history = authed_json(stage, "GET", "/api/dgx/history?limit=5000")
        return any(row.get("id") == op_id for row in history.get("data", []))

    try:
        wait_until(ended, timeout=60)
    except AssertionError:
        listed = stage.dashboard.get_json(f"/api/dgx/operations/{op_id}")
        events = authed_json(stage, "GET", f"/api/dgx/events?operation_id={op_id}")[1]
        raise AssertionError(f"the failed script never reached the history: {listed} events: {events}") from None
    wait_until(
        lambda: any(b.get("event", {}).get("operation_id") == op_id for b in stage.webhook.bodies),
        timeout=60,
        message="positive control: the webhook got the script's events",
    )
    _, events = authed_json(stage, "GET", f"/api/dgx/events?operation_id={op_id}&limit=1000")
    _, history = authed_json(stage, "GET", "/api/dgx/history?limit=5000")
    assert marker not in json.dumps(events), "the root-only file landed in the events"
    assert marker not in json.dumps(history), "the root-only file landed in the history"
    assert marker not in json.dumps(stage.webhook.bodies), "the root-only file was posted to the webhook"


# The other user's browser tab, spoken raw: open the Logs dialog of an operation and print every
# update until one holds the refusal or the output (or the server goes quiet for 60 s).
_OPEN_LOGS_AS_TAB = r"""
import json, sys
req = json.load(sys.stdin)
sys.path.insert(0, req["root"])
from tests.support.reflex_socket import ReflexSocket
seen = []
with ReflexSocket(req["port"]) as sock:
    sock.emit(req["hydrate"], {})
    seen.append(sock.next_update(60))
    sock.emit(req["open_logs"], {"op_id": req["op_id"], "name": "x"})
    while not any(word in json.dumps(seen) for word in ("another user", "attacker line")):
        try:
            seen.append(sock.next_update(60))
        except TimeoutError:
            break
print(json.dumps(seen))
"""


def test_logs_dialog_of_another_users_process_needs_a_login(stage: Stage) -> None:
    """Attack 2, the UI side: a tab that is not logged in cannot open another user's output; the owner's can."""
    from dgx_spark.state.control import ControlState

    open_logs = f"{ControlState.get_full_name()}.open_logs"
    folder = other_user.make_folder_as_other_user(stage.shared / f"ui-logs-{uuid.uuid4().hex[:8]}")
    script = write_attacker_script(folder, "evening_job.py", LOOP_SCRIPT)
    with other_user.other_user_program(script, folder / "evening_job.out", folder) as process:
        op = wait_until(lambda: find_by_pid(stage, process.pid), timeout=60, message="the script was never listed")
        wait_until(
            lambda: "attacker line" in json.dumps(authed_json(stage, "GET", f"/api/dgx/operations/{op['id']}/logs")[1]),
            timeout=60,
            message="the script's output never showed with the token",
        )
        # The other user's tab (no login), as the other user.
        seen = json.dumps(other_user.run_json_as_other_user(
            _OPEN_LOGS_AS_TAB,
            {"root": str(ROOT), "port": stage.port, "hydrate": HYDRATE, "open_logs": open_logs, "op_id": op["id"]},
        ))
        assert "runs as another user: log in to see its output" in seen, seen[-2000:]
        assert "attacker line" not in seen, "a tab without a login was shown another user's output"

        # Positive control: the owner's logged-in tab opens the same Logs dialog and sees the output.
        cookie = owner_login(stage)
        with ReflexSocket(stage.port, cookie=f"{SESSION_COOKIE}={cookie}") as sock:
            sock.emit(HYDRATE, {})
            sock.next_update(60)
            sock.emit(open_logs, {"op_id": op["id"], "name": "evening_job.py"})
            wait_until(
                lambda: "attacker line" in json.dumps(sock.next_update(60)),
                timeout=90,
                interval=0,
                message="the owner's logged-in tab never showed the output",
            )
        fail_attacker_script(folder, process)


# ----------------------------------------------------------------------------- 3. the data folder


def test_data_folder_is_private(stage: Stage) -> None:
    """Attack 3: the database (and -wal/-shm), run files and logs are not readable by the other user."""
    hf_secret = f"hf_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    op_id = launch(stage, "private-env", ["sleep", "600"], env={"HF_TOKEN": hf_secret})
    try:
        owner_login(stage)  # an audit row, a login session
        # Positive control: the owner's normal use works.
        assert any(op["id"] == op_id for op in stage.dashboard.operations())
        status, audit = authed_json(stage, "GET", "/api/dgx/audit")
        assert status == 200 and audit["data"], audit

        mode = stat.S_IMODE(stage.data.stat().st_mode)
        assert mode == 0o700, f"the data folder is {oct(mode)}"
        loose: list[str] = []
        paths: list[Path] = [stage.data]
        for folder, dirs, files in os.walk(stage.data):
            for name in dirs + files:
                path = Path(folder) / name
                paths.append(path)
                file_mode = stat.S_IMODE(path.lstat().st_mode)
                if not path.is_symlink() and file_mode & 0o077:
                    loose.append(f"{path.relative_to(stage.data)} {oct(file_mode)}")
        assert loose == [], f"readable by others in the data folder: {loose}"
        database = stage.data / "dgx_spark.db"
        assert database.exists()
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{database}{suffix}")
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path.name} is {oct(path.stat().st_mode)}"

        opened = other_user.openable_by_other_user(paths)
        assert opened == [], f"the other user opened {opened}"
        hits, _ = other_user.files_containing([stage.data], [hf_secret])
        assert hits == [], f"the other user read the launched job's HF_TOKEN in {hits}"
    finally:
        stop(stage, op_id)


# ----------------------------------------------------------------------------- 4. framing


FRAMING_HEADERS = {
    "x-frame-options": lambda v: v.strip().upper() == "DENY",
    "content-security-policy": lambda v: re.search(r"frame-ancestors\s+'none'", v) is not None,
    "x-content-type-options": lambda v: v.strip().lower() == "nosniff",
    "referrer-policy": lambda v: v.strip().lower() == "no-referrer",
}


def framing_problems(headers: http.client.HTTPMessage) -> list[str]:
    """Which anti-framing headers are missing or wrong (the login page's included)."""
    return [
        f"{name}: {headers.get(name)!r}"
        for name, good in FRAMING_HEADERS.items()
        if headers.get(name) is None or not good(headers.get(name, ""))
    ]


def test_api_answers_refuse_framing(stage: Stage) -> None:
    """Attack 4 (API side): every answer says it must not be framed, refusals included."""
    paths = ["/api/health", "/api/dgx/operations", "/api/dgx/audit", "/api/dgx/no-such-route", "/login"]
    problems = {}
    for path in paths:
        status, headers, _ = owner_request(stage, "GET", path)
        assert status < 500, (path, status)
        if found := framing_problems(headers):
            problems[path] = found
    assert problems == {}, problems


def test_pages_refuse_framing(full_dashboard: Dashboard) -> None:
    """Attack 4: ``/`` and ``/history`` carry X-Frame-Options DENY and CSP frame-ancestors 'none'."""
    problems = {}
    for start in ("/", "/history"):
        path = start
        for _ in range(3):  # /history may redirect to /history/: every answer carries the headers
            conn = http.client.HTTPConnection("127.0.0.1", full_dashboard.port, timeout=60)
            try:
                conn.request("GET", path, headers={"Host": f"127.0.0.1:{full_dashboard.port}"})
                resp = conn.getresponse()
                body = resp.read()
            finally:
                conn.close()
            if found := framing_problems(resp.headers):
                problems[path] = found
            location = resp.headers.get("location")
            if resp.status not in (301, 302, 307, 308) or not location:
                break
            path = urllib.parse.urlsplit(location).path
        assert resp.status == 200, (path, resp.status, body[:300])
        assert b"<html" in body.lower(), "positive control: the page itself is served"
    assert problems == {}, problems


# ----------------------------------------------------------------------------- 5. audit flood


def test_audit_flood_stays_bounded(stage: Stage) -> None:
    """Attack 5: 2000 refused no-cors POSTs do not push the owner's real entries out of the audit log."""
    _, before = authed_json(stage, "GET", "/api/dgx/audit?limit=1")
    last_id = before["data"][0]["id"] if before["data"] else 0
    op_id = launch(stage, f"owner-real-{uuid.uuid4().hex[:6]}", ["sleep", "600"])

    def newest(action: str) -> dict[str, Any] | None:
        _, audit = authed_json(stage, "GET", "/api/dgx/audit?limit=1000")
        return next(
            (e for e in audit["data"] if e.get("action") == action and e.get("outcome") == "allowed"
             and e["id"] > last_id and (action == "launch" or e.get("target") == op_id)),
            None,
        )

    real = wait_until(lambda: newest("launch"), timeout=30, message="the owner's launch was never audited")

    flood_body = json.dumps({"template": "custom", "name": "flood", "type": "program", "command": ["id"]})
    flood_headers = {
        "Origin": EVIL_ORIGIN,
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "no-cors",
        "Content-Type": "text/plain",
    }
    replies = other_user.http_many_as_other_user(
        stage.port, [("POST", "/api/dgx/operations", flood_headers, flood_body)] * 2000, keep=512
    )
    statuses = sorted({r.status for r in replies})
    assert set(statuses) <= {403, 429}, f"the flood got {statuses}"
    assert not any(op["name"] == "flood" for op in stage.dashboard.operations())

    # The owner's next action; the audit writer keeps order, so once it is there the flood is in too.
    stop(stage, op_id)
    wait_until(lambda: newest("stop"), timeout=60, message="the owner's stop was never audited")
    _, view = authed_json(stage, "GET", "/api/dgx/audit")
    assert any(e["id"] == real["id"] for e in view["data"]), "the owner's launch fell out of the audit view"
    _, recent = authed_json(stage, "GET", "/api/dgx/audit?limit=1000")
    flood_rows = [e for e in recent["data"] if e["id"] > real["id"] and e.get("outcome") == "refused"]
    assert len(flood_rows) <= 100, f"{len(flood_rows)} audit rows from 2000 refused requests"


# ----------------------------------------------------------------------------- 6. the smaller ones


def test_idle_log_streams_are_capped(stage: Stage) -> None:
    """Attack 6: many idle log streams get 429 past the cap, and /api/health still answers."""
    op_id = launch(stage, "stream-target", ["sleep", "600"])
    path = f"/api/dgx/operations/{op_id}/logs/stream"
    try:
        with other_user.streams_held_by_other_user(stage.port, path, 80) as held:
            statuses = held["statuses"]
            assert 200 in statuses, "positive control: a log can be followed"
            assert 429 in statuses, f"80 idle streams, none refused: {sorted(set(statuses))}"
            assert statuses.count(200) <= 64
            refusal = json.loads(held["refusals"][0])
            assert refusal["success"] is False and refusal["error"], refusal
            status, _, body = owner_request(stage, "GET", "/api/health")
            assert status == 200, body[:300]

        # Once they are gone the owner follows the log again.
        def owner_stream_status() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", stage.port, timeout=60)
            try:
                conn.request("GET", path, headers={"Host": f"127.0.0.1:{stage.port}",
                                                   "Authorization": f"Bearer {TEST_TOKEN}"})
                return conn.getresponse().status == 200
            finally:
                conn.close()

        wait_until(owner_stream_status, timeout=60, message="the streams' slots were never freed")
    finally:
        stop(stage, op_id)


NEXT_VALUES = [
    "/\t/evil.example",
    "/%09/evil.example",
    "//evil.example",
    "/\\evil.example",
    "http://evil.example/",
    "/ /evil.example",
    "/\r\nSet-Cookie: injected=1",
    "/%0d%0aSet-Cookie:%20injected=1",
    "/\x00/evil.example",
    "javascript:alert(1)",
]


def safe_location(value: str | None) -> bool:
    """A same-origin path a browser cannot read as another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return False
    return not any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in value)


@pytest.mark.parametrize("next_value", NEXT_VALUES, ids=[repr(v) for v in NEXT_VALUES])
def test_login_next_is_a_same_origin_path(stage: Stage, next_value: str) -> None:
    """Attack 6: ``next`` never leads off-site, never injects a header, never gives a 500."""
    query = "?" + urllib.parse.urlencode({"next": next_value})
    for answer in (login_form(stage, query=query), login_form(stage, next_path=next_value)):
        status, headers, body = answer
        assert status == 303, (status, body[:500])
        location = headers.get("location")
        assert safe_location(location), f"login redirected to {location!r}"
        assert headers.get("set-cookie", "").find("injected") < 0
    status, _, page = owner_request(stage, "GET", "/login" + query)
    assert status == 200, (status, page[:300])
    assert b"evil.example" not in page


def test_login_next_positive_control(stage: Stage) -> None:
    """A same-origin ``next`` is kept."""
    status, headers, _ = login_form(stage, query="?next=%2Fhistory%3Ftype%3Djob")
    assert (status, headers.get("location")) == (303, "/history?type=job")


def test_login_throttle_counts_only_failures(stage: Stage) -> None:
    """Attack 6: 50 wrong tokens from the other user do not lock the owner out, not even for a moment.

    Every local user is 127.0.0.1: the failure budget slows down wrong tokens only, and the
    right token logs in while the flood lasts (docs/security.md).
    """
    wrong = [
        ("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"},
         urllib.parse.urlencode({"token": f"wrong-{i:04d}-{uuid.uuid4().hex}"}))
        for i in range(50)
    ]
    replies = other_user.http_many_as_other_user(stage.port, wrong, keep=256)
    statuses = [r.status for r in replies]
    assert set(statuses) <= {401, 429}, sorted(set(statuses))
    assert 429 in statuses, "50 wrong tokens in a row were never throttled"
    status, headers, body = login_form(stage)
    assert status == 303, f"the owner cannot log in right after another user's failures: {status} {body[:200]!r}"
    assert cookie_from(headers)
    # Logging in again and again costs nothing.
    for _ in range(15):
        status, _, _ = login_form(stage)
        assert status == 303


def test_webhook_text_neutralises_mentions(stage: Stage) -> None:
    """Attack 6: a process name with chat mentions and a link reaches the webhook as data, not as a ping."""
    name = "<!channel> @everyone re-login at http:__evil.example.py"
    folder = other_user.make_folder_as_other_user(stage.shared / f"mention-{uuid.uuid4().hex[:8]}")
    script = write_attacker_script(folder, name, LOOP_SCRIPT)
    with other_user.other_user_program(script, folder / "out.log", folder) as process:
        op = wait_until(lambda: find_by_pid(stage, process.pid), timeout=60, message="the script was never listed")
        fail_attacker_script(folder, process)
    op_id = op["id"]
    bodies = wait_until(
        lambda: [b for b in stage.webhook.bodies if b.get("event", {}).get("operation_id") == op_id
                 and b["event"].get("kind") in ("stopped", "failed", "completed")],
        timeout=60,
        message="positive control: the script's end was never posted",
    )
    for body in bodies:
        assert body["event"]["name"] == name, "the name is carried as data, unchanged"
        for field in ("text", "content"):
            text = body.get(field)
            if not isinstance(text, str):
                continue
            lowered = text.lower()
            for mention in ("<!channel>", "<!here>", "<!everyone>", "@everyone", "@here", "@channel"):
                assert mention not in lowered, f"{field} carries {mention!r}: {text!r}"
            outside_code = re.sub(r"```.*?```|`[^`]*`", "", text, flags=re.DOTALL)
            assert "evil.example" not in outside_code, f"{field} carries a live link: {text!r}"


def post_early_answer(stage: Stage, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST a large body; read the answer even when the server answers and closes before the body is sent."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{stage.port}", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", stage.port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(body)
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1]) if status_line.startswith(b"HTTP/") else 0
    return status, rest.partition(b"\r\n\r\n")[2]


def test_oversized_launch_and_progress_bodies_are_413(stage: Stage) -> None:
    """Attack 6: launch and progress bodies over the limit get 413 (with the token too)."""
    padding = "a" * HUGE_BODY_BYTES
    big_launch = json.dumps(
        {"template": "custom", "name": "big", "type": "program", "command": ["true"], "env": {"HF_HOME": padding}}
    )
    big_progress = json.dumps({"pid": os.getpid(), "progress": 0.5, "message": padding})
    auth = {"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"}
    for path, body in (("/api/dgx/operations", big_launch), ("/api/dgx/progress", big_progress)):
        status, raw = post_early_answer(stage, path, auth, body.encode())
        assert status == 413, (path, status, raw[:300])
        reply = json.loads(raw)
        assert reply["success"] is False, reply
    # Positive control: a normal launch still works.
    op_id = launch(stage, "normal-size", ["sleep", "600"])
    stop(stage, op_id)


def test_api_docs_load_nothing_from_elsewhere(stage: Stage) -> None:
    """Attack 6: /api/docs is off, or served from the app's own files (no CDN)."""
    status, _, body = owner_request(stage, "GET", "/api/docs")
    if status == 404:
        return
    assert status == 200, (status, body[:300])
    external = re.findall(rb"""(?:src|href)\s*=\s*["'](https?:)?//[^"']+""", body)
    assert external == [], f"/api/docs loads {external}"


def test_star_in_allowed_origins_is_refused(stage: Stage) -> None:
    """Attack 6: ``DGX_SPARK_ALLOWED_ORIGINS=*`` is refused at start, or never lets a foreign origin in."""
    data = stage.private / "star-origins"
    dashboard = Dashboard(data, env={"DGX_SPARK_ALLOWED_ORIGINS": "*"}, log_path=stage.private / "star.log")
    try:
        try:
            dashboard.start(timeout=120)
        except RuntimeError:
            assert "DGX_SPARK_ALLOWED_ORIGINS" in dashboard.log_tail(), "refused, but the log does not say why"
            return
        conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=60)
        try:
            conn.request("OPTIONS", "/api/dgx/operations", headers={
                "Host": f"127.0.0.1:{dashboard.port}",
                "Origin": EVIL_ORIGIN,
                "Access-Control-Request-Method": "POST",
            })
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        allowed = resp.headers.get("access-control-allow-origin")
        assert allowed not in ("*", EVIL_ORIGIN), f"CORS allows {allowed!r}"
        status, reply = dashboard.request(
            "POST", "/api/dgx/operations",
            {"template": "custom", "name": "x", "type": "program", "command": ["id"]},
            {"Origin": EVIL_ORIGIN},
        )
        assert status == 403, (status, reply)
        with pytest.raises(ConnectionRefusedError):
            ReflexSocket(dashboard.port, origin=EVIL_ORIGIN).close()
    finally:
        dashboard.stop()
