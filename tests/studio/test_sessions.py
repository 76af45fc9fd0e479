"""core.studio.sessions: the signed, expiring, revocable log-in session behind the cookie, on a
real SQLite file. Only the token's hash is stored; a cookie this server did not sign is
refused; idle and absolute expiry, log-out, a disabled account, a changed role, and a
password change that logs the user out everywhere else."""

from __future__ import annotations

import hashlib
import stat
import time

import pytest
from helpers.studio import cheap_hashes

from core.common.errors import InputError
from core.studio import sessions
from core.studio.auth import change_password, create_user, set_role
from core.studio.sessions import check_session, create_session, resume_session, revoke_session, revoke_user_sessions
from core.studio.store import Store

PASSWORD = "correct horse"


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    monkeypatch.delenv("STUDIO_SESSION_IDLE_MINUTES", raising=False)
    cheap_hashes(monkeypatch)  # hashing is tested in test_auth
    return Store(tmp_path / "data" / "studio.db")


@pytest.fixture
def admin(store):
    return create_user(store, "alice", PASSWORD, "admin")


@pytest.fixture
def rita(store, admin):
    return create_user(store, "rita", PASSWORD, "reviewer", by=admin)


def session_row(store, cookie: str) -> dict:
    return store.one("SELECT * FROM sessions WHERE id = ?", [hashlib.sha256(cookie.split(".")[0].encode()).hexdigest()])


def age(store, cookie: str, **columns: float) -> None:
    """Move a session's clock columns (seconds, relative to now)."""
    sets = ", ".join(f"{name} = ?" for name in columns)
    with store.transaction() as db:
        db.execute(f"UPDATE sessions SET {sets} WHERE id = ?",
                   [time.time() + delta for delta in columns.values()] + [session_row(store, cookie)["id"]])


def test_a_session_resumes_and_the_database_holds_only_the_token_hash(store, rita):
    cookie = create_session(store, rita, "Mozilla/5.0 test")
    token, signature = cookie.split(".")
    assert len(token) >= 43 and signature  # 32 random bytes, url-safe
    assert resume_session(store, cookie) == rita
    assert check_session(store, cookie) == (rita, "ok")

    [row] = store.query("SELECT * FROM sessions")
    assert row["id"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(row) and signature not in str(row)
    assert row["user_id"] == rita.id and row["user_agent"] == "Mozilla/5.0 test" and row["revoked_at"] is None
    assert row["expires_at"] - row["created_at"] == pytest.approx(sessions.MAX_SESSION_HOURS * 3600)

    # two log-ins are two sessions with different tokens
    other = create_session(store, rita, None)
    assert other != cookie and resume_session(store, other) == rita

    # the signing secret sits beside the database, readable by its owner only
    secret = store.path.parent / sessions.SECRET_NAME
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_bytes()) == 32


@pytest.mark.parametrize("cookie", [
    None, "", "garbage", "a.b.c", ".", "token.", ".signature", "x" * 5000, "näive.cookie", "%00.%00",
])
def test_a_garbled_cookie_is_refused(store, rita, cookie):
    create_session(store, rita)
    assert check_session(store, cookie) == (None, "missing")
    assert revoke_session(store, cookie) is False


def test_a_forged_or_foreign_cookie_is_refused(store, rita, tmp_path):
    cookie = create_session(store, rita)
    token, signature = cookie.split(".")
    # a real token with a signature this server never made, and a signature moved to another token
    assert resume_session(store, f"{token}.{'A' * len(signature)}") is None
    assert resume_session(store, f"{token[:-1]}{'A' if token[-1] != 'A' else 'B'}.{signature}") is None
    # a cookie signed by another server (another home, another secret) for a token this one does not know
    foreign_store = Store(tmp_path / "other" / "studio.db")
    foreign_user = create_user(foreign_store, "rita", PASSWORD, "reviewer")
    foreign = create_session(foreign_store, foreign_user)
    assert resume_session(store, foreign) is None
    # a correctly signed token without a session row (e.g. purged) is refused too
    unknown = "unknowntoken"
    assert check_session(store, f"{unknown}.{sessions._sign(store, unknown)}") == (None, "missing")
    assert resume_session(store, cookie) == rita  # the real one still works


def test_log_out_revokes_only_that_session(store, rita):
    cookie, other = create_session(store, rita), create_session(store, rita)
    assert revoke_session(store, cookie) is True
    assert check_session(store, cookie) == (None, "revoked")
    assert revoke_session(store, cookie) is False  # already ended
    assert resume_session(store, other) == rita
    assert session_row(store, cookie)["revoked_at"] is not None


