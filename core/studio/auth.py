"""Users, passwords and roles.

Passwords are stored as salted scrypt hashes (hashlib, no extra dependency) at OWASP's
cost (N=2**17, r=8, p=1; a hash of a lower cost is upgraded at the next log-in), must
pass a policy (length, not a common password, not the username), and guessing is slowed
per account: after FREE_FAILURES wrong passwords the account refuses log-ins for a
doubling delay. Every log-in, good or bad, is audited. Roles nest:
a viewer predicts and watches the monitor, a reviewer also reviews and scores batches, an
admin does everything. Every action that changes something calls `require_current()`:
the acting user's row is re-read (role, disabled), so a session opened before a demotion
cannot act, and hiding a page is never the only guard.

There is no default password: the first admin comes from STUDIO_ADMIN_USER /
STUDIO_ADMIN_PASSWORD, or else gets a one-time password that the start command prints
and that must be changed at first log-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlite_utils

from core.common.errors import InputError
from core.common.settings import get_settings
from core.studio.store import ROLES, Store, utc_now

# scrypt cost: OWASP's password storage cheat sheet (N=2**17, r=8, p=1): 128 MiB and
# ~0.4 s per check here. maxmem bounds what one check may take (a stored hash asking for
# more is refused, never computed). Tests lower SCRYPT_N (studio_helpers.cheap_hashes).
SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_LEN = 2**17, 8, 1, 32
SCRYPT_MAXMEM = 2 * 128 * 8 * 2**17  # 256 MiB: the 128 MiB the cost needs, with headroom
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
# Throttling: FREE_FAILURES wrong passwords in a row are free, then each one locks the
# account for LOCK_BASE_S, doubling up to LOCK_MAX_S; a success or FAILURE_MEMORY_S
# without failures starts over.
FREE_FAILURES = 5
LOCK_BASE_S, LOCK_MAX_S = 30.0, 900.0
FAILURE_MEMORY_S = 3600.0
UNKNOWN_USER = "unknown user"  # what the audit log says when the name typed is nobody's
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")

# What each role may do; a role can do everything the roles below it can.
PERMISSIONS: dict[str, set[str]] = {
    "viewer": {"predict", "monitor"},
    "reviewer": {"predict", "monitor", "review", "batch"},
    "admin": {"predict", "monitor", "review", "batch", "models", "train", "users"},
}


class PermissionDenied(Exception):
    """The acting user's role does not allow this action."""


class LoginThrottled(Exception):
    """Too many wrong passwords for this account: no log-in before `retry_after` seconds."""

    def __init__(self, retry_after: float):
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(f"too many failed log-ins for this account: try again in {self.retry_after} s")


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
        """The acting user of code run by whoever owns the server's files, never of a web
        request: shell commands (`python -m core import|export|train --from-store|users`,
        as "cli") and the server's own set-up (the demo catalogue and model, as "system").

        It may do everything an admin may (PERMISSIONS["admin"]): whoever can run these
        commands can edit the database anyway. It has no row (id 0): it cannot log in,
        cannot be disabled or demoted, and `require_current` judges it on its role alone.
        `name` is what the audit log and the job list show as the actor."""
        return cls(0, name, "admin")


def require(user: User | None, action: str) -> User:
    """Raise PermissionDenied unless `user` may do `action`."""
    if user is None:
        raise PermissionDenied("log in first")
    if not user.can(action):
        raise PermissionDenied(f"'{user.username}' ({user.role}) may not {action}")
    return user


