"""Users (admins): who can log in, with which role; add people, change roles, disable.

"Change a user" starts from the chosen user's current role and state and sends only what
the admin changed (a Save that only disables someone never touches their role). Making
someone an admin asks first. core.studio.auth.set_role refuses to demote or disable yourself or
the last active admin, judged inside its write transaction.

"API tokens" (for the HTTP API) lists every token by its prefix, never the token: only its
hash is stored. A new token is shown in the run that made it and kept nowhere (not in the
session), so the next rerun or navigation has it gone.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.studio.auth import MIN_PASSWORD_LENGTH, create_user, list_users, set_role
from core.studio.store import ROLES
from core.studio.tokens import (
    MAX_LABEL_LENGTH,
    ApiToken,
    create_token,
    list_tokens,
    revoke_token,
)
from pages._ui.flash import flash, show_flash
from pages._ui.session import require_page, store
from pages._ui.widgets import friendly_errors

PENDING = "users_pending_admin"  # a grant of admin rights waiting for the admin's "yes"
TOKENS = "users_tokens"  # the flash messages of the API tokens section

user = require_page("users")
st.title("Users")
st.caption("viewer: Predict and Monitor · reviewer: also Review queue and Batch · admin: everything")
show_flash("users")  # what the last Add/Save did (the table below already shows it)

users = list_users(store())
st.dataframe(pd.DataFrame(users), hide_index=True, width="stretch")


def changes_of(current: dict, role: str, disabled: bool) -> dict:
    """Only what differs from the user's row: the arguments set_role gets."""
    changes: dict = {}
    if role != current["role"]:
        changes["role"] = role
    if bool(disabled) != bool(current["disabled"]):
        changes["disabled"] = bool(disabled)
    return changes


def describe(username: str, changes: dict) -> str:
    parts = []
    if "role" in changes:
        parts.append(f"now {changes['role']}")
    if "disabled" in changes:
        parts.append("disabled" if changes["disabled"] else "enabled again")
    return f"Saved {username}: {', '.join(parts)}."


def save(username: str, changes: dict) -> None:
    with friendly_errors("Could not change the user: "):
        set_role(store(), user, username, changes.get("role"), disabled=changes.get("disabled"))
        flash("users", describe(username, changes))
        st.rerun()  # the table above then shows the change


add_col, edit_col = st.columns(2)
with add_col.form("add_user", clear_on_submit=True):
    st.markdown("**Add a user**")
    username = st.text_input("Username", key="new_username")
    password = st.text_input(f"Initial password ({MIN_PASSWORD_LENGTH}+ characters, not a common one)",
                             type="password", key="new_password")
    role = st.selectbox("Role", ROLES, index=ROLES.index("reviewer"), key="new_role")
    must_change = st.checkbox("Must choose a new password at first log-in", value=True, key="new_must_change")
    if st.form_submit_button("Add user", type="primary"):
        with friendly_errors("Could not add the user: "):
            create_user(store(), username, password, role, by=user, must_change_password=must_change)
            flash("users", f"Added {username} ({role}).")
            st.rerun()  # the table above then lists the new user

with edit_col:
    st.markdown("**Change a user**")
    names = [u["username"] for u in users]
    target = st.selectbox("User", names, key="edit_username")
    current = next(u for u in users if u["username"] == target)
    # the widgets' keys carry the row's values: another user, or a change made meanwhile
    # (here or by another admin), starts the form again from what the database holds
    state = f"{target}-{current['role']}-{current['disabled']}"
    with st.form("edit_user"):
        new_role = st.selectbox("Role", ROLES, index=ROLES.index(current["role"]), key=f"edit_role-{state}")
        disabled = st.checkbox("Disabled (cannot log in)", value=bool(current["disabled"]),
                               key=f"edit_disabled-{state}")
        submitted = st.form_submit_button("Save")
    if submitted:
        st.session_state.pop(PENDING, None)
        changes = changes_of(current, new_role, disabled)
        if not changes:
            st.info(f"Nothing to save: {target} is already {current['role']}"
                    f"{', disabled' if current['disabled'] else ''}.")
        elif changes.get("role") == "admin":
            st.session_state[PENDING] = {"username": target, "state": state, "changes": changes}
        else:
            save(target, changes)

    pending = st.session_state.get(PENDING)
    if pending and pending["state"] != state:
        st.session_state.pop(PENDING)  # another user chosen, or the row changed meanwhile: ask again
    elif pending:
        st.warning(f"Make **{target}** an admin? An admin can add and disable users, change roles, "
                   "train models and make a model live.")
        yes, no = st.columns(2)
        if yes.button(f"Yes, make {target} an admin", type="primary", key="confirm_admin"):
            st.session_state.pop(PENDING)
            save(target, pending["changes"])
        if no.button("Cancel", key="cancel_admin"):
            st.session_state.pop(PENDING)
            st.rerun()


