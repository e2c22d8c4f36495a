"""The access token, the login session cookie and one-time login codes.

Plain Python (no Reflex, no FastAPI).

* The token is 32 random bytes (``secrets.token_urlsafe(32)``) made at first
  start and kept in ``<DGX_SPARK_DATA_DIR>/token`` with mode 0600;
  ``DGX_SPARK_TOKEN`` overrides it. REST clients send it as
  ``Authorization: Bearer <token>``.
* The browser holds a random session cookie instead of the token
  (``security.sessions``: stored hashed, expiring, revoked by Log out and by a
  new token).
* A one-time login code is printed at start inside a login URL; it works once
  (and for at most a day), the token itself stays valid.

Every comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from dgx_spark.settings import settings

logger = logging.getLogger(__name__)

TOKEN_ENV = "DGX_SPARK_TOKEN"
TOKEN_FILE = "token"
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 1024
SESSION_COOKIE = "dgx_spark_session"
LOGIN_CODE_DIR = "login-codes"
LOGIN_CODE_TTL = 86400.0
# An operation token: what a launched job gets as DGX_SPARK_TOKEN. It only reports
# that operation's progress (see ``security.middleware.operation_token_scope``).
OPERATION_TOKEN_PREFIX = "op1."
_OPERATION_CONTEXT = b"dgx-spark-operation-v1:"


class TokenError(RuntimeError):
    """The token cannot be read, created or accepted."""


def token_path(data_dir: Path | None = None) -> Path:
    """Where the generated token is stored."""
    return (data_dir or settings.data_dir) / TOKEN_FILE


def _token_problem(token: str) -> str | None:
    """Why a token cannot be used, or None when it can."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is shorter than {MIN_TOKEN_LENGTH} characters" if token else "is empty"
    if len(token) > MAX_TOKEN_LENGTH:
        return f"is longer than {MAX_TOKEN_LENGTH} characters"
    if not token.isprintable() or any(c.isspace() for c in token):
        return "contains spaces or control characters"
    return None


def _read_token_file(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Someone loosened it: tighten it again rather than serve a readable secret.
        os.chmod(path, 0o600)
        logger.warning("token file %s had mode %o; set to 600", path, mode)
    fix = f"delete it to make a new token at the next start, or write a token of {MIN_TOKEN_LENGTH}+ characters into it"
    raw = path.read_bytes()
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenError(f"token file {path} is not text (binary data): {fix}") from None
    problem = _token_problem(token)
    if problem:
        raise TokenError(f"token file {path} holds no usable token (it {problem}): {fix}")
    return token


def _override(env: Mapping[str, str] | None) -> str:
    """The token override: ``env[DGX_SPARK_TOKEN]`` when ``env`` is given, else ``settings.server.token``."""
    raw = env.get(TOKEN_ENV, "") if env is not None else settings.server.token
    return (raw or "").strip()


def load_or_create_token(data_dir: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """The token: ``DGX_SPARK_TOKEN`` if set, else the stored one, else a new stored one.

    Args:
        data_dir: The data directory (``settings.data_dir`` by default).
        env: Variables to take the override from (tests); by default the app's settings.

    Returns:
        The token.

    Raises:
        TokenError: The override is too short or the file holds no token.
    """
    override = _override(env)
    if override:
        problem = _token_problem(override)
        if problem:
            raise TokenError(f"{TOKEN_ENV} {problem}: it must be {MIN_TOKEN_LENGTH}+ printable characters")
        return override
    path = token_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return _read_token_file(path)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another worker made it first.
        return _read_token_file(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    logger.info("created a new access token in %s", path)
    return token


def check_token(data_dir: Path | None = None, env: Mapping[str, str] | None = None) -> None:
    """Check the token before start-up, creating nothing.

    Raises:
        TokenError: ``DGX_SPARK_TOKEN`` or the token file cannot be used (the message says what to do).
    """
    path = token_path(data_dir)
    if _override(env):
        load_or_create_token(data_dir, env)
        return
    try:
        if path.exists():
            _read_token_file(path)
    except OSError as exc:
        raise TokenError(f"token file {path} cannot be read ({exc.strerror}): fix its owner or mode, or delete it") from None


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def token_matches(candidate: str | None, token: str) -> bool:
    """Whether ``candidate`` is ``token`` (constant-time)."""
    if not candidate or not isinstance(candidate, str):
        return False
    return _equal(candidate, token)


def operation_token(op_id: str, token: str) -> str:
    """The token scoped to one operation: ``op1.`` + HMAC-SHA256(token, operation id).

    The supervisor hands it to each launched command instead of the main token.
    """
    digest = hmac.new(
        token.encode("utf-8", "surrogateescape"),
        _OPERATION_CONTEXT + op_id.encode("utf-8", "surrogateescape"),
        hashlib.sha256,
    ).hexdigest()
    return OPERATION_TOKEN_PREFIX + digest


def operation_token_matches(candidate: str | None, op_id: str | None, token: str) -> bool:
    """Whether ``candidate`` is the token of operation ``op_id`` (constant-time)."""
    if not candidate or not isinstance(candidate, str) or not op_id or not isinstance(op_id, str):
        return False
    return _equal(candidate, operation_token(op_id, token))


def parse_cookies(header: str | None) -> dict[str, str]:
    """Parse a ``Cookie`` header into a dict (first value of a name wins)."""
    cookies: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


def _code_dir(data_dir: Path | None = None) -> Path:
    return (data_dir or settings.data_dir) / LOGIN_CODE_DIR


def _code_digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogateescape")).hexdigest()


def issue_login_code(data_dir: Path | None = None) -> str:
    """Make a one-time login code; only its hash is stored (a file per code, mode 0600)."""
    directory = _code_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = time.time()
    for old in directory.iterdir():
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > LOGIN_CODE_TTL:
                old.unlink()
    code = secrets.token_urlsafe(24)
    fd = os.open(directory / _code_digest(code), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    return code


def consume_login_code(code: str | None, data_dir: Path | None = None) -> bool:
    """Use a one-time login code: True exactly once per issued, unexpired code.

    Removing the file is atomic, so the code works once even across workers.
    """
    if not code or not isinstance(code, str) or len(code) > 200:
        return False
    path = _code_dir(data_dir) / _code_digest(code)
    try:
        fresh = time.time() - path.stat().st_mtime <= LOGIN_CODE_TTL
        path.unlink()
    except OSError:
        return False
    return fresh


def login_url(base_url: str, code: str) -> str:
    """The URL that logs a browser in with a one-time code."""
    return f"{base_url.rstrip('/')}/login?token={code}"
