"""Browser login sessions: random, server-side, stored hashed, expiring, revocable.

Plain Python (no Reflex, no FastAPI).

* Logging in makes a session: the browser gets a random value (32 bytes,
  ``secrets.token_urlsafe``) in the ``dgx_spark_session`` cookie. The server keeps
  only its SHA-256, with a random public id, when it was made, when it expires
  (30 days at most) and which token it belongs to, in
  ``<DGX_SPARK_DATA_DIR>/sessions.json`` (mode 0600, replaced atomically), so
  sessions survive a restart.
* Log out deletes the session. A session made under another token (the token file
  was replaced, or ``DGX_SPARK_TOKEN`` changed, then the dashboard restarted) is no
  login, and is dropped at start.
* The public id is what the websocket's Reflex state sees (``LOGIN_HEADER``, set
  by the security layer in place of the cookie): it names a session but proves
  nothing, because only the server sets that header.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dgx_spark.security import token as tokens
from dgx_spark.settings import settings

logger = logging.getLogger(__name__)

SESSIONS_FILE = "sessions.json"
LOCK_FILE = ".sessions.lock"
SESSION_COOKIE = tokens.SESSION_COOKIE
SESSION_MAX_AGE = 30 * 86400  # seconds; a session never lives longer
MAX_SESSIONS = 1000  # the oldest go first beyond this
# The header the security layer gives the Reflex websocket instead of the cookie.
LOGIN_HEADER = "x-dgx-spark-login"
_BINDING_CONTEXT = b"dgx-spark-session-binding-v1"
_MAX_COOKIE_LENGTH = 200


@dataclasses.dataclass(frozen=True)
class Session:
    """One stored session (never the cookie value itself)."""

    id: str
    digest: str
    created: float
    expires: float
    binding: str

    def to_json(self) -> dict[str, Any]:
        """The record as stored."""
        return dataclasses.asdict(self)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def token_binding(token: str) -> str:
    """A fingerprint of the token a session belongs to (an HMAC keyed by the token)."""
    key = token.encode("utf-8", "surrogateescape")
    return hmac.new(key, _BINDING_CONTEXT, hashlib.sha256).hexdigest()[:32]


class SessionStore:
    """The sessions of one data folder, shared safely by threads and processes."""

    def __init__(self, data_dir: Path | None, token: str | Callable[[], str]) -> None:
        """A store in ``data_dir`` (None: ``settings.data_dir``) for ``token`` (or what gives it, when asked)."""
        self._data_dir = data_dir
        self._token = token
        self._lock = threading.Lock()  # the in-memory copy (held briefly: lookups run on the event loop)
        self._write_lock = threading.Lock()  # one writer per process; flock for other processes
        self._cache_key: tuple[int, int, int] | None = None
        self._by_digest: dict[str, Session] = {}
        self._by_id: dict[str, Session] = {}

    @property
    def path(self) -> Path:
        """The sessions file."""
        return (self._data_dir or settings.data_dir) / SESSIONS_FILE

    def _binding(self) -> str:
        return token_binding(self._token if isinstance(self._token, str) else self._token())

    # ------------------------------------------------------------------ reading

    def _load(self) -> None:
        """Refresh the in-memory copy when the file changed (one ``stat`` when it did not)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._cache_key, self._by_digest, self._by_id = None, {}, {}
            return
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        if key == self._cache_key:
            return
        records = self._read_records()
        self._by_digest = {s.digest: s for s in records}
        self._by_id = {s.id: s for s in records}
        self._cache_key = key

    def _read_records(self) -> list[Session]:
        try:
            raw = json.loads(self.path.read_bytes())
            return [Session(**{f.name: item[f.name] for f in dataclasses.fields(Session)}) for item in raw["sessions"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unreadable: nobody is logged in (the next login writes a good file).
            logger.warning("sessions file %s is unreadable (%s); every browser must log in again", self.path, exc)
            return []

    def _usable(self, session: Session | None, now: float) -> Session | None:
        if session is None or session.expires <= now:
            return None
        return session if hmac.compare_digest(session.binding, self._binding()) else None

    def lookup(self, cookie_value: str | None, now: float | None = None) -> Session | None:
        """The live session a cookie value opens, or None."""
        if not cookie_value or not isinstance(cookie_value, str) or len(cookie_value) > _MAX_COOKIE_LENGTH:
            return None
        now = time.time() if now is None else now
        with self._lock:
            self._load()
            return self._usable(self._by_digest.get(_digest(cookie_value)), now)

    def by_id(self, session_id: str | None, now: float | None = None) -> Session | None:
        """The live session with this public id, or None."""
        if not session_id or not isinstance(session_id, str) or len(session_id) > _MAX_COOKIE_LENGTH:
            return None
        now = time.time() if now is None else now
        with self._lock:
            self._load()
            return self._usable(self._by_id.get(session_id), now)

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[list[Session]]:
        """Read, change and write the records under a lock shared with other processes."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._write_lock:
            fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                records = self._read_records()
                before = list(records)
                yield records
                if records != before:
                    self._write(records)
            finally:
                os.close(fd)
                with self._lock:
                    self._cache_key = None

    def _write(self, records: list[Session]) -> None:
        body = json.dumps({"version": 1, "sessions": [s.to_json() for s in records]}, indent=1).encode()
        tmp = self.path.with_name(f".{SESSIONS_FILE}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def create(self, now: float | None = None) -> tuple[str, Session]:
        """Start a session.

        Returns:
            The cookie value (given to the browser, never stored) and the stored session.

        Raises:
            OSError: The sessions file cannot be written.
        """
        now = time.time() if now is None else now
        value = secrets.token_urlsafe(32)
        session = Session(
            id=secrets.token_urlsafe(12),
            digest=_digest(value),
            created=now,
            expires=now + SESSION_MAX_AGE,
            binding=self._binding(),
        )
        with self._exclusive() as records:
            binding = session.binding
            live = [s for s in records if s.expires > now and s.binding == binding]
            records[:] = [*live[-(MAX_SESSIONS - 1):], session]
        return value, session

    def revoke(self, cookie_value: str | None) -> bool:
        """End the session a cookie value opens; whether there was one."""
        if not cookie_value or not isinstance(cookie_value, str) or len(cookie_value) > _MAX_COOKIE_LENGTH:
            return False
        digest = _digest(cookie_value)
        with self._exclusive() as records:
            kept = [s for s in records if s.digest != digest]
            found = len(kept) != len(records)
            records[:] = kept
        return found

    def revoke_all(self) -> int:
        """End every session; how many there were."""
        with self._exclusive() as records:
            count = len(records)
            records.clear()
        return count

    def prune(self, now: float | None = None) -> int:
        """Drop expired sessions and those of another token; how many went."""
        now = time.time() if now is None else now
        binding = self._binding()
        with self._exclusive() as records:
            kept = [s for s in records if s.expires > now and s.binding == binding]
            dropped = len(records) - len(kept)
            records[:] = kept
        return dropped

    def from_cookie(self, cookie_header: str | None) -> Session | None:
        """The live session a ``Cookie`` header carries, or None."""
        return self.lookup(tokens.parse_cookies(cookie_header).get(SESSION_COOKIE))


class Credentials:
    """The dashboard's token and its login sessions: one per process, built by ``Services``."""

    def __init__(self, data_dir: Path, token: str | None = None) -> None:
        """Credentials kept in ``data_dir``; ``token``: a known one, else it is read (or made) when first asked for."""
        self.data_dir = data_dir
        self._token = token
        self._lock = threading.Lock()
        self.sessions = SessionStore(data_dir, token=lambda: self.token)

    @property
    def token(self) -> str:
        """The token: ``DGX_SPARK_TOKEN``, else the stored one, else a new stored one (read once).

        Raises:
            TokenError: It cannot be read or made.
        """
        with self._lock:
            if self._token is None:
                self._token = tokens.load_or_create_token(self.data_dir)
            return self._token

    def token_matches(self, candidate: str | None) -> bool:
        """Whether ``candidate`` is the token (constant-time)."""
        return tokens.token_matches(candidate, self.token)

    def operation_token(self, op_id: str) -> str:
        """The token a launched operation gets: it may only report that operation's progress."""
        return tokens.operation_token(op_id, self.token)

    def operation_token_matches(self, candidate: str | None, op_id: str | None) -> bool:
        """Whether ``candidate`` is the token of operation ``op_id`` (constant-time)."""
        return tokens.operation_token_matches(candidate, op_id, self.token)


def session_cookie_header(value: str, secure: bool = False) -> str:
    """The ``Set-Cookie`` header value that gives a browser its session."""
    flags = f"Path=/; Max-Age={SESSION_MAX_AGE}; HttpOnly; SameSite=Strict"
    return f"{SESSION_COOKIE}={value}; {flags}" + ("; Secure" if secure else "")


def clear_cookie_header() -> str:
    """The ``Set-Cookie`` header value that removes the session cookie."""
    return f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
