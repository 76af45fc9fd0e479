"""Who is on this page: the store, the logged-in user and the page guard, and the server-side
session behind the browser's cookie (kept across reloads, new tabs and deep links)."""

from __future__ import annotations

import time

import streamlit as st
import streamlit.components.v2

from core.studio import sessions
from core.studio.auth import User
from core.studio.store import Store


@st.cache_resource(show_spinner=False)
def store() -> Store:
    """One Store per process (it only holds the path; each operation opens its own connection)."""
    return Store()


def current_user() -> User | None:
    """This tab's logged-in user (streamlit_app.py restores it from the session cookie
    after a reload, a new tab or a deep link; see restore_session)."""
    return st.session_state.get("user")


def _run_through_the_app_shell() -> None:
    """Streamlit's legacy multipage mode runs a file of `pages/` by itself (skipping
    streamlit_app.py: no log-in, no sidebar) while no `st.navigation` has run in the process
    yet — a deep link as a fresh server's first request, or every AppTest run. The one place
    that handles it: switch the legacy mode off and run again, now through the shell."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # what st.navigation itself sets
        st.rerun()


def require_page(action: str) -> User:
    """Stop the page unless the session's user may do `action` (pages are also hidden
    from roles that cannot use them; this is the second guard)."""
    _run_through_the_app_shell()
    user = current_user()
    if user is None:  # not logged in (the shell shows the log-in form)
        st.stop()
    if not user.can(action):
        st.error("You do not have access to this page.")
        st.stop()
    return user


# --------------------------------------------------------------------------- the session cookie
#
# The log-in lives in the `sessions` table (core/studio/sessions.py); the browser holds its signed
# token in the cookie `studio_session`. Streamlit reads cookies server-side
# (st.context.cookies: those sent when the tab connected) but has no call to set one, so a
# tiny st.components.v2 component (Streamlit's own, no package: its JavaScript runs in the
# app page, not in an iframe) writes it with document.cookie: Path=/, SameSite=Strict,
# Secure when the page is served over https. Being written by JavaScript, it cannot be
# HttpOnly; the server-side checks (signature, revocation, idle and absolute expiry) are
# what protect it. The token never goes into a URL.

_COOKIE_JS = """
export default function (component) {
  const data = component.data || {};
  const name = data.name;
  if (!name) return;
  const current = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  const value = current === undefined ? null : current.slice(name.length + 1);
  const flags = "; Path=/; SameSite=Strict" + (location.protocol === "https:" ? "; Secure" : "");
  if (data.value) {
    if (value !== data.value) document.cookie = name + "=" + data.value + "; Max-Age=" + data.maxAge + flags;
  } else if (data.clear && value === data.clear) {
    // only the cookie this tab ended: another tab may have logged in since
    document.cookie = name + "=; Max-Age=0" + flags;
  }
}
"""
_cookie_component = st.components.v2.component("studio_session_cookie", js=_COOKIE_JS)

SESSION_EXPIRED = "Your session expired; please log in again."
SESSION_REVOKED = "You were logged out: your password was changed or you logged out elsewhere."
ACCOUNT_DISABLED = "Your account is disabled."


def browser_cookie() -> str | None:
    """The session cookie this tab sent when it connected (None without one, e.g. in AppTest)."""
    try:
        value = st.context.cookies.get(sessions.COOKIE_NAME)
    except Exception:  # noqa: BLE001 - no browser context (bare script run): no cookie
        return None
    return value or None


def start_session(user: User) -> None:
    """After a successful log-in: a new server-side session, its cookie written on this run."""
    try:
        user_agent = st.context.headers.get("User-Agent")
    except Exception:  # noqa: BLE001 - no browser context
        user_agent = None
    token = sessions.create_session(store(), user, user_agent)
    now = time.time()
    st.session_state.update(user=user, session_token=token, login_at=now, last_seen=now)


def restore_session() -> User | None:
    """This tab's user; a tab without one (F5, a new tab, a deep link) picks up the
    browser's session cookie when it is still valid. Each cookie value is tried once per
    tab: one that failed (or was logged out here) stays so until the browser sends another."""
    user = current_user()
    cookie = browser_cookie()
    if user is not None or cookie is None or st.session_state.get("cookie_tried") == cookie:
        return user
    st.session_state["cookie_tried"] = cookie
    user, status = sessions.check_session(store(), cookie)
    if user is None:
        st.session_state["cookie_to_clear"] = cookie  # garbled, forged, revoked or expired: drop it
        if status in ("expired", "disabled"):
            st.session_state.setdefault("flash", ACCOUNT_DISABLED if status == "disabled" else SESSION_EXPIRED)
        return None
    now = time.time()
    st.session_state.update(user=user, session_token=cookie, login_at=now, last_seen=now)
    return user


def touch_session() -> str | None:
    """Check this tab's session on every run. None while it is valid (the user is re-read
    from the database: a role change applies at once); else the reason it ended, for the
    log-in form. Ends it when this tab sat idle past the limit, the session is over
    MAX_SESSION_HOURS old, it was revoked (log-out in another tab, a password change
    elsewhere) or the account was disabled."""
    now = time.time()
    started, seen = st.session_state.get("login_at", now), st.session_state.get("last_seen", now)
    if now - seen > sessions.idle_seconds() or now - started > sessions.MAX_SESSION_HOURS * 3600:
        return SESSION_EXPIRED
    user, status = sessions.check_session(store(), st.session_state.get("session_token"))
    if user is None:
        return {"disabled": ACCOUNT_DISABLED, "expired": SESSION_EXPIRED}.get(status, SESSION_REVOKED)
    st.session_state.update(user=user, last_seen=now)
    return None


def end_session(message: str | None = None) -> None:
    """Log this tab out: the server-side session is revoked (every tab of this browser is
    out at its next action), the tab's state cleared, and the cookie removed on this run."""
    token = st.session_state.get("session_token")
    if token:
        sessions.revoke_session(store(), token)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state["cookie_tried"] = browser_cookie()  # never pick the ended session up again
    if token:
        st.session_state["cookie_to_clear"] = token
    if message:
        st.session_state["flash"] = message


def sync_session_cookie() -> None:
    """Render the cookie writer (call once per run, before the page runs: a page may stop).
    Logged in: the browser's cookie holds this tab's session. Logged out: the cookie of a
    session that ended here is removed."""
    token = st.session_state.get("session_token") if current_user() is not None else None
    if token:
        data = {"name": sessions.COOKIE_NAME, "value": token, "maxAge": sessions.MAX_SESSION_HOURS * 3600}
    elif clear := st.session_state.get("cookie_to_clear"):
        data = {"name": sessions.COOKIE_NAME, "clear": clear}
    else:
        return
    _cookie_component(key="session_cookie", data=data, height=0)
