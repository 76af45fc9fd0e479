"""core.studio.auth: scrypt hashes (OWASP cost, maxmem, rehash at log-in), the password policy,
log-in with per-account throttling and its audit, the first admin, one-time passwords,
who may add and change users (never the last active admin), the role × action table, and
`require_current` (a demoted or disabled user's old User object cannot act).

The hashing tests use the real cost; the others use cheap hashes (the cost is stored in
each hash, so verification still goes through scrypt)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from helpers.studio import cheap_hashes

import core.studio.auth
from core.common.errors import InputError
from core.studio.auth import (
    FREE_FAILURES,
    LOCK_BASE_S,
    LOCK_MAX_S,
    PERMISSIONS,
    SCRYPT_MAXMEM,
    UNKNOWN_USER,
    LoginThrottled,
    PermissionDenied,
    User,
    authenticate,
    change_password,
    check_new_password,
    common_passwords,
    create_user,
    ensure_first_admin,
    hash_password,
    list_users,
    lock_seconds,
    needs_rehash,
    require,
    reset_password,
    set_role,
    verify_password,
)
from core.studio.store import ROLES, Store

PASSWORD = "correct horse"


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.delenv("STUDIO_ADMIN_USER", raising=False)
    monkeypatch.delenv("STUDIO_ADMIN_PASSWORD", raising=False)
    cheap_hashes(monkeypatch)
    return Store(tmp_path / "studio.db")


@pytest.fixture
def admin(store) -> User:
    return create_user(store, "Alice", PASSWORD, "admin")


def audit(store, action: str | None = None) -> list[dict]:
    rows = store.query("SELECT user, action, detail FROM audit ORDER BY id")
    rows = [{**r, "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]
    return [r for r in rows if action is None or r["action"] == action]


# --------------------------------------------------------------------------- hashing


def test_hash_and_verify_round_trip():
    stored = hash_password(PASSWORD)
    assert verify_password(PASSWORD, stored)
    assert not verify_password("correct horse ", stored)
    assert not verify_password("wrong password", stored)
    assert not verify_password("", stored)


def test_salts_differ_and_the_hash_hides_the_password():
    a, b = hash_password(PASSWORD), hash_password(PASSWORD)
    assert a != b
    scheme, n, r, p, salt_a, key_a = a.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**17, 8, 1)  # OWASP's current scrypt cost
    assert salt_a != b.split("$")[4] and key_a != b.split("$")[5]
    assert PASSWORD not in a and PASSWORD.encode().hex() not in a
    assert verify_password(PASSWORD, a) and verify_password(PASSWORD, b)


@pytest.mark.parametrize("stored", ["", "plain", "bcrypt$x$y$z$a$b", "scrypt$16384$8$1$!!notb64$xx",
                                    "scrypt$abc$8$1$AAAA$AAAA", "scrypt$16384$8$1$AAAA"])
def test_verify_rejects_malformed_hashes_without_raising(stored):
    assert verify_password(PASSWORD, stored) is False


def test_maxmem_bounds_a_check_and_a_too_costly_stored_hash_is_refused_not_computed():
    """2**17 × r=8 needs 128 MiB: inside the bound. A hash asking for 1 GiB (n=2**20) — a
    tampered row, say — is a failed check, quickly, not a gigabyte allocated."""
    assert 128 * 8 * 2**17 < SCRYPT_MAXMEM <= 512 * 1024**2
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    import base64

    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    assert verify_password(PASSWORD, f"scrypt$1024$8$1${b64(salt)}${b64(key)}")
    started = time.perf_counter()
    assert verify_password(PASSWORD, f"scrypt${2**20}$8$1${b64(salt)}${b64(key)}") is False
    assert time.perf_counter() - started < 0.5


def test_the_user_table_stores_only_the_hash(store, admin):
    row = store.one("SELECT password_hash FROM users WHERE id = ?", [admin.id])
    assert row["password_hash"].startswith("scrypt$") and PASSWORD not in row["password_hash"]
    assert verify_password(PASSWORD, row["password_hash"])


# --------------------------------------------------------------------------- log-in


def test_authenticate_is_case_insensitive_on_the_username(store, admin):
    for name in ("Alice", "alice", "ALICE", "  alice "):
        user = authenticate(store, name, PASSWORD)
        assert user == User(admin.id, "Alice", "admin", False)


def test_wrong_password_unknown_user_and_disabled_user_all_get_none(store, admin):
    bob = create_user(store, "bob", PASSWORD, "reviewer", by=admin)
    assert authenticate(store, "alice", "wrong password") is None
    assert authenticate(store, "nobody", PASSWORD) is None
    assert authenticate(store, "", "") is None
    assert authenticate(store, None, None) is None
    assert authenticate(store, "bob", PASSWORD) == bob
    set_role(store, admin, "bob", disabled=True)
    assert authenticate(store, "bob", PASSWORD) is None
    set_role(store, admin, "bob", disabled=False)
    assert authenticate(store, "bob", PASSWORD) == bob


def test_log_ins_are_audited_and_a_stranger_s_typed_name_is_never_stored(store, admin):
    authenticate(store, "alice", "wrong password")
    authenticate(store, "mallory", PASSWORD)
    authenticate(store, "alice", PASSWORD)
    logins = [r for r in audit(store) if r["action"].startswith("login.")]
    assert logins == [
        {"user": "Alice", "action": "login.failed", "detail": {"reason": "password", "failures": 1}},
        {"user": UNKNOWN_USER, "action": "login.failed", "detail": {"reason": "password"}},
        {"user": "Alice", "action": "login.ok", "detail": None},
    ]
    dump = json.dumps(store.query("SELECT * FROM audit")) + json.dumps(store.query("SELECT * FROM login_attempts"))
    assert "mallory" not in dump.lower()


# --------------------------------------------------------------------------- throttling


def test_repeated_failures_lock_the_account_with_a_doubling_delay(store, admin, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(core.studio.auth.time, "time", lambda: now[0])
    for _ in range(FREE_FAILURES - 1):
        assert authenticate(store, "alice", "wrong password") is None
    assert authenticate(store, "alice", PASSWORD) == admin  # a success starts over
    for _ in range(FREE_FAILURES):
        assert authenticate(store, "alice", "wrong password") is None
    # locked: even the right password is refused, unchecked, with the wait
    with pytest.raises(LoginThrottled, match=f"try again in {int(LOCK_BASE_S)} s") as caught:
        authenticate(store, "ALICE", PASSWORD)
    assert caught.value.retry_after == LOCK_BASE_S
    now[0] += 10
    with pytest.raises(LoginThrottled) as caught:
        authenticate(store, "alice", PASSWORD)
    assert caught.value.retry_after == LOCK_BASE_S - 10
    now[0] += LOCK_BASE_S
    assert authenticate(store, "alice", "wrong password") is None  # the lock is over: one more guess …
    with pytest.raises(LoginThrottled) as caught:  # … doubles the wait
        authenticate(store, "alice", PASSWORD)
    assert caught.value.retry_after == 2 * LOCK_BASE_S
    now[0] += 2 * LOCK_BASE_S
    assert authenticate(store, "alice", PASSWORD) == admin
    assert store.query("SELECT * FROM login_attempts") == []
    assert [r["detail"]["reason"] for r in audit(store, "login.failed")].count("throttled") == 3
    # the other accounts were never slowed down
    assert lock_seconds(FREE_FAILURES - 1) == 0 and lock_seconds(100) == LOCK_MAX_S


def test_the_lock_holds_across_processes_and_unknown_names_are_throttled_in_memory(store, admin):
    for _ in range(FREE_FAILURES):
        authenticate(store, "alice", "wrong password")
    other_process = Store(store.path)  # the state is in the database, not in this process
    with pytest.raises(LoginThrottled):
        authenticate(other_process, "alice", PASSWORD)
    # a name that is nobody's behaves the same (the message must not tell which names exist)
    for _ in range(FREE_FAILURES):
        assert authenticate(store, "ghost-user", PASSWORD) is None
    with pytest.raises(LoginThrottled):
        authenticate(store, "Ghost-User", PASSWORD)
    assert "ghost" not in json.dumps(store.query("SELECT * FROM audit")).lower()


def test_reset_password_from_the_shell_unlocks_and_ends_every_session(store, admin):
    from core.studio.sessions import create_session, resume_session

    cookies = [create_session(store, admin), create_session(store, admin)]
    for _ in range(FREE_FAILURES):
        authenticate(store, "alice", "wrong password")
    reset_password(store, "alice", "a brand new secret")
    assert [resume_session(store, c) for c in cookies] == [None, None]
    assert authenticate(store, "alice", "a brand new secret") == admin
    assert audit(store, "user.password.reset")[0]["detail"] == {"username": "Alice", "sessions_ended": 2}
    with pytest.raises(InputError, match="no user"):
        reset_password(store, "ghost", "a brand new secret")
    with pytest.raises(InputError, match="common"):
        reset_password(store, "alice", "password123")


# --------------------------------------------------------------------------- rehash


def test_a_cheaper_hash_is_upgraded_at_log_in(store, monkeypatch):
    alice = create_user(store, "alice", PASSWORD, "admin")  # at the cheap test cost
    old = store.one("SELECT password_hash FROM users")["password_hash"]
    assert old.split("$")[1] == "16" and needs_rehash(old) is False
    monkeypatch.setattr(core.studio.auth, "SCRYPT_N", 2**12)  # the cost went up since
    assert needs_rehash(old)
    assert authenticate(store, "alice", PASSWORD) == alice
    new = store.one("SELECT password_hash FROM users")["password_hash"]
    assert new.split("$")[1] == str(2**12) and verify_password(PASSWORD, new) and not needs_rehash(new)
    assert audit(store, "login.ok")[-1]["detail"] == {"rehashed": True}
    assert authenticate(store, "alice", "wrong password") is None  # a failure never rehashes
    assert store.one("SELECT password_hash FROM users")["password_hash"] == new


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize("password, username, message", [
    ("short-1", "bob", "at least 10"),
    ("password123", "bob", "common"),
    ("Qwerty123456", "bob", "common"),
    ("sunshine2024!", "bob", "common"),
    ("iloveyou!!!!", "bob", "common"),
    ("margaret-smith", "margaret-smith", "username"),
    ("my-MARGARET-pw", "margaret", "username"),
    ("x" * 1025, "bob", "at most"),
])
def test_the_password_policy_refuses(password, username, message):
    with pytest.raises(InputError, match=message):
        check_new_password(password, username)


def test_the_password_policy_accepts_a_long_uncommon_one_and_ships_its_list():
    check_new_password("plum-kiwi-9017", "margaret")
    check_new_password("correct horse", "al")  # a 2-letter name inside another word is no leak
    words = common_passwords()
    assert len(words) >= 300 and {"123456", "password", "qwerty", "iloveyou", "letmein"} <= words


def test_the_policy_applies_to_new_users_and_password_changes(store, admin):
    with pytest.raises(InputError, match="common"):
        create_user(store, "bob", "password123", "viewer", by=admin)
    with pytest.raises(InputError, match="username"):
        create_user(store, "bobby", "bobby-2024-pw", "viewer", by=admin)
    with pytest.raises(InputError, match="username"):
        change_password(store, admin, PASSWORD, "alice-forever")
    with pytest.raises(InputError, match="common"):
        change_password(store, admin, PASSWORD, "letmein12345")
    assert authenticate(store, "alice", PASSWORD) == admin


def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(store, admin):
    from core.studio.sessions import create_session, resume_session

    here, elsewhere = create_session(store, admin), create_session(store, admin)
    change_password(store, admin, PASSWORD, "a brand new secret", keep_session=here)
    assert resume_session(store, here) == admin and resume_session(store, elsewhere) is None


# --------------------------------------------------------------------------- first admin


def test_first_admin_from_the_environment(store, monkeypatch):
    monkeypatch.setenv("STUDIO_ADMIN_USER", "boss")
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", "from the env")
    assert ensure_first_admin(store) is None  # nothing to print: the operator chose it
    user = authenticate(store, "boss", "from the env")
    assert user is not None and user.role == "admin" and not user.must_change_password
    assert ensure_first_admin(store) is None  # users exist: nothing more
    assert [u["username"] for u in list_users(store)] == ["boss"]
    assert audit(store, "user.create") == [{"user": "bootstrap", "action": "user.create",
                                            "detail": {"username": "boss", "role": "admin"}}]


def test_one_time_password_must_be_changed(store):
    one_time = ensure_first_admin(store)
    assert isinstance(one_time, str) and len(one_time) >= 12
    assert ensure_first_admin(store) is None
    user = authenticate(store, "admin", one_time)
    assert user is not None and user.role == "admin" and user.must_change_password
    assert list_users(store)[0]["must_change_password"] == 1

    with pytest.raises(InputError, match="current password is wrong"):
        change_password(store, user, "not it", "a new password")
    with pytest.raises(InputError, match="at least 10"):
        change_password(store, user, one_time, "short-pw")
    with pytest.raises(InputError, match="different"):
        change_password(store, user, one_time, one_time)

    changed = change_password(store, user, one_time, "a new password")
    assert changed == User(user.id, "admin", "admin", False)
    assert list_users(store)[0]["must_change_password"] == 0
    assert authenticate(store, "admin", one_time) is None
    assert authenticate(store, "admin", "a new password") == changed
    assert [r["user"] for r in audit(store, "user.password")] == ["admin"]


def test_one_time_admin_under_a_chosen_name(store, monkeypatch):
    monkeypatch.setenv("STUDIO_ADMIN_USER", "root_user")
    one_time = ensure_first_admin(store)
    assert one_time and authenticate(store, "root_user", one_time).must_change_password


# --------------------------------------------------------------------------- managing users


def test_first_user_bootstraps_then_only_admins_add_users(store):
    first = create_user(store, "alice", PASSWORD, "admin")
    with pytest.raises(PermissionDenied, match="only an admin"):
        create_user(store, "eve", PASSWORD, "admin")  # no acting user once someone exists
    reviewer = create_user(store, "rita", PASSWORD, "reviewer", by=first)
    viewer = create_user(store, "vic", PASSWORD, "viewer", by=first)
    for by in (reviewer, viewer):
        with pytest.raises(PermissionDenied):
            create_user(store, "eve", PASSWORD, "viewer", by=by)
    assert {u["username"] for u in list_users(store)} == {"alice", "rita", "vic"}
    assert audit(store, "user.create") == [
        {"user": "bootstrap", "action": "user.create", "detail": {"username": "alice", "role": "admin"}},
        {"user": "alice", "action": "user.create", "detail": {"username": "rita", "role": "reviewer"}},
        {"user": "alice", "action": "user.create", "detail": {"username": "vic", "role": "viewer"}},
    ]
    created_by = {u["username"]: u for u in store.query("SELECT username, created_by FROM users")}
    assert created_by["alice"]["created_by"] == "bootstrap" and created_by["rita"]["created_by"] == "alice"


@pytest.mark.parametrize("username, password, role, message", [
    ("x", PASSWORD, "viewer", "username"),
    ("has space", PASSWORD, "viewer", "username"),
    ("ALICE", PASSWORD, "viewer", "taken"),
    ("newbie", "short-pw", "viewer", "at least 10"),
    ("newbie", "password123", "viewer", "common"),
    ("newbie", "newbie-rules-ok", "viewer", "username"),
    ("newbie", PASSWORD, "superuser", "unknown role"),
])
def test_create_user_refuses_bad_input(store, admin, username, password, role, message):
    with pytest.raises(InputError, match=message):
        create_user(store, username, password, role, by=admin)
    assert [u["username"] for u in list_users(store)] == ["Alice"]


def test_set_role_changes_roles_but_never_demotes_or_disables_yourself(store, admin):
    create_user(store, "bob", PASSWORD, "viewer", by=admin)
    set_role(store, admin, "bob", "reviewer")
    assert authenticate(store, "bob", PASSWORD).role == "reviewer"
    for kwargs in ({"role": "viewer"}, {"role": "reviewer"}, {"disabled": True}):
        with pytest.raises(InputError, match="yourself"):
            set_role(store, admin, "Alice", **kwargs)
    set_role(store, admin, "Alice", "admin")  # a no-op, allowed
    assert authenticate(store, "alice", PASSWORD).role == "admin"
    with pytest.raises(InputError, match="no user"):
        set_role(store, admin, "ghost", "viewer")
    with pytest.raises(InputError, match="unknown role"):
        set_role(store, admin, "bob", "root")
    bob = authenticate(store, "bob", PASSWORD)
    with pytest.raises(PermissionDenied):
        set_role(store, bob, "Alice", "viewer")
    assert audit(store, "user.update") == [
        {"user": "Alice", "action": "user.update", "detail": {"username": "bob", "role": "reviewer"}},
        {"user": "Alice", "action": "user.update", "detail": {"username": "Alice", "role": "admin"}},
    ]


def test_set_role_cannot_demote_yourself_under_another_spelling(store, admin):
    """The username is case-insensitive everywhere: 'alice' is Alice."""
    with pytest.raises(InputError, match="yourself"):
        set_role(store, admin, "alice", "viewer")
    assert authenticate(store, "alice", PASSWORD).role == "admin"
    create_user(store, "Bob", PASSWORD, "viewer", by=admin)
    set_role(store, admin, "bob", "reviewer")
    assert authenticate(store, "bob", PASSWORD).role == "reviewer"


def test_another_admin_can_be_demoted(store, admin):
    create_user(store, "carol", PASSWORD, "admin", by=admin)
    set_role(store, admin, "carol", "viewer")
    assert authenticate(store, "carol", PASSWORD).role == "viewer"


# --------------------------------------------------------------------------- permissions

ACTIONS = sorted(set().union(*PERMISSIONS.values()))


def test_the_role_table():
    assert set(PERMISSIONS) == set(ROLES)
    assert PERMISSIONS["viewer"] == {"predict", "monitor"}
    assert PERMISSIONS["reviewer"] == PERMISSIONS["viewer"] | {"review", "batch"}
    assert PERMISSIONS["admin"] == set(ACTIONS) >= PERMISSIONS["reviewer"] | {"models", "train", "users"}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
def test_require_matches_the_role_table(role, action):
    user = User(1, "someone", role)
    if action in PERMISSIONS[role]:
        assert require(user, action) is user and user.can(action)
    else:
        assert not user.can(action)
        with pytest.raises(PermissionDenied, match=f"'someone' \\({role}\\) may not {action}"):
            require(user, action)


def test_require_refuses_no_user_an_unknown_role_and_an_unknown_action():
    with pytest.raises(PermissionDenied, match="log in"):
        require(None, "predict")
    with pytest.raises(PermissionDenied):
        require(User(1, "x", "superuser"), "predict")
    with pytest.raises(PermissionDenied):
        require(User(1, "x", "admin"), "launch missiles")