def require_current(source: Store | sqlite_utils.Database, user: User | None, action: str) -> User:
    """`require`, judged on the user's row as it is now, not on the `User` the caller holds
    (made at log-in, maybe before an admin demoted or disabled them; a fragment rerun skips
    the page's own check). `source` is a Store (read in its own transaction) or the
    connection of the caller's write transaction (the check and the write then see the same
    row). Returns the current User, to act as. User.system() (id 0: shell commands run by
    the files' owner) has no row and stays allowed."""
    if user is None:
        raise PermissionDenied("log in first")
    if user.id == 0:
        return require(user, action)
    sql = "SELECT id, username, role, must_change_password, disabled FROM users WHERE id = ?"
    if isinstance(source, Store):
        row = source.one(sql, [user.id])
    else:
        found = source.execute(sql, [user.id]).fetchone()
        row = dict(zip(("id", "username", "role", "must_change_password", "disabled"), found)) if found else None
    if row is None:
        raise PermissionDenied(f"'{user.username}' is no longer a user")
    if row["disabled"]:
        raise PermissionDenied(f"'{row['username']}' is disabled")
    return require(_user(row), action)


# --------------------------------------------------------------------------- hashing


def hash_password(password: str) -> str:
    """A salted scrypt hash at today's cost, with the cost inside (so it can be raised later)."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_LEN,
                         maxmem=SCRYPT_MAXMEM)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches; False (never an exception) for a malformed hash or one
    whose cost exceeds SCRYPT_MAXMEM."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=SCRYPT_MAXMEM)
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    """Whether a stored hash is cheaper than today's cost (it is upgraded at the next log-in)."""
    try:
        scheme, n, r, p, *_ = stored.split("$")
        return scheme != "scrypt" or int(n) < SCRYPT_N or int(r) < SCRYPT_R or int(p) < SCRYPT_P
    except ValueError:
        return True


@lru_cache(maxsize=4)
def _dummy_hash(n: int) -> str:
    """A hash at cost `n` (= SCRYPT_N, the cache key) to check unknown names against, so a
    wrong name takes as long as a wrong password (made on first use: importing stays cheap)."""
    return hash_password(secrets.token_hex(8))


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of the most common passwords (lower case)."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().casefold() for line in lines if line.strip() and not line.startswith("#"))


def check_new_password(password: str, username: str | None = None) -> None:
    """The password policy: at least MIN_PASSWORD_LENGTH characters, not one of the most
    common passwords (also with digits or symbols tacked on the end, like 'sunshine2024!'),
    and neither the username nor containing it. Raises InputError saying which rule."""
    password = password or ""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InputError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    folded = password.casefold()
    core = re.sub(r"[\W\d_]+$", "", folded)
    if folded in common_passwords() or core in common_passwords():
        raise InputError("this password is one of the most common ones; choose another")
    name = (username or "").strip().casefold()
    if name and (folded == name or (len(name) >= 3 and name in folded)):
        raise InputError("the password must not contain the username")


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
    check_new_password(password, username)
    hashed = hash_password(password)
    with store.transaction() as db:
        if by is not None:
            by = require_current(db, by, "users")
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


# Names that are nobody's are throttled too (else the "try again" message would tell
# which names exist), but only in this process's memory: what a stranger typed is never
# stored. Keyed by an HMAC under a per-process key, bounded in size.
_unknown_key = secrets.token_bytes(32)
_unknown_failures: OrderedDict[bytes, tuple[int, float, float]] = OrderedDict()
_unknown_lock = threading.Lock()
_UNKNOWN_MAX = 10_000


def lock_seconds(failures: int) -> float:
    """How long the account is locked after `failures` wrong passwords in a row."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(LOCK_BASE_S * 2 ** (failures - FREE_FAILURES), LOCK_MAX_S)


def _next_failure(previous: tuple[int, float, float] | None, now: float) -> tuple[int, float, float]:
    """(failures, last failure, locked until) after one more wrong password."""
    failures, last = (previous[0], previous[1]) if previous else (0, 0.0)
    if now - last > FAILURE_MEMORY_S:
        failures = 0
    failures += 1
    return failures, now, now + lock_seconds(failures)


def _unknown_name_check(store: Store, username: str, now: float, failed: bool) -> None:
    """Raise LoginThrottled while a name that is nobody's is locked; count a failure."""
    if not username:
        return  # an empty form is no guess at an account
    key = hmac.new(_unknown_key, f"{store.path}\x00{username.casefold()}".encode(), hashlib.sha256).digest()
    with _unknown_lock:
        state = _unknown_failures.get(key)
        if state and state[2] > now:
            raise LoginThrottled(state[2] - now)
        if failed:
            _unknown_failures[key] = _next_failure(state, now)
            _unknown_failures.move_to_end(key)
            while len(_unknown_failures) > _UNKNOWN_MAX:
                _unknown_failures.popitem(last=False)


