"""Catalog Studio: log-in, navigation by role, and the sidebar with the live model.

Run it with `python -m core serve` (creates the first admin and the demo model when
needed), or `streamlit run streamlit_app.py`.
"""

from __future__ import annotations

import time

import streamlit as st

from core.common.errors import InputError, one_line
from core.studio.auth import MIN_PASSWORD_LENGTH, LoginThrottled, authenticate, change_password, ensure_first_admin
from core.studio.registry import live_model, sync_models
from pages._ui.session import (
    current_user,
    end_session,
    restore_session,
    start_session,
    store,
    sync_session_cookie,
    touch_session,
)

st.set_page_config(page_title="Catalog Studio", page_icon=":material/category:", layout="wide")


@st.cache_resource(show_spinner=False)
def bootstrap() -> None:
    """Once per process: the disk tidied (stale uploads, the download cache), an admin
    exists (a one-time password goes to the server log, never the page), bundles
    trained from the command line are registered, and jobs whose worker died with the
    last server are recorded as failed (the pages' reads only show them so)."""
    from core.studio.batch import tidy_disk
    from core.studio.jobs import reap_dead_jobs

    tidy_disk()  # `python -m core serve` does it too; a plain `streamlit run` needs it here
    one_time = ensure_first_admin(store())
    if one_time:
        print(f"\n  Catalog Studio: first admin 'admin', one-time password: {one_time}\n"
              "  (you will be asked to choose a new one at first log-in)\n", flush=True)
    sync_models(store())
    reap_dead_jobs(store())


def login_form() -> None:
    st.title("Catalog Studio")
    st.caption("Put every product in the right category, and keep the classifier honest.")
    if msg := st.session_state.pop("flash", None):
        st.info(msg)
    with st.form("login", clear_on_submit=True):  # no password left in the page after a log-in
        username = st.text_input("Username", key="login_username")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            user = authenticate(store(), username, password)
        except LoginThrottled as exc:  # too many wrong passwords for this account: the password was not checked
            st.error(f"Too many failed log-ins for this account. Try again in {exc.retry_after} s.")
            return
        if user is None:
            time.sleep(0.5)  # slows guessing a little more; the hash is the main brake
            st.error("Wrong username or password.")
            return
        start_session(user)  # a server-side session and its cookie: a reload keeps the user logged in
        st.rerun()
    st.caption("First run? The admin's one-time password was printed in the terminal that started the app "
               "(or set STUDIO_ADMIN_USER and STUDIO_ADMIN_PASSWORD before starting it).")


def password_form(user, *, old_label: str = "One-time password", form_key: str = "new_password") -> None:
    """Change the password; every other session of the user is logged out, this one stays."""
    with st.form(form_key):
        old = st.text_input(old_label, type="password")
        new = st.text_input(f"New password ({MIN_PASSWORD_LENGTH} characters or more, not a common one)",
                            type="password")
        again = st.text_input("New password again", type="password")
        submitted = st.form_submit_button("Save password", type="primary")
    if submitted:
        if new != again:
            st.error("The two new passwords differ.")
            return
        try:
            st.session_state["user"] = change_password(store(), user, old, new,
                                                       keep_session=st.session_state.get("session_token"))
        except InputError as exc:
            st.error(one_line(exc))
            return
        st.session_state["flash_toast"] = "Password changed; your other sessions are logged out."
        st.rerun()


def first_password_page(user) -> None:
    st.title("Choose a new password")
    st.write(f"Logged in as **{user.username}** with a one-time password: choose your own to continue.")
    password_form(user)


def sidebar(user) -> None:
    with st.sidebar:
        model = live_model(store())
        st.markdown(f"**{user.username}** · {user.role}")
        if model:
            st.caption(f"Live model **{model.version}**")
        else:
            st.caption("No live model yet")
        with st.popover("Change password", icon=":material/key:"):
            password_form(user, old_label="Current password", form_key="change_password")
        if st.button("Log out", key="logout"):
            end_session("You are logged out.")
            st.rerun()
        sync_session_cookie()


try:
    bootstrap()
except InputError as exc:  # e.g. a STUDIO_ADMIN_PASSWORD the password policy refuses
    print(f"\n  Catalog Studio: the first admin could not be created: {one_line(exc)}\n", flush=True)
    st.error(f"The first admin could not be created: {one_line(exc)}. Set another STUDIO_ADMIN_PASSWORD "
             "and restart, or add an admin with `python -m core users add NAME --role admin`.")
    st.stop()
# This tab's user, or the browser's session cookie picked up after F5, in a new tab or on a
# deep link; then checked on every run: idle and absolute expiry, revocation (log-out
# elsewhere, a password change), and a role change or disabling by an admin apply at once.
user = restore_session()
if user is not None:
    if ended := touch_session():
        end_session(ended)
        user = None
    else:
        user = current_user()  # re-read from the database by touch_session
if toast := st.session_state.pop("flash_toast", None):
    st.toast(toast)

if user is None:
    st.navigation([st.Page(login_form, title="Log in", url_path="login")], position="hidden").run()
    sync_session_cookie()
elif user.must_change_password:
    st.navigation([st.Page(lambda: first_password_page(user), title="New password", url_path="password")],
                  position="hidden").run()
    sync_session_cookie()
else:
    pages = {"Classify": [st.Page("pages/predict.py", title="Predict", icon=":material/search:", default=True)]}
    if user.can("batch"):
        pages["Classify"].append(st.Page("pages/batch.py", title="Batch", icon=":material/inventory_2:"))
    if user.can("review"):
        pages["Review"] = [
            st.Page("pages/review.py", title="Review queue", icon=":material/fact_check:"),
            st.Page("pages/my_decisions.py", title="My decisions", icon=":material/history:"),
        ]
    pages["Watch"] = [st.Page("pages/browse.py", title="Data browser", icon=":material/table_view:"),
                      st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:")]
    if user.can("models"):
        pages["Watch"].append(st.Page("pages/models.py", title="Models", icon=":material/model_training:"))
    if user.can("users"):
        pages["Admin"] = [st.Page("pages/users.py", title="Users", icon=":material/group:"),
                          st.Page("pages/team.py", title="Team", icon=":material/groups:")]
    navigation = st.navigation(pages)
    sidebar(user)
    navigation.run()
