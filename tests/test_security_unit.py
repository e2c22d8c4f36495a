"""Unit tests of the security building blocks: token, validators, throttle, policy helpers, audit, bind."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from dgx_spark import settings as settings_module
from dgx_spark.api.actor import describe_control
from dgx_spark.api.app import create_api
from dgx_spark.database import make_engine
from dgx_spark.security import audit as audit_module
from dgx_spark.security import sessions
from dgx_spark.security import token as tokens
from dgx_spark.security.audit import AuditEntry, AuditLog, list_audit, record_audit
from dgx_spark.security.middleware import (
    bearer_token,
    host_name,
    is_cross_origin,
    is_loopback_client,
)
from dgx_spark.security.throttle import Busy, InFlight, RateLimiter
from dgx_spark.security.validation import (
    InvalidArgument,
    pid_max,
    protected_pids,
    validate_bool,
    validate_choice,
    validate_env,
    validate_operation_id,
    validate_pid,
    validate_port,
    validate_str_list,
    validate_text,
)
from tests.support.dashboard import wait_until

# ----------------------------------------------------------------------------- token


def test_token_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    token = tokens.load_or_create_token(tmp_path, env={})
    path = tmp_path / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token
    assert len(token) >= 43  # 32 random bytes, base64url
    # The next start reads the same token.
    assert tokens.load_or_create_token(tmp_path, env={}) == token


def test_loosened_token_file_is_tightened(tmp_path: Path) -> None:
    token = tokens.load_or_create_token(tmp_path, env={})
    os.chmod(tmp_path / "token", 0o644)
    assert tokens.load_or_create_token(tmp_path, env={}) == token
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600


def test_env_token_overrides_and_short_one_is_refused(tmp_path: Path) -> None:
    assert tokens.load_or_create_token(tmp_path, env={"DGX_SPARK_TOKEN": "x" * 20}) == "x" * 20
    assert not (tmp_path / "token").exists()
    with pytest.raises(tokens.TokenError, match="DGX_SPARK_TOKEN"):
        tokens.load_or_create_token(tmp_path, env={"DGX_SPARK_TOKEN": "short"})


def test_token_comparison() -> None:
    token = "t" * 40
    assert tokens.token_matches(token, token)
    assert not tokens.token_matches("t" * 39, token)
    assert not tokens.token_matches("", token)
    assert not tokens.token_matches(None, token)
    assert not tokens.token_matches(["t" * 40], token)  # type: ignore[arg-type]
    assert not tokens.token_matches("é" * 40, token)


def test_parse_cookies() -> None:
    assert tokens.parse_cookies('x=1; dgx_spark_session="abc"; y=2') == {"x": "1", "dgx_spark_session": "abc", "y": "2"}
    assert tokens.parse_cookies(None) == {}
    assert tokens.parse_cookies("garbage") == {}


def test_login_code_works_once(tmp_path: Path) -> None:
    code = tokens.issue_login_code(tmp_path)
    assert tokens.consume_login_code(code, tmp_path)
    assert not tokens.consume_login_code(code, tmp_path)
    assert not tokens.consume_login_code("made-up", tmp_path)
    assert not tokens.consume_login_code("", tmp_path)
    # Only a hash of the code is on disk.
    stored = list((tmp_path / "login-codes").iterdir())
    assert all(code not in p.name for p in stored)


def test_login_code_used_once_across_threads(tmp_path: Path) -> None:
    code = tokens.issue_login_code(tmp_path)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(tokens.consume_login_code(code, tmp_path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_cookie_header_flags() -> None:
    header = sessions.session_cookie_header("value")
    assert header.startswith("dgx_spark_session=value;")
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    assert f"Max-Age={30 * 86400}" in header


# ----------------------------------------------------------------------------- validators


@pytest.mark.parametrize("bad", ["1", "1234", [1], [1234], True, False, None, 1.0, 12.5, -1, 0, 1, 2**63, {"pid": 5}])
def test_validate_pid_rejects(bad: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_pid(bad)
    assert info.value.field == "pid"
    assert str(info.value).startswith("pid: ")
    assert isinstance(info.value, ValueError)


def test_validate_pid_rejects_beyond_pid_max_and_self_and_ancestors() -> None:
    with pytest.raises(InvalidArgument):
        validate_pid(pid_max() + 1)
    with pytest.raises(InvalidArgument, match="dashboard"):
        validate_pid(os.getpid())
    with pytest.raises(InvalidArgument, match="dashboard"):
        validate_pid(os.getppid())
    assert os.getppid() in protected_pids() and os.getpid() in protected_pids()


def test_validate_pid_accepts_a_real_child() -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert validate_pid(child.pid) == child.pid
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("bad", ["", " ", "a\nb", "a\rb", "a\x00b", "x" * 257, 5, None, ["a"], "tab\there"])
def test_validate_text_rejects(bad: object) -> None:
    with pytest.raises(InvalidArgument, match=r"^name: "):
        validate_text(bad, "name")


def test_validate_text_accepts_and_multiline() -> None:
    assert validate_text("ComfyUI · 8188", "name") == "ComfyUI · 8188"
    assert validate_text("a\nb", "note", multiline=True) == "a\nb"
    assert validate_text("", "note", allow_empty=True) == ""


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "op 1", "a" * 65, 7, None, ["op-1"], "op-1\n", "-op"])
def test_validate_operation_id_rejects(bad: object) -> None:
    with pytest.raises(InvalidArgument, match=r"^operation_id: "):
        validate_operation_id(bad)


def test_validate_operation_id_accepts() -> None:
    assert validate_operation_id("op-1234-170000000000") == "op-1234-170000000000"
    assert validate_operation_id("launch-7f3a.b_c:1") == "launch-7f3a.b_c:1"


def test_other_validators() -> None:
    assert validate_bool(True, "force") is True
    for bad in (1, 0, "true", None):
        with pytest.raises(InvalidArgument, match=r"^force: "):
            validate_bool(bad, "force")
    assert validate_port(8080) == 8080
    for bad in (0, 65536, "80", True):
        with pytest.raises(InvalidArgument, match=r"^port: "):
            validate_port(bad)
    assert validate_choice("job", "type", ("server", "job")) == "job"
    with pytest.raises(InvalidArgument, match=r"^type: "):
        validate_choice("daemon", "type", ("server", "job"))
    assert validate_str_list(["python", ";id", "$(id)"], "command") == ["python", ";id", "$(id)"]
    with pytest.raises(InvalidArgument, match=r"^command\[1\]: "):
        validate_str_list(["python", "a\x00"], "command")
    with pytest.raises(InvalidArgument, match=r"^command: "):
        validate_str_list("python x.py", "command")
    assert validate_env({"CUDA_VISIBLE_DEVICES": "0"}, allowed={"CUDA_VISIBLE_DEVICES"}) == {"CUDA_VISIBLE_DEVICES": "0"}
    with pytest.raises(InvalidArgument, match=r"^env\.LD_PRELOAD: "):
        validate_env({"LD_PRELOAD": "/x.so"}, allowed={"CUDA_VISIBLE_DEVICES"})
    with pytest.raises(InvalidArgument):
        validate_env({"BAD NAME": "1"})


# ----------------------------------------------------------------------------- throttle


def test_rate_limiter_bursts_then_refills() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", now=100.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", now=100.0)  # per client
    assert not limiter.allow("a", now=100.2)
    assert limiter.allow("a", now=100.6)  # 0.5 s at 2/s refills one


def test_in_flight_one_at_a_time_and_reentrant() -> None:
    registry = InFlight()
    with registry.hold("op-1"):
        assert registry.busy("op-1")
        assert not registry.try_acquire("op-1")
        # The same context may hold it again (the REST layer holds it, then the handler).
        with registry.hold("op-1"):
            assert registry.busy("op-1")
        assert registry.busy("op-1")
        with registry.hold("op-2"):
            pass
    assert not registry.busy("op-1")

    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            with registry.hold("op-3"):
                pass
        except Busy as exc:
            errors.append(exc)

    with registry.hold("op-3"):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1


# ----------------------------------------------------------------------------- policy helpers


def _scope(**headers: str) -> dict[str, object]:
    return {"type": "http", "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def test_policy_helpers() -> None:
    assert host_name("127.0.0.1:3000") == "127.0.0.1"
    assert host_name("[::1]:3000") == "::1"
    assert host_name("LocalHost") == "localhost"
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None
    assert is_loopback_client("127.0.0.1") and is_loopback_client("::1") and is_loopback_client("::ffff:127.0.0.1")
    assert not is_loopback_client("10.0.0.5") and not is_loopback_client("unknown")
    # A refused request is named by the route that would serve it (the routes' own table, no copy).
    describe = describe_control(create_api().router.routes)

    def control_action(method: str, path: str) -> tuple[str, str | None] | None:
        return describe({"type": "http", "method": method, "path": path, "root_path": ""})

    assert control_action("POST", "/api/dgx/operations") == ("launch", None)
    assert control_action("POST", "/api/dgx/operations/op-1-2/stop") == ("stop", "op-1-2")
    assert control_action("DELETE", "/api/dgx/operations/op-1-2") == ("remove", "op-1-2")
    assert control_action("POST", "/api/dgx/nodes/n1/operations/op-1-2/stop") == ("stop", "n1/op-1-2")
    assert control_action("DELETE", "/api/dgx/nodes/n1") == ("node_remove", "node:n1")
    assert control_action("GET", "/api/dgx/operations") is None
    assert control_action("PUT", "/api/dgx/no-such-route") is None


def test_cross_origin_detection() -> None:
    port = settings_module.settings.port
    assert is_cross_origin(_scope(origin="http://evil.example"))
    assert is_cross_origin(_scope(origin="null"))
    assert is_cross_origin(_scope(origin=f"http://127.0.0.1:{port + 1}"))
    assert is_cross_origin(_scope(sec_fetch_site="cross-site"))
    assert is_cross_origin(_scope(sec_fetch_site="same-site"))
    assert not is_cross_origin(_scope(origin=f"http://127.0.0.1:{port}", sec_fetch_site="same-origin"))
    assert not is_cross_origin(_scope(origin=f"http://localhost:{port}"))
    assert not is_cross_origin(_scope())


# ----------------------------------------------------------------------------- bind


def test_non_loopback_bind_without_auth_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DGX_SPARK_AUTH", raising=False)
    for host in ("0.0.0.0", "::", "192.168.1.20", "spark.local"):
        monkeypatch.setenv("DGX_SPARK_HOST", host)
        with pytest.raises(ValueError, match="DGX_SPARK_AUTH=required"):
            settings_module.load_settings()
    monkeypatch.setenv("DGX_SPARK_AUTH", "required")
    assert settings_module.load_settings().auth_required
    monkeypatch.setenv("DGX_SPARK_HOST", "127.0.0.1")
    monkeypatch.setenv("DGX_SPARK_AUTH", "sometimes")
    with pytest.raises(ValueError, match="DGX_SPARK_AUTH must be one of"):
        settings_module.load_settings()
    monkeypatch.delenv("DGX_SPARK_AUTH")
    loaded = settings_module.load_settings()
    assert loaded.auth == "local" and not loaded.auth_required


# ----------------------------------------------------------------------------- audit


def test_audit_rows_are_written_and_listed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    SQLModel.metadata.create_all(engine, tables=[AuditEntry.__table__])  # type: ignore[attr-defined]
    record_audit("stop", "allowed", target="op-1-2", client="127.0.0.1", status=200, engine=engine)
    record_audit("stop", "refused", target="op-1-2", client="10.0.0.9", status=401, detail="no token", engine=engine)
    record_audit("launch", "failed", client="127.0.0.1", status=422, via="ui",
                 detail="command: python x --token hunter2hunter2", engine=engine)
    rows = list_audit(engine=engine)
    assert [r.action for r in rows] == ["launch", "stop", "stop"]
    assert rows[0].detail is not None and "hunter2" not in rows[0].detail
    assert [r.outcome for r in list_audit(engine=engine, action="stop")] == ["refused", "allowed"]
    api = rows[1].to_api()
    assert api["at"].endswith("Z") and api["client"] == "10.0.0.9" and api["target"] == "op-1-2"


def test_the_audit_log_writes_in_its_own_thread_until_closed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    SQLModel.metadata.create_all(engine, tables=[AuditEntry.__table__])  # type: ignore[attr-defined]
    log = AuditLog(engine, retention_seconds=7 * 86400)
    log.record_soon("stop", "allowed", target="op-1-2", client="127.0.0.1", status=200)
    log.record_soon("stop", "refused", target="op-1-2", client="10.0.0.9", status=401)
    log.record_soon("stop", "refused", target="op-1-2", client="10.0.0.9", status=401)  # a repeat: counted
    log.close()  # writes what it holds and the count of the refusals not written one by one
    assert not [t for t in threading.enumerate() if t.name.startswith("dgx-audit")]
    log.record_soon("start", "allowed", target="op-1-2", client="127.0.0.1", status=200)  # closed: written here
    assert [r.action for r in log.entries()] == ["start", "refusals", "stop", "stop"]


def test_an_audit_entry_waits_for_a_locked_database_past_one_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop's audit row is not dropped when the database stays locked longer than one attempt's wait."""
    import sqlite3
    import time

    from dgx_spark.health import health

    monkeypatch.setattr(audit_module, "AUDIT_WAIT_SECONDS", 0.3)
    path = tmp_path / "audit.db"
    engine = make_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine, tables=[AuditEntry.__table__])  # type: ignore[attr-defined]
    log = AuditLog(engine, retention_seconds=7 * 86400)
    health.report_ok("database")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        asked = time.time()
        log.record_soon("stop", "allowed", target="op-1-2", client="127.0.0.1", status=200)
        wait_until(lambda: health.is_degraded("database"), 30)
        first = health.state("database").last_error_at or 0.0
        # Several attempts have failed (each waits 0.3 s and SQLite 2 s per try): the entry still waits.
        wait_until(lambda: (health.state("database").last_error_at or 0.0) > first + 2.5, 60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    rows = wait_until(lambda: list_audit(engine=engine), 30, message="the audit entry was dropped")
    assert [(r.action, r.target) for r in rows] == [("stop", "op-1-2")]
    assert asked <= rows[0].at <= first  # the time of the action, not of the write
    log.close()


def test_audit_failure_is_logged_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A database without the table counts as unavailable (a missing database file): retried, then given up.
    monkeypatch.setattr(audit_module, "AUDIT_WAIT_SECONDS", 0.5)
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no table
    assert record_audit("stop", "allowed", engine=engine) is None


def test_reflex_cors_and_socketio_use_the_apps_own_origins() -> None:
    import rxconfig
    from dgx_spark.security.middleware import allowed_origins

    origins = set(rxconfig.config.cors_allowed_origins)
    assert "*" not in origins
    assert origins == allowed_origins()
    assert all("evil" not in o for o in origins)
