"""Log-in sessions that survive a reload: a signed, expiring, revocable cookie.

Streamlit keeps its own state per browser tab and forgets it on F5, in a new tab or on a
deep link, so the log-in lives in the `sessions` table and the browser holds a cookie:

* the cookie value is `<token>.<signature>`: a random 32-byte token and its HMAC-SHA256
  under a server secret (a 0600 file beside the database). A value not signed by this
  server is refused before the database is asked; replacing the secret (and restarting the
  server) logs everybody out.
* the table stores only the token's SHA-256 as the session id, so a copy of the database
  cannot be turned into a working cookie.
* a session ends when it is revoked (log-out, a password change elsewhere), after
  STUDIO_SESSION_IDLE_MINUTES (default 60) without use, or MAX_SESSION_HOURS after log-in,
  whichever comes first. The user row is re-read on every check: a disabled account is
  out at once and a changed role applies at once.

Nothing here knows about Streamlit; pages/_ui/session.py reads the cookie and writes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path

import sqlite_utils

from core.common.settings import get_settings
from core.studio.auth import User
from core.studio.store import Store

COOKIE_NAME = "studio_session"
IDLE_MINUTES_DEFAULT = 60
MAX_SESSION_HOURS = 12
# last_seen is written at most this often: a rerun per click must not be a write per click
TOUCH_EVERY_S = 30
# ended rows are kept this long past their absolute limit (who was logged in when), then purged
KEEP_ENDED_DAYS = 30
SECRET_NAME = "session.key"
TOKEN_BYTES = 32
MAX_COOKIE_LENGTH = 200

_secrets: dict[Path, bytes] = {}
_secret_lock = threading.Lock()


def idle_seconds() -> float:
    """The idle limit, read on every call so STUDIO_SESSION_IDLE_MINUTES applies at once."""
    minutes = get_settings().session_idle_minutes  # None when unset or unreadable ("nan", "inf")
    if minutes is None:
        minutes = IDLE_MINUTES_DEFAULT
    return max(minutes, 0.0) * 60


def _secret(store: Store) -> bytes:
    """The signing key beside the database, created on first use, readable by the owner only."""
    path = store.path.parent / SECRET_NAME
    with _secret_lock:
        if path in _secrets:
            return _secrets[path]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
        else:
            key = secrets.token_bytes(32)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
        for _ in range(50):  # another process created it a moment ago and is still writing it
            if len(key) >= 32:
                break
            time.sleep(0.02)
            key = path.read_bytes()
        else:
            raise RuntimeError(f"the session secret {path} is too short: delete it to make a new one")
        _secrets[path] = key
        return key


def derived_key(store: Store, purpose: str) -> bytes:
    """A key for another signature of this server (e.g. the API's short-lived JWTs), derived
    from the session secret: replacing the secret ends those too."""
    return hmac.new(_secret(store), f"catalog-studio:{purpose}".encode(), hashlib.sha256).digest()


def _sign(store: Store, token: str) -> str:
    mac = hmac.new(_secret(store), token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_of(store: Store, cookie: str | None) -> str | None:
    """The token inside a cookie value when the signature is this server's, else None
    (garbled, truncated, forged or from another server)."""
    if not isinstance(cookie, str) or not 0 < len(cookie) <= MAX_COOKIE_LENGTH or cookie.count(".") != 1:
        return None
    token, signature = cookie.split(".")
    if not token or not hmac.compare_digest(signature.encode(), _sign(store, token).encode()):
        return None
    return token


def create_session(store: Store, user: User, user_agent: str | None = None) -> str:
    """Start a session for `user` (who just proved their password); returns the cookie value."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = time.time()
    with store.transaction() as db:
        db.execute("DELETE FROM sessions WHERE expires_at < ?", [now - KEEP_ENDED_DAYS * 86400])
        db["sessions"].insert({"id": _session_id(token), "user_id": user.id, "created_at": now, "last_seen": now,
                               "expires_at": now + MAX_SESSION_HOURS * 3600, "revoked_at": None,
                               "user_agent": (user_agent or "")[:300] or None})
    return f"{token}.{_sign(store, token)}"


def check_session(store: Store, cookie: str | None) -> tuple[User | None, str]:
    """(user, "ok") for a live session; else (None, why): "missing" (no cookie, garbled,
    forged, unknown), "revoked", "expired" (idle too long or past the absolute limit) or
    "disabled" (the account). The role comes from the user row, so a change by an admin
    applies at the next check. last_seen is written at most every TOUCH_EVERY_S."""
    token = _token_of(store, cookie)
    if token is None:
        return None, "missing"
    session_id = _session_id(token)
    row = store.one("SELECT s.last_seen, s.expires_at, s.revoked_at, u.id, u.username, u.role, "
                    "u.must_change_password, u.disabled FROM sessions s JOIN users u ON u.id = s.user_id "
                    "WHERE s.id = ?", [session_id])
    now = time.time()
    if row is None:
        return None, "missing"
    if row["revoked_at"] is not None:
        return None, "revoked"
    if now >= row["expires_at"] or now - row["last_seen"] > idle_seconds():
        return None, "expired"
    if row["disabled"]:
        return None, "disabled"
    if now - row["last_seen"] >= TOUCH_EVERY_S:
        with store.transaction() as db:
            db.execute("UPDATE sessions SET last_seen = MAX(last_seen, ?) WHERE id = ? AND revoked_at IS NULL",
                       [now, session_id])
    return User(row["id"], row["username"], row["role"], bool(row["must_change_password"])), "ok"


def resume_session(store: Store, cookie: str | None) -> User | None:
    """The user of a live session, or None (see check_session for the reasons)."""
    return check_session(store, cookie)[0]


def revoke_session(store: Store, cookie: str | None) -> bool:
    """End one session (log-out); True when a live session was ended. A bad cookie is a no-op."""
    token = _token_of(store, cookie)
    if token is None:
        return False
    with store.transaction() as db:
        cursor = db.execute("UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                            [time.time(), _session_id(token)])
        return cursor.rowcount > 0


def revoke_user_sessions(store: Store, user_id: int, except_token: str | None = None, *,
                         db: sqlite_utils.Database | None = None) -> int:
    """End every live session of a user but the one holding `except_token` (the cookie of
    the session that asked, e.g. for a password change); returns how many ended. Inside
    `db`'s transaction when given, so the change and the log-out land together."""
    keep = _token_of(store, except_token) if except_token else None
    sql = "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL AND id != ?"
    params = [time.time(), user_id, _session_id(keep) if keep else ""]
    if db is not None:
        return db.execute(sql, params).rowcount
    with store.transaction() as tx:
        return tx.execute(sql, params).rowcount