def test_idle_and_absolute_expiry(store, rita, monkeypatch):
    cookie = create_session(store, rita)
    age(store, cookie, last_seen=-59 * 60)
    assert resume_session(store, cookie) == rita  # 59 minutes idle: still in (default 60)
    age(store, cookie, last_seen=-61 * 60)
    assert check_session(store, cookie) == (None, "expired")

    # STUDIO_SESSION_IDLE_MINUTES is read at every check
    fresh = create_session(store, rita)
    age(store, fresh, last_seen=-10 * 60)
    assert resume_session(store, fresh) == rita  # (which marks it used now)
    age(store, fresh, last_seen=-10 * 60)
    monkeypatch.setenv("STUDIO_SESSION_IDLE_MINUTES", "5")
    assert check_session(store, fresh) == (None, "expired")
    for bad in ("not a number", "nan"):  # the default, not a crash nor a session that never idles out
        monkeypatch.setenv("STUDIO_SESSION_IDLE_MINUTES", bad)
        assert resume_session(store, fresh) == rita
        assert sessions.idle_seconds() == sessions.IDLE_MINUTES_DEFAULT * 60

    # past the absolute limit even though it was used a second ago
    busy = create_session(store, rita)
    age(store, busy, created_at=-12 * 3600 - 5, expires_at=-5, last_seen=-1)
    assert check_session(store, busy) == (None, "expired")


def test_last_seen_is_written_at_most_every_30_seconds(store, rita):
    cookie = create_session(store, rita)
    age(store, cookie, last_seen=-10)
    before = session_row(store, cookie)["last_seen"]
    for _ in range(3):
        assert resume_session(store, cookie) == rita
    assert session_row(store, cookie)["last_seen"] == before  # no write per rerun
    age(store, cookie, last_seen=-(sessions.TOUCH_EVERY_S + 1))
    assert resume_session(store, cookie) == rita
    assert session_row(store, cookie)["last_seen"] == pytest.approx(time.time(), abs=5)


def test_a_disabled_account_is_out_and_a_role_change_applies_at_once(store, admin, rita):
    cookie = create_session(store, rita)
    set_role(store, admin, "rita", "viewer")
    user = resume_session(store, cookie)
    assert user.role == "viewer" and not user.can("review")
    set_role(store, admin, "rita", disabled=True)
    assert check_session(store, cookie) == (None, "disabled")
    set_role(store, admin, "rita", disabled=False)
    assert resume_session(store, cookie).role == "viewer"


def test_revoke_user_sessions_keeps_the_asking_session_and_other_users(store, admin, rita):
    mine, laptop, phone = (create_session(store, rita) for _ in range(3))
    alices = create_session(store, admin)
    assert revoke_user_sessions(store, rita.id, except_token=mine) == 2
    assert resume_session(store, mine) == rita
    assert resume_session(store, laptop) is None and resume_session(store, phone) is None
    assert resume_session(store, alices) == admin
    assert revoke_user_sessions(store, rita.id) == 1  # no exception: all of them
    assert resume_session(store, mine) is None


def test_a_password_change_logs_the_user_out_everywhere_else(store, rita):
    here, elsewhere = create_session(store, rita), create_session(store, rita)
    with pytest.raises(InputError):  # a refused change logs nobody out
        change_password(store, rita, "wrong password", "a new password", keep_session=here)
    assert resume_session(store, elsewhere) == rita

    change_password(store, rita, PASSWORD, "a new password", keep_session=here)
    assert resume_session(store, here) == rita
    assert check_session(store, elsewhere) == (None, "revoked")

    # without a session to keep (e.g. from the shell) every session ends
    change_password(store, rita, "a new password", "another password")
    assert resume_session(store, here) is None


def test_long_ended_sessions_are_purged_at_the_next_log_in(store, rita):
    old = create_session(store, rita)
    recent = create_session(store, rita)
    age(store, old, expires_at=-(sessions.KEEP_ENDED_DAYS + 1) * 86400)
    age(store, recent, expires_at=-86400)
    create_session(store, rita)
    assert store.one("SELECT COUNT(*) AS n FROM sessions")["n"] == 2
    assert store.one("SELECT 1 AS x FROM sessions WHERE id = ?", [session_row(store, recent)["id"]])
