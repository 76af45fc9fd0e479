"""The live model, loaded once per process (behind st.cache_resource) and warmed up for explanations."""

from __future__ import annotations

import streamlit as st

from core.common.errors import InputError, one_line
from pages._ui.session import store


def _keep_keras_state() -> None:
    """Streamlit calls keras.backend.clear_session() after every script run. That makes
    every later prediction retrace its TensorFlow graphs (28 ms → 250 ms per product,
    measured) and resets Keras' layer naming in all threads. The app loads its models
    once per process and never needs that clean-up, so switch it off (pyplot, the other
    module it cleans, is not used by the app)."""
    from streamlit.runtime.scriptrunner import script_runner

    script_runner._clean_problem_modules = lambda: None


_keep_keras_state()

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
