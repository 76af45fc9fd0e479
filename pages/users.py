"""Users (admins): who can log in, with which role; add people, change roles, disable."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.auth import create_user, list_users, set_role
from core.store import ROLES
from pages._flash import flash, show_flash
from pages._shared import friendly_errors, require_page, store

user = require_page("users")
st.title("Users")
st.caption("viewer: Predict and Monitor · reviewer: also Review queue and Batch · admin: everything")
show_flash("users")  # what the last Add/Save did (the table below already shows it)

users = list_users(store())
st.dataframe(pd.DataFrame(users), hide_index=True, width="stretch")

add_col, edit_col = st.columns(2)
with add_col.form("add_user", clear_on_submit=True):
    st.markdown("**Add a user**")
    username = st.text_input("Username", key="new_username")
    password = st.text_input("Initial password (8+ characters)", type="password", key="new_password")
    role = st.selectbox("Role", ROLES, index=ROLES.index("reviewer"), key="new_role")
    must_change = st.checkbox("Must choose a new password at first log-in", value=True, key="new_must_change")
    if st.form_submit_button("Add user", type="primary"):
        with friendly_errors("Could not add the user: "):
            create_user(store(), username, password, role, by=user, must_change_password=must_change)
            flash("users", f"Added {username} ({role}).")
            st.rerun()  # the table above then lists the new user

with edit_col.form("edit_user"):
    st.markdown("**Change a user**")
    names = [u["username"] for u in users]
    target = st.selectbox("User", names, key="edit_username")
    new_role = st.selectbox("Role", ROLES, key="edit_role")
    disabled = st.checkbox("Disabled (cannot log in)", key="edit_disabled")
    if st.form_submit_button("Save"):
        with friendly_errors("Could not change the user: "):
            set_role(store(), user, target, new_role, disabled=disabled)
            flash("users", f"Saved {target}: {new_role}{', disabled' if disabled else ''}.")
            st.rerun()