def authenticate(store: Store, username: str, password: str) -> User | None:
    """The user, or None for a wrong name or password (the same answer for both, in the
    same time). Raises LoginThrottled, without checking the password, while the account
    is locked after too many wrong passwords. Audited: login.ok / login.failed under the
    account's name, or "unknown user" when the name typed is nobody's (or disabled).
    A hash cheaper than today's cost is upgraded on success."""
    name = (username or "").strip()
    password = password or ""
    now = time.time()
    row = store.one("SELECT u.*, a.failures, a.last_failure_at, a.locked_until FROM users u "
                    "LEFT JOIN login_attempts a ON a.user_id = u.id "
                    "WHERE u.username = ? COLLATE NOCASE AND u.disabled = 0", [name]) if name else None
    if row is None:
        try:
            _unknown_name_check(store, name, now, failed=False)
        except LoginThrottled:
            store.audit(UNKNOWN_USER, "login.failed", {"reason": "throttled"})
            raise
        verify_password(password, _dummy_hash(SCRYPT_N))  # same time whether or not the user exists
        _unknown_name_check(store, name, now, failed=True)
        store.audit(UNKNOWN_USER, "login.failed", {"reason": "password"})
        return None
    if row["locked_until"] and row["locked_until"] > now:
        store.audit(row["username"], "login.failed", {"reason": "throttled"})
        raise LoginThrottled(row["locked_until"] - now)
    if not verify_password(password, row["password_hash"]):
        with store.transaction() as db:  # re-read inside: two wrong guesses at once both count
            current = db.execute("SELECT failures, last_failure_at, locked_until FROM login_attempts "
                                 "WHERE user_id = ?", [row["id"]]).fetchone()
            failures, last, locked = _next_failure(tuple(current) if current else None, now)
            db["login_attempts"].upsert({"user_id": row["id"], "failures": failures, "last_failure_at": last,
                                         "locked_until": locked}, pk="user_id")
            store.audit(row["username"], "login.failed", {"reason": "password", "failures": failures}, db=db)
        return None
    if one_time_password_expired(row):
        store.audit(row["username"], "login.failed", {"reason": "one-time password expired"})
        return None
    upgraded = hash_password(password) if needs_rehash(row["password_hash"]) else None
    with store.transaction() as db:
        db.execute("DELETE FROM login_attempts WHERE user_id = ?", [row["id"]])
        if upgraded:  # only if nobody changed the password meanwhile
            db.execute("UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
                       [upgraded, row["id"], row["password_hash"]])
        store.audit(row["username"], "login.ok", {"rehashed": True} if upgraded else None, db=db)
    return _user(row)


def change_password(store: Store, user: User, old_password: str, new_password: str, *,
                    keep_session: str | None = None) -> User:
    """Set a new password and log the user out everywhere else: every other session of
    theirs is revoked in the same transaction (a stolen session dies with the old
    password). `keep_session` is the cookie of the session making the change, which
    stays logged in; None ends them all."""
    from core.studio.sessions import revoke_user_sessions  # core.studio.sessions imports this module

    row = store.one("SELECT * FROM users WHERE id = ?", [user.id])
    if row is None or not verify_password(old_password or "", row["password_hash"]):
        raise InputError("the current password is wrong")
    check_new_password(new_password, row["username"])
    if new_password == old_password:
        raise InputError("choose a password different from the current one")
    with store.transaction() as db:
        db["users"].update(user.id, {"password_hash": hash_password(new_password), "must_change_password": 0})
        revoke_user_sessions(store, user.id, keep_session, db=db)
        store.audit(user.username, "user.password", db=db)
    return User(user.id, user.username, user.role, False)


