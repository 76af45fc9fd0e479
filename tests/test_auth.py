"""core.auth: scrypt hashes, log-in, the first admin, one-time passwords, who may add
and change users, and the role × action table. Real hashes (no cheap cost) here."""

from __future__ import annotations

import json

import pytest

from core.auth import (
    PERMISSIONS,
    PermissionDenied,
    User,
    authenticate,
    change_password,
    create_user,
    ensure_first_admin,
    hash_password,
    list_users,
    require,
    set_role,
    verify_password,
)
from core.errors import InputError
from core.store import ROLES, Store

PASSWORD = "correct horse"


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.delenv("STUDIO_ADMIN_USER", raising=False)
    monkeypatch.delenv("STUDIO_ADMIN_PASSWORD", raising=False)
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
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert salt_a != b.split("$")[4] and key_a != b.split("$")[5]
    assert PASSWORD not in a and PASSWORD.encode().hex() not in a
    assert verify_password(PASSWORD, a) and verify_password(PASSWORD, b)


@pytest.mark.parametrize("stored", ["", "plain", "bcrypt$x$y$z$a$b", "scrypt$16384$8$1$!!notb64$xx",
                                    "scrypt$abc$8$1$AAAA$AAAA", "scrypt$16384$8$1$AAAA"])
def test_verify_rejects_malformed_hashes_without_raising(stored):
    assert verify_password(PASSWORD, stored) is False


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


def test_failed_log_ins_are_audited(store, admin):
    authenticate(store, "alice", "wrong password")
    authenticate(store, "mallory", PASSWORD)
    authenticate(store, "alice", PASSWORD)  # a success is not a failure
    assert audit(store, "login.failed") == [{"user": "Alice", "action": "login.failed", "detail": None},
                                            {"user": "mallory", "action": "login.failed", "detail": None}]


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
    with pytest.raises(InputError, match="at least 8"):
        change_password(store, user, one_time, "short")
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
    ("newbie", "short", "viewer", "at least 8"),
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
