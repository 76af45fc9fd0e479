"""Credentials of the HTTP API: long-lived API tokens and short-lived JWTs.

* An API token (`cst_…`, 32 random bytes) is made by an admin (the Users page) or the
  files' owner (`python -m core users token NAME`), shown once, and stored as its SHA-256
  only: a copy of the database gives no working token. It acts as its user, with the
  user's role *as it is now* (every call re-reads the row), until revoked.
* A JWT comes from `POST /v1/auth/token` (username + password, throttled like the app's
  log-in) and lives JWT_MINUTES. It is signed (HS256) with a key derived from the
  session secret, names the user by id and carries no role: the role is read at each call.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import jwt

from core.common.errors import InputError
from core.studio.auth import PermissionDenied, User, require_current
from core.studio.sessions import derived_key
from core.studio.store import Store, utc_now

TOKEN_PREFIX = "cst_"
TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 512  # longer bearer values are refused unread
MAX_LABEL_LENGTH = 100
JWT_MINUTES = 15
JWT_ISSUER = "catalog-studio"
TOUCH_EVERY_S = 60  # last_used_at is written at most this often per token


@dataclass(frozen=True)
class ApiToken:
    """A token as the Users page lists it (never the token itself)."""
    id: int
    username: str
    label: str | None
    prefix: str
    created_at: str
    created_by: str | None
    last_used_at: str | None
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, by: User, username: str, label: str | None = None) -> str:
    """A new API token for `username` (admins, or User.system for the shell); returns the
    token, which is never shown again. Audited."""
    label = " ".join((label or "").split())[:MAX_LABEL_LENGTH] or None
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    with store.transaction() as db:
        by = require_current(db, by, "users")
        row = db.execute("SELECT id, username, disabled FROM users WHERE username = ? COLLATE NOCASE",
                         [(username or "").strip()]).fetchone()
        if row is None:
            raise InputError(f"no user '{username}'")
        if row["disabled"]:
            raise InputError(f"'{row['username']}' is disabled: enable the account first")
        db["api_tokens"].insert({"user_id": row["id"], "label": label, "token_hash": _hash(token),
                                 "prefix": token[:len(TOKEN_PREFIX) + 6], "created_at": utc_now(),
                                 "created_by": by.username})
        store.audit(by.username, "token.create", {"username": row["username"], "label": label}, db=db)
    return token


def list_tokens(store: Store, by: User) -> list[ApiToken]:
    """Every token (revoked ones too), newest first; admins only."""
    require_current(store, by, "users")
    rows = store.query("SELECT t.*, u.username FROM api_tokens t JOIN users u ON u.id = t.user_id "
                       "ORDER BY t.id DESC")
    return [ApiToken(r["id"], r["username"], r["label"], r["prefix"], r["created_at"], r["created_by"],
                     r["last_used_at"], r["revoked_at"]) for r in rows]


def revoke_token(store: Store, by: User, token_id: int) -> bool:
    """Revoke one token (admins); False when it was already revoked. Audited."""
    with store.transaction() as db:
        by = require_current(db, by, "users")
        row = db.execute("SELECT t.id, t.revoked_at, u.username FROM api_tokens t JOIN users u ON u.id = t.user_id "
                         "WHERE t.id = ?", [token_id]).fetchone()
        if row is None:
            raise InputError(f"no API token #{token_id}")
        if row["revoked_at"] is not None:
            return False
        db.execute("UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?",
                   [utc_now(), by.username, token_id])
        store.audit(by.username, "token.revoke", {"token": token_id, "username": row["username"]}, db=db)
    return True


def _user_row(store: Store, sql: str, params: list) -> dict | None:
    return store.one(f"SELECT u.id, u.username, u.role, u.must_change_password, u.disabled{sql}", params)


def token_user(store: Store, token: str) -> User | None:
    """The user an API token acts as, or None (unknown, revoked, or the user disabled)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    row = _user_row(store, ", t.id AS token_id, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id "
                    "WHERE t.token_hash = ? AND t.revoked_at IS NULL", [_hash(token)])
    if row is None or row["disabled"]:
        return None
    last = row["last_used_at"]
    if last is None or time.time() - datetime.fromisoformat(last).timestamp() >= TOUCH_EVERY_S:
        with store.transaction() as db:
            db.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", [utc_now(), row["token_id"]])
    return User(row["id"], row["username"], row["role"], bool(row["must_change_password"]))


def issue_jwt(store: Store, user: User, minutes: float = JWT_MINUTES) -> tuple[str, int]:
    """(a signed JWT for `user`, its lifetime in seconds). A user who must still change
    their one-time password gets none: that is done in the app."""
    if user.must_change_password:
        raise PermissionDenied("choose a new password in the app first (this one was for one log-in)")
    now = time.time()  # a fraction of a second: a password changed the same second still ends it
    lifetime = int(minutes * 60)
    claims = {"sub": str(user.id), "name": user.username, "iat": now, "exp": int(now) + lifetime,
              "iss": JWT_ISSUER}
    return jwt.encode(claims, derived_key(store, "api-jwt"), algorithm="HS256"), lifetime


def jwt_user(store: Store, token: str) -> User | None:
    """The user of a valid, unexpired JWT of this server, or None."""
    if len(token) > MAX_TOKEN_LENGTH * 2:
        return None
    try:
        claims = jwt.decode(token, derived_key(store, "api-jwt"), algorithms=["HS256"], issuer=JWT_ISSUER,
                            options={"require": ["exp", "iat", "sub", "iss"]})
        user_id = int(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    row = _user_row(store, " FROM users u WHERE u.id = ?", [user_id])
    if row is None or row["disabled"]:
        return None
    issued = datetime.fromtimestamp(claims["iat"], timezone.utc)
    changed = store.one("SELECT max(created_at) AS at FROM audit WHERE (action = 'user.password' AND user = ?) "
                        "OR (action = 'user.password.reset' AND json_extract(detail, '$.username') = ?)",
                        [row["username"], row["username"]])
    if changed and changed["at"] and datetime.fromisoformat(changed["at"]) > issued:
        return None  # a password change ends every log-in, JWTs included
    return User(row["id"], row["username"], row["role"], bool(row["must_change_password"]))


def bearer_user(store: Store, token: str | None) -> User | None:
    """The user of an `Authorization: Bearer` value: an API token or a JWT."""
    token = (token or "").strip()
    if not token:
        return None
    return token_user(store, token) if token.startswith(TOKEN_PREFIX) else jwt_user(store, token)
