"""Catalog Studio: log-in, navigation by role, and the sidebar with the live model.

Run it with `python -m core serve` (creates the first admin and the demo model when
needed), or `streamlit run streamlit_app.py`.
"""

from __future__ import annotations

import time

import streamlit as st

from core.auth import authenticate, change_password, ensure_first_admin
from core.errors import InputError, one_line
from core.registry import live_model, sync_models
from pages._shared import current_user, store, touch_session

st.set_page_config(page_title="Catalog Studio", page_icon=":material/category:", layout="wide")


@st.cache_resource(show_spinner=False)
def bootstrap() -> None:
    """Once per process: an admin exists (a one-time password goes to the server log,
    never the page) and bundles trained from the command line are registered."""
    one_time = ensure_first_admin(store())
    if one_time:
        print(f"\n  Catalog Studio: first admin 'admin', one-time password: {one_time}\n"
              "  (you will be asked to choose a new one at first log-in)\n", flush=True)
    sync_models(store())


def log_out(message: str | None = None) -> None:
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if message:
        st.session_state["flash"] = message


def login_form() -> None:
    st.title("Catalog Studio")
    st.caption("Put every product in the right category, and keep the classifier honest.")
    if msg := st.session_state.pop("flash", None):
        st.info(msg)
    with st.form("login"):
        username = st.text_input("Username", key="login_username")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        user = authenticate(store(), username, password)
        if user is None:
            time.sleep(0.5)  # slows guessing a little more; the hash is the main brake
            st.error("Wrong username or password.")
            return
        st.session_state.update(user=user, login_at=time.time(), last_seen=time.time())
        st.rerun()
    st.caption("First run? The admin's one-time password was printed in the terminal that started the app "
               "(or set STUDIO_ADMIN_USER and STUDIO_ADMIN_PASSWORD before starting it).")


def password_form(user) -> None:
    st.title("Choose a new password")
    st.write(f"Logged in as **{user.username}** with a one-time password: choose your own to continue.")
    with st.form("new_password"):
        old = st.text_input("One-time password", type="password")
        new = st.text_input("New password (8 characters or more)", type="password")
        again = st.text_input("New password again", type="password")
        submitted = st.form_submit_button("Save password", type="primary")
    if submitted:
        if new != again:
            st.error("The two new passwords differ.")
            return
        try:
            st.session_state["user"] = change_password(store(), user, old, new)
        except InputError as exc:
            st.error(one_line(exc))
            return
        st.rerun()


def sidebar(user) -> None:
    with st.sidebar:
        model = live_model(store())
        st.markdown(f"**{user.username}** · {user.role}")
        if model:
            st.caption(f"Live model **{model['version']}**")
            st.session_state["live_version"] = model["version"]
        else:
            st.caption("No live model yet")
        if st.button("Log out", key="logout"):
            log_out("You are logged out.")
            st.rerun()


bootstrap()
user = current_user()
if user is not None and not touch_session():
    log_out("Your session expired; please log in again.")
    user = None
if user is not None:  # a role changed or an account disabled by an admin applies at once
    row = store().one("SELECT role, disabled FROM users WHERE id = ?", [user.id])
    if row is None or row["disabled"]:
        log_out("Your account is disabled.")
        user = None
    elif row["role"] != user.role:
        user = type(user)(user.id, user.username, row["role"], user.must_change_password)
        st.session_state["user"] = user

if user is None:
    st.navigation([st.Page(login_form, title="Log in", url_path="login")], position="hidden").run()
elif user.must_change_password:
    st.navigation([st.Page(lambda: password_form(user), title="New password", url_path="password")],
                  position="hidden").run()
else:
    pages = {"Classify": [st.Page("pages/predict.py", title="Predict", icon=":material/search:", default=True)]}
    if user.can("batch"):
        pages["Classify"].append(st.Page("pages/batch.py", title="Batch", icon=":material/inventory_2:"))
    if user.can("review"):
        pages["Classify"].append(st.Page("pages/review.py", title="Review queue", icon=":material/fact_check:"))
    pages["Watch"] = [st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:")]
    if user.can("models"):
        pages["Watch"].append(st.Page("pages/models.py", title="Models", icon=":material/model_training:"))
    if user.can("users"):
        pages["Admin"] = [st.Page("pages/users.py", title="Users", icon=":material/group:")]
    navigation = st.navigation(pages)
    sidebar(user)
    navigation.run()