def set_role(store: Store, by: User, username: str, role: str | None = None, *, disabled: bool | None = None) -> None:
    """Change a user's role and/or disable or re-enable them; None leaves that part as it
    is. An admin cannot demote or disable themselves, and nobody can demote or disable the
    last active admin: both checks, and the acting admin's own rights, are judged inside
    the write transaction, so two admins demoting each other at once leave one admin."""
    require(by, "users")
    if role is not None and role not in ROLES:
        raise InputError(f"unknown role '{role}'")
    with store.transaction() as db:
        by = require_current(db, by, "users")
        # usernames are case-insensitive (log-in, uniqueness), so 'alice' here is 'Alice'
        row = db.execute("SELECT id, username, role, disabled FROM users WHERE username = ? COLLATE NOCASE",
                         [(username or "").strip()]).fetchone()
        if row is None:
            raise InputError(f"no user '{username}'")
        user_id, username, old_role, was_disabled = row
        loses_admin = old_role == "admin" and not was_disabled and (role not in (None, "admin") or bool(disabled))
        if loses_admin and (user_id == by.id or username == by.username):
            raise InputError("you cannot demote or disable yourself")
        if loses_admin and not db.execute("SELECT 1 FROM users WHERE role = 'admin' AND disabled = 0 AND id != ?",
                                          [user_id]).fetchone():
            raise InputError(f"'{username}' is the last active admin; make someone else an admin first")
        changes = {}
        if role is not None:
            changes["role"] = role
        if disabled is not None:
            changes["disabled"] = int(disabled)
        db["users"].update(user_id, changes)
        store.audit(by.username, "user.update", {"username": username, **changes}, db=db)


def reset_password(store: Store, username: str, password: str, *, by: User | None = None) -> User:
    """Shell recovery (`python -m core users reset-password`): set a new password without
    the old one and end every session of the user. Only the server's owner reaches this
    (`by`, for the audit log: the shell's system user by default)."""
    from core.studio.sessions import revoke_user_sessions  # core.studio.sessions imports this module

    row = store.one("SELECT * FROM users WHERE username = ? COLLATE NOCASE", [(username or "").strip()])
    if row is None:
        raise InputError(f"no user '{username}'")
    check_new_password(password, row["username"])
    hashed = hash_password(password)
    with store.transaction() as db:
        db["users"].update(row["id"], {"password_hash": hashed, "must_change_password": 0})
        db.execute("DELETE FROM login_attempts WHERE user_id = ?", [row["id"]])
        ended = revoke_user_sessions(store, row["id"], db=db)
        store.audit((by or User.system()).username, "user.password.reset", {"username": row["username"],
                                                                    "sessions_ended": ended}, db=db)
    return _user(row)


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
    settings = get_settings()
    name, password = settings.admin_user, settings.admin_password
    one_time = not password
    if one_time:
        password = secrets.token_urlsafe(12)
    try:
        created = create_user(store, name, password, "admin", must_change_password=one_time)
    except PermissionDenied:
        return None  # another process created the first user meanwhile
    if one_time:
        _expire_one_time_password(store, created.id)
    return password if one_time else None


ONE_TIME_PASSWORD_HOURS = 24  # a printed password left in a terminal or a log stops working


def _expire_one_time_password(store: Store, user_id: int) -> None:
    """Give a one-time password its expiry (it ends anyway once the user sets their own)."""
    from datetime import datetime, timedelta, timezone

    expires = datetime.now(timezone.utc) + timedelta(hours=ONE_TIME_PASSWORD_HOURS)
    expires = expires.isoformat(timespec="milliseconds")  # utc_now()'s format: compares as text
    with store.transaction() as db:
        db.execute("UPDATE users SET password_expires_at = ? WHERE id = ?", [expires, user_id])


def one_time_password_expired(row: dict) -> bool:
    """A users row whose one-time password (still not replaced) is past its expiry: it
    no longer logs in; `python -m core users reset-password NAME` sets a new one."""
    return bool(row.get("must_change_password") and row.get("password_expires_at")
                and row["password_expires_at"] < utc_now())

