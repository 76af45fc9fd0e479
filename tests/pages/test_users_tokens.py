"""The Users page's "API tokens" section (issue 13): an admin makes a token for a user, sees
it once, and revokes it. Each token is checked with core.studio.tokens.bearer_user, the same
check the HTTP API makes on `Authorization: Bearer`, against the real SQLite store.

The page keeps a new token nowhere (not in the session): the run that made it shows it, the
next one does not. A choice that vanished between two runs (a user disabled, a token revoked
by someone else) is cleared, never moved to another user or token.
"""

from __future__ import annotations

import json

import pandas as pd
from helpers.apptest import (
    NO_ACCESS,
    PAGES,
    TITLES,
    button,
    errors,
    in_navigation,
    login,
    ok,
    open_page,
    run_page_directly,
    titles,
    user_object,
)
from helpers.apptest import store as app_store
from streamlit.testing.v1 import AppTest

from core.studio.auth import set_role
from core.studio.tokens import MAX_LABEL_LENGTH, bearer_user, create_token, revoke_token

SECTION = "API tokens"
NO_USER = ("Choose the user the token is for. Only enabled users are listed: to give a disabled user a token, "
           "enable the account first (Change a user).")
NO_TOKEN = "Choose the token to revoke (the list shows the active ones as they are now)."


def has_section(at: AppTest) -> bool:
    return SECTION in [s.value for s in at.subheader]


def token_table(at: AppTest) -> pd.DataFrame | None:
    """The tokens table (the one with a Token column), or None when the page shows none."""
    found = [d.value for d in at.dataframe if "Token" in d.value.columns]
    assert len(found) <= 1
    return found[0] if found else None


def shown_tokens(at: AppTest) -> list[str]:
    return [c.value for c in at.code]


def everything_drawn(at: AppTest) -> str:
    """All text the page drew, to make sure a token is not there."""
    parts = [str(el.value) for kind in ("markdown", "caption", "code", "success", "info", "warning", "error")
             for el in at.get(kind)]
    parts += [d.value.to_csv() for d in at.dataframe]
    return "\n".join(parts)


def create(at: AppTest, username: str | None, label: str = "") -> AppTest:
    if username is not None:
        at.selectbox(key="token_user").select(username)
    at.text_input(key="token_label").set_value(label)  # set_value: AppTest's input() ignores a value past max_chars
    button(at, "Create token").click()
    return ok(at.run())


def revoke(at: AppTest, token_id: int | None) -> AppTest:
    if token_id is not None:
        at.selectbox(key="revoke_token_id").select(token_id)
    button(at, "Revoke").click()
    return ok(at.run())


def token_rows() -> list[dict]:
    return app_store().query("SELECT t.id, u.username, t.label, t.revoked_at FROM api_tokens t "
                             "JOIN users u ON u.id = t.user_id ORDER BY t.id")


