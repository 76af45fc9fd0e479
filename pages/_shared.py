"""What every page shares: the logged-in user, the store, the live model (loaded once per
process), and a guard that turns bad input into a message instead of a traceback.

Not a page itself (the leading underscore; navigation is declared in streamlit_app.py).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from core.auth import PermissionDenied, User
from core.errors import InputError, one_line
from core.store import Store

def _keep_keras_state() -> None:
    """Streamlit calls keras.backend.clear_session() after every script run. That makes
    every later prediction retrace its TensorFlow graphs (28 ms → 250 ms per product,
    measured) and resets Keras' layer naming in all threads. The app loads its models
    once per process and never needs that clean-up, so switch it off (pyplot, the other
    module it cleans, is not used by the app)."""
    from streamlit.runtime.scriptrunner import script_runner

    script_runner._clean_problem_modules = lambda: None


_keep_keras_state()

IDLE_MINUTES_DEFAULT = 60
MAX_SESSION_HOURS = 12


@st.cache_resource(show_spinner=False)
def store() -> Store:
    """One Store per process (it only holds the path; each operation opens its own connection)."""
    return Store()


def current_user() -> User | None:
    return st.session_state.get("user")


def require_page(action: str) -> User:
    """Stop the page unless the session's user may do `action` (pages are also hidden
    from roles that cannot use them; this is the second guard)."""
    user = current_user()
    if user is None:
        # only reachable through a deep link (e.g. /batch) as a fresh server's very first
        # request, before st.navigation took over from the pages/ folder: go and log in
        st.switch_page("streamlit_app.py")
    if not user.can(action):
        st.error("You do not have access to this page.")
        st.stop()
    return user


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_classifier(path: str, version: str):
    """The live model, loaded once per process and shared by every session (Classifier
    serialises its own inference with a lock). Keyed by version, so activating another
    version loads that one."""
    from core.classifier import Classifier
    from core.explain.service import explainer_for

    classifier = Classifier.load(path)
    explainer_for(classifier)  # build the explainer beside it (its graphs are traced on first use)
    return classifier


def live_classifier():
    """(classifier, model row) of the active version, or (None, None) with a message."""
    from core.registry import live_model

    row = live_model(store())
    if row is None:
        st.info("No model is live yet. An admin can import a labelled catalogue and train one on the "
                "**Models** page, or run `python -m core demo` to train the demo model.")
        return None, None
    try:
        return load_classifier(row["path"], row["version"]), row
    except (InputError, OSError, ValueError) as exc:
        st.error(f"The live model ({row['version']}) could not be loaded: {one_line(exc)}")
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


def touch_session() -> bool:
    """Expire idle or over-long sessions; True while the session is valid."""
    import os

    now = time.time()
    idle = float(os.environ.get("STUDIO_SESSION_IDLE_MINUTES", IDLE_MINUTES_DEFAULT)) * 60
    started, seen = st.session_state.get("login_at", now), st.session_state.get("last_seen", now)
    if now - seen > idle or now - started > MAX_SESSION_HOURS * 3600:
        return False
    st.session_state["last_seen"] = now
    return True


def show_explanation(explanation, key: str, *, opacity_slider: bool = False) -> None:
    """Grad-CAM over the photo beside the description coloured by SHAP (Predict, Review)."""
    from core import charts

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


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