# --------------------------------------------------------------------------- API tokens


def when(iso: str | None) -> str:
    """A stored time (always UTC) to the minute."""
    return iso[:16].replace("T", " ") if iso else ""


def token_name(token: ApiToken) -> str:
    """A token in messages and in the Revoke list. It never changes: the selectbox keeps a
    choice by this text, and a choice whose text is gone is cleared, never moved to another token."""
    label = f" · {token.label}" if token.label else ""
    return f"#{token.id} {token.username}{label} · {token.prefix}…"


def status_of(token: ApiToken, disabled_users: set[str]) -> str:
    if not token.active:
        return f"revoked {when(token.revoked_at)}"
    if token.username in disabled_users:
        return "on hold: user disabled"  # refused until the account is enabled again
    return "active"


st.divider()
st.subheader("API tokens")
st.caption("For the HTTP API (`python -m core api`): a client sends `Authorization: Bearer <token>` and acts as "
           "the token's user, with that user's role as it is now, until the token is revoked. Only a hash is "
           "stored, so a token is shown once: if one is lost, revoke it and make a new one.")
show_flash(TOKENS)  # what the last Revoke did (the table shows it)
shown = st.container()  # the new token and the table, drawn once the forms below have run
new_col, revoke_col = st.columns(2)

made: tuple[str, str] | None = None  # (user, token): drawn in this run only, kept nowhere
enabled = [u["username"] for u in users if not u["disabled"]]
with new_col.form("new_token", clear_on_submit=True):
    st.markdown("**New token**")
    # no default: a token is made only for the user the admin picked (if that user is disabled
    # or removed before the click, the choice is cleared rather than moved to someone else)
    owner = st.selectbox("For user (enabled users only)", enabled, index=None, placeholder="Choose a user",
                         key="token_user")
    label = st.text_input(f"What it is for (optional, up to {MAX_LABEL_LENGTH} characters)",
                          max_chars=MAX_LABEL_LENGTH, placeholder="e.g. the nightly import from the PIM",
                          key="token_label")
    if st.form_submit_button("Create token", type="primary"):
        if owner is None:
            st.error("Choose the user the token is for. Only enabled users are listed: to give a disabled "
                     "user a token, enable the account first (Change a user).")
        else:
            with friendly_errors("Could not create the token: "):
                made = (owner, create_token(store(), user, owner, label))

tokens: list[ApiToken] = []
with friendly_errors("Could not list the API tokens: "):
    tokens = list_tokens(store(), user)  # after a Create above, so the table and Revoke list have it
active = {t.id: t for t in tokens if t.active}

with revoke_col:
    st.markdown("**Revoke a token**")
    if not active:
        st.caption("No active tokens.")
    else:
        with st.form("revoke_token"):
            chosen = st.selectbox("Token (active ones)", list(active), index=None,
                                  format_func=lambda token_id: token_name(active[token_id]),
                                  placeholder="Choose a token", key="revoke_token_id")
            revoke = st.form_submit_button("Revoke")
        if revoke and chosen is None:
            st.error("Choose the token to revoke (the list shows the active ones as they are now).")
        elif revoke:
            with friendly_errors("Could not revoke the token: "):
                if revoke_token(store(), user, chosen):
                    flash(TOKENS, f"Revoked {token_name(active[chosen])}: it no longer works.")
                else:  # revoked meanwhile (another admin): nothing to do
                    flash(TOKENS, f"{token_name(active[chosen])} was already revoked.")
                st.rerun()  # the table then shows it revoked

with shown:
    if made:
        owner, token = made
        st.success(f"Made an API token for **{owner}** (listed below by its first characters).")
        st.warning("Copy it now: it will not be shown again (only its hash is kept). If it is lost, revoke it "
                   "and make a new one.", icon=":material/warning:")
        st.code(token, language=None)
    if tokens:
        disabled_users = {u["username"] for u in users if u["disabled"]}
        st.dataframe(pd.DataFrame([{
            "#": t.id, "User": t.username, "Label": t.label or "", "Token": f"{t.prefix}…",
            "Created (UTC)": when(t.created_at), "Created by": t.created_by or "",
            "Last used (UTC)": when(t.last_used_at) or "never", "Status": status_of(t, disabled_users),
        } for t in tokens]), hide_index=True, width="stretch")
    else:
        # a caption, not st.info: the page's info box is for what a Save did
        st.caption("No API tokens yet. Make one with **New token** below, or on the server: "
                   "`python -m core users token NAME --label \"what it is for\"`.")
