"""Users, passwords and roles.

Passwords are stored as salted scrypt hashes (hashlib, no extra dependency). Roles nest:
a viewer predicts and watches the monitor, a reviewer also reviews and scores batches, an
admin does everything. Every action that changes something calls `require()` with the
acting user, so hiding a page is never the only guard.

There is no default password: the first admin comes from STUDIO_ADMIN_USER /
STUDIO_ADMIN_PASSWORD, or else gets a one-time password that the start command prints
and that must be changed at first log-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass

from core.errors import InputError
from core.store import ROLES, Store, utc_now

# scrypt cost: n=2**14, r=8 → 16 MiB and ~50 ms per check; slow enough against guessing,
# quick enough for a log-in form.
SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_LEN = 2**14, 8, 1, 32
MIN_PASSWORD_LENGTH = 8
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")

# What each role may do; a role can do everything the roles below it can.
PERMISSIONS: dict[str, set[str]] = {
    "viewer": {"predict", "monitor"},
    "reviewer": {"predict", "monitor", "review", "batch"},
    "admin": {"predict", "monitor", "review", "batch", "models", "train", "users"},
}


class PermissionDenied(Exception):
    """The acting user's role does not allow this action."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    must_change_password: bool = False

    def can(self, action: str) -> bool:
        return action in PERMISSIONS.get(self.role, set())

    @classmethod
    def system(cls, name: str = "system") -> "User":
        """The acting user of shell commands run by whoever owns the server's files
        (`python -m core import|export|train --from-store`): an admin that cannot log in."""
        return cls(0, name, "admin")


def require(user: User | None, action: str) -> User:
    """Raise PermissionDenied unless `user` may do `action`."""
    if user is None:
        raise PermissionDenied("log in first")
    if not user.can(action):
        raise PermissionDenied(f"'{user.username}' ({user.role}) may not {action}")
    return user


# --------------------------------------------------------------------------- hashing


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_LEN)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


# --------------------------------------------------------------------------- users


def _user(row: dict) -> User:
    return User(row["id"], row["username"], row["role"], bool(row["must_change_password"]))


def create_user(store: Store, username: str, password: str, role: str, *, by: User | None = None,
                must_change_password: bool = False) -> User:
    """Add a user. `by` must be an admin, except for the very first user (bootstrap)."""
    username = (username or "").strip()
    if not USERNAME_RE.match(username):
        raise InputError("a username has 2–64 letters, digits or . _ @ -")
    if role not in ROLES:
        raise InputError(f"unknown role '{role}'; choose one of {', '.join(ROLES)}")
    check_new_password(password)
    hashed = hash_password(password)
    with store.transaction() as db:
        if by is not None:
            require(by, "users")
        elif db["users"].count:
            raise PermissionDenied("only an admin adds users")
        if db.execute("SELECT 1 FROM users WHERE username = ? COLLATE NOCASE", [username]).fetchone():
            raise InputError(f"the username '{username}' is taken")
        row = {"username": username, "password_hash": hashed, "role": role,
               "must_change_password": int(must_change_password), "disabled": 0, "created_at": utc_now(),
               "created_by": by.username if by else "bootstrap"}
        user_id = db["users"].insert(row).last_pk
        store.audit(by.username if by else "bootstrap", "user.create", {"username": username, "role": role}, db=db)
    return User(user_id, username, role, must_change_password)


def authenticate(store: Store, username: str, password: str) -> User | None:
    """The user, or None for a wrong name or password (the same answer for both)."""
    row = store.one("SELECT * FROM users WHERE username = ? COLLATE NOCASE AND disabled = 0",
                    [(username or "").strip()])
    if row is None:
        verify_password(password or "", _DUMMY_HASH)  # same time whether or not the user exists
        store.audit((username or "")[:64], "login.failed")
        return None
    if not verify_password(password or "", row["password_hash"]):
        store.audit(row["username"], "login.failed")
        return None
    return _user(row)


def change_password(store: Store, user: User, old_password: str, new_password: str, *,
                    keep_session: str | None = None) -> User:
    """Set a new password and log the user out everywhere else: every other session of
    theirs is revoked in the same transaction (a stolen session dies with the old
    password). `keep_session` is the cookie of the session making the change, which
    stays logged in; None ends them all."""
    from core.sessions import revoke_user_sessions  # core.sessions imports this module

    row = store.one("SELECT * FROM users WHERE id = ?", [user.id])
    if row is None or not verify_password(old_password or "", row["password_hash"]):
        raise InputError("the current password is wrong")
    check_new_password(new_password)
    if new_password == old_password:
        raise InputError("choose a password different from the current one")
    with store.transaction() as db:
        db["users"].update(user.id, {"password_hash": hash_password(new_password), "must_change_password": 0})
        revoke_user_sessions(store, user.id, keep_session, db=db)
        store.audit(user.username, "user.password", db=db)
    return User(user.id, user.username, user.role, False)


def set_role(store: Store, by: User, username: str, role: str | None = None, *, disabled: bool | None = None) -> None:
    """Change a user's role or disable them. An admin cannot demote or disable themselves,
    so there is always one admin left."""
    require(by, "users")
    if role is not None and role not in ROLES:
        raise InputError(f"unknown role '{role}'")
    with store.transaction() as db:
        # usernames are case-insensitive (log-in, uniqueness), so 'alice' here is 'Alice'
        row = db.execute("SELECT id, username FROM users WHERE username = ? COLLATE NOCASE",
                         [(username or "").strip()]).fetchone()
        if row is None:
            raise InputError(f"no user '{username}'")
        username = row[1]
        if (row[0] == by.id or row[1] == by.username) and (role not in (None, "admin") or disabled):
            raise InputError("you cannot demote or disable yourself")
        changes = {}
        if role is not None:
            changes["role"] = role
        if disabled is not None:
            changes["disabled"] = int(disabled)
        db["users"].update(row[0], changes)
        store.audit(by.username, "user.update", {"username": username, **changes}, db=db)


def list_users(store: Store) -> list[dict]:
    return store.query("SELECT username, role, disabled, must_change_password, created_at, created_by "
                       "FROM users ORDER BY username")


def ensure_first_admin(store: Store) -> str | None:
    """Make sure an admin can log in. With no users yet: STUDIO_ADMIN_USER/PASSWORD if set,
    else an 'admin' with a one-time password, which is returned (for the start command to
    print) and must be changed at first log-in. Returns None when nothing was created or
    the password came from the environment."""
    if store.one("SELECT 1 AS x FROM users LIMIT 1"):
        return None
    name = os.environ.get("STUDIO_ADMIN_USER", "").strip() or "admin"
    password = os.environ.get("STUDIO_ADMIN_PASSWORD", "")
    one_time = not password
    if one_time:
        password = secrets.token_urlsafe(12)
    try:
        create_user(store, name, password, "admin", must_change_password=one_time)
    except PermissionDenied:
        return None  # another process created the first user meanwhile
    return password if one_time else None


_DUMMY_HASH = hash_password(secrets.token_hex(8))
