"""Users (admins): who can log in, with which role; add people, change roles, disable.

"Change a user" starts from the chosen user's current role and state and sends only what
the admin changed (a Save that only disables someone never touches their role). Making
someone an admin asks first. core.studio.auth.set_role refuses to demote or disable yourself or
the last active admin, judged inside its write transaction.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.studio.auth import MIN_PASSWORD_LENGTH, create_user, list_users, set_role
from core.studio.store import ROLES
from pages._ui.flash import flash, show_flash
from pages._ui.session import require_page, store
from pages._ui.widgets import friendly_errors

PENDING = "users_pending_admin"  # a grant of admin rights waiting for the admin's "yes"

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
