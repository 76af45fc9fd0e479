"""What every page shares: the logged-in user, the store, the live model (loaded once per
process), and a guard that turns bad input into a message instead of a traceback.

Not a page itself (the leading underscore; navigation is declared in streamlit_app.py).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import streamlit as st
import streamlit.components.v2

from core.common.errors import InputError, one_line
from core.studio import sessions
from core.studio.auth import PermissionDenied, User
from core.studio.store import Store


def _keep_keras_state() -> None:
    """Streamlit calls keras.backend.clear_session() after every script run. That makes
    every later prediction retrace its TensorFlow graphs (28 ms → 250 ms per product,
    measured) and resets Keras' layer naming in all threads. The app loads its models
    once per process and never needs that clean-up, so switch it off (pyplot, the other
    module it cleans, is not used by the app)."""
    from streamlit.runtime.scriptrunner import script_runner

    script_runner._clean_problem_modules = lambda: None


_keep_keras_state()

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


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_classifier(path: str, version: str):
    """The live model, loaded once per process and shared by every session (Classifier
    serialises its own inference with a lock). Keyed by version, so activating another
    version loads that one."""
    from core.explain.service import explainer_for
    from core.models.classifier import Classifier

    classifier = Classifier.load(path)
    _warm_up(explainer_for(classifier))
    return classifier


def _warm_up(explainer) -> None:
    """Trace the explainer's graphs once, while the model loads: otherwise the first user's
    explanation pays for the tracing and its time budget runs out (a coarse explanation)."""
    from PIL import Image

    from core.common.settings import get_settings

    if not get_settings().explain_warm_up:  # the tests, which load a model per test
        return
    try:
        explainer.explain(text="warm-up product description", image=Image.new("RGB", (64, 64), "white"),
                          time_budget=None)
    except Exception:  # noqa: BLE001 - a warm-up that fails only costs the first user some time
        import logging

        logging.getLogger("catalog_studio").warning("explainer warm-up failed", exc_info=True)


def live_classifier():
    """(classifier, ModelVersion) of the live version, or (None, None) with a message."""
    from core.studio.registry import live_model

    row = live_model(store())
    if row is None:
        st.info("No model is live yet. An admin can import a labelled catalogue and train one on the "
                "**Models** page, or run `python -m core demo` to train the demo model.")
        return None, None
    try:
        return load_classifier(row.path, row.version), row
    except (InputError, OSError, ValueError) as exc:
        st.error(f"The live model ({row.version}) could not be loaded: {one_line(exc)}")
        return None, None


@contextmanager
def friendly_errors(what: str = "") -> Iterator[None]:
    """Show bad input and refused actions as a message on the page; anything else as a
    short error line (the server log keeps the traceback)."""
    try:
        yield
    except InputError as exc:
        st.error(f"{what}{one_line(exc)}")
    except PermissionDenied as exc:
        st.error(f"Not allowed: {one_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - never a traceback in the UI
        import logging

        logging.getLogger("catalog_studio").exception("unexpected error")
        st.error(f"{what}something went wrong ({type(exc).__name__}: {one_line(exc)[:300]}). "
                 "Nothing was saved; the details are in the server log.")


# --------------------------------------------------------------------------- the session cookie
#
# The log-in lives in the `sessions` table (core/sessions.py); the browser holds its signed
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


def show_explanation(explanation, key: str, *, opacity_slider: bool = False) -> None:
    """Grad-CAM over the photo beside the description coloured by SHAP (Predict, Review)."""
    from pages._ui import charts

    label = explanation.label
    photo_col, words_col = st.columns(2)
    if explanation.gradcam is not None:
        opacity = (photo_col.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="gradcam_opacity")
                   if opacity_slider else 0.45)
        photo_col.plotly_chart(charts.gradcam_figure(explanation.image, explanation.gradcam.heatmap, opacity,
                                                     title=f"Where the photo says “{label}”"),
                               key=f"{key}_gradcam")
    else:
        photo_col.caption("No photo: the description decided alone.")
    if explanation.text_shap is not None:
        words_col.markdown(f"**Words for and against “{label}”** (red pushes towards it, blue away)")
        words_col.html(charts.text_shap_html(explanation.text_shap))
    else:
        words_col.caption("No description: the photo decided alone.")
    for note in explanation.notes:  # what was bounded: "the first 300 words", a time limit
        words_col.caption(note)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def focus_key(key: str, selector: str) -> None:
    """Pressing `key` (outside a text field) focuses the first element matching `selector`:
    Streamlit's button shortcuts cannot focus a widget, and "/" is a key it does not take.
    The script is ours and constant (no user input goes into it)."""
    import json

    st.html(f"""<script>
(() => {{
  const doc = window.parent ? window.parent.document : document;
  const id = {json.dumps(f"studio-focus-{key}")};
  if (doc[id]) {{ doc[id].selector = {json.dumps(selector)}; return; }}
  const state = {{selector: {json.dumps(selector)}}};
  doc[id] = state;
  doc.addEventListener("keydown", (event) => {{
    const target = event.target;
    const typing = target && (["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName) || target.isContentEditable);
    if (typing || event.ctrlKey || event.metaKey || event.altKey || event.key !== {json.dumps(key)}) return;
    // while the page redraws, the last item's elements linger (marked stale): focus the live one
    const element = [...doc.querySelectorAll(state.selector)].find(e => !e.closest('[data-stale="true"]'));
    if (element) {{ event.preventDefault(); element.focus(); element.click(); }}
  }});
}})();
</script>""", unsafe_allow_javascript=True, width="content")


def honest_percent(value: float) -> str:
    """A headline confidence: never "100%" (see pages._ui.charts.probability_label)."""
    from pages._ui.charts import probability_label

    return probability_label(value)