def test_an_admin_makes_a_token_sees_it_once_and_revokes_it(app_home):
    at = open_page(login("admin"), "users")
    assert titles(at) == [TITLES["users"]] and has_section(at)
    assert token_table(at) is None
    assert any("python -m core users token NAME" in c.value for c in at.caption)  # the empty state says how
    assert shown_tokens(at) == []
    assert at.selectbox(key="token_user").options == ["admin", "rita", "victor"]
    assert at.selectbox(key="token_user").value is None  # nobody chosen for the admin

    # create: shown once, with the warning, and it works as rita
    at = create(at, "rita", "  nightly   PIM sync ")
    assert errors(at) == []
    [token] = shown_tokens(at)
    assert token.startswith("cst_") and len(token) > 40
    assert any("will not be shown again" in w.value for w in at.warning)
    assert [s.value for s in at.success] == ["Made an API token for **rita** (listed below by its first characters)."]
    assert token not in repr({k: at.session_state[k] for k in at.session_state})  # kept nowhere
    table = token_table(at)
    assert table is not None and len(table) == 1
    row = table.iloc[0]
    assert (row["User"], row["Label"], row["Token"], row["Created by"], row["Last used (UTC)"], row["Status"]) == (
        "rita", "nightly PIM sync", token[:10] + "…", "admin", "never", "active")
    assert token not in table.to_csv()
    used = bearer_user(app_store(), token)
    assert used is not None and (used.username, used.role) == ("rita", "reviewer")

    # the next run: gone from the page, listed by its prefix, used just now
    at = ok(at.run())
    assert shown_tokens(at) == [] and token not in everything_drawn(at)
    assert not any("will not be shown again" in w.value for w in at.warning)
    row = token_table(at).iloc[0]
    assert row["Token"] == token[:10] + "…" and row["Status"] == "active"
    assert row["Last used (UTC)"] != "never"
    # and after going to another page and back
    at = open_page(open_page(at, "predict"), "users")
    assert shown_tokens(at) == [] and token not in everything_drawn(at)

    # revoke: the table says so at once, the token no longer works
    [stored] = token_rows()
    assert [o for o in at.selectbox(key="revoke_token_id").options] == [
        f"#{stored['id']} rita · nightly PIM sync · {token[:10]}…"]
    at = revoke(at, stored["id"])
    assert errors(at) == []
    assert [s.value for s in at.success] == [
        f"Revoked #{stored['id']} rita · nightly PIM sync · {token[:10]}…: it no longer works."]
    assert token_table(at).iloc[0]["Status"].startswith("revoked ")
    assert bearer_user(app_store(), token) is None
    assert not [s for s in at.selectbox if s.key == "revoke_token_id"]  # nothing left to revoke
    assert "No active tokens." in [c.value for c in at.caption]

    # revoking twice is harmless: no change, no error, still revoked
    revoked_at = token_rows()[0]["revoked_at"]
    assert revoke_token(app_store(), user_object("admin"), stored["id"]) is False
    at = ok(at.run())
    assert errors(at) == [] and token_rows()[0]["revoked_at"] == revoked_at
    assert token_table(at).iloc[0]["Status"].startswith("revoked ")

    audit = app_store().query("SELECT user, action, detail FROM audit WHERE action LIKE 'token.%' ORDER BY id")
    assert [(a["user"], a["action"], json.loads(a["detail"])) for a in audit] == [
        ("admin", "token.create", {"username": "rita", "label": "nightly PIM sync"}),
        ("admin", "token.revoke", {"token": stored["id"], "username": "rita"})]


def test_tokens_refuse_bad_input_and_non_admins_with_a_message(app_home):
    # a reviewer neither sees the Users page nor gets the section by forcing it
    rita = login("rita")
    assert not in_navigation(rita, PAGES["users"])
    forced = run_page_directly("users", "rita")
    assert errors(forced) == [NO_ACCESS] and not has_section(forced)
    assert not forced.selectbox and not forced.button and not forced.code

    at = open_page(login("admin"), "users")

    # Create with nobody chosen: a message, no token
    at = create(at, None, "whatever")
    assert errors(at) == [NO_USER]
    assert token_rows() == [] and shown_tokens(at) == []

    # a 500-character label is cut, not refused (a browser stops at max_chars; a crafted request does not)
    at = create(at, "rita", "x" * 500)
    assert errors(at) == []
    [rita_token] = shown_tokens(at)
    assert [r["label"] for r in token_rows()] == ["x" * MAX_LABEL_LENGTH]

    # rita is disabled between choosing her and the click: refused, and no token for anybody else
    at.selectbox(key="token_user").select("rita")
    set_role(app_store(), user_object("admin"), "rita", disabled=True)  # another admin, meanwhile
    button(at, "Create token").click()
    at = ok(at.run())
    assert errors(at) == [NO_USER]
    assert len(token_rows()) == 1 and shown_tokens(at) == []
    assert "rita" not in at.selectbox(key="token_user").options  # only enabled users are offered
    # her token is on hold while she is disabled, and works again once she is enabled
    assert token_table(at).iloc[0]["Status"] == "on hold: user disabled"
    assert bearer_user(app_store(), rita_token) is None
    set_role(app_store(), user_object("admin"), "rita", disabled=False)
    assert bearer_user(app_store(), rita_token).username == "rita"

    # Revoke with nothing chosen, and a chosen token revoked meanwhile: a message, and the
    # other active tokens stay active (the choice is cleared, not moved to another token)
    for label in ("ci", "backup"):
        create_token(app_store(), user_object("admin"), "victor", label)
    at = ok(at.run())
    ids = [r["id"] for r in token_rows()]
    at = revoke(at, None)
    assert errors(at) == [NO_TOKEN]
    at.selectbox(key="revoke_token_id").select(ids[1])
    revoke_token(app_store(), user_object("admin"), ids[1])  # another admin, meanwhile
    button(at, "Revoke").click()
    at = ok(at.run())
    assert errors(at) == [NO_TOKEN]
    assert [r["revoked_at"] is None for r in token_rows()] == [True, False, True]
    assert at.selectbox(key="revoke_token_id").value is None
    assert bearer_user(app_store(), rita_token).username == "rita"
